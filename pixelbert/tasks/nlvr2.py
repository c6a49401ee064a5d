"""NLVR2 fine-tuning: the pair model, one True/False decision per sentence and image pair.

The loader lays out each example as two text rows, 2i (sentence, left image) and 2i+1
(sentence, right image); the model's ``nlvr2_logits`` joins the two [CLS] vectors, so
there is one label per pair of rows.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pixelbert.batch import Batch

__all__ = ["NLVR2Task"]


class NLVR2Task:
    """Cross-entropy of ``nlvr2_logits`` (B/2, 2) against ``labels`` (B/2,); metrics ``nlvr2_loss``, ``nlvr2_acc``."""

    name = "nlvr2"

    def _logits(self, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        rows = len(batch)
        if rows % 2:
            raise ValueError(f"nlvr2 task: {rows} text rows; rows must come in pairs (2i, 2i+1)")
        out = model(batch, sample_pixels=False)
        logits = model.nlvr2_logits(out)
        if logits.shape != (rows // 2, 2):
            raise ValueError(f"nlvr2 task: nlvr2_logits gave {tuple(logits.shape)}, expected ({rows // 2}, 2)")
        return logits

    def loss(self, model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        labels = batch.labels
        if labels is None:
            raise ValueError("nlvr2 task: batch.labels is None (one 0/1 label per pair of rows)")
        if labels.shape != (len(batch) // 2,):
            raise ValueError(f"nlvr2 task: labels {tuple(labels.shape)} for {len(batch)} rows; expected ({len(batch) // 2},)")
        logits = self._logits(model, batch).float()
        loss = F.cross_entropy(logits, labels.long())
        acc = (logits.detach().argmax(dim=1) == labels).float().mean()
        return loss, {"nlvr2_loss": loss.detach(), "nlvr2_acc": acc}

    @torch.no_grad()
    def predict(self, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        """(B/2,) bool: the predicted truth value of each sentence on its image pair."""
        return self._logits(model, batch).argmax(dim=1).bool()
