"""Pixel tokens: CNN feature cells -> hidden-size tokens, with padding mask and random sampling.

One feature-map cell ("pixel") becomes one token: projection to the hidden size, plus the one
learned visual semantic embedding s_v shared by all pixels, plus (optionally) a learned 2-D
position embedding, then LayerNorm and dropout.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from pixelbert.config import ModelConfig
from pixelbert.modeling.backbone import size_after, size_mask

__all__ = ["PixelTokens", "PixelEmbedding", "sample_pixel_index", "valid_sizes"]


@dataclass
class PixelTokens:
    """Pixel tokens of I images, computed once and shareable by many text rows.

    tokens (I, N, D); mask (I, N) bool, True on real pixels; index (I, N) long flat positions
    in the (h, w) feature grid (None: all h*w cells in row-major order, N = h*w);
    grid (I, h, w) bool, the valid cells of each image's feature map.
    """

    tokens: torch.Tensor
    mask: torch.Tensor
    index: torch.Tensor | None
    grid: torch.Tensor


def valid_sizes(pixel_mask: torch.Tensor) -> torch.Tensor:
    """(I, H, W) bool mask of top-left placed images -> (I, 2) long valid (h, w).

    Raises ValueError when an image's valid area is not the top-left rectangle the mask
    arithmetic of the trunk assumes.
    """
    sizes = torch.stack([pixel_mask.any(dim=2).sum(dim=1), pixel_mask.any(dim=1).sum(dim=1)], dim=1)
    if not torch.equal(size_mask(sizes, pixel_mask.shape[1], pixel_mask.shape[2]), pixel_mask):
        raise ValueError("pixel_mask must mark one top-left rectangle per image (pad at the bottom/right)")
    return sizes


def sample_pixel_index(mask: torch.Tensor, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw min(k, N) positions per row without replacement, valid ones first.

    mask (I, N) bool -> index (I, min(k, N)) long. Vectorised: every row gets i.i.d. uniform
    scores, padding scores sort last, the k smallest win. A row with fewer than k valid
    positions keeps all of them, followed by padding positions (mask.gather(1, index) tells).
    Within a row the chosen positions come valid first, each part in ascending (row-major) order.
    """
    n = mask.shape[1]
    k = min(k, n)
    device = generator.device if generator is not None else mask.device
    scores = torch.rand(mask.shape, generator=generator, device=device).to(mask.device)
    scores = scores.masked_fill(~mask, 2.0)  # uniform scores are < 1: padding sorts last
    index = scores.topk(k, dim=1, largest=False).indices
    order = index + n * (~mask.gather(1, index)).long()
    return index.gather(1, order.argsort(dim=1))


class PixelEmbedding(nn.Module):
    """features (I, C, h, w) + valid sizes -> PixelTokens with tokens (I, N, D)."""

    def __init__(self, in_channels: int, hidden_size: int, cfg: ModelConfig, layer_norm_eps: float = 1e-12):
        super().__init__()
        # ceil_mode keeps the last row/column of odd-sized maps (floor would drop it, and a 1-cell
        # map would vanish); padding is zero and features are post-ReLU (>= 0), so a window that
        # straddles the border takes the max of its valid part, exactly as the image alone.
        self.pool = nn.MaxPool2d(2, 2, ceil_mode=True) if cfg.extra_pool else None
        self.proj = nn.Linear(in_channels, hidden_size)
        self.semantic = nn.Parameter(torch.zeros(hidden_size))  # s_v, shared by all pixels
        if cfg.pos_embed_2d:
            self.row_embed = nn.Embedding(cfg.pos_embed_max, hidden_size)
            self.col_embed = nn.Embedding(cfg.pos_embed_max, hidden_size)
        else:
            self.row_embed = self.col_embed = None
        self.pos_embed_max = cfg.pos_embed_max
        self.norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.dropout = nn.Dropout(cfg.visual_dropout)

    def forward(
        self,
        features: torch.Tensor,
        sizes: torch.Tensor | None = None,
        num_samples: int | None = None,
        generator: torch.Generator | None = None,
    ) -> PixelTokens:
        """features (I, C, h, w), zero outside sizes (I, 2) (None: no padding).

        num_samples: keep that many random valid pixels per image (pre-training); None: all.
        """
        if self.pool is not None:
            features = self.pool(features)
            sizes = None if sizes is None else size_after(sizes, 2)
        n_img, channels, h, w = features.shape
        if sizes is None:
            grid = torch.ones(n_img, h, w, dtype=torch.bool, device=features.device)
        else:
            grid = size_mask(sizes, h, w)
        flat = features.flatten(2)  # (I, C, h*w), contiguous
        mask = grid.flatten(1)
        index = None
        if num_samples is not None:
            index = sample_pixel_index(mask, num_samples, generator)
            # Gather along the contiguous last axis (each channel row read once, cache-friendly)
            # rather than from the (I, N, C) transposed view, whose reads stride over N.
            flat = flat.gather(2, index.unsqueeze(1).expand(-1, channels, -1))
            mask = mask.gather(1, index)
        flat = flat.transpose(1, 2)  # (I, N, C)
        x = self.proj(flat) + self.semantic
        if self.row_embed is not None:
            if max(h, w) > self.pos_embed_max:
                raise ValueError(f"feature map {h}x{w} exceeds model.pos_embed_max={self.pos_embed_max}")
            pos = index if index is not None else torch.arange(h * w, device=x.device).expand(n_img, -1)
            x = x + self.row_embed(pos // w) + self.col_embed(pos % w)
        return PixelTokens(self.dropout(self.norm(x)), mask, index, grid)
