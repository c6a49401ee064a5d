"""Session fixtures: one series of 2-rank pre-training runs that several guarantees are read from.

Every run trains the tiny model on the bad-input shards (bad_inputs.py) with the same faults
injected at the same steps: a NaN loss on rank 1 at step 3, a NaN gradient on rank 0 at step 5,
and NaN losses on every rank from step 11 (so each run stops, by design, at step 13 with
max_bad_steps 2, after saving step 10 and step 12).

- ``reference``: uninterrupted (apart from that designed stop), a checkpoint every step,
  traced (sample keys, bad-sample counters, RSS).
- ``chain``: the same run, interrupted three ways, resumed with ``--resume auto`` after each of
  the first two: dies inside the save of step 4 -> resumed, every process SIGKILLed while every
  rank is inside step 7 (after the step-6 checkpoint) -> resumed, SIGTERM to rank 0 while every
  rank is inside the second step after resuming. Each of its checkpoints (the SIGTERM one
  included) must equal the reference's at that step, weights and per-rank state (RNG, data
  position, counters): resuming from any of them is then exact. The reference starts alongside
  the first chain run (both are mostly start-up time).

Interruptions happen at named points of a run (every rank waits there, run_pretrain.py's
FAULT_PAUSE_AT), not at moments of the clock, and no wait has a fixed time limit: the series
gives the same result on an idle machine and on a busy one, only later.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
for sub in ("engine", "launcher", "data_pipeline", "reliability"):
    if str(HERE.parent / sub) not in sys.path:
        sys.path.insert(0, str(HERE.parent / sub))
os.environ.setdefault("DS_ACCELERATOR", "cpu")

from bad_inputs import write_bad_shards  # noqa: E402
from runs import END, FAULTS, latest, seconds_per_step, sigterm_bound, start, write_config  # noqa: E402

KILL_IN_STEP = 7  # after the step-6 checkpoint, before step 8's


@pytest.fixture(scope="session")
def series_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("reliability")


@pytest.fixture(scope="session")
def bad_shards(series_dir):
    """(shards folder, good sample keys)."""
    root = series_dir / "shards"
    return root, write_bad_shards(root)


@pytest.fixture(scope="session")
def series(series_dir, bad_shards) -> dict:
    shards, _ = bad_shards
    trace = series_dir / "trace"
    trace.mkdir()
    # The reference checkpoints every step (to see skipped steps leave the weights); saving only reads state.
    ref_cfg = write_config(series_dir / "reference.json", shards, series_dir / "reference", max_steps=END,
                           checkpoint_every=1)
    ref = start("reference", ref_cfg, series_dir, trace=str(trace), **FAULTS)
    out = series_dir / "chain"
    cfg = write_config(series_dir / "chain.json", shards, out, max_steps=END)
    chain: dict = {"out": out}
    try:
        crash = chain["crash"] = start("crash", cfg, series_dir, crash_save=4, **FAULTS)
        crash.wait()
        chain["after_crash"] = {"latest": latest(out), "tmp": sorted(p.name for p in (out / "checkpoints").iterdir())}

        killed = chain["killed"] = start("killed", cfg, series_dir, resume="auto", pause_at=KILL_IN_STEP, **FAULTS)
        killed.wait_paused()
        killed.kill(signal.SIGKILL)
        killed.wait()
        # Its pace (resumed from step 2, it wrote steps 4 and 6) sets the SIGTERM bound below.
        killed.extra.update(latest=latest(out), killed_in_step=KILL_IN_STEP, pace=seconds_per_step(out, 4, 6))

        resumed = int(killed.extra["latest"].split("_")[1])
        term = chain["sigterm"] = start("sigterm", cfg, series_dir, resume="auto", pause_at=resumed + 2, **FAULTS)
        term.wait_paused()
        sent = time.monotonic()
        os.kill(term.workers()[0], signal.SIGTERM)
        term.wait_signalled(0)
        term.go()
        term.wait()
        term.extra.update(seconds=term.ended - sent, latest=latest(out), bound=sigterm_bound(killed.extra["pace"]))
        ref.wait()
    finally:  # a failed step must not leave ranks running
        for run in [ref, *(r for r in chain.values() if hasattr(r, "kill"))]:
            if run.proc.poll() is None:
                run.kill()
    return {"reference": ref, "trace": trace, "chain": chain}
