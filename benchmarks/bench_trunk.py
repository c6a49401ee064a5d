"""The CNN trunk's pointwise economies, side by side on one trunk: the plain masked forward
against the forward pixelbert runs.

plain: every block's input re-masked, each frozen BatchNorm a multiply and an add of its own
after its conv, NCHW. economised (the default): no re-mask before a Bottleneck's 1x1 convs,
frozen BatchNorm folded into the conv's weight and bias, the trunk's memory format for the
device (backbone.trunk_memory_format: channels_last on CUDA, NCHW on CPU). On CPU the
economised forward also runs channels_last, the measurement behind CPU's NCHW choice; on GPU
also under torch.compile (model.compile_trunk), when the suite's time budget leaves room for
the compile, which is what decides whether that switch goes on by default.
"""

from __future__ import annotations

import contextlib
import time

import torch

from benchmarks import harness
from pixelbert.config import ModelConfig
from pixelbert.modeling import backbone

METHOD = (
    "ResNet-50 trunk with frozen BatchNorm (running statistics randomised as ImageNet weights would hold them), "
    "train mode, one forward + backward of mean(features^2) per call on a padded batch (the second image narrower, "
    "so the masks do work). The same trunk object runs every variant (switches: skip_1x1_remask, fold_frozen_bn; "
    "memory format); outputs are checked equal first. Variants alternate after warm-up; ratio = median over "
    "rounds of t(plain)/t(variant). GPU: bf16 weights and images (as DeepSpeed's bf16 module)."
)
TARGETS = ["trunk economies >= 1.2x on the r50 trunk forward+backward with frozen BatchNorm (side by side)"]
COMPILE_ROOM_S = 150  # budget left that the torch.compile variant needs (its compile, then its rounds)


def _case(ctx: harness.Context) -> dict:
    if ctx.toy:
        return dict(images=2, h=32, w=48, narrow=30)
    if ctx.on_gpu or ctx.dry_run:  # the paper's r50 size, a quarter of its micro-batch
        return dict(images=8, h=800, w=1333, narrow=1000)
    return dict(images=2, h=256, w=416, narrow=320)  # CPU: the reduced size the target names


def _trunk(ctx: harness.Context) -> torch.nn.Module:
    torch.manual_seed(0)
    trunk, _ = backbone.build_backbone(ModelConfig(backbone="resnet50", frozen_bn=True, text_config={"hidden_size": 64}))
    with torch.no_grad():
        for m in trunk.modules():
            if hasattr(m, "running_var"):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    return trunk.to(ctx.device, ctx.dtype).train()


def prepare(ctx: harness.Context) -> list[str]:
    c = _case(ctx)
    with torch.device("meta"):
        trunk, channels = backbone.build_backbone(ModelConfig(backbone="resnet50", frozen_bn=True,
                                                              text_config={"hidden_size": 64}))
    return [f"resnet50 trunk with frozen BatchNorm builds ({channels} channels out); "
            f"case {c['images']} images at {c['h']}x{c['w']}"]


def _inputs(ctx: harness.Context, c: dict):
    g = torch.Generator().manual_seed(0)
    images = torch.randn(c["images"], 3, c["h"], c["w"], generator=g)
    sizes = torch.tensor([[c["h"], c["w"]]] + [[c["h"], c["narrow"]]] * (c["images"] - 1))
    images[1:, :, :, c["narrow"]:] = 0
    return images.to(ctx.device, ctx.dtype), sizes.to(ctx.device)


@contextlib.contextmanager
def _layout(memory_format: torch.memory_format | None):
    """Run the trunk in ``memory_format`` instead of the one chosen for the device (None: as chosen)."""
    chosen = backbone.trunk_memory_format
    if memory_format is not None:
        backbone.trunk_memory_format = lambda device: memory_format
    try:
        yield
    finally:
        backbone.trunk_memory_format = chosen


def _variant(trunk, images, sizes, *, economised: bool, memory_format=None):
    def call():
        trunk.skip_1x1_remask = trunk.fold_frozen_bn = economised
        with _layout(memory_format):
            features, _ = trunk(images, sizes)
            features.float().square().mean().backward()
        trunk.zero_grad(set_to_none=True)
        return features.detach()

    return call


def run(ctx: harness.Context) -> dict:
    c = _case(ctx)
    trunk = _trunk(ctx)
    images, sizes = _inputs(ctx, c)
    started = time.perf_counter()
    variants = {"plain": _variant(trunk, images, sizes, economised=False, memory_format=torch.contiguous_format),
                "economised": _variant(trunk, images, sizes, economised=True)}
    if not ctx.on_gpu:
        variants["economised, channels_last"] = _variant(trunk, images, sizes, economised=True,
                                                         memory_format=torch.channels_last)
    ref = variants["plain"]().float()
    tol = 5e-2 if ctx.dtype == torch.bfloat16 else 1e-4
    for name, fn in variants.items():
        diff = float((fn().float() - ref).abs().max()) / max(float(ref.abs().max()), 1e-12)
        if diff > tol:
            raise AssertionError(f"{name}: features differ from plain by {diff:.2e} of their scale")
    notes = []
    compile_s = None
    # The compile costs tens of seconds once: only on GPU, and only with room left for it and its rounds.
    if ctx.on_gpu and not ctx.toy and ctx.budget_s - (time.perf_counter() - started) > COMPILE_ROOM_S:
        compiled = _trunk(ctx)
        compiled.compile()
        t0 = time.perf_counter()
        variants["economised + torch.compile"] = _variant(compiled, images, sizes, economised=True)
        variants["economised + torch.compile"]()
        ctx.sync()
        compile_s = time.perf_counter() - t0
    elif ctx.on_gpu:
        notes.append(f"torch.compile variant not measured: less than {COMPILE_ROOM_S} s of this benchmark's budget "
                     "was left for its compile (run --only trunk with --budget-s 300 to measure it)")
    timing = harness.compare(variants, repeats=ctx.repeats, warmup=ctx.warmup, sync=ctx.sync)
    table = [{"variant": v, "median_ms": timing["variants"][v]["median_s"] * 1e3, "iqr_rel": harness.spread(timing, v),
              "t(plain)/t(variant)": harness.paired_ratio(timing, "plain", v)} for v in variants]
    ratio = harness.paired_ratio(timing, "plain", "economised")
    where = (f"{c['images']} images at {c['h']}x{c['w']} ({str(ctx.dtype).removeprefix('torch.')}, "
             f"{'one H200' if ctx.on_gpu else f'{torch.get_num_threads()} CPU threads'})")
    why = "" if ratio >= 1.2 else (
        f"{where}: the convolutions dominate here and the economies remove only pointwise passes (a BatchNorm's "
        "multiply and add after every conv, the re-mask before every Bottleneck); "
        + ("on CPU oneDNN's convolutions run far below memory bandwidth, so those passes were a small share of the "
           "step to begin with" if not ctx.on_gpu else "what is left unfused (ReLUs, residual adds, masks before 3x3 "
           "convs, conv bias) is what torch.compile fuses"))
    if compile_s is not None:
        notes.append(f"torch.compile: first call (compile) took {compile_s:.0f} s")
    notes.append(f"case: {where}; memory format chosen for {ctx.device.type}: "
                 f"{'channels_last' if backbone.trunk_memory_format(ctx.device) == torch.channels_last else 'NCHW'}")
    return {"method": METHOD, "cases": [{**c, "timing": timing, "compile_s": compile_s}], "table": table,
            "targets": [harness.target(TARGETS[0], ratio, 1.2, why=why,
                                       cross_check=harness.median_ratio(timing, "plain", "economised"))],
            "notes": notes}
