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
* Mixtures. The shards may come from several sources (``data.shards`` lists several folders),
  source i holding N_i units (after the subset) with weight w_i. A training epoch takes
  n_i = round(w_i * N_i) units (halves up) from source i: floor(n_i / N_i) full passes over its
  units, then n_i mod N_i units drawn without replacement with (seed, epoch, i); every pass is
  read in the shard + in-shard order above, drawn with (seed, epoch, i, pass). The sources'
  streams are then cut into chunks of B units (grouped: a chunk ends with a whole sample) and
  merged: chunk c of source i's C_i chunks goes at (c + 1/2) / C_i of the epoch (ties: the
  earlier source first). So every stretch of the epoch holds the sources in the ratio of their
  n_i, a chunk is read from one source (DALI then reads a run of one tar per chunk, not per
  unit), and the epoch is N = sum n_i units, cut into rank blocks as above. Evaluation
  ignores weights: every unit of every source once, in stored order, source after source.
  Source 0's first pass is drawn exactly as a single source's epoch, so one folder of
  weight 1 reads as it always did.
* Aspect grouping. ``buckets`` (training): every sample has an aspect bucket (``aspect_buckets``:
  0 tall, w/h < 1/1.4; 1 portrait, < 1; 2 landscape or square, < 1.4; 3 wide; a sample of several
  images: their summed widths over their summed heights). Inside every rank block the units are
  reordered so that each batch of B from the block's start holds one bucket: a bucket's units,
  in stream order, are cut into batches of B, each placed where its last unit stood; every
  bucket's last, incomplete batch goes to the end of the block, bucket after bucket in bucket
  order. Only the order inside a block changes: ranks read the same units as without grouping,
  drop-last drops the block's tail (of the buckets' remainders), and at most (buckets - 1) of the
  batches a rank reads in an epoch, its last ones, mix buckets (consecutive ones). A sample's
  units keep their stored order and stay together but where a batch boundary cuts them, as
  without grouping. A batch gathers its bucket's next B units, so it may span a few chunks of a
  mixture (each chunk still from one source). Evaluation is never grouped.
