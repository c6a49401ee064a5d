"""All-pairs image-caption scores for retrieval, with the CNN run once per image.

Scoring every (image, caption) pair is the cost of retrieval evaluation (COCO-5K: 125M
pairs). The CNN and the pixel projection do not depend on the caption, so they run once per
image (:func:`encode_pairs_side`) and the image's valid pixel tokens are kept; only the
transformer runs per pair (:func:`score_rows`, pairs batched through ``forward_tokens``).

Optional first stage (``topk``, off by default so the paper's protocol stays exact): score
every pair cheaply with a few evenly spread pixel tokens per image (the model saw 100 random
pixels per image in pre-training, so a subset still scores sensibly), then re-score with all
pixels only the pairs among an image's top-k captions or a caption's top-k images
(:func:`candidate_mask`). Candidates are lifted above every other pair (:func:`combine`), so
Recall@K for K <= topk is exact whenever the ground truth survives the first stage.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable

import torch

from pixelbert.batch import Batch
from pixelbert.engine.monitor import progress
from pixelbert.modeling.visual import PixelTokens

__all__ = ["PairSide", "encode_pairs_side", "score_rows", "candidate_mask", "combine", "spread_index"]


@dataclass
class PairSide:
    """One rank's share of a retrieval split.

    image_tokens: per image (n_i, D) valid pixel tokens; text_ids / text_mask: (T, L) long;
    text_to_image: (T,) index into image_tokens; keys and caption ids for result files.
    """

    image_tokens: list[torch.Tensor] = field(default_factory=list)
    image_keys: list[str] = field(default_factory=list)
    texts: list[torch.Tensor] = field(default_factory=list)  # per caption (l,) ids, padding dropped
    text_to_image: list[int] = field(default_factory=list)
    caption_ids: list = field(default_factory=list)


@torch.no_grad()
def encode_pairs_side(module, loader: Iterable[Batch], prepare: Callable[[Batch], Batch]) -> PairSide:
    """Run the CNN once per image of ``loader`` (retrieval eval batches: each image with all its captions)."""
    side = PairSide()
    for batch in loader:
        batch = prepare(batch)
        pixels = module.encode_images(batch.images, batch.pixel_mask)
        first = len(side.image_tokens)
        for i in range(pixels.tokens.shape[0]):
            side.image_tokens.append(pixels.tokens[i][pixels.mask[i]])
        side.image_keys.extend(batch.meta.get("image_ids") or [None] * pixels.tokens.shape[0])
        lengths = batch.attention_mask.sum(dim=1).tolist()
        rows = batch.row_images().tolist()
        for r, (n, img) in enumerate(zip(lengths, rows)):
            side.texts.append(batch.input_ids[r, :n].cpu())
            side.text_to_image.append(first + img)
        side.caption_ids.extend(batch.meta.get("caption_ids") or [None] * len(lengths))
    return side


def pad_texts(texts: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Caption id tensors -> ids (T, L), mask (T, L); padding id 0 ([PAD] in BERT vocabularies)."""
    length = max((t.numel() for t in texts), default=1)
    ids = torch.zeros(len(texts), length, dtype=torch.long)
    mask = torch.zeros(len(texts), length, dtype=torch.long)
    for i, t in enumerate(texts):
        ids[i, : t.numel()] = t
        mask[i, : t.numel()] = 1
    return ids, mask


def spread_index(n: int, k: int) -> torch.Tensor:
    """k positions spread evenly over range(n) (all of them when n <= k)."""
    if n <= k:
        return torch.arange(n)
    return torch.linspace(0, n - 1, k).round().long().unique()


@torch.no_grad()
def score_rows(module, image_tokens: list[torch.Tensor], text_ids: torch.Tensor, text_mask: torch.Tensor, *,
               pixels: int | None = None, candidates: torch.Tensor | None = None,
               pair_batch: int = 256, progress_every: float | None = None) -> torch.Tensor:
    """(len(image_tokens), T) ITM match scores of every image with every caption.

    ``pixels``: use only that many evenly spread pixel tokens per image (the cheap first
    stage). ``candidates`` (I, T) bool: score only those pairs, the rest are -inf.
    ``progress_every``: seconds between progress lines (``engine.monitor.progress``).
    """

    num_texts = text_ids.shape[0]
    scores = torch.full((len(image_tokens), num_texts), float("-inf"))
    device = image_tokens[0].device if image_tokens else text_ids.device
    for i, tokens in enumerate(progress(image_tokens, "eval retrieval: scoring", progress_every, unit="images")):
        if pixels is not None:
            tokens = tokens[spread_index(tokens.shape[0], pixels).to(tokens.device)]
        n = tokens.shape[0]
        image = PixelTokens(tokens[None], torch.ones(1, n, dtype=torch.bool, device=device), None,
                            torch.ones(1, 1, n, dtype=torch.bool, device=device))
        cols = torch.arange(num_texts) if candidates is None else candidates[i].nonzero().squeeze(1)
        for start in range(0, cols.numel(), pair_batch):
            chunk = cols[start : start + pair_batch]
            length = int(text_mask[chunk].sum(dim=1).max())
            ids = text_ids[chunk, :length].to(device)
            mask = text_mask[chunk, :length].to(device)
            out = module.forward_tokens(ids, mask, image, torch.zeros(len(chunk), dtype=torch.long, device=device))
            scores[i, chunk] = module.retrieval_scores(out).float().cpu()
    return scores


def candidate_mask(coarse: torch.Tensor, k: int) -> torch.Tensor:
    """(I, T) bool: each image's top-k captions and each caption's top-k images."""
    cand = torch.zeros_like(coarse, dtype=torch.bool)
    rows = coarse.topk(min(k, coarse.shape[1]), dim=1).indices
    cand.scatter_(1, rows, True)
    cols = coarse.topk(min(k, coarse.shape[0]), dim=0).indices
    cand.scatter_(0, cols, True)
    return cand


def combine(coarse: torch.Tensor, fine: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
    """Fine scores on candidates, lifted above every coarse score elsewhere (order kept on both sides)."""
    if not bool(cand.any()):
        return coarse.clone()
    lift = (coarse.max() - fine[cand].min()).clamp(min=0) + 1.0
    return torch.where(cand, fine + lift, coarse)
