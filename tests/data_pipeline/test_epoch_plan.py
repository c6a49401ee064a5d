"""EpochPlan: deterministic order per (seed, epoch), every unit once across ranks."""

from __future__ import annotations

import numpy as np
import pytest

from data_pipeline.plan import EpochPlan

COUNTS = [np.array([1, 1, 1, 1, 1]), np.array([1, 0, 1, 1]), np.array([1, 1, 1, 1, 1, 1, 1])]  # 15 units, one sample without


def plan(rank=0, world=1, shuffle=True, drop_last=False, batch=2, seed=0, counts=COUNTS, **kw):
    return EpochPlan(counts, seed=seed, shuffle=shuffle, rank=rank, world_size=world, batch_size=batch,
                     drop_last=drop_last, **kw)


def units(p, epoch=0):
    return list(zip(*(a.tolist() for a in p.rank_units(epoch))))


def test_order_is_deterministic_per_seed_and_epoch_and_changes_between_epochs():
    assert units(plan(), 3) == units(plan(), 3)
    assert units(plan(), 3) != units(plan(), 4)
    assert units(plan(seed=1), 3) != units(plan(), 3)


def test_evaluation_keeps_stored_order_every_epoch():
    assert units(plan(shuffle=False), 0) == units(plan(shuffle=False), 5) == [
        (s, u) for s, c in enumerate(COUNTS) for u in range(int(c.sum()))]


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_evaluation_ranks_cover_every_unit_exactly_once(world):
    seen = [u for r in range(world) for u in units(plan(r, world, shuffle=False))]
    assert sorted(seen) == sorted(units(plan(shuffle=False))) and len(seen) == 15


@pytest.mark.parametrize("world", [1, 2, 3])
def test_training_ranks_take_equal_whole_batches_without_overlap(world):
    parts = [units(plan(r, world, drop_last=True), epoch=2) for r in range(world)]
    assert len({len(p) for p in parts}) == 1 and len(parts[0]) % 2 == 0
    flat = [u for p in parts for u in p]
    assert len(set(flat)) == len(flat) and 15 - len(flat) < world * 2


def test_rank_blocks_are_dalis_contiguous_split_of_the_stream():
    shards, us = plan(shuffle=True).stream(1)
    stream = list(zip(shards.tolist(), us.tolist()))
    for r in range(3):
        assert units(plan(r, 3), 1) == stream[15 * r // 3: 15 * (r + 1) // 3]


def test_units_map_back_to_samples_and_questions():
    p = plan(counts=[np.array([2, 0, 3])], shuffle=False)
    shards, us = p.rank_units(0)
    samples, subs = p.locate(shards, us)
    assert list(zip(samples.tolist(), subs.tolist())) == [(0, 0), (0, 1), (2, 0), (2, 1), (2, 2)]


def test_subset_is_fixed_across_epochs():
    a = sorted(units(plan(subset_fraction=0.5), 0))
    assert a == sorted(units(plan(subset_fraction=0.5), 7)) and len(a) == 2 + 2 + 4


def test_grouped_training_order_keeps_each_samples_units_together_and_still_shuffles():
    counts = [np.array([3, 0, 2, 4, 1]), np.array([2, 2])]
    p = plan(counts=counts, group_by_sample=True)
    for epoch in (0, 1):
        shards, us = p.rank_units(epoch)
        samples, _ = p.locate(shards, us)
        seq = list(zip(shards.tolist(), samples.tolist()))
        runs = [k for i, k in enumerate(seq) if i == 0 or seq[i - 1] != k]
        assert len(runs) == len(set(runs)) == 6  # every sample is one contiguous run
        assert sorted(zip(shards.tolist(), us.tolist())) == [(s, u) for s, c in enumerate(counts) for u in range(c.sum())]
    orders = {tuple(p.stream(e)[1].tolist()) for e in range(6)}
    assert len(orders) > 1
