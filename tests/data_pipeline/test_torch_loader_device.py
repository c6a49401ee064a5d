"""The torch loader's device hand-over: uint8 images normalised where they land, same batches."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from data_pipeline.loaders.torch import TorchLoader

from data_helpers import assert_same_batch, make_config


def loader(shards_dir, tokenizer, device, workers=0):
    cfg = make_config(shards_dir, "pretrain", "torch", num_workers=workers)
    return TorchLoader(cfg, "train", 0, 1, tokenizer, True, device=device)


@pytest.mark.parametrize("workers", [0, 1])
def test_images_normalised_on_the_device_equal_those_normalised_on_the_host(shards, tokenizer, workers):
    """On a GPU machine the device is the GPU (build_loader); here the same path runs to the CPU."""
    host = list(loader(shards("coco"), tokenizer, None, workers))
    handed_over = list(loader(shards("coco"), tokenizer, torch.device("cpu"), workers))
    assert len(host) == len(handed_over) > 0
    for a, b in zip(host, handed_over):
        assert b.images.dtype == torch.float32
        assert_same_batch(a, b, exact_images=True)


def test_with_a_device_the_workers_decode_to_uint8_a_quarter_of_the_bytes(shards, tokenizer):
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8))
    data = io.BytesIO()
    image.save(data, format="PNG")
    host = loader(shards("coco"), tokenizer, None).decode(data.getvalue())
    raw = loader(shards("coco"), tokenizer, torch.device("cpu")).decode(data.getvalue())
    assert host.dtype == torch.float32 and raw.dtype == torch.uint8 and raw.shape == host.shape == (3, 32, 48)
