"""Fixtures of the launcher tests: tiny shards in each task's real format, a tiny pre-trained model.

Shards are built once per session with the data pipeline's own builder.
"""

from __future__ import annotations

import os
import sys

import pytest

os.environ.setdefault("DS_ACCELERATOR", "cpu")

from tiny_data import REPO, WRITERS, model_section  # noqa: E402  (tests/launcher is on sys.path)

if str(REPO) not in sys.path:  # launcher/ is a folder of scripts, importable from the repository root
    sys.path.insert(0, str(REPO))


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


@pytest.fixture(scope="session")
def finetuned(tmp_path_factory, task_data, pretrained):
    """task -> (run folder, printed output) of launcher/finetune.py run in this process (once per task)."""
    import contextlib
    import io

    from launcher import finetune
    from tiny_data import write_config

    runs = {}

    def get(task: str, **train):
        if task not in runs:
            tmp = tmp_path_factory.mktemp(f"finetune_{task}")
            _, shards, manifest = task_data(task)
            cfg = write_config(tmp / "config.json", task, shards, manifest, tmp / "run", **train)
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                rc = finetune.main(["--task", task, "--config", str(cfg), "--init", str(pretrained)])
            assert rc == 0, out.getvalue()
            runs[task] = (tmp / "run", out.getvalue())
        return runs[task]

    return get
