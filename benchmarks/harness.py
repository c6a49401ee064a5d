"""Shared measurement harness: side-by-side timing, peak memory, machine description, output files.

Machines here are shared and noisy, so every comparison runs its variants *alternately* in the
same process after a warm-up (A B / B A rounds, which cancels slow drift), keeps every sample,
and reports the median plus the median of the per-round ratios (each ratio compares two runs
taken seconds apart, so a noisy neighbour hits both sides alike).
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import os
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from pixelbert.engine.hardware import usable_cores

NOT_MEASURED = "not measured"
# Verdicts read off a cost model fitted to smaller measurements, never off a measurement at the stated scale.
PROJECTED_MET, PROJECTED_NOT_MET = "projected: met", "projected: not met"


# ----------------------------------------------------------------------------- context
@dataclass
class Context:
    """What one benchmark run is asked to do. ``toy``: smallest sizes, for the schema test."""

    suite: str  # cpu | gpu
    toy: bool = False
    out_dir: Path = Path("benchmarks/results/cpu")
    repeats: int = 7
    warmup: int = 2
    # Seconds one benchmark may spend; benchmarks scale their case lists to stay inside it.
    budget_s: float = 300.0
    # --suite gpu --dry-run without CUDA: benchmarks only ``prepare`` (imports, configs), nothing runs.
    dry_run: bool = False

    @property
    def device(self) -> torch.device:
        return torch.device("cuda" if self.suite == "gpu" and torch.cuda.is_available() else "cpu")

    @property
    def on_gpu(self) -> bool:
        return self.device.type == "cuda"

    @property
    def dtype(self) -> torch.dtype:
        """bf16 on GPU (the training precision there), fp32 on CPU (what the CPU path trains in)."""
        return torch.bfloat16 if self.on_gpu else torch.float32

    def sync(self) -> None:
        if self.on_gpu:
            torch.cuda.synchronize()


# ----------------------------------------------------------------------------- timing
def _stats(samples: list[float]) -> dict:
    s = sorted(samples)
    q = statistics.quantiles(s, n=4) if len(s) >= 2 else [s[0], s[0], s[0]]
    return {"median_s": statistics.median(s), "p25_s": q[0], "p75_s": q[2], "min_s": s[0], "n": len(s)}


def _calibrate(fn: Callable[[], Any], sync: Callable[[], None], min_sample_s: float) -> int:
    """Calls per sample so that one sample lasts at least ``min_sample_s`` (timer resolution, launch noise)."""
    number = 1
    while True:
        sync()
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        sync()
        dt = time.perf_counter() - t0
        if dt >= min_sample_s or number >= 1 << 16:
            return number
        number = max(number * 2, int(number * min_sample_s / max(dt, 1e-9)) + 1)


def compare(
    variants: dict[str, Callable[[], Any]],
    *,
    repeats: int = 7,
    warmup: int = 2,
    sync: Callable[[], None] = lambda: None,
    min_sample_s: float = 0.0,
) -> dict:
    """Time ``variants`` alternately; returns per-variant stats (seconds per call) and raw samples.

    Round r runs the variants in order when r is even and reversed when odd (ABBA...), so any
    monotone drift of the machine lands on both sides equally.
    """
    names = list(variants)
    for _ in range(warmup):
        for n in names:
            variants[n]()
    sync()
    numbers = {n: _calibrate(variants[n], sync, min_sample_s) if min_sample_s > 0 else 1 for n in names}
    samples: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        for n in names if r % 2 == 0 else reversed(names):
            fn, k = variants[n], numbers[n]
            sync()
            t0 = time.perf_counter()
            for _ in range(k):
                fn()
            sync()
            samples[n].append((time.perf_counter() - t0) / k)
    return {
        "variants": {n: {**_stats(samples[n]), "calls_per_sample": numbers[n]} for n in names},
        "samples_s": samples,
    }


def paired_ratio(timing: dict, slow: str, fast: str) -> float:
    """Median over rounds of t(slow)/t(fast): > 1 means ``fast`` is faster. Uses same-round pairs."""
    a, b = timing["samples_s"][slow], timing["samples_s"][fast]
    return statistics.median(x / y for x, y in zip(a, b))


def median_ratio(timing: dict, slow: str, fast: str) -> float:
    """Ratio of the two medians: the cross-check of paired_ratio (they differ when noise is large)."""
    return timing["variants"][slow]["median_s"] / timing["variants"][fast]["median_s"]


def spread(timing: dict, name: str) -> float:
    """Relative interquartile spread of one variant: how much to trust a ratio near 1."""
    v = timing["variants"][name]
    return (v["p75_s"] - v["p25_s"]) / v["median_s"] if v["median_s"] > 0 else 0.0


# ----------------------------------------------------------------------------- memory
MEMORY_METHOD_GPU = "torch.cuda.max_memory_allocated() during the call minus memory_allocated() before it"
MEMORY_METHOD_CPU = (
    "peak live bytes of torch's CPU allocator during the call: cumulative sum of the allocation/free "
    "events recorded by torch.profiler(profile_memory=True), relative to the call's start "
    "(not RSS: glibc caching makes RSS deltas meaningless at this size)"
)


def peak_memory(fn: Callable[[], Any], device: torch.device) -> int:
    """Extra bytes at peak while ``fn`` runs (activations, temporaries, new grads). Not timed."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return int(torch.cuda.max_memory_allocated() - base)
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events: list[tuple[int, int]] = []
    stack = list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        node = stack.pop()
        if node.tag == _EventType.Allocation:
            events.append((node.start_time_ns, node.extra_fields.alloc_size))
        stack.extend(node.children)
    cur = peak = 0
    for _, size in sorted(events):
        cur += size
        peak = max(peak, cur)
    return int(peak)


