"""A pre-training corpus of several shard folders (``data.shards`` as a weighted list): the epoch
plan of data_pipeline/plan.py and the loaders over COCO Karpathy + Visual Genome fixture shards."""

from __future__ import annotations

import shutil
from collections import Counter

import numpy as np
import pytest

from data_pipeline.loaders import build_loader, check_shards
from data_pipeline.plan import EpochPlan
from data_pipeline.records import DataError
from data_pipeline.shards import ShardSet
from pixelbert.config import ConfigError

from data_helpers import BACKENDS, assert_same_batch, make_config

# Two sources: 3 shards of 4 + 4 + 2 units, then 2 shards of 5 + 3 units (one sample without).
COUNTS = [np.ones(4, int), np.ones(4, int), np.ones(2, int), np.ones(5, int), np.array([1, 0, 1, 1])]
SIZES = (10, 8)


def plan(weights=(1.0, 1.0), rank=0, world=1, shuffle=True, batch=2, seed=0, counts=COUNTS, **kw):
    return EpochPlan(counts, seed=seed, shuffle=shuffle, rank=rank, world_size=world, batch_size=batch,
                     drop_last=shuffle, sources=[(3, weights[0]), (2, weights[1])], **kw)


def stream(p, epoch=0):
    return list(zip(*(a.tolist() for a in p.stream(epoch))))


def source(unit):
    return 0 if unit[0] < 3 else 1


# -- the epoch plan ------------------------------------------------------------------------------


@pytest.mark.parametrize("weights", [(1.0, 1.0), (0.5, 1.0), (1.0, 2.5), (0.25, 0.75)])
def test_each_source_gives_round_weight_times_its_units_per_epoch(weights):
    p = plan(weights)
    want = [int(w * n + 0.5) for w, n in zip(weights, SIZES)]
    assert p.source_units == want and p.total == sum(want)
    for epoch in (0, 3):
        assert Counter(source(u) for u in stream(p, epoch)) == Counter({0: want[0], 1: want[1]})


def test_a_weight_above_one_takes_whole_passes_then_a_draw_without_replacement():
    seen = Counter(u for u in stream(plan((1.0, 2.5))) if source(u) == 1)
    assert len(seen) == 8 and sorted(seen.values()) == [2] * 4 + [3] * 4  # 20 = 2 x 8 + 4 drawn once more


def test_a_partial_source_draws_distinct_units_afresh_every_epoch():
    draws = [[u for u in stream(plan((0.5, 1.0)), e) if source(u) == 0] for e in range(4)]
    assert all(len(d) == len(set(d)) == 5 for d in draws)
    assert len({frozenset(d) for d in draws}) > 1


def test_the_mixture_order_is_deterministic_per_seed_and_epoch():
    assert stream(plan((0.5, 2.0)), 2) == stream(plan((0.5, 2.0)), 2)
    assert stream(plan((0.5, 2.0)), 2) != stream(plan((0.5, 2.0)), 3)
    assert stream(plan((0.5, 2.0), seed=1), 2) != stream(plan((0.5, 2.0)), 2)


def test_sources_alternate_in_chunks_of_a_batch_in_proportion_to_their_share():
    p = plan((1.0, 2.0), batch=2)  # 10 + 16 units: 5 chunks and 8 chunks
    sources = [source(u) for u in stream(p)]
    runs = [sources[i:i + 2] for i in range(0, len(sources), 2)]
    assert all(len(set(r)) == 1 for r in runs)  # every chunk from one source
    for end in range(1, len(sources) + 1):  # every prefix holds each source in proportion, to a chunk
        assert abs(sources[:end].count(1) - end * 16 / 26) <= 2


