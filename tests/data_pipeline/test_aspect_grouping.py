"""Less padding: aspect grouping in the epoch plan and batches padded to a multiple, with every
guarantee of the plan kept (deterministic per seed, exact resume, ranks cover an epoch once)."""

from __future__ import annotations

import json
import shutil
from collections import Counter

import numpy as np
import pytest
import torch

from data_pipeline.build_shards import build_shards
from data_pipeline.collate import pad_images, padded_size
from data_pipeline.loaders import build_loader
from data_pipeline.plan import EpochPlan, aspect_buckets
from data_pipeline.shards import ShardSet
from pixelbert.config import ConfigError, config_from_dict

from data_helpers import BACKENDS, MINILM, assert_same_batch, make_config
from fake_datasets import write_coco

B = 4
BUCKETS = 4  # aspect_buckets: tall, portrait, landscape or square, wide


def random_plan_inputs(shards=6, samples=40, seed=0, units=1):
    rng = np.random.default_rng(seed)
    counts = [rng.integers(0, units + 1, samples) if units > 1 else np.ones(samples, int) for _ in range(shards)]
    buckets = [rng.integers(0, BUCKETS, samples) for _ in range(shards)]
    return counts, buckets


def plan(counts, buckets, rank=0, world=1, seed=0, shuffle=True, **kw):
    return EpochPlan(counts, seed=seed, shuffle=shuffle, rank=rank, world_size=world, batch_size=B, drop_last=shuffle,
                     buckets=buckets, **kw)


def pairs(shards_units):
    return list(zip(*(a.tolist() for a in shards_units)))


def bucket_runs(p, buckets, epoch=0):
    """Per batch of this rank's epoch: the set of buckets in it."""
    shards, units = p.rank_units(epoch)
    samples, _ = p.locate(shards, units)
    b = [int(buckets[s][j]) for s, j in zip(shards.tolist(), samples.tolist())]
    return [set(b[i:i + B]) for i in range(0, len(b), B)]


# -- the plan -------------------------------------------------------------------------------------


def test_the_rule_buckets_by_summed_width_over_summed_height():
    sizes = np.array([[100, 150], [90, 100], [100, 100], [133, 100], [140, 100], [640, 360]])  # (w, h)
    assert aspect_buckets(sizes[:, None]).tolist() == [0, 1, 2, 2, 3, 3]
    pair = np.array([[[100, 150], [200, 100]]])  # an NLVR2 pair: 300 / 250 = 1.2
    assert aspect_buckets(pair).tolist() == [2]


@pytest.mark.parametrize("world", [1, 2, 3])
def test_batches_hold_one_bucket_but_at_most_the_last_buckets_minus_one_of_a_rank(world):
    counts, buckets = random_plan_inputs()
    for rank in range(world):
        for epoch in (0, 1, 2):
            runs = bucket_runs(plan(counts, buckets, rank, world), buckets, epoch)
            mixed = [i for i, r in enumerate(runs) if len(r) > 1]
            assert len(mixed) <= BUCKETS - 1 and mixed == list(range(len(runs) - len(mixed), len(runs)))
            assert len(runs) > 2 * len(mixed)


def test_grouping_reorders_units_only_inside_each_rank_block():
    counts, buckets = random_plan_inputs()
    for world in (1, 2, 3):
        grouped, plain = plan(counts, buckets, world=world).stream(4), plan(counts, None, world=world).stream(4)
        for q in range(world):
            a, b = plan(counts, None, world=world).bounds(q)
            assert sorted(pairs(x[a:b] for x in grouped)) == sorted(pairs(x[a:b] for x in plain))
        assert pairs(grouped) != pairs(plain)


def test_the_grouped_order_is_deterministic_per_seed_and_epoch():
    counts, buckets = random_plan_inputs()
    assert pairs(plan(counts, buckets).rank_units(3)) == pairs(plan(counts, buckets).rank_units(3))
    assert pairs(plan(counts, buckets).rank_units(3)) != pairs(plan(counts, buckets).rank_units(4))
    assert pairs(plan(counts, buckets, seed=1).rank_units(3)) != pairs(plan(counts, buckets).rank_units(3))


