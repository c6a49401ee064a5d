"""An evaluation pass is never silent for long: a line with the count done and the time left."""

from __future__ import annotations

import io

import torch

from pixelbert.batch import Batch
from pixelbert.engine.monitor import progress
from pixelbert.evaluation.runner import EvalOptions, evaluate


class _Clock:
    """Time that moves ``step`` seconds each time it is read."""

    def __init__(self, step: float):
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def test_progress_prints_count_elapsed_and_eta_once_per_interval():
    out = io.StringIO()
    items = list(progress(list(range(5)), "eval vqa", every=10.0, stream=out, clock=_Clock(6.0)))
    assert items == [0, 1, 2, 3, 4]
    # Read at 6 (start), then after each item at 12, 18, 24, 30, 36: lines when 10 s have passed since the last.
    assert out.getvalue().splitlines() == ["eval vqa: 2/5 batches, 12 s, eta 18 s",
                                           "eval vqa: 4/5 batches, 24 s, eta 6 s"]


def test_a_short_pass_prints_nothing():
    out = io.StringIO()
    list(progress(range(3), "eval vqa", every=10.0, stream=out, clock=_Clock(1.0)))
    assert out.getvalue() == ""


class _FirstAnswer(torch.nn.Module):
    """Answers every question with answer 0; stands in for PixelBert in the VQA loop."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, batch, sample_pixels=False):
        return batch

    def vqa_logits(self, batch):
        return torch.nn.functional.one_hot(torch.zeros(len(batch), dtype=torch.long), 2).float() + self.w


def _question(qid: int) -> Batch:
    return Batch(images=torch.zeros(1, 3, 8, 8), pixel_mask=torch.ones(1, 8, 8, dtype=torch.bool),
                 input_ids=torch.ones(1, 4, dtype=torch.long), attention_mask=torch.ones(1, 4, dtype=torch.long),
                 meta={"question_ids": [qid], "answers": [None]})


def test_model_evaluation_reports_its_progress(capsys):
    result = evaluate(_FirstAnswer(), [_question(1), _question(2)], "vqa",
                      EvalOptions(answers=["yes", "no"], progress_every=0.0))
    assert result.predictions == {1: "yes", 2: "yes"}
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(",")[0] for line in lines] == ["eval vqa: 1/2 batches", "eval vqa: 2/2 batches"]
    assert all(", eta " in line for line in lines)