def memory_method(device: torch.device) -> str:
    return MEMORY_METHOD_GPU if device.type == "cuda" else MEMORY_METHOD_CPU


# ----------------------------------------------------------------------------- peak FLOP/s
H200_BF16_DENSE = 989e12  # NVIDIA datasheet, H100/H200 SXM dense bf16 (no sparsity)


def peak_flops(ctx: Context) -> dict:
    """The denominator of MFU. GPU: the datasheet's dense bf16 rate (what MFU is quoted against).
    CPU: no datasheet figure is comparable, so measure a large fp32 matmul in the same run."""
    if ctx.on_gpu:
        name = torch.cuda.get_device_name()
        value = H200_BF16_DENSE if ("H200" in name or "H100" in name) else None
        n = 8192
        a, b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16), torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
        t = compare({"matmul": lambda: a @ b}, repeats=5, warmup=3, sync=torch.cuda.synchronize, min_sample_s=0.05)
        measured = 2 * n**3 / t["variants"]["matmul"]["median_s"]
        del a, b
        return {"flops_per_s": value, "measured_bf16_matmul_flops_per_s": measured,
                "source": (f"datasheet dense bf16 for {name} (989 TFLOP/s); a random 8192^3 bf16 matmul measured "
                           f"{measured / 1e12:.0f} TFLOP/s in this run") if value else f"unknown datasheet for {name}"}
    n = 256 if ctx.toy else 1536
    a, b = torch.randn(n, n), torch.randn(n, n)
    t = compare({"matmul": lambda: a @ b}, repeats=5, warmup=2, min_sample_s=0.05)
    sec = t["variants"]["matmul"]["min_s"]
    return {
        "flops_per_s": 2 * n**3 / sec,
        "source": f"measured: fastest of 5 fp32 {n}x{n}x{n} matmuls, {torch.get_num_threads()} threads, same process",
    }


# ----------------------------------------------------------------------------- results
def target(
    text: str,
    measured: float | None,
    threshold: float | None,
    *,
    higher_is_better: bool = True,
    why: str = "",
    met: bool | str | None = None,
    cross_check: float | None = None,
    projected: bool = False,
) -> dict:
    """One target line: ``met`` is derived from measured vs threshold unless given.

    ``projected``: ``measured`` comes from a cost model, not from a run at the target's scale, so
    the verdict reads "projected: met" / "projected: not met" and ``why`` must say from what.

    ``cross_check``: the same quantity by a second estimator (ratio of medians next to the paired
    ratio). When the two fall on opposite sides of the threshold the verdict is within noise, and
    the line says so rather than pretend to a certainty the machine did not give.
    """
    if met is None:
        if measured is None or threshold is None:
            met = NOT_MEASURED
        else:
            met = bool(measured >= threshold) if higher_is_better else bool(measured <= threshold)
    if projected and isinstance(met, bool):
        met = PROJECTED_MET if met else PROJECTED_NOT_MET
    if cross_check is not None and measured is not None and threshold is not None:
        if (measured >= threshold) != (cross_check >= threshold):
            why = (why + "; " if why else "") + (
                f"inconclusive: the ratio of medians ({cross_check:.3g}) lands on the other side of {threshold:g} "
                "from the paired ratio, so the verdict is within this machine's noise")
    return {"target": text, "measured": measured, "threshold": threshold, "higher_is_better": higher_is_better,
            "met": met, "why": why, "cross_check": cross_check}


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_info() -> dict:
    """Cores, memory, CPU model, accelerator and library versions: what a reader needs to compare."""
    mem_kib = None
    cpu_model = platform.processor()
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_model": cpu_model,
        "logical_cpus": os.cpu_count(),
        "cpus_usable": usable_cores(),
        "torch_threads": torch.get_num_threads(),
        "memory_gib": round(mem_kib / 2**20, 1) if mem_kib else None,
        "load_average_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "cuda_count": torch.cuda.device_count(),
        "versions": {
            d: _version(d)
            for d in ("torch", "torchvision", "transformers", "deepspeed", "nvidia-dali-cuda120", "webdataset", "numpy", "pixelbert")
        },
    }
    info["versions"]["torch_cuda"] = torch.version.cuda
    return info


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def write_json(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, default=_jsonable) + "\n")


