"""The epoch plan: which units every rank reads, in which order, for a seed and an epoch.

Both backends read exactly this plan, so they yield the same samples in the same order.

* Order. Training: the shard order is permuted with (seed, epoch), then the units inside
  every shard with (seed, epoch, shard) -- the usual webdataset shard + in-shard shuffle,
  which keeps reads local to one tar at a time. Evaluation: stored order, every epoch.
* Ranks. The epoch's stream of N units is cut into ``world_size`` contiguous blocks,
  block r = [N*r // W, N*(r+1) // W), which is exactly how DALI's readers split data by
  ``shard_id``/``num_shards``. Every unit is in exactly one block.
* Remainders. Evaluation keeps every unit: block sizes differ by at most one and the last
  batch may be short; nothing is padded or repeated, so metrics count every sample once.
  Training drops what does not fill a whole batch on every rank: each rank reads the first
  (N // W) // B * B units of its block (B = micro batch size), so all ranks take the same
  number of steps; at most W * B - 1 units per epoch are dropped, different ones each epoch.
* Grouping. ``group_by_sample`` (training): the in-shard shuffle permutes *samples* and keeps
  each sample's units (an image's questions) together, in stored order, so a batch holds
  several questions per image and the model's CNN runs once for all of them.
* Subsets. ``subset_fraction`` < 1 keeps a fixed (seed-chosen, same every epoch) share of
  every shard's units.
"""

from __future__ import annotations

import numpy as np

__all__ = ["EpochPlan"]

_SUBSET_STREAM = 0x5B5E7  # separates the subset draw from the epoch-order draws of the same seed


class EpochPlan:
    """``units_per_sample``: per shard, the unit count of every sample (0 = skip the sample)."""

    def __init__(
        self,
        units_per_sample: list[np.ndarray],
        *,
        seed: int,
        shuffle: bool,
        rank: int,
        world_size: int,
        batch_size: int,
        drop_last: bool,
        subset_fraction: float = 1.0,
        group_by_sample: bool = False,
    ):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} not in [0, {world_size})")
        self.seed, self.shuffle, self.drop_last, self.group_by_sample = seed, shuffle, drop_last, group_by_sample
        self.rank, self.world_size, self.batch_size = rank, world_size, batch_size
        self._ends = [np.cumsum(c) for c in units_per_sample]  # unit u of shard s is in sample searchsorted(ends, u, "right")
        self._units = []  # per shard: the local unit ids kept
        for s, counts in enumerate(units_per_sample):
            n = int(counts.sum())
            units = np.arange(n, dtype=np.int64)
            if subset_fraction < 1.0:
                keep = int(round(n * subset_fraction))
                units = np.sort(np.random.default_rng([seed, _SUBSET_STREAM, s]).permutation(n)[:keep])
            self._units.append(units)
        self.total = sum(len(u) for u in self._units)

    def bounds(self, q: int, total: int | None = None) -> tuple[int, int]:
        """[start, end) of rank ``q``'s block in a stream of ``total`` units (DALI's split)."""
        n = self.total if total is None else total
        return n * q // self.world_size, n * (q + 1) // self.world_size

    def __len__(self) -> int:
        """Units this rank reads per epoch."""
        if self.drop_last:
            return (self.total // self.world_size) // self.batch_size * self.batch_size
        start, end = self.bounds(self.rank)
        return end - start

    def num_batches(self) -> int:
        return -(-len(self) // self.batch_size)

    def stream(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """The whole epoch, all ranks: (shard ids, local unit ids), both (N,)."""
        shard_order = np.arange(len(self._units))
        if self.shuffle:
            shard_order = np.random.default_rng([self.seed, epoch]).permutation(len(self._units))
        shards, units = [], []
        for s in shard_order:
            u = self._units[s]
            if self.shuffle:
                rng = np.random.default_rng([self.seed, epoch, int(s) + 1])
                if self.group_by_sample:
                    sample_of = np.searchsorted(self._ends[s], u, side="right")
                    rank_of = rng.permutation(len(self._ends[s]))  # position of every sample in the new order
                    u = u[np.lexsort((u, rank_of[sample_of]))]
                else:
                    u = u[rng.permutation(len(u))]
            shards.append(np.full(len(u), s, dtype=np.int64))
            units.append(u)
        if not shards:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        return np.concatenate(shards), np.concatenate(units)

    def rank_units(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """This rank's units of the epoch, in reading order: (shard ids, local unit ids)."""
        shards, units = self.stream(epoch)
        start, _ = self.bounds(self.rank)
        end = start + len(self)
        return shards[start:end], units[start:end]

    def locate(self, shards: np.ndarray, units: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(sample index in its shard, unit index inside the sample) of every unit."""
        samples = np.empty_like(units)
        subs = np.empty_like(units)
        for s in np.unique(shards):
            sel = shards == s
            ends = self._ends[s]
            j = np.searchsorted(ends, units[sel], side="right")
            samples[sel] = j
            subs[sel] = units[sel] - (ends[j] - np.diff(ends, prepend=0)[j])
        return samples, subs
