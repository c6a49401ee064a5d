"""Session fixtures: the multi-process training runs several tests read (each launch costs ~30-60 s on 2 cores).

- ``reference_run``: 1 process, accumulation 2, deterministic, eval hook every 3 steps.
- ``two_rank_runs``: one ``deepspeed --num_gpus 2`` launch running, in turn, ZeRO-2 and ZeRO-3
  deterministic runs with the same global batch (2 ranks x accumulation 1), and a ZeRO-2 run
  with dropout and pixel sampling on, accumulation 2, 6 steps, checkpoints at 3 and 6.
- ``resumed_run``: torchrun, two "nodes" of one rank each on loopback, resuming that last
  run from its step-3 checkpoint for 3 more steps.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from launch import run_driver  # noqa: E402
from synthetic import tiny_train_config  # noqa: E402

STEPS = 6


@pytest.fixture(scope="session")
def runs_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("engine_runs")


def _run(name: str, out: Path, **kw) -> dict:
    return {"name": name, "config": tiny_train_config(out / name, max_steps=STEPS, **kw)}


@pytest.fixture(scope="session")
def reference_run(runs_dir) -> dict:
    run = _run("one_rank", runs_dir, deterministic=True, gradient_accumulation=2, eval_every=3)
    return run_driver(runs_dir, [run], "python")["one_rank"]


@pytest.fixture(scope="session")
def two_rank_runs(runs_dir) -> dict[str, dict]:
    runs = [
        _run("zero2", runs_dir, deterministic=True, stage=2),
        _run("zero3", runs_dir, deterministic=True, stage=3),
        _run("random", runs_dir, stage=2, gradient_accumulation=2, checkpoint_every=3),
    ]
    return run_driver(runs_dir, runs, "deepspeed")


@pytest.fixture(scope="session")
def resumed_run(runs_dir, two_rank_runs) -> dict:
    src = runs_dir / "random" / "checkpoints" / "step_00000003"
    dst = runs_dir / "resumed" / "checkpoints" / src.name
    shutil.copytree(src, dst)
    run = _run("resumed", runs_dir, stage=2, gradient_accumulation=2, checkpoint_every=3)
    run["resume"] = "auto"
    return run_driver(runs_dir, [run], "torchrun2")["resumed"]
