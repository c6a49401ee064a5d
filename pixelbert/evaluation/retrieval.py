"""Image-text retrieval Recall@K (Flickr30K, COCO 1K / 5K), from a full score matrix.

- Text retrieval: each image queries all captions; its rank is that of its best-ranked
  ground-truth caption (5 per image in Flickr30K and COCO).
- Image retrieval: each caption queries all images; its rank is that of its one image.

Ties are pessimistic: a wrong item scoring *equal* to the ground truth ranks ahead of it.
Reported numbers can then only be too low, never flattered by ties; in particular a model
giving every pair the same score gets zero Recall@K (K below the number of wrong items),
not a perfect one.

Recalls are percentages, as papers report them; ``r_mean`` is the mean of the six.
"""

from __future__ import annotations

from typing import Sequence

import torch

__all__ = ["retrieval_recall", "text_retrieval_ranks", "image_retrieval_ranks", "coco_1k_folds"]


def _check(scores: torch.Tensor, text_to_image: torch.Tensor) -> None:
    if scores.dim() != 2:
        raise ValueError(f"scores must be (num_images, num_texts), got shape {tuple(scores.shape)}")
    num_images, num_texts = scores.shape
    if text_to_image.shape != (num_texts,):
        raise ValueError(f"text_to_image must be ({num_texts},) to match scores, got {tuple(text_to_image.shape)}")
    if num_texts == 0 or num_images == 0:
        raise ValueError("scores is empty")
    if int(text_to_image.min()) < 0 or int(text_to_image.max()) >= num_images:
        raise ValueError(f"text_to_image holds an image index outside [0, {num_images})")
    if torch.isnan(scores).any():
        raise ValueError("scores contain NaN; a NaN cannot be ranked")


def text_retrieval_ranks(scores: torch.Tensor, text_to_image: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """(num_images,) 0-based rank of each image's best ground-truth caption among all texts.

    scores: (num_images, num_texts); text_to_image: (num_texts,) long. Rank = number of wrong
    captions scoring >= the best ground-truth one (pessimistic ties). Rows are processed in
    chunks so a COCO-5K matrix (5000 x 25000) does not need a second full-size buffer.
    """
    _check(scores, text_to_image)
    num_images, num_texts = scores.shape
    text_to_image = text_to_image.to(scores.device)
    has_caption = torch.zeros(num_images, dtype=torch.bool, device=scores.device)
    has_caption[text_to_image] = True
    if not bool(has_caption.all()):
        missing = int((~has_caption).nonzero()[0])
        raise ValueError(f"image {missing} has no ground-truth caption in text_to_image")
    ranks = []
    for start in range(0, num_images, chunk):
        rows = scores[start : start + chunk]
        image_ids = torch.arange(start, start + rows.shape[0], device=scores.device)
        is_gt = text_to_image[None, :] == image_ids[:, None]  # (c, num_texts)
        best_gt = rows.masked_fill(~is_gt, float("-inf")).amax(dim=1, keepdim=True)
        ranks.append(((rows >= best_gt) & ~is_gt).sum(dim=1))
    return torch.cat(ranks)


def image_retrieval_ranks(scores: torch.Tensor, text_to_image: torch.Tensor) -> torch.Tensor:
    """(num_texts,) 0-based rank of each caption's image among all images (pessimistic ties)."""
    _check(scores, text_to_image)
    text_to_image = text_to_image.to(scores.device)
    gt = scores.gather(0, text_to_image[None, :])  # (1, num_texts)
    # Every image scoring >= the ground truth counts, minus the ground truth itself.
    return (scores >= gt).sum(dim=0) - 1


def retrieval_recall(
    scores: torch.Tensor, text_to_image: torch.Tensor, ks: Sequence[int] = (1, 5, 10)
) -> dict[str, float]:
    """Recall@K in percent: ``txt_r{k}`` (image -> caption), ``img_r{k}`` (caption -> image), ``r_mean``.

    scores: (num_images, num_texts), higher = better match; text_to_image: (num_texts,) the
    image each caption describes.
    """
    scores = scores.detach().float()
    text_to_image = torch.as_tensor(text_to_image, dtype=torch.long)
    txt_ranks = text_retrieval_ranks(scores, text_to_image)
    img_ranks = image_retrieval_ranks(scores, text_to_image)
    out: dict[str, float] = {}
    for k in ks:
        out[f"txt_r{k}"] = 100.0 * (txt_ranks < k).float().mean().item()
    for k in ks:
        out[f"img_r{k}"] = 100.0 * (img_ranks < k).float().mean().item()
    out["r_mean"] = sum(out.values()) / len(out)
    return out


def coco_1k_folds(
    scores: torch.Tensor,
    text_to_image: torch.Tensor,
    ks: Sequence[int] = (1, 5, 10),
    fold_size: int = 1000,
) -> dict[str, float]:
    """COCO 1K protocol: Recall@K averaged over the folds of ``fold_size`` consecutive images.

    scores: the full COCO-5K (5000, 25000) matrix; each fold keeps images
    [f*1000, (f+1)*1000) and the captions of those images, so 5 folds of 1000 x 5000.
    """
    num_images = scores.shape[0]
    if num_images % fold_size:
        raise ValueError(f"{num_images} images do not split into folds of {fold_size}")
    text_to_image = torch.as_tensor(text_to_image, dtype=torch.long)
    folds = []
    for start in range(0, num_images, fold_size):
        texts = ((text_to_image >= start) & (text_to_image < start + fold_size)).nonzero().squeeze(1)
        sub = scores[start : start + fold_size].index_select(1, texts.to(scores.device))
        folds.append(retrieval_recall(sub, text_to_image[texts] - start, ks))
    return {key: sum(f[key] for f in folds) / len(folds) for key in folds[0]}