@pytest.mark.parametrize("world", [1, 2, 3])
def test_grouped_ranks_take_equal_whole_batches_without_overlap(world):
    counts, buckets = random_plan_inputs()
    parts = [pairs(plan(counts, buckets, r, world).rank_units(1)) for r in range(world)]
    assert len({len(p) for p in parts}) == 1 and len(parts[0]) % B == 0
    flat = [u for p in parts for u in p]
    assert len(set(flat)) == len(flat) and 6 * 40 - len(flat) < world * B


def test_one_bucket_reads_exactly_as_without_grouping():
    counts, _ = random_plan_inputs()
    square = [np.full(len(c), 2) for c in counts]  # easy-VQA: every image square
    for world in (1, 3):
        assert pairs(plan(counts, square, world=world).stream(2)) == pairs(plan(counts, None, world=world).stream(2))


def test_evaluation_is_never_grouped():
    counts, buckets = random_plan_inputs()
    assert pairs(plan(counts, buckets, shuffle=False).stream(0)) == [
        (s, u) for s, c in enumerate(counts) for u in range(int(c.sum()))]


def test_the_subset_is_the_same_with_grouping():
    counts, buckets = random_plan_inputs()
    grouped = sorted(pairs(plan(counts, buckets, subset_fraction=0.5).stream(0)))
    assert grouped == sorted(pairs(plan(counts, None, subset_fraction=0.5).stream(0)))
    assert grouped == sorted(pairs(plan(counts, buckets, subset_fraction=0.5).stream(5)))


def test_an_images_units_stay_together_in_stored_order_inside_every_batch():
    counts, buckets = random_plan_inputs(units=4)
    p = plan(counts, buckets, group_by_sample=True)
    for epoch in (0, 1):
        shards, units = p.rank_units(epoch)
        samples, subs = p.locate(shards, units)
        seq = list(zip(shards.tolist(), samples.tolist(), subs.tolist()))
        for i in range(0, len(seq), B):
            batch = seq[i:i + B]
            for key in {(s, j) for s, j, _ in batch}:
                at = [k for k, (s, j, _) in enumerate(batch) if (s, j) == key]
                assert at == list(range(at[0], at[-1] + 1))  # together
                assert [batch[k][2] for k in at] == sorted(batch[k][2] for k in at)  # in stored order
        assert sum(len(r) > 1 for r in bucket_runs(p, buckets, epoch)) <= BUCKETS - 1


def test_a_grouped_mixture_takes_each_sources_share_and_the_same_units_per_rank():
    counts, buckets = random_plan_inputs()
    sources = [(4, 1.0), (2, 2.5)]
    for world in (1, 2):
        grouped = [plan(counts, buckets, r, world, sources=sources) for r in range(world)]
        plain = plan(counts, None, world=world, sources=sources)
        want = [int(w * n + 0.5) for w, n in zip((1.0, 2.5), (4 * 40, 2 * 40))]
        assert Counter(int(s >= 4) for s, _ in pairs(grouped[0].stream(1))) == Counter({0: want[0], 1: want[1]})
        for q, p in enumerate(grouped):
            a, b = plain.bounds(q)
            assert sorted(pairs(p.stream(1))[a:b]) == sorted(pairs(x[a:b] for x in plain.stream(1)))
            assert sum(len(r) > 1 for r in bucket_runs(p, buckets, 1)) <= BUCKETS - 1


def test_buckets_must_name_every_sample():
    counts, buckets = random_plan_inputs()
    with pytest.raises(ValueError, match="one bucket per sample"):
        plan(counts, buckets[:-1] + [buckets[-1][:-1]])


# -- padding to a multiple --------------------------------------------------------------------------


