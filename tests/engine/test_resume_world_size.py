"""Resuming on another number of ranks, or with the global batch split another way.

The step-3 checkpoints of deterministic 6-step runs (conftest.py's and two more below) are
resumed on the other number of ranks with the same global batch: 2 ranks x accumulation 1 ->
1 rank x accumulation 2 (ZeRO-2, ZeRO-3) and back (ZeRO-1, ZeRO-2, ZeRO-3). The synthetic loader
deals its micro-batches to the ranks in turn, so skipping the samples read before the save is
exact, and the resumed run must follow the uninterrupted one: losses to LOSS_RTOL, weights to
the order of float sums. Optimiser moments restarted instead of carried over miss both by
orders of magnitude. The ZeRO-1 and ZeRO-3 runs have an odd vocabulary (ZeRO pads the last
rank's partition) and an epoch of 3 steps (their checkpoint ends an epoch).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from launch import run_driver
from synthetic import tiny_train_config
from test_distributed import LOSS_RTOL, losses

from pixelbert.engine.checkpoint import consolidated_state_dict
from pixelbert.engine.reshard import merged_optimizer_state

pytestmark = pytest.mark.slow

SAVED = "step_00000003"
WEIGHTS_ATOL = 1e-4
ODD = {"vocab": 513, "batches_per_epoch": 6}  # global micro-batches per epoch: 3 steps of 2


def _config(out: Path, name: str, stage: int, accumulation: int, odd: bool = False, micro: int | None = None) -> dict:
    cfg = tiny_train_config(out / name, deterministic=True, stage=stage, gradient_accumulation=accumulation)
    if odd:
        cfg["model"]["text_config"]["vocab_size"] = ODD["vocab"]
    if micro is not None:
        cfg["data"]["micro_batch_size"] = micro
    return cfg


def _fresh(out: Path, name: str, stage: int) -> dict:
    """One rank, accumulation 2, odd sizes."""
    return {"name": name, "config": _config(out, name, stage, 2, odd=True),
            "global_batches_per_epoch": ODD["batches_per_epoch"]}


def _resumed(out: Path, name: str, source: str, stage: int, accumulation: int, odd: bool = False, **kw) -> dict:
    """Resumes from a copy of ``source``'s step-3 checkpoint."""
    shutil.copytree(out / source / "checkpoints" / SAVED, out / name / "checkpoints" / SAVED)
    run = {"name": name, "resume": "auto", "config": _config(out, name, stage, accumulation, odd, **kw)}
    if odd:
        run["global_batches_per_epoch"] = ODD["batches_per_epoch"]
    return run


def _launch(out: Path, runs: list[dict], launcher: str) -> tuple[dict[str, dict], str]:
    """run_driver's results and the launch's stdout (rank 0 prints the resume line), which
    tests/processes.py keeps under <first run>.logs/."""
    results = run_driver(out, runs, launcher)
    stdout = "".join(f.read_text() for f in sorted((out / f"{runs[0]['name']}.logs").glob("*.out")))
    return results, stdout


@pytest.fixture(scope="session")
def on_one_rank(runs_dir, two_rank_runs) -> tuple[dict[str, dict], str]:
    """Two-rank ZeRO-2/3 checkpoints resumed on 1 rank (one with micro-batch 8, accumulation 1), and
    fresh 1-rank ZeRO-1/3 runs for ``on_two_ranks``."""
    runs = [_resumed(runs_dir, "zero2_on_1", "zero2", 2, 2), _resumed(runs_dir, "zero3_on_1", "zero3", 3, 2),
            _resumed(runs_dir, "micro8_on_1", "zero2", 2, 1, micro=8),
            _fresh(runs_dir, "one_rank_zero1", 1), _fresh(runs_dir, "one_rank_zero3", 3)]
    return _launch(runs_dir, runs, "python")


