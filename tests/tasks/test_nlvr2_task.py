"""NLVR2 fine-tuning loss: one label per pair of rows (2i, 2i+1)."""

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from model_helpers import deterministic_model
from model_helpers import make_batch as model_batch
from pixelbert.batch import Batch
from pixelbert.tasks.nlvr2 import NLVR2Task


class FakePairModel(nn.Module):
    """Stands in for PixelBert: the [CLS] of row r is the scalar ``cls[r]``; nlvr2_logits
    joins rows 2i and 2i+1 as the real pair head does, predicting True when the right
    image's row scores higher than the left's."""

    def __init__(self, cls: torch.Tensor):
        super().__init__()
        self.cls = nn.Parameter(cls.clone())

    def forward(self, batch, sample_pixels=False):
        return SimpleNamespace(hidden=self.cls[:, None, None] * 1.0)

    def nlvr2_logits(self, out):
        cls = out.hidden[:, 0, 0]
        left, right = cls[0::2], cls[1::2]  # (B/2,)
        return torch.stack([left - right, right - left], dim=1)


def make_batch(rows, labels):
    return Batch(
        images=torch.zeros(rows, 3, 8, 8),
        pixel_mask=torch.ones(rows, 8, 8, dtype=torch.bool),
        input_ids=torch.ones(rows, 4, dtype=torch.long),
        attention_mask=torch.ones(rows, 4, dtype=torch.long),
        labels=labels,
    )


CLS = torch.tensor([0.0, 1.0, 2.0, -1.0, 0.5, 0.7])  # pairs: (0, 1) True, (2, -1) False, (.5, .7) True


def test_labels_line_up_with_row_pairs():
    model = FakePairModel(CLS)
    loss, metrics = NLVR2Task().loss(model, make_batch(6, torch.tensor([1, 0, 1])))
    assert metrics["nlvr2_acc"].item() == pytest.approx(1.0)
    logits = model.nlvr2_logits(model(None))
    assert loss.item() == pytest.approx(F.cross_entropy(logits, torch.tensor([1, 0, 1])).item())


def test_accuracy_counts_pairs_not_rows():
    _, metrics = NLVR2Task().loss(FakePairModel(CLS), make_batch(6, torch.tensor([1, 1, 0])))
    assert metrics["nlvr2_acc"].item() == pytest.approx(1 / 3)


def test_loss_backpropagates_to_both_rows_of_a_pair():
    model = FakePairModel(CLS)
    loss, metrics = NLVR2Task().loss(model, make_batch(6, torch.tensor([0, 0, 0])))
    assert all(not m.requires_grad for m in metrics.values())
    loss.backward()
    assert (model.cls.grad != 0).all()
    assert torch.allclose(model.cls.grad[0::2], -model.cls.grad[1::2])


def test_predict_gives_one_truth_value_per_pair():
    pred = NLVR2Task().predict(FakePairModel(CLS), make_batch(6, None))
    assert pred.tolist() == [True, False, True]


def test_odd_rows_and_misshaped_labels_fail_clearly():
    with pytest.raises(ValueError, match="rows must come in pairs"):
        NLVR2Task().predict(FakePairModel(CLS[:5]), make_batch(5, None))
    with pytest.raises(ValueError, match=r"labels \(6,\) for 6 rows; expected \(3,\)"):
        NLVR2Task().loss(FakePairModel(CLS), make_batch(6, torch.zeros(6, dtype=torch.long)))
    with pytest.raises(ValueError, match="labels is None"):
        NLVR2Task().loss(FakePairModel(CLS), make_batch(6, None))


def test_on_the_real_model_each_label_is_scored_on_its_own_sentence_and_image_pair():
    model = deterministic_model(["nlvr2"]).eval()
    b = model_batch([(64, 64), (48, 64), (64, 48), (64, 64)], text_lengths=[8, 8, 6, 6])
    b.labels = torch.tensor([1, 0])
    with torch.no_grad():
        loss, _ = NLVR2Task().loss(model, b)
        alone = []
        for pair in range(2):
            rows = slice(2 * pair, 2 * pair + 2)
            one = Batch(images=b.images[rows], pixel_mask=b.pixel_mask[rows], input_ids=b.input_ids[rows],
                        attention_mask=b.attention_mask[rows], labels=b.labels[pair : pair + 1])
            alone.append(F.cross_entropy(model.nlvr2_logits(model(one)), one.labels))
    assert loss.item() == pytest.approx(sum(alone).item() / 2, rel=1e-5)
