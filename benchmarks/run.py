"""Run the benchmark suites: ``python benchmarks/run.py --suite cpu|gpu [--only NAME] [--out DIR] [--toy]``.

Writes one JSON per benchmark, machine.json and summary.md into --out. A benchmark that fails
still writes its JSON (with the error and every target "not measured"), so one broken path
never hides the others' numbers. Only an explicit --out writes into benchmarks/results/ (the
committed figures); without it results go to runs/benchmarks/, and --toy never writes there.
``--suite gpu --dry-run`` on a machine without CUDA takes every GPU benchmark through its
imports and configs and records its targets as "not measured" (needs CUDA).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("PYTHONWARNINGS", "ignore::FutureWarning")
# DeepSpeed JIT-builds its CPU comm op into ~/.cache/torch_extensions, keyed by name only: two checkouts
# with different include paths rebuild it in turn under one lock (minutes each). A per-checkout folder
# pays one build and keeps it.
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(ROOT / "runs" / "torch_extensions"))  # torch.distributed deprecations, per step
import warnings  # noqa: E402

warnings.filterwarnings("ignore", category=FutureWarning)

import torch  # noqa: E402

from benchmarks import harness  # noqa: E402
from pixelbert.engine.hardware import usable_cores  # noqa: E402

# Order: cheap, self-contained first; the ones needing shards or subprocesses last.
BENCHMARKS = ["attention", "sampling", "padding", "trunk", "train_step", "engine", "retrieval", "dataload", "scaling"]
# On the GPU the device time is short: the headline targets first, so a cut-off loses the least.
# padding: arithmetic on image sizes, the same on any machine; last, as it needs no device time.
GPU_ORDER = ["train_step", "trunk", "attention", "dataload", "engine", "sampling", "retrieval", "scaling", "padding"]
MIN_LEFT_S = 15.0  # below this much suite time left, a benchmark is skipped (and says so)
# Share of the suite's time budget each benchmark may use (gpu_suite.sh: 7 minutes in all), among those run.
BUDGET_SHARE = {"attention": 0.12, "sampling": 0.06, "trunk": 0.15, "train_step": 0.2, "engine": 0.17,
                "retrieval": 0.08, "dataload": 0.12, "scaling": 0.1, "padding": 0.02}
RESULTS = ROOT / "benchmarks" / "results"  # committed figures: written only with an explicit --out
NEEDS_CUDA = "needs CUDA: dry run on a machine without it (imports and configs checked)"


def dry_run(module, ctx: harness.Context) -> dict:
    """What a GPU run would do up to its first CUDA call: each benchmark's ``prepare`` loads its
    configs, builds its models on the meta device and imports what it runs."""
    checked = module.prepare(ctx)
    return {"method": module.METHOD, "table": [{"checked": line} for line in checked],
            "targets": [harness.target(t, None, None, why=NEEDS_CUDA) for t in module.TARGETS]}


def run_one(name: str, ctx: harness.Context, skip_reason: str | None = None) -> dict:
    module = importlib.import_module(f"benchmarks.bench_{name}")
    started, t0 = harness.now(), time.perf_counter()
    base = {"benchmark": name, "suite": ctx.suite, "toy": ctx.toy, "dry_run": ctx.dry_run, "device": str(ctx.device),
            "started": started, "torch_threads": torch.get_num_threads(),
            "load_average_1m_at_start": os.getloadavg()[0],
            "method": getattr(module, "METHOD", ""), "cases": [], "table": [], "targets": [], "notes": []}
    try:
        if skip_reason:
            raise TimeoutError(skip_reason)
        result = {**base, **(dry_run(module, ctx) if ctx.dry_run else module.run(ctx))}
    except Exception as e:  # keep going: the other benchmarks' numbers still count
        traceback.print_exc()
        result = {**base, "error": f"{type(e).__name__}: {e}",
                  "targets": [harness.target(t, None, None, why=f"benchmark failed: {type(e).__name__}: {e}")
                              for t in getattr(module, "TARGETS", [])]}
    if ctx.toy:  # toy sizes exercise the code path; their ratios say nothing about the targets
        for t in result["targets"]:
            t["met"], t["why"] = harness.NOT_MEASURED, "toy run: checks the path and the output, not speed"
    result["wall_s"] = round(time.perf_counter() - t0, 2)
    return result


def _with_earlier(out: Path, results: list[dict]) -> list[dict]:
    """This run's results plus earlier ones already in ``out`` (an --only rerun keeps the rest of the page)."""
    import json

    fresh = {r["benchmark"]: r for r in results}
    merged = []
    for name in BENCHMARKS:
        if name in fresh:
            merged.append(fresh[name])
        elif (out / f"{name}.json").is_file():
            earlier = json.loads((out / f"{name}.json").read_text())
            # Results written before dry runs existed carry no "dry_run": they were measured runs.
            if all(earlier.get(k, False) == results[0].get(k, False) for k in ("suite", "toy", "dry_run")):
                merged.append(earlier)
    return merged


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite", choices=["cpu", "gpu"], required=True)
    ap.add_argument("--only", action="append", choices=BENCHMARKS, help="run only this benchmark (repeatable)")
    ap.add_argument("--out", type=Path, default=None, help="output folder (default benchmarks/results/<suite>)")
    ap.add_argument("--toy", action="store_true", help="smallest sizes: checks that every path runs, not speed")
    ap.add_argument("--repeats", type=int, default=None, help="timed rounds per comparison (default 7, toy 3)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (default: all usable cores; toy: 1, which is what a shared CI box runs best)")
    ap.add_argument("--budget-s", type=float, default=None, help="total seconds for the suite (default cpu 3600, gpu 420)")
    ap.add_argument("--dry-run", action="store_true",
                    help="--suite gpu without CUDA: check every benchmark's imports and configs, measure nothing")
    args = ap.parse_args(argv)

    if args.suite == "gpu" and not torch.cuda.is_available() and not args.dry_run:
        print("--suite gpu: CUDA is not available on this machine (--dry-run checks imports and configs)",
              file=sys.stderr)
        return 2
    dry = args.dry_run and not torch.cuda.is_available()
    out = (args.out or ROOT / "runs" / "benchmarks" / (args.suite + ("_toy" if args.toy else "")
                                                       + ("_dry_run" if dry else ""))).resolve()
    if (args.toy or dry) and out.is_relative_to(RESULTS.resolve()):
        print(f"--out {out}: toy and dry runs never write into {RESULTS}", file=sys.stderr)
        return 2
    threads = args.threads or (1 if args.toy else usable_cores())
    torch.set_num_threads(threads)
    os.environ["PIXELBERT_BENCH_THREADS"] = str(threads)  # for subprocess workers (scaling)
    names = args.only or (GPU_ORDER if args.suite == "gpu" else BENCHMARKS)
    total = args.budget_s or (60.0 if args.toy else 3600.0 if args.suite == "cpu" else 420.0)
    machine = harness.machine_info()
    harness.write_json(out / "machine.json", machine)
    results, failed = [], []
    if args.toy and "scaling" in names:
        importlib.import_module("benchmarks.bench_scaling").prestart(harness.Context(suite=args.suite, toy=True))
    deadline = time.perf_counter() + total
    for name in names:
        left = deadline - time.perf_counter()
        ctx = harness.Context(suite=args.suite, toy=args.toy, out_dir=out,
                              repeats=args.repeats or (3 if args.toy else 7), warmup=1 if args.toy else 2,
                              budget_s=total * BUDGET_SHARE[name] / sum(BUDGET_SHARE[n] for n in names),
                              dry_run=dry)
        print(f"== {name} ({args.suite}{', toy' if args.toy else ''}) ...", flush=True)
        ctx.budget_s = min(ctx.budget_s, max(left, 0.0))
        result = run_one(name, ctx, None if left >= MIN_LEFT_S or args.toy or dry else
                         f"suite time budget spent ({total:.0f} s) before this benchmark started")
        problems = harness.check_schema(result)
        if problems or result.get("error"):
            failed.append(name)
            print(f"   {name}: {result.get('error') or problems}", flush=True)
        harness.write_json(out / f"{name}.json", result)
        for t in result["targets"]:
            print(f"   [{t['met']}] {t['target']}: measured {harness.fmt(t['measured'])}"
                  f"{' (' + t['why'] + ')' if t['why'] else ''}", flush=True)
        print(f"   {result['wall_s']} s", flush=True)
        results.append(result)
        # Rewritten after every benchmark: a suite cut off by a hard timeout keeps what it measured.
        (out / "summary.md").write_text(harness.summary_markdown(_with_earlier(out, results), machine))
    print(f"wrote {out}/summary.md")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
