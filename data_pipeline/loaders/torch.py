"""PyTorch backend: PIL decode + torchvision resize in DataLoader worker processes.

One DataLoader item is one whole batch (read, decode, collate), so workers share out
batches and the DataLoader hands them back in plan order.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from pixelbert.batch import Batch

from data_pipeline.loaders.base import ShardLoader
from data_pipeline.records import BadSample

__all__ = ["TorchLoader"]


class _BatchJobs(Dataset):
    """Item i = batch i of the jobs list: (epoch, first, end, refs) -> (end, Batch | None, bad counts)."""

    def __init__(self, loader: "TorchLoader", jobs: list):
        self.loader, self.jobs = loader, jobs

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, i: int):
        epoch, first, end, refs = self.jobs[i]
        good, bad = [], {}
        for shard, sample, sub in refs:
            try:
                good.append(self.loader.read_sample(shard, sample, sub))
            except BadSample as e:
                bad[e.kind] = bad.get(e.kind, 0) + 1
        return end, self.loader.assemble(epoch, first, good), bad


def _first(items):
    return items[0]


class TorchLoader(ShardLoader):
    backend = "torch"

    def _produce(self, epoch: int, refs: np.ndarray, start: int) -> Iterator[tuple[int, Batch | None, dict]]:
        jobs = [(epoch, a, b, refs[a:b].tolist()) for a, b in self._batch_bounds(start, len(refs))]
        if not jobs:
            return
        workers = self.config.data.num_workers
        loader = DataLoader(
            _BatchJobs(self, jobs), batch_size=1, shuffle=False, collate_fn=_first, num_workers=workers,
            prefetch_factor=self.config.data.prefetch if workers else None,
            # Workers inherit the plan by fork; torch threads in them would only fight over cores.
            worker_init_fn=_one_thread if workers else None,
            # Every DataLoader iterator draws a seed from this generator; from the global one it
            # would shift dropout and pixel sampling whenever a resumed run starts mid-epoch.
            generator=torch.Generator().manual_seed(self.seed),
        )
        yield from loader


def _one_thread(_):
    torch.set_num_threads(1)
