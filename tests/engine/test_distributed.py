"""Multi-process acceptance: rank/ZeRO equivalence, exact resume, TensorBoard scalars, export."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from data_pipeline.records import BAD_KINDS
from pixelbert.engine.checkpoint import consolidated_state_dict

pytestmark = pytest.mark.slow

# Same samples, same initial weights, no randomness: 1 rank (accumulating 2 micro-batches) and
# 2 ranks (all-reducing them) differ only in the order float32 sums are taken, ~1e-7 relative
# per step. After 6 Adam/SGD steps that stays far below 1e-4, while a wrong batch split, lr
# or gradient scale moves the loss by 1e-2 or more.
LOSS_RTOL = 1e-4


def losses(run: dict) -> list[float]:
    return [values["train/loss"] for _, values in run["history"]]


def test_two_ranks_zero2_follow_the_one_rank_loss_curve(reference_run, two_rank_runs):
    assert len(losses(reference_run)) == 6
    assert losses(two_rank_runs["zero2"]) == pytest.approx(losses(reference_run), rel=LOSS_RTOL)


def test_two_ranks_zero3_follow_the_one_rank_loss_curve(reference_run, two_rank_runs):
    assert losses(two_rank_runs["zero3"]) == pytest.approx(losses(reference_run), rel=LOSS_RTOL)


def test_resume_on_two_torchrun_nodes_ends_with_the_uninterrupted_weights(runs_dir, two_rank_runs, resumed_run):
    full = consolidated_state_dict(runs_dir / "random" / "checkpoints" / "step_00000006")
    resumed = consolidated_state_dict(runs_dir / "resumed" / "checkpoints" / "step_00000006")
    assert full.keys() == resumed.keys()
    for name in full:
        torch.testing.assert_close(resumed[name], full[name], rtol=0, atol=1e-6, msg=name)
    assert losses(resumed_run) == pytest.approx(losses(two_rank_runs["random"])[3:], rel=1e-6)


def test_tensorboard_has_every_scalar(runs_dir, two_rank_runs):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(runs_dir / "random" / "tensorboard"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    expected = {
        "train/loss", "train/mlm_loss", "train/itm_loss", "train/mlm_acc", "train/itm_acc",
        "lr/cnn", "lr/cnn_no_decay", "lr/transformer", "lr/transformer_no_decay", "train/grad_norm",
        "perf/samples_per_s", "perf/tokens_per_s", "perf/data_wait_fraction", "perf/peak_memory_mb",
        "train/bad_steps", *(f"data/bad_samples/{kind}" for kind in BAD_KINDS),
    }
    assert expected <= tags, expected - tags
    assert [e.step for e in acc.Scalars("train/loss")] == [1, 2, 3, 4, 5, 6]
    assert "config/text_summary" in acc.Tags()["tensors"]  # where add_text("config", ...) lands


def test_the_eval_hook_runs_every_eval_every_steps_and_is_logged(runs_dir, reference_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(runs_dir / "one_rank" / "tensorboard"))
    acc.Reload()
    assert [e.step for e in acc.Scalars("eval/itm_acc")] == [3, 6]
    assert {"eval/mlm_loss", "eval/itm_loss", "eval/mlm_acc"} <= set(acc.Tags()["scalars"])


@pytest.mark.parametrize("name", ["zero2", "zero3"])
def test_export_then_from_pretrained_reproduces_the_trained_outputs(runs_dir, two_rank_runs, name, tmp_path):
    from launch import REPO  # noqa: F401  (tests/engine on sys.path via conftest)
    from synthetic import make_sample_batch

    from launcher.export import main as export_main
    from pixelbert import PixelBert
    from run_synthetic import PROBE_IDS

    assert export_main([str(runs_dir / name / "checkpoints"), str(tmp_path / "export")]) == 0
    model = PixelBert.from_pretrained(tmp_path / "export").eval()
    with torch.no_grad():
        out = model(make_sample_batch(PROBE_IDS))
        got = {"itm": model.itm_logits(out), "mlm": model.mlm_logits(out)}
    want = load_file(str(runs_dir / f"{name}.probe.safetensors"))
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=1e-5, atol=1e-5)
