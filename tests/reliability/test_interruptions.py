"""A crash, a hard kill or a pre-emption never costs the run: resuming ends with the same weights.

All read the session series (conftest.py): an uninterrupted reference and the same run
interrupted three times. Weights are compared exactly (atol 1e-6 covers only the order of
float sums; a wrong data position, RNG state or optimiser state moves them by 1e-3 or more).
"""

from __future__ import annotations

import pytest
import torch

from pixelbert.engine.checkpoint import consolidated_state_dict, find_resume, is_complete

from runs import SIGTERM_BOUND_S

pytestmark = pytest.mark.slow


def weights(out, step: int) -> dict[str, torch.Tensor]:
    return consolidated_state_dict(out / "checkpoints" / f"step_{step:08d}")


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-6, msg=name)


def test_interrupted_three_ways_and_resumed_it_ends_with_the_uninterrupted_weights(series, series_dir):
    chain = series["chain"]
    for step in (10, 12):
        assert_same_weights(weights(chain["out"], step), weights(series_dir / "reference", step))


def test_a_crash_inside_a_save_leaves_the_previous_checkpoint_as_the_one_resumed_from(series):
    chain = series["chain"]
    crash, after = chain["crash"], chain["after_crash"]
    assert crash.returncode != 0 and "FAULT: rank 0 dies while saving" in crash.stdout
    assert after["latest"] == "step_00000002"
    assert "step_00000004.tmp" in after["tmp"] and "step_00000004" not in after["tmp"]
    assert "resumed from" in chain["killed"].stdout and "step_00000002 at step 2" in chain["killed"].stdout
    ckpts = chain["out"] / "checkpoints"
    assert is_complete(ckpts / "step_00000004") and not (ckpts / "step_00000004.tmp").exists()


def test_sigkill_of_every_process_at_a_random_moment_resumes_from_the_last_complete_checkpoint(series):
    killed, term = series["chain"]["killed"], series["chain"]["sigterm"]
    info = f"(seed {killed.extra['seed']}, killed {killed.extra['delay']:.2f} s after the step-6 checkpoint)"
    assert killed.returncode == -9, f"the run must still be running when killed {info}"
    last = killed.extra["latest"]
    assert last in ("step_00000006", "step_00000008"), info
    assert f"{last} at step {int(last.split('_')[1])}" in term.stdout, info


def test_sigterm_to_rank_0_saves_within_the_bound_exits_0_and_resumes_exactly(series):
    term, final = series["chain"]["sigterm"], series["chain"]["final"]
    assert term.returncode == 0, term.stderr[-2000:]
    assert term.extra["seconds"] < SIGTERM_BOUND_S
    stopped = [line for line in term.stdout.splitlines() if line.startswith("stopped at step ")]
    assert len(stopped) == 1, term.stdout[-2000:]
    step = int(stopped[0].split()[3].rstrip(";"))
    assert term.extra["latest"] == f"step_{step:08d}"
    assert f"step_{step:08d} at step {step}" in final.stdout
    assert find_resume(series["chain"]["out"] / "checkpoints").name == "step_00000012"  # the run went on to the end
