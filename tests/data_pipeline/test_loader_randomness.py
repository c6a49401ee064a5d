"""The loader's randomness: each batch of a training epoch gets its own masks, and each epoch new ones."""

from __future__ import annotations

import pytest

from data_pipeline.loaders import build_loader

from data_helpers import BACKENDS, make_config


def mask_patterns(loader) -> list[tuple]:
    """The MLM positions chosen in each batch of one epoch, as hashable tuples."""
    return [tuple(map(tuple, (b.mlm_labels != -100).tolist())) for b in loader]


@pytest.fixture
def loader(shards, tokenizer):
    """Batches of one shape (2 captions cut to 6 tokens) and no ITM draws, so the masks depend
    only on the random key of the batch, not on the data it holds."""

    def make(backend):
        cfg = make_config(shards("coco"), "pretrain", backend, micro_batch_size=2, max_text_len=6,
                          mlm_probability=0.5, itm_negative_probability=0.0)
        return build_loader(cfg, "train", tokenizer=tokenizer)

    return make


@pytest.mark.parametrize("backend", BACKENDS)
def test_batches_of_one_epoch_are_masked_differently(loader, backend):
    patterns = mask_patterns(loader(backend))
    assert len(patterns) == 4 and len(set(patterns)) == len(patterns)


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_batch_at_one_position_is_masked_differently_in_the_next_epoch(loader, backend):
    first = loader(backend)
    epoch0 = mask_patterns(first)
    epoch1 = mask_patterns(first)  # the loader moved on to epoch 1
    assert [a != b for a, b in zip(epoch0, epoch1)] == [True] * len(epoch0)
