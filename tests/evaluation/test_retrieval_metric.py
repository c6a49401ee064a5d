"""Recall@K for image-text retrieval on small score matrices with known answers."""

import pytest
import torch

from pixelbert.evaluation.retrieval import (
    coco_1k_folds,
    image_retrieval_ranks,
    retrieval_recall,
    text_retrieval_ranks,
)


def five_captions(num_images):
    """(num_images * 5,) captions 5i..5i+4 describe image i, as in Flickr30K / COCO."""
    return torch.arange(num_images).repeat_interleave(5)


def test_perfect_scores_give_full_recall():
    t2i = five_captions(3)
    scores = (t2i[None, :] == torch.arange(3)[:, None]).float()  # (3, 15)
    metrics = retrieval_recall(scores, t2i)
    assert all(v == pytest.approx(100.0) for v in metrics.values())
    assert set(metrics) == {"txt_r1", "txt_r5", "txt_r10", "img_r1", "img_r5", "img_r10", "r_mean"}


def test_text_retrieval_uses_best_ranked_ground_truth_caption():
    # Image 0's captions are 0..4. Only caption 4 is good; captions of image 1 sit in between.
    t2i = five_captions(2)
    scores = torch.zeros(2, 10)
    scores[0] = torch.tensor([0.0, 0.0, 0.0, 0.0, 5.0, 9.0, 8.0, 1.0, 1.0, 1.0])
    scores[1] = torch.tensor([0.0] * 5 + [1.0] * 5)
    ranks = text_retrieval_ranks(scores, t2i)
    # image 0: two wrong captions (9, 8) above its best (5) -> rank 2; image 1: best 1.0 ties none above
    assert ranks.tolist() == [2, 0]
    metrics = retrieval_recall(scores, t2i, ks=(1, 3))
    assert metrics["txt_r1"] == pytest.approx(50.0)
    assert metrics["txt_r3"] == pytest.approx(100.0)


def test_image_retrieval_ranks_each_caption_image():
    t2i = torch.tensor([0, 1, 2])
    scores = torch.tensor(
        [
            [0.9, 0.8, 0.1],
            [0.1, 0.2, 0.5],
            [0.0, 0.9, 0.4],
        ]
    )
    # caption 0 -> image 0 is best (rank 0); caption 1 -> image 1 scores 0.2, below 0.8 and 0.9 (rank 2);
    # caption 2 -> image 2 scores 0.4, below 0.5 (rank 1)
    assert image_retrieval_ranks(scores, t2i).tolist() == [0, 2, 1]
    metrics = retrieval_recall(scores, t2i, ks=(1, 2, 3))
    assert metrics["img_r1"] == pytest.approx(100 / 3)
    assert metrics["img_r2"] == pytest.approx(200 / 3)
    assert metrics["img_r3"] == pytest.approx(100.0)


def test_an_item_at_0_based_rank_k_is_outside_recall_at_k_on_both_sides():
    # Every image has exactly one wrong caption above its own, every caption one wrong image
    # above its own: rank 1 everywhere, so Recall@1 is 0 and Recall@2 is 100 on both sides.
    t2i = torch.tensor([0, 1, 2])
    scores = torch.tensor([[1.0, 2.0, 0.0], [0.0, 1.0, 2.0], [2.0, 0.0, 1.0]])
    assert text_retrieval_ranks(scores, t2i).tolist() == [1, 1, 1]
    assert image_retrieval_ranks(scores, t2i).tolist() == [1, 1, 1]
    metrics = retrieval_recall(scores, t2i, ks=(1, 2))
    assert (metrics["txt_r1"], metrics["txt_r2"]) == (0.0, 100.0)
    assert (metrics["img_r1"], metrics["img_r2"]) == (0.0, 100.0)


