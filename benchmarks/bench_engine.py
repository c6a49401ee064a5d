"""DeepSpeed engine overhead: ZeRO stages 0/1/2/3 vs a plain PyTorch loop, same model and batch.

All variants live in one process, each with its own copy of the same initial model and its own
optimiser (the same SplitOptimizer: SGD for the CNN, AdamW for the rest), and their steps
alternate. With one process there is nothing to partition, so any difference is the engine's
own bookkeeping (flattening, bucketed copies, hooks), which is what the overhead target bounds.
"""

from __future__ import annotations

import torch

from benchmarks import harness, workload

METHOD = (
    "One training step (pre-training loss, backward, optimiser step, grad clip) per call. plain = "
    "loss.backward(); optimizer.step() with the SplitOptimizer clipping itself (GPU: fp32 weights under "
    "torch.autocast bf16, the plain-PyTorch way to train in bf16); zeroN = deepspeed.initialize with pixelbert's "
    "deepspeed_config at stage N (GPU: DeepSpeed bf16). One process, world size 1. Variants alternate after warm-up; "
    "overhead = median over rounds of t(zeroN)/t(plain) - 1."
)
TARGETS = ["DeepSpeed engine overhead <= 5% over the plain loop at ZeRO 0, one process"]


def run(ctx: harness.Context) -> dict:
    name = "tiny" if (ctx.toy or not ctx.on_gpu) else "r50"
    cfg = workload.bench_config(name, toy=ctx.toy)
    if ctx.on_gpu:  # five model copies + optimiser states: keep the micro-batch modest
        cfg.data.micro_batch_size = 8
    base, task = workload.build(cfg, ctx.device, torch.float32)
    cpu_batch = workload.synthetic_batch(cfg)
    variants, notes, failed = {}, [], {}

    plain_model = workload.clone(base)
    plain_opt = workload.plain_optimizer(plain_model, cfg, ctx.on_gpu)
    plain_batch = cpu_batch.to(ctx.device, torch.float32)
    variants["plain"] = workload.plain_step_fn(plain_model, task, plain_batch, plain_opt, cfg.train.grad_clip,
                                               torch.bfloat16 if ctx.on_gpu else None)
    stages = [0, 1, 2, 3]
    for zero in stages:
        try:
            engine, hw = workload.make_engine(workload.clone(base), cfg, zero)
            batch = cpu_batch.to(hw.device, hw.dtype)
            fn = workload.engine_step_fn(engine, task, batch)
            fn()  # fail here, not inside the timed loop
            variants[f"zero{zero}"] = fn
        except Exception as e:  # noqa: BLE001 - one stage failing must not hide the others
            failed[f"zero{zero}"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
    del base
    timing = harness.compare(variants, repeats=ctx.repeats, warmup=ctx.warmup, sync=ctx.sync)
    table = []
    for v in variants:
        ratio = harness.paired_ratio(timing, v, "plain")
        table.append({"variant": v, "median_ms": timing["variants"][v]["median_s"] * 1e3,
                      "iqr_rel": harness.spread(timing, v), "t/t(plain)": ratio, "overhead_%": (ratio - 1) * 100})
    for v, why in failed.items():
        table.append({"variant": v, "median_ms": None, "t/t(plain)": None, "overhead_%": None})
        notes.append(f"{v} failed to run: {why}")
    overhead = next((r["overhead_%"] for r in table if r["variant"] == "zero0" and r["overhead_%"] is not None), None)
    why = ""
    if overhead is None:
        why = f"ZeRO 0 engine did not run: {failed.get('zero0')}"
    elif overhead > 5:
        why = ("per-step fixed costs of the engine (gradient-norm and overflow checks, its own clipping, "
               f"hooks) weigh more on a {timing['variants']['plain']['median_s'] * 1e3:.0f} ms step; "
               f"noise on this machine: IQR {harness.spread(timing, 'plain'):.0%} of the plain median")
    notes.append(f"model: {name}{' (toy)' if ctx.toy else ''}, micro-batch {cfg.data.micro_batch_size}")
    return {"method": METHOD, "cases": [{"config": name, "micro_batch": cfg.data.micro_batch_size, "timing": timing,
                                         "failed": failed}],
            "table": table, "targets": [harness.target(
                TARGETS[0], overhead, 5.0, higher_is_better=False, why=why,
                cross_check=(harness.median_ratio(timing, "zero0", "plain") - 1) * 100 if "zero0" in variants else None)],
            "notes": notes}
