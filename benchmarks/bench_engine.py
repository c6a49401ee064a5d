"""DeepSpeed engine overhead: ZeRO stages 0/1/2/3 vs a plain PyTorch loop, same model, batch and precision.

All variants live in one process, each with its own copy of the same initial model and its own
optimiser (the same SplitOptimizer: SGD for the CNN, AdamW for the rest), and their steps
alternate. With one process there is nothing to partition, so any difference is the engine's
own bookkeeping (flattening, bucketed copies, hooks, fp32 master weights under bf16), which is
what the overhead target bounds. A second table times the AdamW kernels the hardware decision
chooses between (engine/hardware.py: adamw_impl), on the same parameters.
"""

from __future__ import annotations

import torch

from benchmarks import harness, workload

METHOD = (
    "One training step (pre-training loss, backward, optimiser step, grad clip) per call. plain = "
    "loss.backward(); optimizer.step() with the SplitOptimizer clipping itself, the model in the engine's precision "
    "(GPU: bf16 weights and compute, as DeepSpeed's bf16 module; CPU: fp32); zeroN = deepspeed.initialize with "
    "pixelbert's deepspeed_config at stage N (GPU: DeepSpeed bf16, which also keeps fp32 master weights). One "
    "process, world size 1. Variants alternate after warm-up; overhead = median over rounds of t(zeroN)/t(plain) - 1. "
    "AdamW kernels: SplitOptimizer.step() over the model's AdamW groups (fp32, as the engine's optimiser holds them) "
    "with fixed random gradients, each kernel alternating with the others."
)
TARGETS = ["DeepSpeed engine overhead <= 5% over the plain loop at ZeRO 0, one process"]


def _config(ctx: harness.Context):
    name = "tiny" if (ctx.toy or not (ctx.on_gpu or ctx.dry_run)) else "r50"
    cfg = workload.bench_config(name, toy=ctx.toy)
    if ctx.on_gpu or ctx.dry_run:  # five model copies + optimiser states: keep the micro-batch modest
        cfg.data.micro_batch_size = 8
    return name, cfg


def prepare(ctx: harness.Context) -> list[str]:
    import deepspeed  # noqa: F401 - the engine variants need it

    from pixelbert.engine.trainer import build_engine  # noqa: F401

    name, cfg = _config(ctx)
    return [f"{name}: {workload.check_build(cfg)}", f"deepspeed {deepspeed.__version__} imports"]


def adamw_kernels(ctx: harness.Context, model, cfg) -> tuple[list[dict], dict]:
    """SplitOptimizer.step() over the AdamW groups with each kernel that runs here."""
    from pixelbert.engine.hardware import adamw_impl
    from pixelbert.engine.optim import ADAMW_IMPLS, SplitOptimizer, build_param_groups

    g = torch.Generator(device=ctx.device).manual_seed(0)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=g, device=p.device, dtype=p.dtype) * 1e-3
    impls = ["torch", "torch_fused"] + (["deepspeed_fused"] if adamw_impl(ctx.on_gpu) == "deepspeed_fused" else [])
    steps, failed = {}, {}
    for impl in impls:
        try:
            opt = SplitOptimizer([grp for grp in build_param_groups(model, cfg.train) if grp["rule"] == "adamw"],
                                 adamw_impl=impl)
            opt.step()  # fail here, not inside the timed loop
            steps[impl] = opt.step
        except Exception as e:  # noqa: BLE001 - a kernel that does not run here is reported, not fatal
            failed[impl] = f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
    timing = harness.compare(steps, repeats=ctx.repeats, warmup=ctx.warmup, sync=ctx.sync)
    chosen = adamw_impl(ctx.on_gpu)
    rows = [{"AdamW kernel": ADAMW_IMPLS[i], "chosen here": i == chosen,
             "step_ms": timing["variants"][i]["median_s"] * 1e3,
             "t/t(chosen)": harness.paired_ratio(timing, i, chosen) if chosen in steps else None} for i in steps]
    rows += [{"AdamW kernel": ADAMW_IMPLS[i], "chosen here": i == chosen, "step_ms": None} for i in failed]
    model.zero_grad(set_to_none=True)
    return rows, {"timing": timing, "failed": failed, "chosen": chosen}


def run(ctx: harness.Context) -> dict:
    name, cfg = _config(ctx)
    base, task = workload.build(cfg, ctx.device, torch.float32)
    cpu_batch = workload.synthetic_batch(cfg)
    variants, notes, failed = {}, [], {}

    plain_model = workload.clone(base).to(ctx.dtype)
    plain_opt = workload.plain_optimizer(plain_model, cfg, ctx.on_gpu)
    plain_batch = cpu_batch.to(ctx.device, ctx.dtype)
    variants["plain"] = workload.plain_step_fn(plain_model, task, plain_batch, plain_opt, cfg.train.grad_clip)
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
    timing = harness.compare(variants, repeats=ctx.repeats, warmup=ctx.warmup, sync=ctx.sync)
    table = []
    for v in variants:
        ratio = harness.paired_ratio(timing, v, "plain")
        table.append({"variant": v, "precision": str(ctx.dtype).removeprefix("torch."),
                      "median_ms": timing["variants"][v]["median_s"] * 1e3,
                      "iqr_rel": harness.spread(timing, v), "t/t(plain)": ratio, "overhead_%": (ratio - 1) * 100})
    for v, why in failed.items():
        table.append({"variant": v, "median_ms": None, "t/t(plain)": None, "overhead_%": None})
        notes.append(f"{v} failed to run: {why}")
    kernel_rows, kernels = adamw_kernels(ctx, base, cfg)
    table += kernel_rows
    for impl, why in kernels["failed"].items():
        notes.append(f"AdamW kernel {impl} does not run here: {why}")
    del base
    overhead = next((r["overhead_%"] for r in table if r.get("variant") == "zero0" and r["overhead_%"] is not None),
                    None)
    why = ""
    if overhead is None:
        why = f"ZeRO 0 engine did not run: {failed.get('zero0')}"
    elif overhead > 5:
        why = ("per-step fixed costs of the engine (gradient-norm and overflow checks, its own clipping, hooks"
               f"{', the fp32 master weights and their copy back to bf16' if ctx.on_gpu else ''}) weigh more on a "
               f"{timing['variants']['plain']['median_s'] * 1e3:.0f} ms step; "
               f"noise on this machine: IQR {harness.spread(timing, 'plain'):.0%} of the plain median")
    notes.append(f"model: {name}{' (toy)' if ctx.toy else ''}, micro-batch {cfg.data.micro_batch_size}, "
                 f"{str(ctx.dtype).removeprefix('torch.')} in every variant")
    return {"method": METHOD, "cases": [{"config": name, "micro_batch": cfg.data.micro_batch_size, "timing": timing,
                                         "failed": failed, "adamw_kernels": kernels}],
            "table": table, "targets": [harness.target(
                TARGETS[0], overhead, 5.0, higher_is_better=False, why=why,
                cross_check=(harness.median_ratio(timing, "zero0", "plain") - 1) * 100 if "zero0" in variants else None)],
            "notes": notes}
