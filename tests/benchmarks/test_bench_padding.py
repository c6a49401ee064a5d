"""benchmarks/bench_padding.py: the padded fraction is the collator's arithmetic, and a toy run
writes a valid result (no threshold is asserted: the committed run holds the numbers)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from benchmarks import bench_padding, harness  # noqa: E402


def test_the_padded_fraction_counts_every_padded_pixel_of_every_batch():
    resized = np.array([[800, 1067], [1067, 800]] * 2)  # (h, w): landscape, portrait, twice
    mixed = bench_padding.measure(resized, None, batch=4, ranks=1, multiple=1)  # one batch: 1067 x 1067
    assert abs(mixed["padded_%"] - 100 * (1 - 800 * 1067 / 1067**2)) < 1e-9 and mixed["shapes"] == 1
    assert mixed["portrait_with_landscape"] == mixed["batches"] == 1
    grouped = bench_padding.measure(resized, np.array([2, 1, 2, 1]), batch=2, ranks=1, multiple=1)
    assert grouped["padded_%"] == 0 and grouped["portrait_with_landscape"] == 0 and grouped["shapes"] == 2
    rounded = bench_padding.measure(resized, np.array([2, 1, 2, 1]), batch=2, ranks=1, multiple=32)
    assert abs(rounded["padded_%"] - 100 * (1 - 800 * 1067 / (800 * 1088))) < 1e-9


def test_the_size_distribution_is_about_two_thirds_landscape_and_a_quarter_portrait():
    w, h = bench_padding.coco_like_sizes(20_000).T
    assert abs((w > h).mean() - 0.68) < 0.02 and abs((h > w).mean() - 0.27) < 0.02 and max(w.max(), h.max()) == 640


def test_a_toy_run_gives_every_variant_side_by_side_and_a_valid_result():
    result = bench_padding.run(harness.Context(suite="cpu", toy=True))
    result = {"benchmark": "padding", "suite": "cpu", "toy": True, "device": "cpu", "started": "", "wall_s": 0.0,
              "notes": [], **result}
    assert harness.check_schema(result) == []
    variants = [row["variant"] for row in result["table"]]
    assert variants[:4] == ["today's plan", "rounding to 32", "grouping", "grouping + rounding to 32"]
    today, both = result["table"][0]["padded_%"], result["table"][3]["padded_%"]
    assert both < today and result["targets"][0]["measured"] == both
