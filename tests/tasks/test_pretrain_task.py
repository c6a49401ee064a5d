"""Pre-training objective: MLM on matching pairs only, ITM on every row, pixel sampling on."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from model_helpers import deterministic_model, make_batch
from pixelbert.batch import Batch
from pixelbert.tasks.pretrain import PretrainTask

V = 7


class StubModel(torch.nn.Module):
    """Logits that depend only on the token id, so expected losses can be computed by hand."""

    def __init__(self):
        super().__init__()
        self.table = torch.nn.Parameter(torch.randn(V, V))
        self.itm = torch.nn.Parameter(torch.randn(2))
        self.sample_pixels = None

    def forward(self, batch, sample_pixels=False):
        self.sample_pixels = sample_pixels
        return SimpleNamespace(ids=batch.input_ids, attention_mask=torch.ones(len(batch), 5, dtype=torch.bool))

    def mlm_logits(self, out, positions):
        return self.table[out.ids[positions]]

    def itm_logits(self, out):
        return self.itm.expand(out.ids.shape[0], 2)


def batch(itm_labels, mlm_labels) -> Batch:
    n = len(itm_labels)
    ids = torch.arange(n * 3).reshape(n, 3) % V
    return Batch(images=torch.zeros(n, 3, 4, 4), pixel_mask=torch.ones(n, 4, 4, dtype=torch.bool), input_ids=ids,
                 attention_mask=torch.ones(n, 3, dtype=torch.long), mlm_labels=torch.tensor(mlm_labels),
                 itm_labels=torch.tensor(itm_labels))


def test_mlm_counts_only_matching_rows_and_itm_every_row():
    torch.manual_seed(0)
    model = StubModel()
    b = batch([1, 0], [[-100, 4, 2], [3, -100, 1]])  # row 1 is a negative: its labels are ignored
    loss, metrics = PretrainTask(mlm_weight=1.0, itm_weight=0.5).loss(model, b)
    mlm = F.cross_entropy(model.table[b.input_ids[0, 1:]], torch.tensor([4, 2]))
    itm = F.cross_entropy(model.itm.expand(2, 2), b.itm_labels)
    assert metrics["mlm_loss"] == pytest.approx(mlm.item())
    assert metrics["itm_loss"] == pytest.approx(itm.item())
    assert loss.item() == pytest.approx(mlm.item() + 0.5 * itm.item())
    assert model.sample_pixels is True


def test_accuracies_and_token_count():
    model = StubModel()
    with torch.no_grad():
        model.table.zero_()
        model.table[torch.arange(V), torch.arange(V)] = 1.0  # predicts the input id itself
        model.itm.copy_(torch.tensor([0.0, 1.0]))  # always "match"
    b = batch([1, 1, 0, 1], [[0, -100, -100], [-100, 5, -100], [-100, -100, -100], [9 % V, -100, -100]])
    _, metrics = PretrainTask().loss(model, b)
    # ids: row0 [0 1 2], row1 [3 4 5], row3 [2 3 4]; labels 0 (hit), 5 (miss: id 4), 2 (hit)
    assert metrics["mlm_acc"].item() == pytest.approx(2 / 3)
    assert metrics["itm_acc"].item() == pytest.approx(3 / 4)
    assert metrics["tokens"].item() == 4 * 5


def test_an_objective_with_weight_zero_reports_nothing_but_still_trains_the_rest():
    model = StubModel()
    b = batch([1, 1], [[-100, 4, 2], [3, -100, 1]])  # an MLM-only run: matched pairs alone
    task = PretrainTask(itm_weight=0.0)
    loss, metrics = task.loss(model, b)
    assert set(metrics) == {"mlm_loss", "mlm_acc", "tokens"} and task.summary_metrics == ("mlm_acc",)
    assert loss.item() == pytest.approx(metrics["mlm_loss"].item())
    assert PretrainTask(mlm_weight=0.0).summary_metrics == ("itm_acc",)
    assert PretrainTask().summary_metrics == ("mlm_acc", "itm_acc")


def test_a_batch_without_masked_matching_tokens_still_backpropagates():
    model = StubModel()
    loss, metrics = PretrainTask().loss(model, batch([0, 0], [[1, 2, 3], [4, -100, -100]]))
    loss.backward()
    assert metrics["mlm_loss"].item() == 0.0 and model.itm.grad is not None


def test_on_the_real_model_mlm_covers_matching_rows_only_and_pixels_are_sampled():
    model = deterministic_model(["mlm", "itm"]).train()
    b = make_batch([(64, 64)] * 3, seq_len=8)  # 16 pixel tokens per image, 6 sampled
    b.itm_labels = torch.tensor([1, 0, 1])
    b.mlm_labels = torch.full_like(b.input_ids, -100)
    for row, pos in ((0, 2), (1, 3), (2, 5), (2, 6)):
        b.mlm_labels[row, pos] = b.input_ids[row, pos]
    torch.manual_seed(1)
    loss, metrics = PretrainTask(itm_weight=0.5).loss(model, b)
    torch.manual_seed(1)  # the same pixels sampled again
    out = model(b, sample_pixels=True)
    logits = model.mlm_logits(out)  # (B, L, V)
    rows, cols = torch.tensor([0, 2, 2]), torch.tensor([2, 5, 6])  # row 1 is a negative: not learnt
    mlm = F.cross_entropy(logits[rows, cols], b.input_ids[rows, cols])
    itm = F.cross_entropy(model.itm_logits(out), b.itm_labels)
    assert loss.item() == pytest.approx(mlm.item() + 0.5 * itm.item(), rel=1e-5)
    assert metrics["tokens"].item() == 3 * (8 + model.config.pixel_samples)