def test_batches_pad_to_a_multiple_and_the_mask_marks_only_each_images_pixels():
    a, b = torch.ones(3, 40, 24), torch.ones(3, 21, 50)
    images, mask = pad_images([a, b], multiple=32)
    assert images.shape == (2, 3, 64, 64) and padded_size([(40, 24), (21, 50)], 32) == (64, 64)
    assert mask[0].sum() == 40 * 24 and mask[0, :40, :24].all() and mask[1].sum() == 21 * 50 and mask[1, :21, :50].all()
    assert images[~mask[:, None].expand_as(images)].abs().sum() == 0
    same, _ = pad_images([a, b], multiple=1)
    assert same.shape == (2, 3, 40, 50) and padded_size([(40, 24), (21, 50)]) == (40, 50)


def test_rounding_never_makes_padding_a_visible_pixel_token(tiny_model):
    image = torch.randn(3, 40, 24, generator=torch.Generator().manual_seed(0))
    images, mask = pad_images([image], multiple=32)  # (1, 3, 64, 32): 24 padded rows, 8 padded columns
    with torch.no_grad():
        alone = tiny_model.encode_images(image[None], None)
        padded = tiny_model.encode_images(images, mask)
    assert alone.mask.sum() == padded.mask.sum() == 3 * 2  # stride 16: ceil(40/16) x ceil(24/16)
    torch.testing.assert_close(padded.tokens[padded.mask], alone.tokens[0], atol=1e-5, rtol=1e-4)


# -- the loaders ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def coco48(tmp_path_factory):
    """COCO shards of 48 train images of mixed aspect ratios (40..96 px a side), 5 a shard."""
    root = tmp_path_factory.mktemp("raw_coco48")
    write_coco(root, n_train=48, n_val=4)
    out = tmp_path_factory.mktemp("shards_coco48") / "out"
    build_shards("coco", root, out, shard_size=5, workers=1, progress=False)
    return out


def bucket_of_key(shards_dir) -> dict:
    s = ShardSet(shards_dir, "train")
    sizes = s.image_sizes()
    return {e.key: int(aspect_buckets(sizes[k])[j]) for k in range(len(s.shards)) for j, e in enumerate(s.index(k))}


def load(shards_dir, tokenizer, backend="torch", rank=0, world=1, **data):
    cfg = make_config(shards_dir, "pretrain", backend, **data)
    return build_loader(cfg, "train", rank, world, tokenizer=tokenizer)


def test_the_builder_records_every_images_size(coco48):
    manifest = json.loads((coco48 / "manifest.json").read_text())
    shard = manifest["splits"]["train"]["shards"][0]
    assert len(shard["image_sizes"]) == 2 * shard["samples"]
    sizes = ShardSet(coco48, "train").image_sizes()
    assert sum(len(x) for x in sizes) == 48 and all(40 <= v <= 96 for x in sizes for v in x.flatten())


@pytest.mark.parametrize("backend", BACKENDS)
def test_both_backends_read_the_same_single_bucket_batches_padded_to_the_multiple(backend, coco48, tokenizer):
    bucket = bucket_of_key(coco48)
    grouped = list(load(coco48, tokenizer, backend, group_by_aspect=True, pad_multiple=16))
    reference = list(load(coco48, tokenizer, "torch", group_by_aspect=True, pad_multiple=16))
    assert len(grouped) == len(reference) == 12
    for a, b in zip(grouped, reference):
        assert_same_batch(a, b)
    kinds = [{bucket[k] for k in b.meta["keys"]} for b in grouped]
    assert sum(len(k) > 1 for k in kinds) <= BUCKETS - 1 and all(len(k) == 1 for k in kinds[:-(BUCKETS - 1)])
    plain = [{bucket[k] for k in b.meta["keys"]} for b in load(coco48, tokenizer, backend)]
    assert sum(len(k) > 1 for k in plain) > sum(len(k) > 1 for k in kinds)
    for b in grouped:
        assert b.images.shape[2] % 16 == 0 and b.images.shape[3] % 16 == 0
        h, w = b.pixel_mask.any(2).sum(1), b.pixel_mask.any(1).sum(1)
        assert torch.equal(b.pixel_mask.sum((1, 2)), h * w) and max(h) > b.images.shape[2] - 16


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_grouped_loader_resumed_mid_epoch_yields_the_same_rest(backend, coco48, tokenizer):
    full = list(load(coco48, tokenizer, backend, group_by_aspect=True))
    first = load(coco48, tokenizer, backend, group_by_aspect=True)
    head = [b for _, b in zip(range(5), first)]
    resumed = load(coco48, tokenizer, backend, group_by_aspect=True)
    resumed.load_state_dict(first.state_dict())
    tail = list(resumed)
    assert len(head) + len(tail) == len(full) == 12
    for a, b in zip(head + tail, full):
        assert_same_batch(a, b, exact_images=True)


