"""Start 2-rank pre-training runs of tests/reliability/run_pretrain.py under torchrun, watch and stop them.

Built on tests/engine/launch.py (same environment and launcher command). Every run of one
series shares a config: the tiny model on the bad-input shards (bad_inputs.write_bad_shards),
2 ranks x micro-batch 2, ZeRO-2, 6 steps per epoch.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import launch  # tests/engine/launch.py
from tiny_data import model_section  # tests/launcher/tiny_data.py

DRIVER = Path(__file__).resolve().parent / "run_pretrain.py"
STEPS = 10
# Faults every run of the series gets at the same steps (run_pretrain.py's FAULT_* variables).
FAULTS = {"nan_loss": "3:1", "nan_grad": "5:0", "nan_from": str(STEPS + 1)}
END = STEPS + 3  # steps 11 and 12 are skipped; the third non-finite step in a row stops the run
SIGTERM_BOUND_S = 60  # signal to exit, checkpoint included (a step of the tiny model takes < 1 s)


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


# Generous: a launch is ~40 s, but DeepSpeed JIT-builds its CPU communication op under a lock in
# ~/.cache/torch_extensions, and a rebuild (another environment's flags) takes minutes on 2 cores.


@dataclass
class Run:
    """One torchrun launch (in a session of its own), its log files and what the test noted."""

    proc: subprocess.Popen
    log: Path
    err: Path
    started: float
    returncode: int | None = None
    ended: float | None = None
    extra: dict = field(default_factory=dict)

    @property
    def stdout(self) -> str:
        return self.log.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.err.read_text(errors="replace")

    def wait(self, timeout: float = 600) -> int:
        try:
            self.returncode = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"run did not end within {timeout} s:\n{self.stdout[-3000:]}\n{self.stderr[-3000:]}")
        self.ended = time.monotonic()
        return self.returncode

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """``sig`` to every process of the run at once: torchrun's process group and each rank's
        (torchrun starts every rank in a session of its own, so one killpg would orphan them)."""
        import psutil

        try:
            root = psutil.Process(self.proc.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return
        groups = set()
        for p in procs:
            try:
                groups.add(os.getpgid(p.pid))
            except ProcessLookupError:
                pass
        for group in groups:
            try:
                os.killpg(group, sig)
            except ProcessLookupError:
                pass

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

    def wait_until(self, predicate, timeout: float = 600, what: str = "") -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if predicate():
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"run ended ({self.proc.returncode}) before {what}:\n{self.stdout[-3000:]}\n{self.stderr[-3000:]}")
            time.sleep(0.1)
        self.kill()
        raise AssertionError(f"timed out waiting for {what}:\n{self.stdout[-3000:]}")


def start(name: str, config: Path, workdir: Path, resume: str | None = None, **faults: str) -> Run:
    """Launch 2 ranks; ``faults`` are run_pretrain.py's FAULT_* variables (lower-case names)."""
    workdir.mkdir(parents=True, exist_ok=True)
    env = launch.env()
    env.update({f"FAULT_{k.upper()}": str(v) for k, v in faults.items()})
    args = [str(DRIVER), "--config", str(config)] + (["--resume", resume] if resume else [])
    log, err = workdir / f"{name}.out", workdir / f"{name}.err"
    with open(log, "w") as out, open(err, "w") as errf:
        proc = subprocess.Popen(launch.command("torchrun", args), cwd=launch.REPO, env=env, stdout=out, stderr=errf,
                                start_new_session=True)
    return Run(proc, log, err, time.monotonic())


def latest(output_dir: Path) -> str | None:
    p = output_dir / "checkpoints" / "latest"
    return p.read_text().strip() if p.is_file() else None


def scalars(run_dir: Path, tag: str) -> dict[int, float]:
    """{step: value} of one TensorBoard scalar of a run."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tensorboard"))
    acc.Reload()
    return {e.step: e.value for e in acc.Scalars(tag)}
