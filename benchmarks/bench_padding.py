"""Padding: the share of CNN input pixels that are padding, in batches drawn as training draws them.

A batch is padded to its largest height and largest width, so a landscape image next to a
portrait one pads both to a square. Aspect grouping (``data.group_by_aspect``: batches of one
aspect bucket) removes most of it; rounding H and W up to ``data.pad_multiple`` bounds the set
of shapes cudnn.benchmark meets and adds a little back. Pure arithmetic on image sizes: the
epoch plan is the loaders' own (``EpochPlan``), the sizes after the resize are
``images.target_size``'s and the padded batch size is the collator's ``padded_size``.
"""

from __future__ import annotations

import numpy as np

from benchmarks import harness, workload
from data_pipeline.collate import padded_size
from data_pipeline.images import target_size
from data_pipeline.plan import ASPECT_EDGES, EpochPlan, aspect_buckets

# COCO-like source images (COCO 2014, which the Karpathy split re-cuts), stated approximation of
# its published sizes: the longer side 640 for almost all; about 2/3 landscape (640x480, 640x427,
# a few 16:9 and in between), 1/4 portrait (480x640, 427x640, in between), a few squares
# (640x640, 612x612) and a few panoramas and tall ones. Rows: (share, w range, h range), inclusive.
COCO_LIKE = [
    (0.30, (640, 640), (480, 480)),
    (0.24, (640, 640), (427, 427)),
    (0.06, (640, 640), (360, 360)),
    (0.06, (640, 640), (361, 479)),
    (0.12, (480, 480), (640, 640)),
    (0.10, (427, 427), (640, 640)),
    (0.04, (361, 479), (640, 640)),
    (0.03, (640, 640), (640, 640)),
    (0.02, (612, 612), (612, 612)),
    (0.02, (640, 640), (200, 359)),
    (0.01, (200, 359), (640, 640)),
]
KARPATHY_TRAIN = 113_287  # COCO Karpathy train + restval images: one pre-training epoch of COCO
SHARD_SIZE = 1000  # build_shards' default
RANKS = 8  # one node; every rank's batches are counted
TARGET_PERCENT = 10.0
METHOD = (
    "Sizes: one epoch of COCO-like images (benchmarks/bench_padding.py COCO_LIKE: ~2/3 landscape 640x480/640x427 "
    "and some 16:9, ~1/4 portrait 480x640/427x640, 5% square, 3% panoramas and tall ones; a stated approximation "
    "of COCO's published sizes, seed 0), in shards of 1000, resized as the loaders do (shorter side image_size, "
    "longer at most max_image_size; images.target_size). Batches: the training EpochPlan of configs/<name>.json's "
    "micro-batch on 8 ranks, epoch 0, every batch of every rank; without buckets (today's plan) or with "
    "aspect_buckets of the sizes. Padded fraction = 1 - sum of image pixels / sum of I x H x W over all batches, "
    "(H, W) = collate.padded_size (largest h and w, rounded up to pad_multiple: 1 or the config's). Also: the "
    "worst batch, batches holding a portrait and a landscape image, distinct (H, W) shapes."
)
TARGETS = ["padding <= 10% of CNN input pixels on COCO-shaped batches of 32 (r50 sizes, aspect grouping + rounding)"]


def coco_like_sizes(n: int, seed: int = 0) -> np.ndarray:
    """(n, 2) source (w, h) drawn from COCO_LIKE."""
    rng = np.random.default_rng(seed)
    shares = np.array([share for share, _, _ in COCO_LIKE])
    rows = rng.choice(len(COCO_LIKE), size=n, p=shares / shares.sum())
    lo = np.array([[w[0], h[0]] for _, w, h in COCO_LIKE])[rows]
    hi = np.array([[w[1], h[1]] for _, w, h in COCO_LIKE])[rows]
    return rng.integers(lo, hi + 1)


def _cases(ctx: harness.Context) -> list[dict]:
    if ctx.toy:
        return [dict(name="r50", images=2_000, ranks=2, target=True)]
    return [dict(name="r50", images=KARPATHY_TRAIN, ranks=RANKS, target=True),
            dict(name="x152", images=KARPATHY_TRAIN, ranks=RANKS, target=False)]