"""

from __future__ import annotations

import numpy as np

__all__ = ["EpochPlan", "ASPECT_EDGES", "aspect_buckets"]

# Aspect-ratio (w/h) edges of the buckets: tall | portrait | landscape or square | wide. 1.4 parts
# 4:3 (1.33) from 3:2 (1.5): after the resize to shorter side S the two differ in their longer side
# by 12%, which a batch holding both pads (benchmarks/bench_padding.py).
ASPECT_EDGES = (1 / 1.4, 1.0, 1.4)

_SUBSET_STREAM = 0x5B5E7  # separates the subset draw from the epoch-order draws of the same seed
_DRAW_STREAM = 0xD4A3  # a source's partial pass (weight not a whole number)
_PASS_STREAM = 0x9A55  # the order of every source's pass but source 0's first


def aspect_buckets(sizes: np.ndarray) -> np.ndarray:
    """sizes (samples, images, 2) as (w, h) -> (samples,) bucket in 0..len(ASPECT_EDGES), by summed w / summed h."""
    w, h = np.asarray(sizes, dtype=np.float64).sum(axis=1).T
    return np.digitize(w / h, ASPECT_EDGES).astype(np.int64)


class EpochPlan:
    """``units_per_sample``: per shard, the unit count of every sample (0 = skip the sample).
    ``sources``: (number of shards, weight) of every source, in shard order; None: one source.
    ``buckets``: per shard, the aspect bucket of every sample; None: no aspect grouping."""

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
        sources: list[tuple[int, float]] | None = None,
        buckets: list[np.ndarray] | None = None,
    ):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} not in [0, {world_size})")
        sources = sources or [(len(units_per_sample), 1.0)]
        if sum(n for n, _ in sources) != len(units_per_sample):
            raise ValueError(f"sources hold {sum(n for n, _ in sources)} shards, the plan {len(units_per_sample)}")
        self.seed, self.shuffle, self.drop_last, self.group_by_sample = seed, shuffle, drop_last, group_by_sample
        self.rank, self.world_size, self.batch_size = rank, world_size, batch_size
        if buckets is not None and [len(b) for b in buckets] != [len(c) for c in units_per_sample]:
            raise ValueError("buckets must give one bucket per sample of every shard")
        # Every sample's bucket, shard after shard (sample j of shard s at _first_sample[s] + j).
        self._buckets = None if buckets is None or not shuffle else np.concatenate(
            [np.asarray(b, dtype=np.int64) for b in buckets] or [np.zeros(0, np.int64)])
        self._first_sample = np.cumsum([0] + [len(c) for c in units_per_sample])
        self._ends = [np.cumsum(c) for c in units_per_sample]  # unit u of shard s is in sample searchsorted(ends, u, "right")
        self._units = []  # per shard: the local unit ids kept
        for s, counts in enumerate(units_per_sample):
            n = int(counts.sum())
            units = np.arange(n, dtype=np.int64)
            if subset_fraction < 1.0:
                keep = int(round(n * subset_fraction))
                units = np.sort(np.random.default_rng([seed, _SUBSET_STREAM, s]).permutation(n)[:keep])
            self._units.append(units)
        firsts = np.cumsum([0] + [n for n, _ in sources])
        self._source_shards = [range(int(a), int(b)) for a, b in zip(firsts[:-1], firsts[1:])]
        kept = [sum(len(self._units[s]) for s in shards) for shards in self._source_shards]
        # Units every source gives an epoch: round(weight x units) in training, each unit once in evaluation.
        self.source_units = [int(w * n + 0.5) if shuffle else n for n, (_, w) in zip(kept, sources)]
        self.total = sum(self.source_units)

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
        if not self.shuffle:
            return self._pass(range(len(self._units)), self._units, None)
        streams = [self._source_stream(i, epoch) for i in range(len(self._source_shards))]
        shards, units = streams[0] if len(streams) == 1 else self._merge(streams)
        if self._buckets is None:
            return shards, units
        samples, _ = self.locate(shards, units)
        bucket = self._buckets[self._first_sample[shards] + samples]
        order = np.arange(len(units))
        for q in range(self.world_size):
            start, end = self.bounds(q, len(units))
            order[start:end] = start + self._bucket_batches(bucket[start:end])
        return shards[order], units[order]

    def _bucket_batches(self, bucket: np.ndarray) -> np.ndarray:
        """The order of one rank block's units (their buckets, in stream order) that makes every
        batch from the block's start one bucket's: each bucket's batches of B where their last
        unit stood, then the incomplete ones by bucket."""
        n, b = len(bucket), self.batch_size
        if n == 0:
            return np.zeros(0, np.int64)
        by_bucket = np.argsort(bucket, kind="stable")  # positions, bucket by bucket, in stream order
        counts = np.bincount(bucket)
        first = np.cumsum(counts) - counts  # where every bucket starts in by_bucket
        place = np.empty(n, np.int64)
        place[by_bucket] = np.arange(n) - np.repeat(first, counts)  # of every unit in its bucket
        batch_end = first[bucket] + (place // b + 1) * b - 1  # in by_bucket: the last unit of the unit's batch
        complete = place // b < (counts // b)[bucket]
        placed = np.where(complete, by_bucket[np.minimum(batch_end, n - 1)], n)
        return np.lexsort((np.arange(n), np.where(complete, 0, bucket), placed))

    def _source_stream(self, i: int, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """Source ``i``'s units of a training epoch: its full passes, then its partial one."""
        shards = self._source_shards[i]
        units = [self._units[s] for s in shards]
        have, want = sum(len(u) for u in units), self.source_units[i]
        full, extra = divmod(want, have) if have else (0, 0)
        passes = []
        for p in range(full + (extra > 0)):
            chosen = units
            if p == full:  # the partial pass: ``extra`` of the source's units, drawn without replacement
                keep = np.zeros(have, dtype=bool)
                keep[np.random.default_rng([self.seed, epoch, _DRAW_STREAM, i + 1]).permutation(have)[:extra]] = True
                chosen = [u[k] for u, k in zip(units, np.split(keep, np.cumsum([len(u) for u in units])[:-1]))]
            key = [self.seed, epoch] if i == p == 0 else [self.seed, epoch, _PASS_STREAM, i, p]
            passes.append(self._pass(shards, chosen, key))
        if not passes:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        return np.concatenate([a for a, _ in passes]), np.concatenate([b for _, b in passes])

    def _pass(self, shards: range, units: list[np.ndarray], key: list[int] | None) -> tuple[np.ndarray, np.ndarray]:
        """``units[k]`` of shard ``shards[k]`` once each: shards in order and units in stored order
        (``key`` None), else shards permuted with ``key`` and units with ``key + [shard + 1]``."""
        order = np.arange(len(shards))
        if key is not None:
            order = np.random.default_rng(key).permutation(len(shards))
        out_shards, out_units = [], []
        for k in order:
            s, u = shards[k], units[k]
            if key is not None:
                rng = np.random.default_rng(key + [int(s) + 1])
                if self.group_by_sample:
                    sample_of = np.searchsorted(self._ends[s], u, side="right")
                    rank_of = rng.permutation(len(self._ends[s]))  # position of every sample in the new order
                    u = u[np.lexsort((u, rank_of[sample_of]))]
                else:
                    u = u[rng.permutation(len(u))]
            out_shards.append(np.full(len(u), s, dtype=np.int64))
            out_units.append(u)
        if not out_shards:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        return np.concatenate(out_shards), np.concatenate(out_units)

    def _merge(self, streams: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
        """Interleave the sources' streams chunk by chunk, each chunk at its share of the epoch."""
        keys, source, position = [], [], []
        for i, (shards, units) in enumerate(streams):
            n = len(units)
            chunk = np.arange(n) // self.batch_size
            if self.group_by_sample and n:  # a sample's units stay in the chunk of its first unit
                samples, _ = self.locate(shards, units)
                starts = np.r_[True, (shards[1:] != shards[:-1]) | (samples[1:] != samples[:-1])]
                chunk = chunk[np.maximum.accumulate(np.where(starts, np.arange(n), 0))]
            chunks = int(chunk[-1]) + 1 if n else 1
            keys.append((chunk + 0.5) / chunks)
            source.append(np.full(n, i))
            position.append(np.arange(n))
        order = np.lexsort((np.concatenate(position), np.concatenate(source), np.concatenate(keys)))
        return np.concatenate([s for s, _ in streams])[order], np.concatenate([u for _, u in streams])[order]

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
