"""launcher/pretrain.py with test-only fault injection; tests/reliability start it under torchrun.

    torchrun --nproc_per_node 2 tests/reliability/run_pretrain.py --config CFG [--resume auto]

The product has no fault hooks: this driver patches them in, then calls the real
``launcher.pretrain.main`` (so exit codes and messages are the launcher's own). Faults are
read from the environment; STEP is the 1-based optimiser step being taken, RANK a rank or *:

    FAULT_NAN_LOSS="3:1,9:*"  the loss of that step is NaN on that rank
    FAULT_NAN_GRAD="5:0"      the loss stays finite but its gradient is NaN (sqrt(w - w))
    FAULT_NAN_FROM=11         every step from 11 on, NaN loss on every rank
    FAULT_CRASH_SAVE=4        rank 0 dies (os._exit) inside the save of step 4, after every
                              rank wrote its files and before meta.json / rename / latest
    FAULT_PAUSE_AT=7          every rank, in the first forward of step 7, writes
    FAULT_PAUSE_DIR=DIR       DIR/paused.rank<r> and waits for DIR/go: the test signals or
                              kills the run at that exact point, not at a moment of the clock;
                              a rank whose stop handler ran (SIGTERM) writes DIR/signalled.rank<r>
    FAULT_TRACE=DIR           DIR/trace.rank<r>.jsonl: per micro-batch {"step", "epoch", "keys",
                              "bad": loader counters after it}, per finished epoch {"epoch_end",
                              "bad"}; DIR/rss.rank<r>.json: RSS entering fit, peak RSS after (MiB)
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from data_pipeline.loaders.base import ShardLoader  # noqa: E402
from launcher import pretrain  # noqa: E402
from pixelbert.engine import checkpoint  # noqa: E402
from pixelbert.engine.trainer import Trainer  # noqa: E402
from pixelbert.tasks.pretrain import PretrainTask  # noqa: E402

RANK = int(os.environ.get("RANK", "0"))
STEP = [0]


def _faults(name: str) -> set[tuple[int, str]]:
    spec = os.environ.get(name, "")
    return {(int(s), r) for s, r in (item.split(":") for item in spec.split(",") if item)}


def _hit(faults: set, step: int) -> bool:
    return (step, str(RANK)) in faults or (step, "*") in faults


NAN_LOSS, NAN_GRAD = _faults("FAULT_NAN_LOSS"), _faults("FAULT_NAN_GRAD")
NAN_FROM = int(os.environ.get("FAULT_NAN_FROM", "0") or 0)
CRASH_SAVE = os.environ.get("FAULT_CRASH_SAVE")
TRACE = Path(os.environ["FAULT_TRACE"]) if os.environ.get("FAULT_TRACE") else None
PAUSE_AT = int(os.environ.get("FAULT_PAUSE_AT", "0") or 0)
PAUSE_DIR = Path(os.environ["FAULT_PAUSE_DIR"]) if os.environ.get("FAULT_PAUSE_DIR") else None


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


_train_step = Trainer._train_step


def train_step(self, window, stop_requested):
    STEP[0] = self.state.step + 1
    return _train_step(self, window, stop_requested)


_loss = PretrainTask.loss


def _trace(item: dict) -> None:
    if TRACE is not None:
        with open(TRACE / f"trace.rank{RANK}.jsonl", "a") as f:
            f.write(json.dumps(item) + "\n")


_next_batch = Trainer._next_batch


def next_batch(self):
    batch = _next_batch(self)
    _trace({"step": self.state.step + 1, "epoch": self.state.epoch, "keys": batch.meta.get("keys", []),
            "bad": dict(self.loader.bad_samples)})
    return batch


_iter = ShardLoader.__iter__


def loader_iter(self):
    epoch = self.epoch
    yield from _iter(self)
    _trace({"epoch_end": epoch, "bad": dict(self.bad_samples)})


def _pause(step: int) -> None:
    """Announce that this rank is inside ``step`` and wait for the test's go (signal handlers still run)."""
    (PAUSE_DIR / f"paused.rank{RANK}").write_text(str(step))
    while not (PAUSE_DIR / "go").exists():
        time.sleep(0.05)


_paused = []


def loss(self, model, batch):
    value, metrics = _loss(self, model, batch)
    step = STEP[0]
    if PAUSE_AT and step == PAUSE_AT and not _paused:
        _paused.append(step)
        _pause(step)
    if _hit(NAN_LOSS, step) or (NAN_FROM and step >= NAN_FROM):
        value = value * float("nan")
    if _hit(NAN_GRAD, step):
        w = next(p for p in model.parameters() if p.requires_grad)
        value = value + torch.sqrt(w - w).sum()  # value + 0; d/dw = inf - inf = NaN
    return value, metrics


_fit = Trainer.fit


def fit(self, resume=None):
    before = _rss_mib()
    try:
        return _fit(self, resume)
    finally:
        if TRACE is not None:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            (TRACE / f"rss.rank{RANK}.json").write_text(json.dumps({"before_fit": before, "peak": peak}))


_handle = checkpoint.GracefulStop._handle


def handle(self, signum, frame):
    _handle(self, signum, frame)
    if PAUSE_DIR is not None:
        (PAUSE_DIR / f"signalled.rank{RANK}").write_text(str(signum))


_fsync_tree = checkpoint._fsync_tree


def fsync_tree(root):
    if CRASH_SAVE and Path(root).name == f"step_{int(CRASH_SAVE):08d}.tmp" and RANK == 0:
        print(f"FAULT: rank 0 dies while saving {root}", flush=True)
        os._exit(3)
    _fsync_tree(root)


Trainer._train_step, Trainer._next_batch, Trainer.fit = train_step, next_batch, fit
PretrainTask.loss, ShardLoader.__iter__, checkpoint._fsync_tree = loss, loader_iter, fsync_tree
checkpoint.GracefulStop._handle = handle

if __name__ == "__main__":
    sys.exit(pretrain.main([a for a in sys.argv[1:] if not a.startswith("--local")]))
