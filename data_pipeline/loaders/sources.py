"""The shard folders one loader reads: ``data.shards`` is one folder, or a weighted mixture.

Each folder of a mixture (a "source") is built by ``build_shards`` for one dataset. The shards
of a split form one list, source by source in config order, so shard ``g`` of the corpus is
read with ``read(g, j)`` as from one ShardSet; how a training epoch draws from the sources is
``data_pipeline.plan``'s. A training split must be in every source (one without it would
silently give nothing); an evaluation split is read from the sources that have it.

In a mixture every sample's key and image ids carry its source's name (``vg/train_1``): the
datasets number their images independently, and the collator takes equal image ids for one image.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np

from pixelbert.config import DataConfig, ShardSource, did_you_mean, shard_sources

from data_pipeline.records import DataError, Sample
from data_pipeline.shards import ShardSet, load_manifest

__all__ = ["Corpus", "Source", "split_sources"]


@dataclass(frozen=True)
class Source:
    name: str
    weight: float
    shards: ShardSet


def split_sources(data: DataConfig, split: str, train: bool) -> list[tuple[ShardSource, dict]]:
    """The sources of ``data.shards`` that hold ``split`` ("train", "train+val"), with their manifests."""
    entries = shard_sources(data)
    out = []
    for entry in entries:
        manifest = load_manifest(entry.path)
        have = manifest.get("splits", {})
        missing = [name for name in split.split("+") if name not in have]
        if missing and (train or len(entries) == 1):
            raise DataError(f"{entry.path}: no split {missing[0]!r} ({did_you_mean(missing[0], sorted(have))})")
        if not missing:
            out.append((entry, manifest))
    if not out:
        raise DataError(f"no folder of data.shards holds split {split!r}: {', '.join(e.path for e in entries)}")
    return out


class Corpus:
    """The shards of ``split`` in every source, as one list; the interface of a ShardSet."""

    def __init__(self, data: DataConfig, split: str, train: bool):
        self.mixed = len(shard_sources(data)) > 1
        self.sources: list[Source] = []
        for entry, manifest in split_sources(data, split, train):
            name = entry.name or manifest["dataset"]
            if any(s.name == name for s in self.sources):
                raise DataError(f"two folders of data.shards are {name!r} shards: give each a distinct 'name'")
            self.sources.append(Source(name, entry.weight, ShardSet(entry.path, split)))
        self._first = [0]  # corpus id of every source's first shard
        for s in self.sources:
            self._first.append(self._first[-1] + len(s.shards.shards))

    def __str__(self) -> str:
        return " + ".join(str(s.shards.root) for s in self.sources)

    @property
    def manifest(self) -> dict:
        """The first source's manifest (the loader checks that the sources agree on answers and
        images per sample)."""
        return self.sources[0].shards.manifest

    @property
    def images_per_sample(self) -> int:
        return self.sources[0].shards.images_per_sample

    def plan_sources(self) -> list[tuple[int, float]]:
        """(shards, weight) of every source, for the epoch plan."""
        return [(len(s.shards.shards), s.weight) for s in self.sources]

    def source_of(self, g: int) -> tuple[int, int]:
        """(source index, shard index inside it) of corpus shard ``g``."""
        i = bisect.bisect_right(self._first, g) - 1
        return i, g - self._first[i]

    def _local(self, g: int) -> tuple[ShardSet, int]:
        i, s = self.source_of(int(g))
        return self.sources[i].shards, s

    def path(self, g: int):
        shards, s = self._local(g)
        return shards.path(s)

    def index(self, g: int):
        shards, s = self._local(g)
        return shards.index(s)

    def read(self, g: int, j: int) -> dict[str, bytes]:
        shards, s = self._local(g)
        return shards.read(s, j)

    def units_per_sample(self, task: str) -> list[np.ndarray]:
        return [c for s in self.sources for c in s.shards.units_per_sample(task)]

    def image_sizes(self) -> list[np.ndarray] | None:
        """Every shard's ``ShardSet.image_sizes``; None when a source's build did not record them."""
        sizes = [s.shards.image_sizes() for s in self.sources]
        return None if any(x is None for x in sizes) else [a for x in sizes for a in x]

    def key(self, g: int, j: int) -> str:
        """The key sample ``j`` of shard ``g`` has once read (its source's name first, in a mixture)."""
        return self._qualified(g, self.index(g)[j].key)

    def name_sample(self, g: int, sample: Sample) -> Sample:
        """Put the source's name on a sample read from shard ``g`` (a mixture only)."""
        sample.key = self._qualified(g, sample.key)
        if self.mixed:
            sample.image_ids = [self._qualified(g, i) for i in sample.image_ids]
        return sample

    def _qualified(self, g: int, name: str) -> str:
        return f"{self.sources[self.source_of(int(g))[0]].name}/{name}" if self.mixed else name

    def close(self) -> None:
        for s in self.sources:
            s.shards.close()
