"""A crash, a hard kill or a pre-emption never costs the run: resuming is exact.

All read the session series (conftest.py): an uninterrupted reference and the same run
interrupted three times. Weights are compared with atol 1e-6 (the order of float sums; a wrong
data position, RNG state or optimiser state moves them by 1e-3 or more), per-rank state exactly.
"""

from __future__ import annotations

import pytest
import torch

from pixelbert.engine.checkpoint import consolidated_state_dict, is_complete, safe_torch_load

pytestmark = pytest.mark.slow


def weights(out, step: int) -> dict[str, torch.Tensor]:
    return consolidated_state_dict(out / "checkpoints" / f"step_{step:08d}")


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-6, msg=name)


def assert_same_state(a, b, where: str) -> None:
    """Per-rank files: trainer counters, loader position and counters, every RNG state.
    ``train_seconds`` is wall time (it only has to be there and grow), not training state."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            if k == "train_seconds":
                assert a[k] > 0 and b[k] > 0, f"{where}.{k}"
                continue
            assert_same_state(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    else:
        assert a == b, where


def test_every_checkpoint_of_the_interrupted_run_equals_the_uninterrupted_run_at_that_step(series, series_dir):
    chain = series["chain"]["out"] / "checkpoints"
    steps = sorted(int(p.name.split("_")[1]) for p in chain.glob("step_*") if is_complete(p))
    assert steps[:3] == [2, 4, 6] and len(steps) >= 4, steps  # 4 and later were written after resuming
    for step in steps:
        assert_same_weights(weights(chain.parent, step), weights(series_dir / "reference", step))
        for rank in (0, 1):
            name = f"step_{step:08d}/rank_{rank:05d}.pt"
            assert_same_state(safe_torch_load(chain / name), safe_torch_load(series_dir / "reference" / "checkpoints" / name),
                              name)


def test_a_crash_inside_a_save_leaves_the_previous_checkpoint_as_the_one_resumed_from(series):
    chain = series["chain"]
    crash, after = chain["crash"], chain["after_crash"]
    assert crash.returncode != 0 and "FAULT: rank 0 dies while saving" in crash.stdout
    assert after["latest"] == "step_00000002"
    assert "step_00000004.tmp" in after["tmp"] and "step_00000004" not in after["tmp"]
    assert "resumed from" in chain["killed"].stdout and "step_00000002 at step 2" in chain["killed"].stdout
    ckpts = chain["out"] / "checkpoints"
    assert is_complete(ckpts / "step_00000004") and not (ckpts / "step_00000004.tmp").exists()


def test_sigkill_of_every_process_mid_step_resumes_from_the_last_complete_checkpoint(series):
    killed, term = series["chain"]["killed"], series["chain"]["sigterm"]
    assert killed.returncode == -9  # killed, not ended
    assert killed.extra["killed_in_step"] == 7 and killed.extra["latest"] == "step_00000006"
    assert "step_00000006 at step 6" in term.stdout


def test_sigterm_to_rank_0_saves_within_the_bound_and_exits_0(series):
    term = series["chain"]["sigterm"]
    assert term.returncode == 0, term.stderr[-2000:]
    assert term.extra["seconds"] < term.extra["bound"]
    stopped = [line for line in term.stdout.splitlines() if line.startswith("stopped at step ")]
    assert len(stopped) == 1, term.stdout[-2000:]
    step = int(stopped[0].split()[3].rstrip(";"))
    assert term.extra["latest"] == f"step_{step:08d}"
    assert is_complete(series["chain"]["out"] / "checkpoints" / f"step_{step:08d}")  # compared in the first test
