"""The one loader factory: ``build_loader(config, split, rank, world_size)``.

Both backends read the same shards through the same epoch plan and collator, and yield the
same ``Batch`` structure (images within decode tolerance). The backend, the DALI decode
device and the torch backend's image device are chosen here and nowhere else.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from pixelbert.config import Config

from data_pipeline.loaders.base import ShardLoader
from data_pipeline.loaders.sources import split_sources
from data_pipeline.records import DataError
from data_pipeline.shards import MANIFEST

__all__ = ["build_loader", "resolve_backend", "dali_device", "torch_loader_device", "ShardLoader"]


def resolve_backend(name: str) -> str:
    """``auto`` -> ``dali`` when DALI is installed, else ``torch``; ``dali`` and ``torch`` as they
    are (``data.backend`` is one of config.BACKENDS: the config checks it when it loads)."""
    if name == "auto":
        return "dali" if importlib.util.find_spec("nvidia.dali") is not None else "torch"
    return name


def dali_device() -> tuple[str, int | None]:
    """Where DALI decodes: this process's GPU when CUDA is available (``mixed``: nvJPEG
    decode and GPU resize), else the CPU (``device_id=None``: no GPU touched at all)."""
    import torch

    if torch.cuda.is_available():
        return "mixed", torch.cuda.current_device()
    return "cpu", None


def torch_loader_device():
    """Where the torch backend hands images over: this process's GPU when CUDA is available (uint8
    through pinned memory, normalised there), else None (normalised float images on the host)."""
    import torch

    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else None


def _buildable(config: Config) -> bool:
    """Shards missing but buildable on the fly (one folder, not a mixture): the embedded easy-VQA
    data, or ``data.root`` given."""
    d = config.data
    return (isinstance(d.shards, str) and not (Path(d.shards) / MANIFEST).is_file()
            and (d.dataset == "easyvqa" or d.root is not None))


def check_shards(config: Config, splits: list[str]) -> None:
    """Cheap pre-flight for launchers (before the process group and the model): the shards
    exist (or will be built on the fly) and hold ``splits`` (training splits: in every folder of a
    mixture; evaluation splits: in one at least); else one DataError line."""
    if _buildable(config):  # built on the fly later: the dataset name must be one the builder reads
        from data_pipeline.formats import get_reader

        get_reader(config.data.dataset)
        return
    for split in splits:
        split_sources(config.data, split, train="train" in split.split("+"))


def _ensure_shards(config: Config, rank: int) -> None:
    """Build missing shards of the embedded easy-VQA data (or of ``data.root``) on the fly.

    Every rank may do it at once: each builds into its own temporary folder and the first to
    finish publishes it; builds are deterministic, so the others just discard theirs.
    """
    d = config.data
    if not _buildable(config):
        return
    from data_pipeline.build_shards import build_shards

    build_shards(d.dataset, d.root, d.shards, workers=1, max_image_pixels=d.max_image_pixels,
                 progress=rank == 0, replace=False)


def build_loader(config: Config, split: str, rank: int = 0, world_size: int = 1, tokenizer=None,
                 train: bool | None = None) -> ShardLoader:
    """A loader of ``split`` ("train", "val", "test", or several joined by "+": "train+val").

    The task (``config.train.task``) decides what a batch holds. ``train`` (default: whether
    the split includes "train"): shuffle per (train.seed, epoch), fresh masks/negatives every
    epoch, drop the remainder; else stored order, every sample exactly once, fixed randomness.
    ``tokenizer``: defaults to the model's (``load_tokenizer(config.model)``). With CUDA,
    call ``torch.cuda.set_device`` first: DALI decodes on the current device.
    """
    if not 0 <= rank < world_size:
        raise DataError(f"rank {rank} is not in [0, world_size={world_size})")
    backend = resolve_backend(config.data.backend)
    if train is None:
        train = "train" in split.split("+")
    _ensure_shards(config, rank)
    if tokenizer is None:
        from pixelbert.modeling.tokenizer import load_tokenizer

        tokenizer = load_tokenizer(config.model)
    if backend == "dali":
        from data_pipeline.loaders.dali import DaliLoader

        device, device_id = dali_device()
        return DaliLoader(config, split, rank, world_size, tokenizer, train, device=device, device_id=device_id)
    from data_pipeline.loaders.torch import TorchLoader

    return TorchLoader(config, split, rank, world_size, tokenizer, train, device=torch_loader_device())
