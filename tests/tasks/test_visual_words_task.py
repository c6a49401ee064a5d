"""The CNN stage (visual_words): targets are the caption's own words, the loss reaches only the CNN
and the words head, and a padded image is scored as the image alone."""

from __future__ import annotations

import pytest
import torch

from model_helpers import make_batch, tiny_model_config
from pixelbert.batch import Batch
from pixelbert.tasks.visual_words import VisualWordsTask, caption_word_targets

V = 10
SPECIAL = [0, 1, 2, 3]  # [PAD], [CLS], [SEP], [MASK] of this toy vocabulary


class StubModel(torch.nn.Module):
    """image_words_logits: one learnable row of logits per image of the batch."""

    def __init__(self, n_images: int):
        super().__init__()
        self.logits = torch.nn.Parameter(torch.randn(n_images, V))

    def image_words_logits(self, images, pixel_mask=None):
        assert images.shape[0] == self.logits.shape[0]
        return self.logits


def toy_batch(itm_labels=None, image_index=None) -> Batch:
    # row 0: [CLS] 5 6 5 [SEP] [PAD]; row 1: [CLS] [MASK] 7 [SEP] with the masked token 4; row 2: [CLS] 8 9 [SEP]
    ids = torch.tensor([[1, 5, 6, 5, 2, 0], [1, 3, 7, 2, 0, 0], [1, 8, 9, 2, 0, 0]])
    attention = (ids != 0).long()
    labels = torch.full_like(ids, -100)
    labels[1, 1] = 4
    n_images = 3 if image_index is None else max(image_index) + 1
    return Batch(images=torch.zeros(n_images, 3, 8, 8), pixel_mask=torch.ones(n_images, 8, 8, dtype=torch.bool),
                 input_ids=ids, attention_mask=attention, mlm_labels=labels,
                 itm_labels=None if itm_labels is None else torch.tensor(itm_labels),
                 image_index=None if image_index is None else torch.tensor(image_index))


def test_targets_are_the_distinct_caption_words_with_masked_ones_restored_and_specials_dropped():
    rows, targets = caption_word_targets(toy_batch(), V, SPECIAL)
    assert rows.tolist() == [0, 1, 2]
    expected = torch.zeros(3, V)
    expected[0, [5, 6]] = 0.5  # 5 appears twice, counts once
    expected[1, [4, 7]] = 0.5  # [MASK] read back as 4
    expected[2, [8, 9]] = 0.5
    assert torch.equal(targets, expected)


def test_only_matching_rows_are_targets():
    rows, targets = caption_word_targets(toy_batch(itm_labels=[1, 0, 1]), V, SPECIAL)
    assert rows.tolist() == [0, 2]
    assert targets[1, [8, 9]].tolist() == [0.5, 0.5]


def test_loss_is_cross_entropy_against_the_words_of_each_rows_image():
    torch.manual_seed(0)
    model = StubModel(2)
    batch = toy_batch(itm_labels=[1, 1, 0], image_index=[0, 1, 0])  # row 2 is a negative of image 0
    loss, metrics = VisualWordsTask(V, SPECIAL).loss(model, batch)
    logp = model.logits.detach().log_softmax(1)
    expected = -(0.5 * (logp[0, 5] + logp[0, 6]) + 0.5 * (logp[1, 4] + logp[1, 7])) / 2
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert metrics["words_loss"].item() == pytest.approx(expected.item(), rel=1e-6)
    loss.backward()
    assert model.logits.grad.abs().sum() > 0


def test_top1_and_r_precision():
    model = StubModel(3)
    with torch.no_grad():
        model.logits.zero_()
        model.logits[0, 5], model.logits[0, 6] = 3.0, 2.0  # both words on top: top1 hit, R-prec 1
        model.logits[1, 4], model.logits[1, 9] = 3.0, 4.0  # top word wrong, 1 of the top 2 right
        model.logits[2, 0] = 9.0  # [PAD] on top, words 8, 9 tied with the rest: not in the top 2
        model.logits[2, 1] = 8.0
    _, metrics = VisualWordsTask(V, SPECIAL).loss(model, toy_batch())
    assert metrics["words_top1"].item() == pytest.approx(1 / 3)
    assert metrics["words_rprec"].item() == pytest.approx((1.0 + 0.5 + 0.0) / 3)


def test_batch_without_a_matching_caption_gives_zero_loss_with_a_graph():
    model = StubModel(3)
    loss, metrics = VisualWordsTask(V, SPECIAL).loss(model, toy_batch(itm_labels=[0, 0, 0]))
    assert loss.item() == 0.0 and loss.requires_grad
    assert metrics["words_top1"].item() == 0.0


def test_real_model_trains_only_the_cnn_and_the_words_head():
    from pixelbert import build_model

    torch.manual_seed(0)
    model = build_model(tiny_model_config(heads=["words"])).train()
    batch = make_batch([(32, 32), (32, 32)], seq_len=6)
    task = VisualWordsTask(model.bert.config.vocab_size, [0, 101, 102, 103])
    loss, _ = task.loss(model, batch)
    loss.backward()
    grads = {name for name, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert any(n.startswith("backbone.") for n in grads)
    assert "heads.words.classifier.weight" in grads
    assert not [n for n in grads if not n.startswith(("backbone.", "heads.words."))]


def test_padded_image_scores_as_the_image_alone():
    from pixelbert import build_model

    torch.manual_seed(0)
    model = build_model(tiny_model_config(heads=["words"])).eval()
    batch = make_batch([(48, 32), (32, 32)])
    with torch.no_grad():
        padded = model.image_words_logits(batch.images, batch.pixel_mask)[1]
        alone = model.image_words_logits(batch.images[1:, :, :32, :32])[0]
    torch.testing.assert_close(padded, alone, rtol=1e-4, atol=1e-4)


def test_a_model_without_the_words_head_says_so():
    from pixelbert import build_model

    model = build_model(tiny_model_config(heads=["itm"]))
    with pytest.raises(KeyError, match="no 'words' head"):
        VisualWordsTask(model.bert.config.vocab_size, SPECIAL).loss(model, make_batch([(32, 32)]))


def test_the_cnn_learns_to_name_the_words_of_each_image():
    """Two images (one bright, one dark), two captions: a few Adam steps on the CNN and the
    head make the top word of each image one of its own caption's words."""
    from pixelbert import build_model

    torch.manual_seed(0)
    model = build_model(tiny_model_config(heads=["words"], frozen_bn=True)).train()  # train = eval behaviour
    images = torch.stack([torch.full((3, 32, 32), 1.5), torch.full((3, 32, 32), -1.5)])
    ids = torch.tensor([[101, 2417, 4418, 102], [101, 2630, 9546, 102]])  # "red circle" / "blue square"
    batch = Batch(images=images, pixel_mask=torch.ones(2, 32, 32, dtype=torch.bool), input_ids=ids,
                  attention_mask=torch.ones_like(ids))
    task = VisualWordsTask(model.bert.config.vocab_size, [0, 101, 102, 103])
    optimizer = torch.optim.Adam([p for n, p in model.named_parameters() if n.startswith(("backbone.", "heads."))],
                                 lr=3e-3)  # 1e-2 oscillates on some CPUs' kernels
    first, _ = task.loss(model, batch)
    for _ in range(40):
        loss, metrics = task.loss(model, batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        _, metrics = task.loss(model, batch)
    assert metrics["words_top1"].item() == 1.0 and metrics["words_rprec"].item() == 1.0
    assert metrics["words_loss"].item() < 0.5 * first.item()