def test_grouped_ranks_read_every_unit_at_most_once_and_the_same_units_as_ungrouped(coco48, tokenizer):
    keys = [[k for b in load(coco48, tokenizer, rank=r, world=3, group_by_aspect=True) for k in b.meta["keys"]]
            for r in range(3)]
    assert [len(k) for k in keys] == [16, 16, 16] and len(set(sum(keys, []))) == 48
    plain = [{k for b in load(coco48, tokenizer, rank=r, world=3) for k in b.meta["keys"]} for r in range(3)]
    assert [set(k) for k in keys] == plain  # 16 units a rank, no remainder: the same units, reordered


def test_a_state_saved_without_grouping_is_refused_by_a_grouped_loader(coco48, tokenizer):
    state = load(coco48, tokenizer).state_dict()
    with pytest.raises(ValueError, match="group_by_aspect"):
        load(coco48, tokenizer, group_by_aspect=True).load_state_dict(state)


def test_shards_built_without_image_sizes_train_ungrouped_saying_so_once(coco48, tokenizer, tmp_path, capsys):
    old = tmp_path / "old"
    shutil.copytree(coco48, old)
    manifest = json.loads((old / "manifest.json").read_text())
    for split in manifest["splits"].values():
        for shard in split["shards"]:
            del shard["image_sizes"]
    (old / "manifest.json").write_text(json.dumps(manifest))
    loader = load(old, tokenizer, group_by_aspect=True)
    said = [line for line in capsys.readouterr().err.splitlines() if "group_by_aspect" in line]
    assert len(said) == 1 and "without aspect grouping" in said[0] and str(old) in said[0]
    assert loader.group_by_aspect is False
    assert [b.meta["keys"] for b in loader] == [b.meta["keys"] for b in load(old, tokenizer)]
    load(old, tokenizer, rank=1, world=2, group_by_aspect=True)  # the other ranks say nothing
    assert "group_by_aspect" not in capsys.readouterr().err


# -- the config -----------------------------------------------------------------------------------


@pytest.mark.parametrize("key, value, words", [
    ("pad_multiple", 0, "an integer in [1, data.max_image_size (1333)]"),
    ("pad_multiple", 2000, "an integer in [1, data.max_image_size (1333)]"),
    ("pad_multiple", -32, "an integer in [1, data.max_image_size (1333)]"),
    ("pad_multiple", 1.5, "pad_multiple"),
    ("pad_multiple", True, "pad_multiple"),
    ("group_by_aspect", 1, "group_by_aspect"),
    ("group_by_aspect", "yes", "group_by_aspect"),
])
def test_bad_padding_and_grouping_values_are_refused_naming_the_key(key, value, words):
    with pytest.raises(ConfigError, match=f"'data.{key}'") as info:
        config_from_dict({"model": {"text_model": MINILM}, "data": {key: value}})
    assert words in str(info.value) and "\n" not in str(info.value)


def test_the_defaults_keep_todays_batches():
    data = config_from_dict({"model": {"text_model": MINILM}}).data
    assert data.group_by_aspect is False and data.pad_multiple == 1