def test_ties_with_wrong_items_count_against():
    t2i = torch.tensor([0, 1])
    scores = torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    # image 0 ties its caption with a wrong one -> rank 1; caption 1 ties image 0 -> rank 1
    assert text_retrieval_ranks(scores, t2i).tolist() == [1, 0]
    assert image_retrieval_ranks(scores, t2i).tolist() == [0, 1]


def test_constant_scores_never_give_perfect_recall():
    t2i = five_captions(20)
    metrics = retrieval_recall(torch.zeros(20, 100), t2i)
    # Every wrong item ties the ground truth and ranks ahead: 95 wrong captions, 19 wrong images.
    assert metrics["txt_r10"] == 0.0
    assert metrics["img_r10"] == 0.0
    assert metrics["r_mean"] == 0.0


def test_ties_among_ground_truth_captions_do_not_hurt():
    t2i = five_captions(2)
    scores = torch.tensor([[3.0] * 5 + [1.0] * 5, [0.0] * 5 + [2.0] * 5])
    assert text_retrieval_ranks(scores, t2i).tolist() == [0, 0]


def test_chunked_text_ranks_match_unchunked():
    torch.manual_seed(0)
    t2i = five_captions(7)
    scores = torch.randn(7, 35)
    assert torch.equal(text_retrieval_ranks(scores, t2i, chunk=2), text_retrieval_ranks(scores, t2i))


def test_r_mean_is_mean_of_six_recalls():
    torch.manual_seed(0)
    metrics = retrieval_recall(torch.randn(6, 30), five_captions(6))
    six = [metrics[k] for k in ("txt_r1", "txt_r5", "txt_r10", "img_r1", "img_r5", "img_r10")]
    assert metrics["r_mean"] == pytest.approx(sum(six) / 6)


@pytest.mark.parametrize(
    "scores, t2i, message",
    [
        (torch.zeros(2, 3), torch.tensor([0, 1]), "text_to_image must be"),
        (torch.zeros(2, 2), torch.tensor([0, 2]), "outside"),
        (torch.zeros(3, 2), torch.tensor([0, 1]), "image 2 has no ground-truth caption"),
        (torch.tensor([[float("nan"), 0.0], [0.0, 0.0]]), torch.tensor([0, 1]), "NaN"),
        (torch.zeros(4), torch.tensor([0, 1, 2, 3]), "num_images, num_texts"),
    ],
)
def test_bad_inputs_are_rejected(scores, t2i, message):
    with pytest.raises(ValueError, match=message):
        retrieval_recall(scores, t2i)


def test_coco_1k_averages_folds_of_images_with_their_captions():
    # 4 images in folds of 2. Fold 0 is perfect. In fold 1 image 3 prefers image 2's captions
    # and ties with image 2 on its own: text retrieval right for image 2 only, image retrieval
    # wrong for every caption. Fold-1 captions scoring high on a fold-0 image must not
    # matter: a fold sees only its own images and captions.
    t2i = five_captions(4)
    scores = (t2i[None, :] == torch.arange(4)[:, None]).float()
    scores[0, 10:] = 10.0  # cross-fold: ignored
    scores[3, 10:15] = 2.0  # image 3 likes image 2's captions more than image 2 does
    scores[3, 15:] = 0.0
    metrics = coco_1k_folds(scores, t2i, ks=(1,), fold_size=2)
    fold1 = retrieval_recall(scores[2:, 10:], t2i[10:] - 2, ks=(1,))
    assert fold1["txt_r1"] == pytest.approx(50.0)
    assert metrics["txt_r1"] == pytest.approx((100.0 + fold1["txt_r1"]) / 2)
    assert metrics["img_r1"] == pytest.approx((100.0 + fold1["img_r1"]) / 2)
    assert fold1["img_r1"] == pytest.approx(0.0)


def test_coco_1k_requires_whole_folds():
    with pytest.raises(ValueError, match="do not split into folds of 1000"):
        coco_1k_folds(torch.zeros(1500, 7500), five_captions(1500))
