"""PyTorch backend: PIL decode + torchvision resize in DataLoader worker processes.

One DataLoader item is one whole batch (read, decode, collate), so workers share out
batches and the DataLoader hands them back in plan order.

With a ``device`` (build_loader passes the process's GPU when CUDA is there), images stay
uint8 until they reach it: a quarter of the bytes through the workers' queue and the copy,
from pinned memory so the copy is asynchronous; they are normalised on the device.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from pixelbert.batch import Batch

from data_pipeline.images import decode_image, normalize_images, resized_uint8
from data_pipeline.loaders.base import ShardLoader
from data_pipeline.records import BadSample

__all__ = ["TorchLoader"]


class _BatchJobs(Dataset):
    """Item i = batch i of the jobs list: (epoch, first, end, refs) -> (end, Batch | None, {(shard, kind): count})."""

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
                bad[shard, e.kind] = bad.get((shard, e.kind), 0) + 1
        batch = self.loader.assemble(epoch, first, good)
        return end, None if batch is None else _Pinnable(batch), bad


class _Pinnable:
    """A Batch the DataLoader's pin-memory thread can pin (it calls ``pin_memory()`` on what has one)."""

    def __init__(self, batch: Batch):
        self.batch = batch

    def pin_memory(self, device=None) -> "_Pinnable":
        tensors = {f.name: getattr(self.batch, f.name) for f in dataclasses.fields(self.batch)}
        return _Pinnable(dataclasses.replace(self.batch, **{
            name: value.pin_memory() for name, value in tensors.items() if isinstance(value, torch.Tensor)}))


def _first(items):
    return items[0]


class TorchLoader(ShardLoader):
    backend = "torch"

    def __init__(self, *args, device: torch.device | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.device = device  # None: float batches on the host

    def decode(self, data: bytes) -> torch.Tensor:
        """Encoded image -> (3, h, w): uint8 when a device will normalise it, else normalised float."""
        if self.device is None:
            return super().decode(data)
        d = self.config.data
        return resized_uint8(decode_image(data, d.max_image_pixels), d.image_size, d.max_image_size)

    def _to_device(self, batch: Batch) -> Batch:
        """Images and pixel mask onto the device (asynchronously when pinned), normalised there and
        zero on padding again; the text tensors stay where the trainer moves them."""
        d = self.config.data
        mask = batch.pixel_mask.to(self.device, non_blocking=True)
        images = normalize_images(batch.images.to(self.device, non_blocking=True), d.mean, d.std)
        return dataclasses.replace(batch, images=torch.where(mask.unsqueeze(1), images, 0.0), pixel_mask=mask)

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
            pin_memory=self.device is not None and self.device.type == "cuda",
        )
        for end, batch, bad in loader:
            if batch is not None:
                batch = batch.batch if self.device is None else self._to_device(batch.batch)
            yield end, batch, bad


def _one_thread(_):
    torch.set_num_threads(1)