def _jsonable(o: Any) -> Any:
    if isinstance(o, (torch.dtype, torch.device, Path)):
        return str(o)
    if hasattr(o, "item"):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


# ----------------------------------------------------------------------------- markdown
def fmt(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, bool) or isinstance(x, str):
        return str(x)
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        if x == 0:
            return "0"
        ax = abs(x)
        if ax >= 1000:
            return f"{x:,.0f}"
        if ax >= 10:
            return f"{x:.1f}"
        if ax >= 0.01:
            return f"{x:.3g}"
        return f"{x:.2e}"
    return str(x)


def md_table(rows: list[dict], columns: list[str] | None = None) -> str:
    if not rows:
        return "_(no rows)_\n"
    cols = columns or list(dict.fromkeys(k for r in rows for k in r))
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        out.append("| " + " | ".join(fmt(r.get(c)) for c in cols) + " |")
    return "\n".join(out) + "\n"


def summary_markdown(results: list[dict], machine: dict) -> str:
    """One page: every target with measured ratio and met, then each benchmark's table."""
    dry = " -- dry run: imports and configs checked, nothing measured" if results and results[0].get("dry_run") else ""
    lines = [f"# Benchmark results ({results[0]['suite'] if results else '?'} suite{dry})\n"]
    v = machine["versions"]
    lines.append(
        f"Machine: {machine['cpu_model']}, {machine['cpus_usable']} usable CPUs ({machine['logical_cpus']} logical), "
        f"{machine['memory_gib']} GiB RAM, accelerator: {machine['cuda'] or 'none'}; torch {v.get('torch')}, "
        f"transformers {v.get('transformers')}, deepspeed {v.get('deepspeed')}, DALI {v.get('nvidia-dali-cuda120')}; "
        f"load average at start {fmt(machine.get('load_average_1m'))}.\n"
    )
    lines.append("## Targets\n")
    lines.append("measured: the paired ratio (median over alternating rounds) unless the target says otherwise; "
                 "cross-check: the ratio of the two medians.\n")
    rows = []
    for r in results:
        for t in r["targets"]:
            rows.append({"benchmark": r["benchmark"], "target": t["target"], "measured": t["measured"],
                         "cross-check": t.get("cross_check"), "threshold": t["threshold"], "met": t["met"],
                         "why / bound": t["why"]})
    lines.append(md_table(rows))
    for r in results:
        lines.append(f"\n## {r['benchmark']}\n")
        lines.append(f"_Run {r['started']}, {r['wall_s']} s, {r.get('torch_threads', '?')} torch thread(s), load average "
                     f"{fmt(r.get('load_average_1m_at_start'))} at start._\n")
        lines.append(f"{r.get('method', '')}\n")
        if r.get("error"):
            lines.append(f"**Error:** `{r['error']}`\n")
        if r.get("table"):
            lines.append(md_table(r["table"]))
        for n in r.get("notes", []):
            lines.append(f"- {n}")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- schema
RESULT_KEYS = {"benchmark": str, "suite": str, "toy": bool, "device": str, "started": str, "wall_s": float,
               "method": str, "cases": list, "table": list, "targets": list, "notes": list}
TARGET_KEYS = {"target", "measured", "threshold", "met", "why"}


def check_schema(result: dict) -> list[str]:
    """Problems with one benchmark's output (empty when fine); used by run.py and the test."""
    problems = []
    for key, typ in RESULT_KEYS.items():
        if key not in result:
            problems.append(f"missing key {key}")
        elif not isinstance(result[key], typ):
            problems.append(f"{key} is {type(result[key]).__name__}, want {typ.__name__}")
    for t in result.get("targets", []):
        missing = TARGET_KEYS - set(t)
        if missing:
            problems.append(f"target {t.get('target')!r} lacks {sorted(missing)}")
        elif not (t["met"] is True or t["met"] is False or t["met"] in (NOT_MEASURED, PROJECTED_MET, PROJECTED_NOT_MET)):
            problems.append(f"target {t['target']!r}: met must be true, false, {NOT_MEASURED!r} or projected")
        elif t["met"] in (False, PROJECTED_MET, PROJECTED_NOT_MET) and not t["why"]:
            problems.append(f"target {t['target']!r}: {t['met']} without a why")
    if not result.get("targets"):
        problems.append("no targets")
    return problems
