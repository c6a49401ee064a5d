"""Retrieval scoring: CNN once per image (cached pixel tokens) vs the naive per-pair forward.

Ranking a test set scores every (image, caption) pair with the ITM head. The CNN depends on the
image alone, so its pixel tokens can be computed once and shared by all captions; the naive way
runs the whole model, CNN included, for every pair. The speed-up is bounded by FLOPs:
(CNN + transformer) / transformer per pair once the CNN is amortised, so it grows with the CNN's
weight (image size, trunk) and shrinks with the joint sequence length.
"""

from __future__ import annotations

import torch

from benchmarks import harness, workload
from pixelbert.batch import Batch

METHOD = (
    "Same pairs for both: I images x C captions each, eval mode, no grad, rows in chunks. cnn_once = "
    "model.encode_images once for the I images, then model.forward_tokens + retrieval_scores per chunk of rows "
    "(image_index picks each row's cached tokens); per_pair = model(Batch) per chunk with every row's image "
    "copied in (the CNN runs once per pair). Scores checked equal. Alternating after warm-up; ratio = median "
    "over rounds of t(per_pair)/t(cnn_once); pairs/s = pairs / t."
)
TARGETS = ["CNN-once retrieval scoring >= 5x faster than per-pair scoring"]
COCO_1K_PAIRS = 1000 * 5000  # COCO 1K test: every image against every caption


def _cases(ctx: harness.Context) -> list[dict]:
    if ctx.toy:
        return [dict(name="tiny", overrides=[], images=2, captions=4, chunk=4, target=True)]
    if ctx.on_gpu:
        return [dict(name="r50", overrides=[], images=8, captions=64, chunk=64, target=True),
                dict(name="x152", overrides=[], images=8, captions=64, chunk=64, target=False)]
    return [
        # R50 + BERT-base, at a third of the paper's image side so that the naive pass fits the CPU budget.
        dict(name="r50", overrides=["data.image_size=320", "data.max_image_size=533"], images=2, captions=8, chunk=8,
             target=True),
        dict(name="tiny", overrides=[], images=16, captions=16, chunk=64, target=False),
    ]


def _forward_flops(model, images: torch.Tensor, rows: int, seq_len: int) -> dict:
    """Forward FLOPs per pair for both methods: CNN counted, transformer 2*P*S + 4*layers*D*S^2."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.backbone(images[:1], None)
    cnn = counter.get_total_flops()
    bert = model.bert.config
    params = sum(p.numel() for p in model.bert.encoder.parameters())
    transformer = 2 * params * seq_len + 4 * bert.num_hidden_layers * bert.hidden_size * seq_len**2
    return {"cnn_per_image": cnn, "transformer_per_pair": transformer, "images": images.shape[0], "rows": rows}


def measure(ctx: harness.Context, case: dict) -> dict:
    cfg = workload.bench_config(case["name"], toy=ctx.toy, overrides=case["overrides"])
    model, _ = workload.build(cfg, ctx.device, ctx.dtype)
    model.eval()
    b = workload.synthetic_batch(cfg, case["images"], captions_per_image=case["captions"])
    b = workload.to_device(b, ctx.device, ctx.dtype)
    rows, chunk = b.input_ids.shape[0], case["chunk"]
    index = b.row_images()

    @torch.no_grad()
    def cnn_once():
        pixels = model.encode_images(b.images, b.pixel_mask)
        return torch.cat([model.retrieval_scores(model.forward_tokens(
            b.input_ids[s:s + chunk], b.attention_mask[s:s + chunk], pixels, index[s:s + chunk]))
            for s in range(0, rows, chunk)])

    @torch.no_grad()
    def per_pair():
        out = []
        for s in range(0, rows, chunk):
            idx = index[s:s + chunk]
            pair = Batch(images=b.images[idx], pixel_mask=b.pixel_mask[idx], input_ids=b.input_ids[s:s + chunk],
                         attention_mask=b.attention_mask[s:s + chunk])
            out.append(model.retrieval_scores(model(pair)))
        return torch.cat(out)

    a, p = cnn_once().float(), per_pair().float()
    tol = 5e-2 if ctx.dtype == torch.bfloat16 else 1e-3
    max_diff = float((a - p).abs().max())
    if max_diff > tol * max(1.0, float(a.abs().max())):
        raise AssertionError(f"cnn_once and per_pair scores differ by {max_diff}")
    with torch.no_grad():
        seq = model.encode_images(b.images[:1], b.pixel_mask[:1]).tokens.shape[1] + b.input_ids.shape[1]
    flops = _forward_flops(model, b.images, rows, seq)
    f_once = flops["cnn_per_image"] * case["images"] + flops["transformer_per_pair"] * rows
    f_pair = (flops["cnn_per_image"] + flops["transformer_per_pair"]) * rows
    timing = harness.compare({"per_pair": per_pair, "cnn_once": cnn_once}, repeats=ctx.repeats, warmup=ctx.warmup,
                             sync=ctx.sync)
    ratio = harness.paired_ratio(timing, "per_pair", "cnn_once")
    t_once = timing["variants"]["cnn_once"]["median_s"]
    return {**case, "config": case["name"], "image_hw": list(b.images.shape[-2:]), "seq_len": seq, "pairs": rows,
            "timing": timing, "ratio": ratio, "flops": flops, "flop_ratio_bound": f_pair / f_once,
            "flop_ratio_bound_large_C": (flops["cnn_per_image"] + flops["transformer_per_pair"]) / flops["transformer_per_pair"],
            "pairs_per_s_cnn_once": rows / t_once,
            "pairs_per_s_per_pair": rows / timing["variants"]["per_pair"]["median_s"],
            "coco1k_hours_cnn_once": COCO_1K_PAIRS / (rows / t_once) / 3600, "max_score_diff": max_diff}


def run(ctx: harness.Context) -> dict:
    cases, table = [], []
    for case in _cases(ctx):
        c = measure(ctx, case)
        cases.append(c)
        table.append({"config": c["config"], "image": "x".join(map(str, c["image_hw"])), "tokens": c["seq_len"],
                      "pairs": c["pairs"], "per_pair pairs/s": c["pairs_per_s_per_pair"],
                      "cnn_once pairs/s": c["pairs_per_s_cnn_once"], "per_pair/cnn_once": c["ratio"],
                      "FLOP bound (this C)": c["flop_ratio_bound"], "FLOP bound (C->inf)": c["flop_ratio_bound_large_C"],
                      "COCO-1K h (cnn_once)": c["coco1k_hours_cnn_once"]})
    head = next(c for c in cases if c["target"])
    why = "" if head["ratio"] >= 5 else (
        f"bounded by FLOPs: per pair the CNN costs {head['flops']['cnn_per_image'] / 1e9:.1f} GFLOP and the "
        f"{head['seq_len']}-token transformer {head['flops']['transformer_per_pair'] / 1e9:.1f} GFLOP, so even a free "
        f"CNN gives at most {head['flop_ratio_bound_large_C']:.1f}x ({head['flop_ratio_bound']:.1f}x at "
        f"{head['captions']} captions per image)")
    notes = [f"target judged on {head['config']} at {'x'.join(map(str, head['image_hw']))}",
             "COCO-1K h: hours to score 1K images x 5K captions at the measured cnn_once rate"]
    return {"method": METHOD, "cases": cases, "table": table,
            "targets": [harness.target(TARGETS[0], head["ratio"], 5.0, why=why)], "notes": notes}
