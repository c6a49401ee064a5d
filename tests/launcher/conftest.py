"""Fixtures of the launcher tests: tiny shards in each task's real format, a tiny pre-trained model.

Shards are built once per session with the data pipeline's own builder.
"""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("DS_ACCELERATOR", "cpu")

from tiny_data import WRITERS, model_section  # noqa: E402  (tests/launcher is on sys.path)


@pytest.fixture(scope="session")
def task_data(tmp_path_factory):
    """task -> (raw root, shards folder, manifest), built on first use."""
    from data_pipeline.build_shards import build_shards

    base, built = tmp_path_factory.mktemp("task_data"), {}

    def get(task: str):
        if task not in built:
            dataset, write = WRITERS[task]
            root = base / f"{task}_raw"
            root.mkdir()
            write(root)
            manifest = build_shards(dataset, root, base / f"{task}_shards", workers=1, progress=False)
            built[task] = (root, base / f"{task}_shards", manifest)
        return built[task]

    return get


@pytest.fixture(scope="session")
def pretrained(tmp_path_factory):
    """A tiny 'pre-trained' save_pretrained folder with the MLM and ITM heads."""
    import torch

    from pixelbert import build_model
    from pixelbert.config import config_from_dict

    torch.manual_seed(0)
    cfg = config_from_dict({"model": model_section(["mlm", "itm"])})
    return build_model(cfg).save_pretrained(tmp_path_factory.mktemp("pretrained") / "export")
