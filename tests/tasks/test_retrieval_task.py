"""Retrieval fine-tuning loss: softmax over the positive and only the 5 hardest negatives."""

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from model_helpers import deterministic_model
from model_helpers import make_batch as model_batch
from pixelbert.batch import Batch
from pixelbert.tasks.retrieval import RetrievalTask, hard_negative_loss


class FakeScoreModel(nn.Module):
    """Stands in for PixelBert: row r's match logit is the learnable scalar ``row_scores[r]``."""

    def __init__(self, scores: torch.Tensor):
        super().__init__()
        self.row_scores = nn.Parameter(scores.clone())

    def forward(self, batch, sample_pixels=False):
        return SimpleNamespace(hidden=self.row_scores[:, None, None] * 1.0)

    def retrieval_scores(self, out):
        return out.hidden[:, 0, 0]


def make_batch(rows, group_size=21):
    return Batch(
        images=torch.zeros(rows // group_size, 3, 8, 8),
        pixel_mask=torch.ones(rows // group_size, 8, 8, dtype=torch.bool),
        input_ids=torch.ones(rows, 4, dtype=torch.long),
        attention_mask=torch.ones(rows, 4, dtype=torch.long),
        image_index=torch.arange(rows) // group_size,
        group_size=group_size,
    )


def two_groups():
    """(42,) distinct scores; group 0's hardest negatives are rows 3, 7, 11, 15, 19, one of
    them above the positive; group 1's positive is the top row of its group."""
    g = torch.Generator().manual_seed(0)
    scores = torch.rand(2, 21, generator=g) - 1.0  # negatives in [-1, 0)
    scores[0, 0] = 1.0
    scores[0, [3, 7, 11, 15, 19]] = torch.tensor([0.5, 0.6, 0.7, 0.8, 2.0])
    scores[1, 0] = 3.0
    return scores.flatten()


def test_gradients_reach_exactly_the_positive_and_5_hardest_negatives():
    scores = two_groups()
    model = FakeScoreModel(scores)
    loss, _ = RetrievalTask().loss(model, make_batch(42))
    loss.backward()
    grad = model.row_scores.grad.view(2, 21)
    for group in range(2):
        expected = {0} | set((scores.view(2, 21)[group, 1:].topk(5).indices + 1).tolist())
        nonzero = set(grad[group].nonzero().flatten().tolist())
        assert nonzero == expected
        assert len(nonzero) == 6
    assert set(grad[0].nonzero().flatten().tolist()) == {0, 3, 7, 11, 15, 19}
    assert (grad[:, 0] < 0).all()  # the positive is pushed up, the hard negatives down


def test_loss_is_cross_entropy_over_the_six_chosen_scores():
    scores = two_groups().view(2, 21)
    loss, hard = hard_negative_loss(scores, num_hard=5)
    picked = torch.cat([scores[:, :1], scores.gather(1, hard)], dim=1)
    assert loss.item() == pytest.approx(F.cross_entropy(picked, torch.zeros(2, dtype=torch.long)).item())
    assert sorted(hard[0].tolist()) == [3, 7, 11, 15, 19]


def test_the_positive_is_never_chosen_as_a_negative():
    scores = torch.tensor([[9.0, 1.0, 2.0, 3.0]])
    _, hard = hard_negative_loss(scores, num_hard=2)
    assert sorted(hard[0].tolist()) == [2, 3]


def test_num_hard_is_configurable_and_capped_by_group():
    scores = two_groups()
    model = FakeScoreModel(scores)
    RetrievalTask(num_hard=2).loss(model, make_batch(42))[0].backward()
    assert (model.row_scores.grad.view(2, 21) != 0).sum(dim=1).tolist() == [3, 3]
    _, hard = hard_negative_loss(torch.zeros(1, 3), num_hard=5)
    assert hard.shape == (1, 2)


def test_accuracy_counts_groups_whose_positive_beats_all_negatives():
    _, metrics = RetrievalTask().loss(FakeScoreModel(two_groups()), make_batch(42))
    assert metrics["retrieval_acc"].item() == pytest.approx(0.5)  # group 0 has a negative above
    assert not metrics["retrieval_loss"].requires_grad


def test_predict_scores_every_row():
    scores = two_groups()
    assert torch.equal(RetrievalTask().predict(FakeScoreModel(scores), make_batch(42)), scores)


def test_group_layout_errors_are_clear():
    batch = make_batch(42)
    batch.group_size = None
    with pytest.raises(ValueError, match="group_size must be >= 2"):
        RetrievalTask().loss(FakeScoreModel(two_groups()), batch)
    with pytest.raises(ValueError, match="40 rows do not split into groups of 21"):
        RetrievalTask().loss(FakeScoreModel(two_groups()[:40]), make_batch(40))
    with pytest.raises(ValueError, match="num_hard"):
        RetrievalTask(num_hard=0)


def test_on_the_real_model_rows_are_ranked_by_the_itm_probability_of_a_match():
    model = deterministic_model(["itm"]).eval()
    b = model_batch([(64, 64), (48, 64)], image_index=[0] * 4 + [1] * 4, text_lengths=[8, 7, 6, 5] * 2, seed=3)
    b.group_size = 4
    with torch.no_grad():
        loss, metrics = RetrievalTask(num_hard=2).loss(model, b)
        p_match = model.itm_logits(model(b)).softmax(-1)[:, 1].view(2, 4)
    log_odds = (p_match / (1 - p_match)).log()
    expected, _ = hard_negative_loss(log_odds, num_hard=2)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-4)
    best = (p_match[:, :1] > p_match[:, 1:]).all(1).float().mean()
    assert metrics["retrieval_acc"].item() == best.item()
