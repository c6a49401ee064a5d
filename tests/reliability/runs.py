"""Start 2-rank pre-training runs of tests/reliability/run_pretrain.py under torchrun, watch and stop them.

Built on tests/engine/launch.py (same environment and launcher command) and tests/processes.py
(no fixed time limits: a run is waited for as long as it makes progress). Every run of one
series shares a config: the tiny model on the bad-input shards (bad_inputs.write_bad_shards),
2 ranks x micro-batch 2, ZeRO-2, 6 steps per epoch. A test interrupts a run at a named point of
it (``pause_at``: every rank waits inside that step), never at a moment of the clock.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import launch  # tests/engine/launch.py
import processes  # tests/processes.py
from tiny_data import model_section  # tests/launcher/tiny_data.py

DRIVER = Path(__file__).resolve().parent / "run_pretrain.py"
STEPS = 10
# Faults every run of the series gets at the same steps (run_pretrain.py's FAULT_* variables).
FAULTS = {"nan_loss": "3:1", "nan_grad": "5:0", "nan_from": str(STEPS + 1)}
END = STEPS + 3  # steps 11 and 12 are skipped; the third non-finite step in a row stops the run
SIGTERM_BOUND_S = 60  # signal to exit, checkpoint included (a step of the tiny model takes < 1 s)


def sigterm_bound(seconds_per_step: float) -> float:
    """The SIGTERM-to-exit bound on this machine as loaded as it is now: SIGTERM_BOUND_S, or ten
    times the pace of the run itself (a step and its share of a save) when the machine is slower."""
    return max(SIGTERM_BOUND_S, 10 * seconds_per_step)


def write_config(path: Path, shards: Path, output_dir: Path, **train) -> Path:
    t = {"task": "pretrain", "output_dir": str(output_dir), "max_steps": STEPS, "epochs": 2, "warmup_steps": 2,
         "decay_epochs": [100], "lr_transformer": 1e-3, "lr_cnn": 1e-3, "log_every": 1, "checkpoint_every": 2,
         "keep_last": 30, "seed": 1, "max_bad_steps": 2}
    t.update(train)
    cfg = {"model": model_section(["mlm", "itm"]),
           "data": {"dataset": "coco", "shards": str(shards), "backend": "torch", "image_size": 32,
                    "max_image_size": 32, "max_text_len": 16, "micro_batch_size": 2, "num_workers": 0},
           "train": t, "deepspeed": {"zero_optimization": {"stage": 2}}}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(cfg, indent=1))
    return path


@dataclass
class Run:
    """One torchrun launch (in a session of its own), its log files and what the test noted."""

    proc: subprocess.Popen
    log: Path
    err: Path
    watch: list[Path]  # what it writes: its logs and its output folder (progress, for the waits)
    pause_dir: Path | None = None
    returncode: int | None = None
    ended: float | None = None
    extra: dict = field(default_factory=dict)

    @property
    def stdout(self) -> str:
        return self.log.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.err.read_text(errors="replace")

    def wait(self) -> int:
        """Until the run exits, as long as it takes while it makes progress."""
        processes.wait([self.proc], self.watch, f"run {self.log.stem}", logs=[self.log, self.err])
        self.returncode, self.ended = self.proc.returncode, time.monotonic()
        return self.returncode

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """``sig`` to every process of the run at once: torchrun and each rank."""
        processes.kill_tree(self.proc.pid, sig)

    def workers(self) -> list[int]:
        """Pids of the rank processes (torchrun's children), rank 0 first."""
        import psutil

        children = psutil.Process(self.proc.pid).children(recursive=True)
        ranked = []
        for c in children:
            try:
                ranked.append((int(c.environ().get("RANK", "-1")), c.pid))
            except psutil.Error:
                pass
        return [pid for rank, pid in sorted(ranked) if rank >= 0]

    def wait_until(self, predicate, what: str = "") -> None:
        processes.wait([self.proc], self.watch, f"run {self.log.stem} waiting for {what}", until=predicate,
                       logs=[self.log, self.err])

    def wait_paused(self, ranks: int = 2) -> None:
        """Until every rank waits inside the step given as ``start(..., pause_at=)``."""
        self.wait_until(lambda: all((self.pause_dir / f"paused.rank{r}").exists() for r in range(ranks)),
                        what="every rank to pause")

    def wait_signalled(self, rank: int) -> None:
        """Until ``rank``'s stop handler has run (the signal is noted; the run is still paused)."""
        self.wait_until(lambda: (self.pause_dir / f"signalled.rank{rank}").exists(), what=f"rank {rank}'s handler")

    def go(self) -> None:
        """Let the paused ranks carry on."""
        (self.pause_dir / "go").write_text("")


def start(name: str, config: Path, workdir: Path, resume: str | None = None, pause_at: int | None = None,
          **faults: str) -> Run:
    """Launch 2 ranks; ``faults`` are run_pretrain.py's FAULT_* variables (lower-case names);
    ``pause_at``: every rank waits inside that step until ``Run.go()``."""
    workdir.mkdir(parents=True, exist_ok=True)
    pause_dir = None
    if pause_at is not None:
        pause_dir = workdir / f"{name}.pause"
        pause_dir.mkdir()
        faults.update(pause_at=str(pause_at), pause_dir=str(pause_dir))
    env = launch.env()
    env.update({f"FAULT_{k.upper()}": str(v) for k, v in faults.items()})
    args = [str(DRIVER), "--config", str(config)] + (["--resume", resume] if resume else [])
    log, err = workdir / f"{name}.out", workdir / f"{name}.err"
    with open(log, "w") as out, open(err, "w") as errf:
        proc = subprocess.Popen(launch.command("torchrun", args), cwd=launch.REPO, env=env, stdout=out, stderr=errf,
                                start_new_session=True)
    output_dir = Path(json.loads(Path(config).read_text())["train"]["output_dir"])
    return Run(proc, log, err, [log, err, output_dir], pause_dir)


def seconds_per_step(output_dir: Path, first: int, last: int) -> float:
    """Wall time between two checkpoints of one run, per step (saves included)."""
    times = [json.loads((output_dir / "checkpoints" / f"step_{s:08d}" / "meta.json").read_text())["time"]
             for s in (first, last)]
    return (times[1] - times[0]) / (last - first)


def latest(output_dir: Path) -> str | None:
    p = output_dir / "checkpoints" / "latest"
    return p.read_text().strip() if p.is_file() else None


def scalars(run_dir: Path, tag: str) -> dict[int, float]:
    """{step: value} of one TensorBoard scalar of a run."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tensorboard"))
    acc.Reload()
    return {e.step: e.value for e in acc.Scalars(tag)}
