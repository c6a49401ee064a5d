"""Training-step throughput: samples/s, tokens/s and model-FLOPs utilisation (MFU).

The step is the trainer's: the pre-training task's loss through the DeepSpeed engine built by
pixelbert (config's ZeRO stage, hardware-chosen precision), backward, optimiser step, on a
synthetic batch of the config's shapes (so data loading is excluded; see the dataload benchmark).
"""

from __future__ import annotations

import gc

import torch

from benchmarks import harness, workload
from pixelbert.engine.trainer import zero_stage

METHOD = (
    "DeepSpeed engine step (pixelbert's deepspeed_config + SplitOptimizer, the config's ZeRO stage) on a fixed "
    "synthetic pre-training batch; median of repeats after warm-up. samples/s = images per step / t; tokens/s = "
    "attended tokens (real text + sampled pixels) / t; MFU = FLOPs per step / t / peak. " + workload.FLOPS_FORMULA
)
TARGETS = ["r50 pre-training on one H200 at >= 20% MFU"]


def _configs(ctx: harness.Context) -> list[str]:
    if ctx.toy or not (ctx.on_gpu or ctx.dry_run):
        return ["tiny"]
    return ["r50", "x152"]


def prepare(ctx: harness.Context) -> list[str]:
    import deepspeed

    from pixelbert.engine.trainer import build_engine  # noqa: F401

    return [f"{name}: {workload.check_build(workload.bench_config(name, toy=ctx.toy))}" for name in _configs(ctx)] + [
        f"deepspeed {deepspeed.__version__} imports"]


def measure(ctx: harness.Context, name: str, peak: dict) -> dict:
    cfg = workload.bench_config(name, toy=ctx.toy)
    micro = cfg.data.micro_batch_size
    while True:  # on GPU: halve the micro-batch until it fits, and say so
        try:
            return _measure_at(ctx, cfg, name, micro, peak)
        except torch.cuda.OutOfMemoryError:
            if micro == 1:
                raise
            micro //= 2
            gc.collect()
            torch.cuda.empty_cache()


def _measure_at(ctx, cfg, name, micro, peak) -> dict:
    cfg.data.micro_batch_size = micro
    model, task = workload.build(cfg, ctx.device, torch.float32)
    cpu_batch = workload.synthetic_batch(cfg, micro)
    flops = workload.flops_per_step(model, cpu_batch.to(ctx.device), cfg)
    # Cross-check of the formula: FlopCounterMode over a real fwd+bwd of a 2-image slice (fp32, cheap).
    small = workload.synthetic_batch(cfg, 2).to(ctx.device, torch.float32)
    check = {"counted": workload.counted_flops(model, task, small),
             "formula": workload.flops_per_step(model, small, cfg)["total"]}
    engine, hw = workload.make_engine(model, cfg, zero_stage(cfg))
    batch = cpu_batch.to(hw.device, hw.dtype)
    step = workload.engine_step_fn(engine, task, batch)
    with torch.no_grad():
        _, metrics = task.loss(engine, batch)
    tokens = float(metrics["tokens"])
    timing = harness.compare({"step": step}, repeats=ctx.repeats, warmup=ctx.warmup, sync=ctx.sync)
    mem = harness.peak_memory(step, ctx.device) if ctx.on_gpu else None
    t = timing["variants"]["step"]["median_s"]
    achieved = flops["total"] / t
    mfu = achieved / peak["flops_per_s"] if peak["flops_per_s"] else None
    del engine, model, step
    gc.collect()
    if ctx.on_gpu:
        torch.cuda.empty_cache()
    return {"config": name + (" (toy)" if ctx.toy else ""), "micro_batch": micro,
            "zero_stage": zero_stage(cfg), "precision": hw.precision, "hardware": hw.describe(),
            "image_hw": list(batch.images.shape[-2:]), "step_s": t, "iqr_rel": harness.spread(timing, "step"),
            "samples_per_s": micro / t, "tokens_per_s": tokens / t, "flops_per_step": flops, "achieved_flops_per_s": achieved,
            "mfu": mfu, "peak_memory_bytes": mem, "flops_check_2_images": check, "timing": timing}


def run(ctx: harness.Context) -> dict:
    peak = harness.peak_flops(ctx)
    cases, table = [], []
    for name in _configs(ctx):
        c = measure(ctx, name, peak)
        cases.append(c)
        f = c["flops_per_step"]
        table.append({"config": c["config"], "micro-batch": c["micro_batch"], "precision": c["precision"],
                      "ZeRO": c["zero_stage"], "step_ms": c["step_s"] * 1e3, "samples/s": c["samples_per_s"],
                      "tokens/s": c["tokens_per_s"], "GFLOP/step": f["total"] / 1e9,
                      "CNN share": f["cnn"] / f["total"],
                      "counted/formula": c["flops_check_2_images"]["counted"] / c["flops_check_2_images"]["formula"],
                      "TFLOP/s": c["achieved_flops_per_s"] / 1e12,
                      "MFU_%": None if c["mfu"] is None else c["mfu"] * 100})
    r50 = next((c for c in cases if c["config"] == "r50"), None)
    if r50 is None:
        tgt = harness.target(TARGETS[0], None, 20.0, why="needs an H200 (GPU suite); this run had no GPU")
    else:
        mfu = r50["mfu"] * 100 if r50["mfu"] is not None else None
        why = "" if mfu is not None and mfu >= 20 else (
            f"CNN share of FLOPs {r50['flops_per_step']['cnn'] / r50['flops_per_step']['total']:.0%}: the trunk's "
            "pointwise passes (padding masks before 3x3 convs, ReLUs, residual adds, conv bias) run unfused between "
            "the convolutions in eager mode (model.compile_trunk fuses them; see the trunk benchmark)")
        tgt = harness.target(TARGETS[0], mfu, 20.0, why=why)
    notes = [f"peak FLOP/s: {harness.fmt(peak['flops_per_s'])} ({peak['source']})",
             "counted/formula: FlopCounterMode over one real fwd+bwd of 2 images vs the formula at the same shapes "
             "(the formula leaves out norms, activations, the loss and the first conv's unneeded input gradient)",
             "MFU on CPU is against a measured fp32 matmul, so it reads as 'fraction of what this CPU's BLAS reaches'"]
    notes += [f"{c['config']}: " + ", ".join(f"{k} {v}" for k, v in c["hardware"].items()) for c in cases]
    return {"method": METHOD, "cases": cases, "table": table, "targets": [tgt], "notes": notes, "peak": peak}
