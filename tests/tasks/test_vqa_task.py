"""VQA fine-tuning loss: soft-target BCE, its scaling, the VQA-score metric."""

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from model_helpers import deterministic_model
from model_helpers import make_batch as model_batch
from pixelbert.batch import Batch
from pixelbert.tasks.vqa import VQATask, vqa_soft_score


class FakeVQAModel(nn.Module):
    """Stands in for PixelBert: forward(batch, sample_pixels) -> outputs, vqa_logits(outputs) -> (B, A)."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits = nn.Parameter(logits.clone())
        self.sample_pixels_seen = []

    def forward(self, batch, sample_pixels=False):
        self.sample_pixels_seen.append(sample_pixels)
        return SimpleNamespace(hidden=self.logits[:, None, :] * 1.0)

    def vqa_logits(self, out):
        return out.hidden[:, 0, :]


def make_batch(targets):
    b = targets.shape[0]
    return Batch(
        images=torch.zeros(b, 3, 8, 8),
        pixel_mask=torch.ones(b, 8, 8, dtype=torch.bool),
        input_ids=torch.ones(b, 4, dtype=torch.long),
        attention_mask=torch.ones(b, 4, dtype=torch.long),
        vqa_targets=targets,
    )


TARGETS = torch.tensor([[1.0, 0.0, 0.3], [0.0, 0.6, 0.9]])
LOGITS = torch.tensor([[2.0, -1.0, 0.5], [0.1, 3.0, 1.0]])


def test_scaled_loss_is_bce_mean_times_number_of_answers():
    model = FakeVQAModel(LOGITS)
    loss, metrics = VQATask().loss(model, make_batch(TARGETS))
    expected = F.binary_cross_entropy_with_logits(LOGITS, TARGETS) * 3
    assert loss.item() == pytest.approx(expected.item())
    # Same thing: sum over answers, mean over questions.
    per_question = F.binary_cross_entropy_with_logits(LOGITS, TARGETS, reduction="none").sum(1).mean()
    assert loss.item() == pytest.approx(per_question.item())
    assert metrics["vqa_loss"].item() == pytest.approx(expected.item())


def test_mean_reduction_is_plain_element_mean():
    loss, _ = VQATask(reduction="mean").loss(FakeVQAModel(LOGITS), make_batch(TARGETS))
    assert loss.item() == pytest.approx(F.binary_cross_entropy_with_logits(LOGITS, TARGETS).item())


def test_softmax_loss_is_cross_entropy_against_normalised_scores_skipping_unscored_questions():
    targets = torch.cat([TARGETS, torch.zeros(1, 3)])  # the last question has no scored answer
    logits = torch.cat([LOGITS, torch.tensor([[9.0, -9.0, 0.0]])])
    loss, _ = VQATask(loss="softmax").loss(FakeVQAModel(logits), make_batch(targets))
    soft = TARGETS / TARGETS.sum(1, keepdim=True)
    expected = -(soft * F.log_softmax(LOGITS, dim=1)).sum(1).mean()
    assert loss.item() == pytest.approx(expected.item())
    one_hot = torch.tensor([[0.0, 1.0, 0.0]])  # one answer: plain classification
    loss, _ = VQATask(loss="softmax").loss(FakeVQAModel(LOGITS[:1]), make_batch(one_hot))
    assert loss.item() == pytest.approx(F.cross_entropy(LOGITS[:1], torch.tensor([1])).item())
    with pytest.raises(ValueError, match="loss must be"):
        VQATask(loss="hinge")


def test_vqa_score_is_soft_target_of_argmax():
    # question 0 picks answer 0 (target 1.0); question 1 picks answer 1 (target 0.6)
    assert vqa_soft_score(LOGITS, TARGETS).tolist() == pytest.approx([1.0, 0.6])
    _, metrics = VQATask().loss(FakeVQAModel(LOGITS), make_batch(TARGETS))
    assert metrics["vqa_score"].item() == pytest.approx(0.8)


def test_metrics_are_detached_and_loss_backpropagates():
    model = FakeVQAModel(LOGITS)
    loss, metrics = VQATask().loss(model, make_batch(TARGETS))
    assert all(not m.requires_grad for m in metrics.values())
    loss.backward()
    # d/dz of BCE * A / (B * A) = (sigmoid(z) - t) / B
    expected = (torch.sigmoid(LOGITS) - TARGETS) / 2
    assert torch.allclose(model.logits.grad, expected, atol=1e-6)


def test_fine_tuning_uses_all_pixels():
    model = FakeVQAModel(LOGITS)
    VQATask().loss(model, make_batch(TARGETS))
    assert model.sample_pixels_seen == [False]


def test_predict_returns_answer_indices():
    assert VQATask().predict(FakeVQAModel(LOGITS), make_batch(TARGETS)).tolist() == [0, 1]


def test_missing_or_misshaped_targets_fail_clearly():
    batch = make_batch(TARGETS)
    batch.vqa_targets = None
    with pytest.raises(ValueError, match="vqa_targets is None"):
        VQATask().loss(FakeVQAModel(LOGITS), batch)
    with pytest.raises(ValueError, match=r"logits \(2, 3\) but vqa_targets \(2, 4\)"):
        VQATask().loss(FakeVQAModel(LOGITS), make_batch(torch.zeros(2, 4)))
    with pytest.raises(ValueError, match="reduction"):
        VQATask(reduction="sum")


def test_on_the_real_model_the_training_loss_sees_every_pixel():
    model = deterministic_model(["vqa"], num_answers=3)
    b = model_batch([(64, 64), (48, 64)], text_lengths=[8, 5])
    b.vqa_targets = TARGETS
    loss, _ = VQATask().loss(model.train(), b)
    with torch.no_grad():
        logits = model.eval().vqa_logits(model(b))  # evaluation: never sampled
    expected = F.binary_cross_entropy_with_logits(logits, TARGETS, reduction="none").sum(1).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
