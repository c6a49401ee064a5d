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

__all__ = ["PixelTokens", "PixelEmbedding", "gather_pixels", "sample_pixel_index", "trunk_sizes", "valid_sizes"]


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
    arithmetic of the trunk assumes. On an accelerator the check is a device-side assert
    instead (a host-side one would stall the training step until the GPU caught up).
    """
    sizes = torch.stack([pixel_mask.any(dim=2).sum(dim=1), pixel_mask.any(dim=1).sum(dim=1)], dim=1)
    rectangle = size_mask(sizes, pixel_mask.shape[1], pixel_mask.shape[2])
    if pixel_mask.device.type != "cpu":
        torch._assert_async((rectangle == pixel_mask).all())
    elif not torch.equal(rectangle, pixel_mask):
        raise ValueError("pixel_mask must mark one top-left rectangle per image (pad at the bottom/right)")
    return sizes


def trunk_sizes(pixel_mask: torch.Tensor | None) -> torch.Tensor | None:
    """What the trunk needs of a pixel mask: valid (h, w) per image, or None when nothing is padded.

    Seeing that nothing is padded means reading the mask on the host. On an accelerator that read
    would stall the step, so there the sizes always go to the trunk (an unpadded batch then costs
    a few mask multiplies, which mixed image sizes pay anyway).
    """
    if pixel_mask is None or (pixel_mask.device.type == "cpu" and bool(pixel_mask.all())):
        return None
    return valid_sizes(pixel_mask)


def sample_pixel_index(mask: torch.Tensor, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw min(k, N) positions per row without replacement, valid ones first.

    mask (I, N) bool -> index (I, min(k, N)) long. Vectorised: every row gets i.i.d. uniform
    scores, padding scores sort last, and one top-k takes the k smallest in score order, so a row
    with fewer than k valid positions keeps all of them, followed by padding positions
    (mask.gather(1, index) tells). Positions are not put back in row-major order: attention does
    not care about token order, and each token's cell travels in ``index``.
    """
    k = min(k, mask.shape[1])
    device = generator.device if generator is not None else mask.device
    scores = torch.rand(mask.shape, generator=generator, device=device).to(mask.device)
    scores = scores.masked_fill(~mask, 2.0)  # uniform scores are < 1: padding sorts last
    return scores.topk(k, dim=1, largest=False).indices


def gather_pixels(features: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
    """features (I, C, h, w), index (I, K) flat cell positions (None: every cell) -> (I, K, C).

    Reads along the contiguous axis: a channels_last map (the trunk's layout on CUDA) is an
    (I*N, C) table viewed as is, from which one row per sampled pixel is taken; an NCHW map is
    gathered along each channel's N cells. Either way the whole map is never transposed.
    """
    n_img, channels, h, w = features.shape
    if features.is_contiguous(memory_format=torch.channels_last):
        table = features.permute(0, 2, 3, 1).reshape(n_img * h * w, channels)  # a view
        if index is None:
            return table.view(n_img, h * w, channels)
        rows = index + torch.arange(n_img, device=index.device).unsqueeze(1) * (h * w)
        return table.index_select(0, rows.flatten()).view(n_img, -1, channels)
    flat = features.flatten(2)  # (I, C, N)
    if index is not None:
        flat = flat.gather(2, index.unsqueeze(1).expand(-1, channels, -1))
    return flat.transpose(1, 2)


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
        n_img, _, h, w = features.shape
        if sizes is None:
            grid = torch.ones(n_img, h, w, dtype=torch.bool, device=features.device)
        else:
            grid = size_mask(sizes, h, w)
        mask = grid.flatten(1)
        index = None
        if num_samples is not None:
            index = sample_pixel_index(mask, num_samples, generator)
            mask = mask.gather(1, index)
        x = self.proj(gather_pixels(features, index)) + self.semantic  # (I, N, D)
        if self.row_embed is not None:
            if max(h, w) > self.pos_embed_max:
                raise ValueError(f"feature map {h}x{w} exceeds model.pos_embed_max={self.pos_embed_max}")
            pos = index if index is not None else torch.arange(h * w, device=x.device).expand(n_img, -1)
            x = x + self.row_embed(pos // w) + self.col_embed(pos % w)
        return PixelTokens(self.dropout(self.norm(x)), mask, index, grid)