def test_ranks_take_equal_whole_batches_of_the_mixture_stream_without_overlap():
    full = stream(plan((1.0, 2.5)), 1)
    parts = [list(zip(*(a.tolist() for a in plan((1.0, 2.5), r, 3).rank_units(1)))) for r in range(3)]
    assert len({len(q) for q in parts}) == 1 and len(parts[0]) % 2 == 0
    for r, q in enumerate(parts):
        assert q == full[len(full) * r // 3:][:len(q)]


def test_evaluation_reads_every_unit_of_every_source_once_whatever_the_weights():
    units = stream(plan((0.25, 3.0), shuffle=False))
    assert units == [(s, u) for s, c in enumerate(COUNTS) for u in range(int(c.sum()))]


def test_one_source_of_weight_one_reads_as_a_single_folder():
    single = EpochPlan(COUNTS, seed=4, shuffle=True, rank=0, world_size=1, batch_size=2, drop_last=True)
    one = EpochPlan(COUNTS, seed=4, shuffle=True, rank=0, world_size=1, batch_size=2, drop_last=True,
                    sources=[(5, 1.0)])
    assert stream(single, 3) == stream(one, 3)


def test_grouped_mixture_keeps_every_samples_units_together():
    counts = [np.array([3, 1, 2]), np.array([2, 2]), np.array([4, 1, 1])]
    p = EpochPlan(counts, seed=0, shuffle=True, rank=0, world_size=1, batch_size=2, drop_last=True,
                  group_by_sample=True, sources=[(2, 1.0), (1, 1.0)])
    shards, units = p.stream(0)
    samples, _ = p.locate(shards, units)
    seq = list(zip(shards.tolist(), samples.tolist()))
    runs = [k for i, k in enumerate(seq) if i == 0 or seq[i - 1] != k]
    assert len(runs) == len(set(runs)) == 8


# -- loaders over COCO Karpathy + Visual Genome shards -------------------------------------------


def mixture(shards, coco=1.0, vg=1.0, vg_dir=None):
    return [{"path": str(shards("coco_karpathy")), "weight": coco}, {"path": str(vg_dir or shards("vg")), "weight": vg}]


def load(shards, tokenizer, backend="torch", split="train", rank=0, world=1, corpus=None, **data):
    cfg = make_config(shards("coco_karpathy"), "pretrain", backend, shards=corpus or mixture(shards), **data)
    return build_loader(cfg, split, rank, world, tokenizer=tokenizer)


def keys(loader):
    return [k for b in loader for k in b.meta["keys"]]


def test_a_corpus_reads_both_datasets_by_weight_and_names_their_samples(shards, tokenizer):
    # 9 COCO Karpathy train images (train + restval), 10 VG images at weight 0.5: 9 + 5 an epoch.
    loader = load(shards, tokenizer, corpus=mixture(shards, vg=0.5), micro_batch_size=2)
    for _ in range(2):
        got = Counter(k.split("/")[0] for k in keys(loader))
        assert got == Counter({"coco_karpathy": 9, "vg": 5}) and loader.num_samples == 14


def test_images_of_two_datasets_with_the_same_id_stay_two_images(shards, tokenizer):
    batch = next(iter(load(shards, tokenizer, micro_batch_size=19)))  # every image of both: ids 1.. in each
    assert batch.images.shape[0] == 19 and len(set(batch.meta["image_ids"])) == 19
    assert {"coco_karpathy/1", "vg/1"} <= set(batch.meta["image_ids"])


@pytest.mark.parametrize("backend", BACKENDS)
def test_both_backends_read_a_corpus_alike_and_epochs_reshuffle(backend, shards, tokenizer):
    torch_loader = load(shards, tokenizer, corpus=mixture(shards, vg=1.5), micro_batch_size=3)
    first, other = list(torch_loader), list(load(shards, tokenizer, backend, corpus=mixture(shards, vg=1.5),
                                                   micro_batch_size=3))
    assert len(first) == len(other) == 8  # 9 + 15 units, batches of 3
    for a, b in zip(first, other):
        assert_same_batch(a, b)
    assert keys(torch_loader) != [k for b in first for k in b.meta["keys"]]


@pytest.mark.parametrize("backend", BACKENDS)
def test_resuming_a_corpus_mid_epoch_continues_exactly(backend, shards, tokenizer):
    corpus = mixture(shards, coco=0.5, vg=2.0)
    full = list(load(shards, tokenizer, backend, corpus=corpus, micro_batch_size=3))
    first = load(shards, tokenizer, backend, corpus=corpus, micro_batch_size=3)
    head = [b for _, b in zip(range(3), first)]
    resumed = load(shards, tokenizer, backend, corpus=corpus, micro_batch_size=3)
    resumed.load_state_dict(first.state_dict())
    tail = list(resumed)
    assert len(head) + len(tail) == len(full) == 8  # 5 + 20 units, batches of 3
    for a, b in zip(head + tail, full):
        assert_same_batch(a, b, exact_images=True)


def test_a_state_saved_with_other_weights_is_refused(shards, tokenizer):
    state = load(shards, tokenizer, corpus=mixture(shards, vg=0.5)).state_dict()
    with pytest.raises(ValueError, match="sources"):  # 0.45: 5 VG units a epoch too, so the epoch length agrees
        load(shards, tokenizer, corpus=mixture(shards, vg=0.45)).load_state_dict(state)


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_ranks_split_a_corpus_epoch_without_overlap(backend, shards, tokenizer):
    parts = [keys(load(shards, tokenizer, backend, rank=r, world=2, micro_batch_size=2)) for r in (0, 1)]
    assert len(parts[0]) == len(parts[1]) == 8 and not set(parts[0]) & set(parts[1])  # 19 images: 3 dropped


def damaged_copy(src, dst, samples=(0, 2)):
    """A copy of shards ``src`` whose first shard has the image of ``samples`` overwritten on disk."""
    shutil.copytree(src, dst)
    s = ShardSet(dst, "train")
    with open(s.path(0), "r+b") as f:
        for j in samples:
            entry = s.index(0)[j]
            offset, _ = entry.components[entry.image_ext("")]
            f.seek(offset)
            f.write(b"\0" * 64)
    return dst


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_samples_are_counted_per_source_and_in_total(backend, shards, tokenizer, tmp_path):
    vg = damaged_copy(shards("vg"), tmp_path / "vg")
    loader = load(shards, tokenizer, backend, corpus=mixture(shards, vg_dir=vg), micro_batch_size=1, split="train")
    got = keys(loader)
    assert len(got) == 19 - 2 and len(set(got)) == len(got)
    bad = {k: v for k, v in loader.bad_samples.items() if v}
    assert bad == {"corrupt": 2, "vg/corrupt": 2}
    assert "coco_karpathy/corrupt" in loader.bad_samples  # every source has its counters, zero or not


def test_an_evaluation_split_is_read_from_the_folders_that_hold_it(shards, tokenizer):
    check_shards(make_config(shards("coco_karpathy"), "pretrain", shards=mixture(shards)), ["train", "val"])
    assert {k.split("/")[0] for k in keys(load(shards, tokenizer, split="val"))} == {"coco_karpathy"}


def test_a_training_split_must_be_in_every_folder(shards, tokenizer):
    cfg = make_config(shards("coco_karpathy"), "pretrain", shards=mixture(shards))
    with pytest.raises(DataError, match=f"{shards('vg')}: no split 'val'"):
        check_shards(cfg, ["train+val"])
    with pytest.raises(DataError, match=f"{shards('vg')}: no split 'val'"):
        build_loader(cfg, "train+val", tokenizer=tokenizer)


def test_a_folder_that_does_not_serve_the_task_is_named(shards, tokenizer):
    corpus = [{"path": str(shards("coco_karpathy"))}, {"path": str(shards("vqa"))}]
    with pytest.raises(DataError, match=f"{shards('vqa')}: vqa shards serve"):
        load(shards, tokenizer, corpus=corpus)


@pytest.mark.parametrize("entry, message", [
    ({"weight": 1.0}, r"'data.shards\[1\]' must be an object with a 'path'"),
    ({"path": "x", "weight": 0}, r"'data.shards\[1\].weight' must be > 0"),
    ({"path": "x", "weight": "heavy"}, r"'data.shards\[1\].weight' must be float"),
    ({"path": "x", "share": 0.5}, r"unknown key 'data.shards\[1\].share'"),
])
def test_a_malformed_corpus_entry_is_one_config_error_naming_it(entry, message, shards):
    with pytest.raises(ConfigError, match=message):
        make_config(shards("vg"), "pretrain", shards=[{"path": str(shards("vg"))}, entry])


def test_two_folders_of_one_dataset_need_distinct_names(shards, tokenizer):
    same = [{"path": str(shards("vg"))}, {"path": str(shards("vg"))}]
    with pytest.raises(DataError, match="distinct 'name'"):
        load(shards, tokenizer, corpus=same)
    named = [{"path": str(shards("vg")), "name": "vg_a"}, {"path": str(shards("vg")), "name": "vg_b"}]
    assert {k.split("/")[0] for k in keys(load(shards, tokenizer, corpus=named))} == {"vg_a", "vg_b"}