def prepare(ctx: harness.Context) -> list[str]:
    out = []
    for c in _cases(ctx):
        d = workload.bench_config(c["name"]).data
        out.append(f"{c['name']}: {d.image_size}/{d.max_image_size} px, batches of {d.micro_batch_size}, "
                   f"group_by_aspect {d.group_by_aspect}, pad_multiple {d.pad_multiple}")
    return out


def _variants(multiple: int) -> list[tuple[str, str | None, int]]:
    """(name, bucket rule, pad multiple): today's plan, each change alone, both."""
    return [("today's plan", None, 1), (f"rounding to {multiple}", None, multiple),
            ("grouping", "aspect", 1), (f"grouping + rounding to {multiple}", "aspect", multiple),
            (f"orientation only (2 buckets) + rounding to {multiple}", "orientation", multiple)]


def measure(resized: np.ndarray, buckets: np.ndarray | None, batch: int, ranks: int, multiple: int) -> dict:
    """Padding of every training batch of epoch 0. resized (n, 2) (h, w); buckets (n,) or None."""
    counts = [np.ones(len(resized[a:a + SHARD_SIZE]), np.int64) for a in range(0, len(resized), SHARD_SIZE)]
    split = None if buckets is None else [buckets[a:a + SHARD_SIZE] for a in range(0, len(resized), SHARD_SIZE)]
    real = padded = mixed = batches = 0
    worst, shapes = 0.0, set()
    for rank in range(ranks):
        plan = EpochPlan(counts, seed=0, shuffle=True, rank=rank, world_size=ranks, batch_size=batch, drop_last=True,
                         buckets=split)
        shards, units = plan.rank_units(0)
        index = shards * SHARD_SIZE + units
        for first in range(0, len(index), batch):
            take = index[first:first + batch]
            sizes = resized[take]
            H, W = padded_size(sizes.tolist(), multiple)
            area, box = int((sizes[:, 0] * sizes[:, 1]).sum()), len(take) * H * W
            real, padded = real + area, padded + box
            worst = max(worst, 1 - area / box)
            shapes.add((H, W))
            batches += 1
            mixed += bool((sizes[:, 0] > sizes[:, 1]).any() and (sizes[:, 0] < sizes[:, 1]).any())
    return {"padded_%": 100 * (1 - real / padded), "worst_batch_%": 100 * worst, "batches": batches,
            "portrait_with_landscape": int(mixed), "shapes": len(shapes)}


def run(ctx: harness.Context) -> dict:
    table, cases, notes = [], [], []
    measured = None
    for case in _cases(ctx):
        d = workload.bench_config(case["name"]).data
        source = coco_like_sizes(case["images"])  # (w, h)
        resized = np.array([target_size(int(h), int(w), d.image_size, d.max_image_size) for w, h in source])
        rules = {"aspect": aspect_buckets(source[:, None, :]),
                 "orientation": (source[:, 1] > source[:, 0]).astype(np.int64)}  # portrait vs the rest
        multiple = d.pad_multiple if d.pad_multiple > 1 else 32
        rows = []
        for name, rule, m in _variants(multiple):
            row = {"config": case["name"], "variant": name, "pad_multiple": m,
                   **measure(resized, rules.get(rule), d.micro_batch_size, case["ranks"], m)}
            rows.append(row)
            if case["target"] and rule == "aspect" and m > 1:
                measured = row["padded_%"]
        table += rows
        cases.append({**case, "image_size": d.image_size, "max_image_size": d.max_image_size,
                      "batch": d.micro_batch_size, "rows": rows})
    notes.append(f"aspect buckets: w/h edges {', '.join(f'{e:.3g}' for e in ASPECT_EDGES)} (tall | portrait | "
                 "landscape or square | wide); orientation only: portrait (h > w) vs the rest")
    notes.append("portrait_with_landscape: batches holding both (grouped: only among the at most buckets - 1 last "
                 "batches of a rank's epoch); shapes: distinct padded (H, W) over the epoch")
    why = "" if measured is None or measured <= TARGET_PERCENT else (
        "two sizes of one orientation (4:3 and 3:2) still share a batch's width")
    targets = [harness.target(TARGETS[0], measured, TARGET_PERCENT, higher_is_better=False, why=why)]
    return {"method": METHOD, "cases": cases, "table": table, "targets": targets, "notes": notes}
