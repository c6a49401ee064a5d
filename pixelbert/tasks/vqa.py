"""VQA fine-tuning: binary cross-entropy of the answer logits against soft VQA scores.

The targets are soft (an answer given by 2 of 10 humans scores 0.6), so each answer is an
independent binary decision rather than one softmax class.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pixelbert.batch import Batch
from pixelbert.config import VQA_LOSSES

__all__ = ["VQATask", "vqa_soft_score"]


def vqa_soft_score(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(B,) VQA score of the arg-max answer: its soft target (1.0, 0.9, 0.6, 0.3 or 0)."""
    return targets.gather(1, logits.argmax(dim=1, keepdim=True)).squeeze(1)


class VQATask:
    """Loss ``BCE(vqa_logits (B, A), vqa_targets (B, A))``; metrics ``vqa_loss``, ``vqa_score``.

    ``reduction="scaled"`` (default) sums over answers and averages over questions, i.e.
    the element mean times A. A plain mean over B*A elements divides every answer's
    gradient by A (3129 on VQA v2), so the signal would shrink with the vocabulary; the
    scaled form is the usual VQA loss (bottom-up attention, UNITER, ViLT) the paper-style
    learning rates are tuned for. ``reduction="mean"`` gives the plain element mean.

    ``loss="softmax"``: cross-entropy of one softmax over the answers against the soft scores
    normalised to sum 1 (questions without a scored answer are left out). For datasets with
    one answer per question (easy-VQA) it is plain classification, and rare answers are not
    held down by every other question's negative term, as they are under BCE; it learns the
    open questions far sooner there. BCE stays the default (the paper's, for VQA v2).
    """

    name = "vqa"

    def __init__(self, reduction: str = "scaled", loss: str = "bce"):
        if reduction not in ("scaled", "mean"):
            raise ValueError(f"VQATask: reduction must be 'scaled' or 'mean', got {reduction!r}")
        if loss not in VQA_LOSSES:
            raise ValueError(f"VQATask: loss must be one of {VQA_LOSSES}, got {loss!r}")
        self.reduction, self.loss_kind = reduction, loss

    def _logits(self, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        out = model(batch, sample_pixels=False)  # fine-tuning sees all pixels
        return model.vqa_logits(out)

    def loss(self, model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        targets = batch.vqa_targets
        if targets is None:
            raise ValueError("vqa task: batch.vqa_targets is None (the loader must give soft answer scores)")
        logits = self._logits(model, batch).float()  # fp32 loss under bf16 autocast
        if logits.shape != targets.shape:
            raise ValueError(f"vqa task: logits {tuple(logits.shape)} but vqa_targets {tuple(targets.shape)}")
        targets = targets.to(logits.dtype)
        if self.loss_kind == "softmax":
            total = targets.sum(dim=1, keepdim=True)
            scored = total.squeeze(1) > 0
            per_question = -(targets / total.clamp_min(1e-12) * F.log_softmax(logits, dim=1)).sum(dim=1)
            # A weighted sum, not per_question[scored]: boolean indexing would sync with the host on GPU.
            loss = (per_question * scored).sum() / scored.sum().clamp_min(1)
        else:
            loss = F.binary_cross_entropy_with_logits(logits, targets, reduction="mean")
            if self.reduction == "scaled":
                loss = loss * targets.shape[1]
        score = vqa_soft_score(logits.detach(), targets).mean()
        return loss, {"vqa_loss": loss.detach(), "vqa_score": score}

    @torch.no_grad()
    def predict(self, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        """(B,) index of the predicted answer in the answer vocabulary."""
        return self._logits(model, batch).argmax(dim=1)
