"""Bad inputs end to end: pre-training over a shard full of them completes, trains on every good
sample, counts every bad one by kind in the log, and keeps memory bounded; the same raw files
through build_shards are rejected and counted in the manifest.
"""

from __future__ import annotations

import json
import resource

import pytest

from bad_inputs import expected_counts, write_bad_coco
from data_pipeline.build_shards import build_shards
from data_pipeline.records import DataError
from runs import scalars

RSS_GROWTH_BOUND_MB = 500  # one decoded 30000 x 30000 bomb would be 2,700 MB


def trace(series, rank: int) -> list[dict]:
    return [json.loads(line) for line in (series["trace"] / f"trace.rank{rank}.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_every_good_sample_is_trained_on_once_per_epoch(series, bad_shards):
    _, good = bad_shards
    seen = [k for rank in (0, 1) for item in trace(series, rank) if item.get("epoch") == 0 for k in item["keys"]]
    assert sorted(seen) == sorted(good)


@pytest.mark.slow
def test_every_bad_sample_is_counted_by_kind_in_the_log(series, series_dir):
    ends = [next(i for i in trace(series, rank) if i.get("epoch_end") == 0)["bad"] for rank in (0, 1)]
    per_epoch = {k: ends[0].get(k, 0) + ends[1].get(k, 0) for k in ends[0]}
    assert {k: n for k, n in per_epoch.items() if n} == expected_counts()
    for kind in per_epoch:
        logged = scalars(series_dir / "reference", f"data/bad_samples/{kind}")
        for step, value in logged.items():
            counters = [[i["bad"] for i in trace(series, r) if i.get("step") == step][-1] for r in (0, 1)]
            assert value == sum(c[kind] for c in counters), (kind, step)


@pytest.mark.slow
def test_a_30000_by_30000_png_does_not_grow_memory(series):
    for rank in (0, 1):
        rss = json.loads((series["trace"] / f"rss.rank{rank}.json").read_text())
        assert rss["peak"] - rss["before_fit"] < RSS_GROWTH_BOUND_MB, rss


def test_the_same_raw_files_are_rejected_and_counted_by_build_shards(tmp_path):
    write_bad_coco(tmp_path / "raw", n_good=4)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    manifest = build_shards("coco", tmp_path / "raw", tmp_path / "out", workers=1, progress=False)
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before
    train = manifest["splits"]["train"]
    assert train["rejected"] == {"corrupt": 2, "too_large": 1, "bad_record": 1, "empty_text": 1, "missing_image": 1}
    assert train["samples"] == 5  # 4 good + the 10,000-character caption
    assert grown < RSS_GROWTH_BOUND_MB


def test_a_caption_file_that_is_not_utf8_is_one_line_naming_it(tmp_path):
    write_bad_coco(tmp_path / "raw", n_good=1)
    path = tmp_path / "raw" / "annotations" / "captions_train2014.json"
    path.write_bytes(path.read_bytes().replace(b"a picture good0", b"a picture \xff\xfe"))
    with pytest.raises(DataError) as err:
        build_shards("coco", tmp_path / "raw", tmp_path / "out", workers=1, progress=False)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
