"""Image-text retrieval fine-tuning: softmax over one positive and its hardest negatives.

Rows come in groups of ``batch.group_size`` (21 in the paper): row 0 of a group is the
image with its true caption, rows 1..20 the same image with sampled wrong captions. The
score of a row is the ITM match logit. Only the ``num_hard`` (5) highest-scoring negatives
enter the softmax: easy negatives give almost no signal, and leaving them out keeps the
gradient on the captions the model still confuses.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pixelbert.batch import Batch

__all__ = ["RetrievalTask", "hard_negative_loss"]


def hard_negative_loss(scores: torch.Tensor, num_hard: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy over the positive and the hardest negatives of each group.

    scores: (G, S), column 0 the positive. The negatives are chosen from the scores without
    gradient (the choice is not differentiable anyway), then gathered from the graph, so
    gradients reach exactly those 1 + num_hard rows. ``num_hard`` is capped at S - 1.
    Returns (loss, hard): hard (G, num_hard) the chosen columns, in 1..S-1.
    """
    if scores.dim() != 2 or scores.shape[1] < 2:
        raise ValueError(f"hard_negative_loss: scores must be (groups, 1 + negatives), got {tuple(scores.shape)}")
    k = min(num_hard, scores.shape[1] - 1)
    with torch.no_grad():
        hard = scores[:, 1:].topk(k, dim=1).indices + 1
    picked = torch.cat([scores[:, :1], scores.gather(1, hard)], dim=1)  # (G, 1 + k)
    target = torch.zeros(scores.shape[0], dtype=torch.long, device=scores.device)
    return F.cross_entropy(picked, target), hard


class RetrievalTask:
    """Hard-negative softmax loss on ``retrieval_scores`` (B,) viewed as (B / group_size, group_size).

    Metrics: ``retrieval_loss``; ``retrieval_acc`` the share of groups whose positive
    scores strictly above all its negatives (ties count as misses, as in recall@K).
    """

    name = "retrieval"

    def __init__(self, num_hard: int = 5):
        if num_hard < 1:
            raise ValueError(f"RetrievalTask: num_hard must be >= 1, got {num_hard}")
        self.num_hard = num_hard

    def loss(self, model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        group = batch.group_size
        if group is None or group < 2:
            raise ValueError(f"retrieval task: batch.group_size must be >= 2 (1 positive + negatives), got {group}")
        if len(batch) % group:
            raise ValueError(f"retrieval task: {len(batch)} rows do not split into groups of {group}")
        scores = self.predict_scores(model, batch).float().view(-1, group)  # (G, S)
        loss, _ = hard_negative_loss(scores, self.num_hard)
        with torch.no_grad():
            acc = (scores[:, :1] > scores[:, 1:]).all(dim=1).float().mean()
        return loss, {"retrieval_loss": loss.detach(), "retrieval_acc": acc}

    def predict_scores(self, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        """(B,) match score of every (image, caption) row."""
        out = model(batch, sample_pixels=False)
        return model.retrieval_scores(out)

    @torch.no_grad()
    def predict(self, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        """(B,) match scores, to fill the (images, captions) matrix of retrieval_recall."""
        return self.predict_scores(model, batch)
