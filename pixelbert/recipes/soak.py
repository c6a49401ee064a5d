"""Soak test: a bounded pre-training run that must hold steady memory and throughput.

Starts a pre-training launcher under torchrun (``ranks`` processes) with periodic checkpoints,
samples the summed RSS of the rank processes every ``sample_s`` seconds and reads samples/s
from the run's log lines. After ``minutes`` it sends SIGTERM to the ranks (the pre-emption
path: they checkpoint and exit 0), then prints a summary. Warm-up (the first ``warmup``
fraction of the run) is left out of both measures. Steady: RSS grew at most
``max_rss_growth_mb`` from the end of warm-up to the end, and samples/s of the last third fell
at most ``max_throughput_drop`` below the first third.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from pixelbert.engine.hardware import free_port

__all__ = ["SoakOptions", "soak", "summarize"]

_LOG_LINE = re.compile(r"^step (\d+)/\d+ .*samples_per_s=([0-9.]+)")


@dataclass
class SoakOptions:
    config: str
    minutes: float = 3.0
    ranks: int = 2
    set: list = field(default_factory=list)  # extra config overrides for the run
    checkpoint_every: int = 10
    sample_s: float = 2.0
    warmup: float = 0.33
    max_rss_growth_mb: float = 200.0
    max_throughput_drop: float = 0.25


def _ranks(proc) -> list:
    """The rank processes: torchrun's own children (not their DataLoader workers)."""
    import psutil

    try:
        return psutil.Process(proc.pid).children(recursive=False)
    except psutil.Error:
        return []


def _rss_mb(ranks) -> float | None:
    import psutil

    total = 0
    for r in ranks:
        try:
            total += r.memory_info().rss
        except psutil.Error:
            return None
    return total / 2**20 if ranks else None


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def soak(args: SoakOptions, out: Path, script: str | Path) -> int:
    """Run ``script`` (launcher/pretrain.py) under torchrun into ``out``; 0 steady, 1 not (printed)."""
    log = out / "soak.log"
    cmd = [str(Path(sys.executable).parent / "torchrun"), "--nproc_per_node", str(args.ranks),
           "--master_port", str(free_port()), str(script), "--config", args.config,
           "--set", f"train.output_dir={json.dumps(str(out / 'run'))}",
           "--set", "train.max_steps=1000000", "--set", f"train.checkpoint_every={args.checkpoint_every}",
           "--set", "train.keep_last=2", "--set", "train.log_every=1"]
    for item in args.set:
        cmd += ["--set", item]
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    print(f"soak: {args.minutes:g} min, {args.ranks} ranks, log {log}", flush=True)
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    start, rss, ranks = time.monotonic(), [], []
    deadline = start + args.minutes * 60
    while time.monotonic() < deadline and proc.poll() is None:
        if len(ranks) < args.ranks:
            ranks = _ranks(proc)
        value = _rss_mb(ranks)
        if value is not None and len(ranks) == args.ranks:
            rss.append((time.monotonic() - start, value))
        time.sleep(args.sample_s)
    stopped = time.monotonic()
    if proc.poll() is None:
        for r in ranks:
            try:
                r.send_signal(signal.SIGTERM)
            except Exception:  # already gone
                pass
        try:
            proc.wait(timeout=300)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    stop_s = time.monotonic() - stopped
    (out / "rss.csv").write_text("seconds,rss_mb\n" + "".join(f"{t:.1f},{v:.1f}\n" for t, v in rss))
    text = log.read_text(errors="replace")
    steps = [(int(m.group(1)), float(m.group(2))) for m in map(_LOG_LINE.match, text.splitlines()) if m]
    return summarize(args, proc.returncode, text, rss, steps, stop_s, stopped - start)


def summarize(args, returncode: int, text: str, rss: list[tuple[float, float]], steps: list[tuple[int, float]],
              stop_s: float, ran_s: float) -> int:
    failures = []
    if returncode != 0 or "stopped at step" not in text:
        failures.append(f"the run did not stop cleanly (exit {returncode}); see the log")
    steady = [v for t, v in rss if t >= args.warmup * ran_s]
    speeds = [s for _, s in steps][int(len(steps) * args.warmup):]
    if len(steady) < 3 or len(speeds) < 6:
        failures.append(f"too short to judge: {len(steady)} RSS samples, {len(speeds)} logged steps after warm-up")
        growth, first, last = float("nan"), float("nan"), float("nan")
    else:
        growth = steady[-1] - steady[0]
        third = len(speeds) // 3
        first, last = _mean(speeds[:third]), _mean(speeds[-third:])
        if growth > args.max_rss_growth_mb:
            failures.append(f"RSS grew {growth:.0f} MB > {args.max_rss_growth_mb:g} MB")
        if last < (1 - args.max_throughput_drop) * first:
            failures.append(f"samples/s fell {1 - last / first:.0%} > {args.max_throughput_drop:.0%}")
    values = [v for _, v in rss] or [float("nan")]
    print(f"steps: {steps[-1][0] if steps else 0} in {ran_s / 60:.1f} min; stop (SIGTERM -> checkpoint -> exit): {stop_s:.1f} s")
    print(f"RSS of {args.ranks} ranks (MB): after warm-up {steady[0] if steady else float('nan'):.0f}, "
          f"end {values[-1]:.0f}, max {max(values):.0f}, growth {growth:+.0f} (bound {args.max_rss_growth_mb:g})")
    print(f"samples/s: first third {first:.2f}, last third {last:.2f} "
          f"(drop {1 - last / first if first == first and first else float('nan'):.1%}, bound {args.max_throughput_drop:.0%})")
    if rss:
        quarters = [min(rss, key=lambda x: abs(x[0] - q * ran_s))[1] for q in (0.25, 0.5, 0.75, 1.0)]
        print("RSS at 1/4, 1/2, 3/4, end of the run (MB): " + ", ".join(f"{v:.0f}" for v in quarters))
    for f in failures:
        print(f"FAIL: {f}")
    print("soak: " + ("FAILED" if failures else "steady"))
    return 1 if failures else 0
