"""Checkpoint folders: completeness, the latest pointer, RNG round trip, safe loading, signals, resume batch rule."""

from __future__ import annotations

import json
import os
import pickle
import random
import signal

import numpy as np
import pytest
import torch

from pixelbert.config import ConfigError
from pixelbert.engine.checkpoint import (
    GracefulStop, find_resume, is_complete, rng_state, safe_torch_load, seed_everything, set_rng_state,
)
from pixelbert.engine.trainer import BatchPlan, check_resume_batch


def fake_checkpoint(root, step: int, complete: bool = True):
    path = root / f"step_{step:08d}"
    path.mkdir(parents=True)
    (path / "mp_rank_00_model_states.pt").write_bytes(b"x")
    if complete:
        (path / "meta.json").write_text(json.dumps({"step": step, "complete": True}))
    return path


def test_resume_uses_the_checkpoint_latest_names(tmp_path):
    fake_checkpoint(tmp_path, 10)
    second = fake_checkpoint(tmp_path, 20)
    (tmp_path / "latest").write_text("step_00000020\n")
    assert find_resume(tmp_path) == second


def test_a_save_that_died_before_meta_json_is_never_resumed_from(tmp_path):
    good = fake_checkpoint(tmp_path, 10)
    fake_checkpoint(tmp_path, 20, complete=False)  # renamed but unfinished cannot happen; be safe anyway
    (tmp_path / "step_00000030.tmp").mkdir()  # a save killed mid-write
    (tmp_path / "latest").write_text("step_00000010\n")
    assert find_resume(tmp_path) == good
    assert not is_complete(tmp_path / "step_00000020")


def test_a_dangling_latest_falls_back_to_the_newest_complete_checkpoint(tmp_path):
    fake_checkpoint(tmp_path, 10)
    newest = fake_checkpoint(tmp_path, 200)
    (tmp_path / "latest").write_text("step_00000300\n")
    assert find_resume(tmp_path) == newest


def test_no_checkpoint_means_a_fresh_start(tmp_path):
    assert find_resume(tmp_path) is None
    assert find_resume(tmp_path / "missing") is None


def test_a_checkpoint_folder_can_be_named_directly(tmp_path):
    ckpt = fake_checkpoint(tmp_path, 5)
    assert find_resume(ckpt) == ckpt


def test_rng_state_round_trip_through_a_weights_only_file(tmp_path):
    seed_everything(123)
    state = rng_state()
    torch.save(state, tmp_path / "rng.pt")
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    seed_everything(999)
    set_rng_state(safe_torch_load(tmp_path / "rng.pt"))
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_a_pickle_that_would_run_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"module": _RunsCode()}, f)
    with pytest.raises(pickle.UnpicklingError), pytest.warns(UserWarning, match="protocol"):
        safe_torch_load(path)


def test_sigterm_sets_the_stop_flag_instead_of_killing():
    with GracefulStop() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested and stop.signum == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is not stop._handle


SAVED_ON = BatchPlan(micro_batch=32, accumulation=1, world_size=2)  # global batch 64


def _split(plan: BatchPlan) -> str:
    return f"{plan.world_size}x{plan.micro_batch}x{plan.accumulation}"


@pytest.mark.parametrize("plan", [BatchPlan(32, 2, 1), BatchPlan(16, 1, 4), BatchPlan(8, 2, 4), BatchPlan(4, 1, 16)],
                         ids=_split)
def test_a_run_resumes_with_its_global_batch_split_over_any_ranks_micro_batch_and_accumulation(plan):
    check_resume_batch(SAVED_ON, plan, "step_00000010")


@pytest.mark.parametrize("plan", [BatchPlan(32, 1, 1), BatchPlan(32, 1, 4), BatchPlan(16, 1, 2), BatchPlan(64, 2, 2)],
                         ids=_split)
def test_another_global_batch_is_refused_in_one_line_whatever_the_sizes(plan):
    with pytest.raises(ConfigError) as err:
        check_resume_batch(SAVED_ON, plan, "step_00000010")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("step_00000010: saved with global batch 64")
    assert f"this run has {plan.global_batch}" in message
    assert "train.global_batch_size 64" in message
