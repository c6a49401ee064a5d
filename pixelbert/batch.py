"""Batch: the one contract between the data pipeline and the model.

Images and text rows are decoupled by ``image_index`` so that one CNN pass serves several
text rows: NLVR2 (each sentence with two images), retrieval (one image, many captions) and
ITM negatives all reuse it.

Shapes (I images, B text rows, L tokens, A answers):
- images      (I, 3, H, W) float, normalised, zero outside each image's valid area
- pixel_mask  (I, H, W) bool, True on real pixels (False on padding)
- input_ids, attention_mask (B, L) long
- image_index (B,) long: the image each text row is paired with (None: row i <-> image i)
- mlm_labels  (B, L) long, IGNORE_INDEX where no prediction is asked
- itm_labels  (B,) long, 1 = the caption matches the image
- vqa_targets (B, A) float soft scores
- labels      (B,) long, a class label (NLVR2: one per *pair of rows*, so (B/2,))
- group_size  int: retrieval groups of rows (1 positive + negatives) when set
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import torch

__all__ = ["Batch", "IGNORE_INDEX"]

# Label of a position (or row) with nothing to predict; torch's cross-entropy skips it by default.
IGNORE_INDEX = -100


@dataclass
class Batch:
    images: torch.Tensor
    pixel_mask: torch.Tensor
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    image_index: torch.Tensor | None = None
    mlm_labels: torch.Tensor | None = None
    itm_labels: torch.Tensor | None = None
    vqa_targets: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    group_size: int | None = None
    # Non-tensor metadata (ids, raw text) for evaluation files; never sent to the device.
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def to(self, device: torch.device | str, image_dtype: torch.dtype | None = None,
           non_blocking: bool = True) -> "Batch":
        """Every tensor on ``device``; ``images`` also cast to ``image_dtype`` when given (the
        model's compute dtype: DeepSpeed casts the module, not its inputs). Labels and masks keep theirs."""
        moved = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, torch.Tensor):
                dtype = image_dtype if f.name == "images" else None
                v = v.to(device, dtype=dtype, non_blocking=non_blocking)
            moved[f.name] = v
        return Batch(**moved)

    def row_images(self) -> torch.Tensor:
        """(B,) index of the image of every text row."""
        if self.image_index is not None:
            return self.image_index
        return torch.arange(self.input_ids.shape[0], device=self.input_ids.device)
