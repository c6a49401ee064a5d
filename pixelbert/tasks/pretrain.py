"""Pre-training objective: masked language modelling (MLM) + image-text matching (ITM).

``loss = mlm_weight * MLM + itm_weight * ITM`` with random pixel sampling (the paper's 100
pixels per image, ``model.pixel_samples``) unless ``model.pixel_sampling`` is off.

MLM is computed on matching pairs only. A masked word of a caption paired with a random
other image can only be recovered from the text, so training MLM there would teach the
model to ignore the image, the opposite of what MLM is for here; UNITER and the Pixel-BERT
authors' follow-up (SOHO) likewise mask only matched pairs. Labels of non-matching rows are
ignored, whatever the collator put there.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pixelbert.batch import IGNORE_INDEX, Batch

__all__ = ["PretrainTask"]


class PretrainTask:
    """Metrics: loss parts ``mlm_loss``, ``itm_loss``, accuracies ``mlm_acc``, ``itm_acc``, and
    ``tokens``: tokens the encoder attended to (text + sampled pixels), for throughput.

    An objective with weight 0 reports neither its loss nor its accuracy: an MLM-only run feeds
    matched pairs alone, where the untrained ITM head's accuracy would read as a result.
    """

    name = "pretrain"

    def __init__(self, mlm_weight: float = 1.0, itm_weight: float = 1.0):
        self.mlm_weight = mlm_weight
        self.itm_weight = itm_weight
        self.objectives = tuple(o for o, w in (("mlm", mlm_weight), ("itm", itm_weight)) if w > 0)
        self.summary_metrics = tuple(f"{o}_acc" for o in self.objectives)  # the launcher's last line

    @classmethod
    def from_config(cls, config) -> "PretrainTask":
        return cls(config.train.mlm_weight, config.train.itm_weight)

    def loss(self, model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if batch.mlm_labels is None or batch.itm_labels is None:
            raise ValueError("pretrain task: the batch needs mlm_labels and itm_labels")
        out = model(batch, sample_pixels=True)  # the model samples when model.pixel_sampling is on
        labels = batch.mlm_labels.masked_fill(batch.itm_labels[:, None] != 1, IGNORE_INDEX)
        # The M target positions as (rows, cols), found once: every boolean index is a host sync
        # on a GPU (its result size must be read back), and this step needs M only once.
        positions = (labels != IGNORE_INDEX).nonzero(as_tuple=True)
        mlm_logits = model.mlm_logits(out, positions).float()  # (M, V); fp32 loss under bf16
        targets = labels[positions]
        if targets.numel():
            mlm_loss = F.cross_entropy(mlm_logits, targets)
            mlm_acc = (mlm_logits.detach().argmax(-1) == targets).float().mean()
        else:  # no masked token among matching rows: keep the graph, add nothing
            mlm_loss = mlm_logits.sum() * 0.0
            mlm_acc = torch.zeros((), device=mlm_logits.device)
        itm_logits = model.itm_logits(out).float()  # (B, 2)
        itm_loss = F.cross_entropy(itm_logits, batch.itm_labels)
        itm_acc = (itm_logits.detach().argmax(-1) == batch.itm_labels).float().mean()
        loss = self.mlm_weight * mlm_loss + self.itm_weight * itm_loss
        parts = {"mlm": (mlm_loss.detach(), mlm_acc), "itm": (itm_loss.detach(), itm_acc)}
        metrics = {f"{o}_{kind}": v for o in self.objectives for kind, v in zip(("loss", "acc"), parts[o])}
        metrics["tokens"] = out.attention_mask.sum().float()
        return loss, metrics