@pytest.fixture(scope="session")
def on_two_ranks(runs_dir, reference_run, on_one_rank) -> tuple[dict[str, dict], str]:
    """One-rank ZeRO-1/2/3 checkpoints resumed on 2 ranks, accumulation 1."""
    runs = [_resumed(runs_dir, "zero1_on_2", "one_rank_zero1", 1, 1, odd=True),
            _resumed(runs_dir, "zero2_on_2", "one_rank", 2, 1),
            _resumed(runs_dir, "zero3_on_2", "one_rank_zero3", 3, 1, odd=True)]
    return _launch(runs_dir, runs, "deepspeed")


def _assert_same_final_weights(resumed: dict, uninterrupted: dict) -> None:
    a, b = (consolidated_state_dict(Path(run["checkpoint"])) for run in (resumed, uninterrupted))
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=WEIGHTS_ATOL, msg=name)


@pytest.mark.parametrize("stage", [2, 3])
def test_a_two_rank_checkpoint_resumes_on_one_rank_as_if_uninterrupted(two_rank_runs, on_one_rank, stage):
    results, _ = on_one_rank
    resumed = results[f"zero{stage}_on_1"]
    assert [step for step, _ in resumed["history"]] == [4, 5, 6]
    assert losses(resumed) == pytest.approx(losses(two_rank_runs[f"zero{stage}"])[3:], rel=LOSS_RTOL)
    _assert_same_final_weights(resumed, two_rank_runs[f"zero{stage}"])


@pytest.mark.parametrize(("stage", "source"), [(1, "one_rank_zero1"), (2, "one_rank"), (3, "one_rank_zero3")])
def test_a_one_rank_checkpoint_resumes_on_two_ranks_as_if_uninterrupted(reference_run, on_one_rank, on_two_ranks,
                                                                        stage, source):
    uninterrupted = reference_run if source == "one_rank" else on_one_rank[0][source]
    resumed = on_two_ranks[0][f"zero{stage}_on_2"]
    assert [step for step, _ in resumed["history"]] == [4, 5, 6]
    assert losses(resumed) == pytest.approx(losses(uninterrupted)[3:], rel=LOSS_RTOL)
    _assert_same_final_weights(resumed, uninterrupted)


def test_resuming_on_another_split_says_in_one_line_that_the_data_order_is_no_longer_exact(on_one_rank, on_two_ranks):
    lines = [line for out in (on_one_rank[1], on_two_ranks[1]) for line in out.splitlines()
             if line.startswith("resumed from")]
    assert len(lines) == 6
    assert all("same global batch 8" in line and "data order is no longer exact" in line for line in lines)


def test_a_checkpoint_that_ends_an_epoch_resumes_at_the_start_of_the_next(on_two_ranks):
    line = next(line for line in on_two_ranks[1].splitlines() if "zero1_on_2" in line and "resumed from" in line)
    assert "skipped 0 micro-batches of epoch 1" in line


def test_a_changed_micro_batch_with_the_same_global_batch_resumes_the_same_way(on_one_rank):
    results, out = on_one_rank
    assert [step for step, _ in results["micro8_on_1"]["history"]] == [4, 5, 6]
    assert "on 1 rank x micro-batch 8 x accumulation 1 (saved on 2 ranks x micro-batch 4 x accumulation 1" in out


def test_merged_zero_shards_hold_the_optimizer_state_of_a_one_rank_run(runs_dir, reference_run, two_rank_runs):
    merged = merged_optimizer_state(runs_dir / "zero2" / "checkpoints" / SAVED).per_param
    single = merged_optimizer_state(runs_dir / "one_rank" / "checkpoints" / SAVED).per_param
    assert merged.keys() == single.keys()
    assert {key for state in merged.values() for key in state} == {"fp32", "momentum_buffer", "exp_avg", "exp_avg_sq"}
    for name in merged:
        for key, value in merged[name].items():
            torch.testing.assert_close(value, single[name][key], rtol=1e-3, atol=WEIGHTS_ATOL, msg=f"{name} {key}")
