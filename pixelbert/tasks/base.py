"""The task interface: what differs between pre-training and each fine-tuning task.

The training engine knows only this: a task turns (model, batch) into a scalar loss and a
dict of metrics. Heads live in the model; the task picks which heads it uses and how their
outputs become a loss. Runtime-checkable, so tests can check every task class satisfies it.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from pixelbert.batch import Batch

__all__ = ["Task"]


@runtime_checkable
class Task(Protocol):
    name: str

    def loss(self, model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Training loss and detached metric tensors (e.g. {"mlm_loss", "mlm_acc", ...})."""
        ...
