"""Bad data inside shards built elsewhere: skipped and counted by both backends, never fatal.

The shards here bypass the builder's validation, as shards from another tool (or damaged on
disk) would. DALI on its own stops the whole pipeline at the first undecodable image.
"""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image

from data_pipeline.loaders import build_loader
from data_pipeline.shards import FORMAT, write_index, write_tar

from data_helpers import BACKENDS, assert_same_batch, make_config
from fake_datasets import image_bytes


def _png(w, h):
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (30, 60, 90)).save(buf, "PNG")
    return buf.getvalue()


def _record(key, caption="a small red car"):
    return json.dumps({"key": key, "split": "val", "image_ids": [key], "captions": [caption]}).encode()


BAD = {  # key -> (components, kind)
    "garbage": ([("jpg", b"\xff\xd8 not really a jpeg")], "corrupt"),
    "truncjpg": ([("jpg", image_bytes(7)[:300])], "corrupt"),
    "truncpng": ([("png", image_bytes(8, "PNG")[:200])], "corrupt"),
    "noimage": ([], "corrupt"),
    "bomb": ([("png", _png(2000, 1500))], "too_large"),  # 3M pixels, over the 1M limit below
    "badjson": ([("jpg", image_bytes(9))], "bad_record"),
    "nocaption": ([("jpg", image_bytes(10))], "empty_text"),
}


def write_foreign_shards(root, n_good=12, bad=tuple(BAD), split="val"):
    """Two shards mixing good samples with the ``bad`` ones; manifest written by hand."""
    samples = []
    for i in range(n_good):
        samples.append((f"good{i:02d}", [("jpg", image_bytes(100 + i))]))
        if i < len(bad):
            samples.append((bad[i], BAD[bad[i]][0]))
    root.mkdir(parents=True, exist_ok=True)
    shards = []
    for n, part in enumerate((samples[: len(samples) // 2], samples[len(samples) // 2:])):
        rows = []
        for key, comps in part:
            body = b'{"key": "badjson", "image_ids": [' if key == "badjson" else _record(key, "  " if key == "nocaption" else "a small red car")
            rows.append((key, comps + [("json", body)]))
        tar = root / f"{split}-{n:06d}.tar"
        write_index(tar, tar.with_suffix(".idx"), write_tar(tar, rows))
        shards.append({"tar": tar.name, "index": tar.with_suffix(".idx").name, "samples": len(rows)})
    manifest = {"format": FORMAT, "dataset": "coco", "tasks": ["pretrain", "retrieval"], "images_per_sample": 1,
                "splits": {split: {"samples": len(samples), "shards": shards}}}
    (root / "manifest.json").write_text(json.dumps(manifest))
    return [k for k, _ in samples if k.startswith("good")]


def read(root, backend, tokenizer, split="val", world=1, **data):
    out = []
    for rank in range(world):
        cfg = make_config(root, "pretrain", backend, max_image_pixels=1_000_000, **data)
        loader = build_loader(cfg, split, rank, world, tokenizer=tokenizer)
        out.append((list(loader), loader.bad_samples))
    return out


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_bad_kind_is_skipped_and_counted_and_good_samples_all_come_through(backend, tmp_path, tokenizer):
    good = write_foreign_shards(tmp_path)
    [(batches, counts)] = read(tmp_path, backend, tokenizer)
    assert [k for b in batches for k in b.meta["keys"]] == good
    assert counts == {"corrupt": 4, "too_large": 1, "bad_record": 1, "empty_text": 1}


def test_backends_agree_on_shards_with_bad_data(tmp_path, tokenizer):
    write_foreign_shards(tmp_path)
    [(a, count_a)], [(b, count_b)] = (read(tmp_path, backend, tokenizer) for backend in BACKENDS)
    assert count_a == count_b and len(a) == len(b)
    for x, y in zip(a, b):
        assert_same_batch(x, y)


@pytest.mark.parametrize("backend", BACKENDS)
def test_shuffled_training_with_bad_data_on_two_ranks(backend, tmp_path, tokenizer):
    good = write_foreign_shards(tmp_path, n_good=13, split="train")  # 20 units: 10 per rank, batches of 5
    parts = read(tmp_path, backend, tokenizer, split="train", world=2, micro_batch_size=5)
    keys = [k for batches, _ in parts for b in batches for k in b.meta["keys"]]
    assert sorted(keys) == sorted(good)
    total = {k: sum(c[k] for _, c in parts) for k in parts[0][1]}
    assert total == {"corrupt": 4, "too_large": 1, "bad_record": 1, "empty_text": 1}


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_shard_of_nothing_but_bad_images_ends_the_epoch_cleanly(backend, tmp_path, tokenizer):
    root = tmp_path / "only_bad"
    bad = ("garbage", "truncjpg", "noimage", "garbage")
    samples = [(f"{k}{i}", BAD[k][0] + [("json", _record(f"{k}{i}"))]) for i, k in enumerate(bad)]
    root.mkdir()
    write_index(root / "val-000000.tar", root / "val-000000.idx", write_tar(root / "val-000000.tar", samples))
    manifest = {"format": FORMAT, "dataset": "coco", "tasks": ["pretrain"], "images_per_sample": 1,
                "splits": {"val": {"samples": 4, "shards": [{"tar": "val-000000.tar", "index": "val-000000.idx", "samples": 4}]}}}
    (root / "manifest.json").write_text(json.dumps(manifest))
    [(batches, counts)] = read(root, backend, tokenizer, micro_batch_size=2)
    assert batches == [] and counts["corrupt"] == 4
