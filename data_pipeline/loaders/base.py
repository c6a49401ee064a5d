"""What both backends share: the plan, the position in it, counters, and record -> sample.

A backend only turns a run of planned units into decoded Samples (``_produce``); order,
batching, resumption and counting live here, so the two backends cannot drift apart.

Bad samples are counted by kind (``bad_samples["corrupt"]``) and, when ``data.shards`` is a
mixture, by source and kind as well (``bad_samples["vg/corrupt"]``).

Position. ``(epoch, samples_consumed)``: units of this rank's plan handed out (including
units skipped as bad data). ``for batch in loader`` yields the rest of the current epoch,
then moves to (epoch + 1, 0). ``set_epoch(e)`` jumps to (e, 0) unless the loader already is
in epoch e (so a trainer calling it every epoch does not rewind a resumed loader).
"""

from __future__ import annotations

import sys
from typing import Iterator

import numpy as np

from pixelbert.batch import Batch
from pixelbert.config import Config

from data_pipeline.collate import Collator
from data_pipeline.images import decode_image, image_to_tensor
from data_pipeline.loaders.sources import Corpus
from data_pipeline.plan import EpochPlan, aspect_buckets
from data_pipeline.records import BAD_KINDS, BadSample, DataError, Sample, make_sample, parse_record
from data_pipeline.shards import image_slots

__all__ = ["ShardLoader", "DATA_TASKS"]

# Tasks that read another task's samples: the CNN stage learns from the pre-training captions.
DATA_TASKS = {"visual_words": "pretrain"}


class ShardLoader:
    backend = "base"

    def __init__(self, config: Config, split: str, rank: int, world_size: int, tokenizer, train: bool):
        data, task = config.data, DATA_TASKS.get(config.train.task, config.train.task)
        self.config, self.split, self.task, self.train = config, split, task, train
        self.rank, self.world_size, self.seed = rank, world_size, config.train.seed
        self.shards = Corpus(data, split, train)
        first = self.shards.sources[0].shards
        for source in self.shards.sources:
            have = source.shards
            if task not in have.tasks:
                raise DataError(f"{have.root}: {have.manifest['dataset']} shards serve {have.tasks}, not train.task={task!r}")
            if have.images_per_sample != first.images_per_sample:
                raise DataError(f"{have.root}: {have.images_per_sample} images per sample, {first.root}: "
                                f"{first.images_per_sample}; the folders of data.shards need one kind")
            if task == "vqa" and have.manifest.get("answers") != first.manifest.get("answers"):
                raise DataError(f"{have.root} and {first.root} have different answer lists")
        answers = self.shards.manifest.get("answers")
        if task == "vqa" and len(answers or []) != config.model.num_answers:
            raise DataError(f"{self.shards}: {len(answers or [])} answers in the shards but model.num_answers={config.model.num_answers}")
        if task == "retrieval" and self.train and data.micro_batch_size < 2:
            raise DataError("retrieval training draws wrong captions from the batch: data.micro_batch_size must be >= 2")
        self.batch_size = data.micro_batch_size
        buckets = self._aspect_buckets() if self.train and data.group_by_aspect else None
        self.group_by_aspect = buckets is not None
        self.plan = EpochPlan(self.shards.units_per_sample(task), seed=self.seed, shuffle=self.train, rank=rank,
                              world_size=world_size, batch_size=self.batch_size, drop_last=self.train,
                              subset_fraction=data.subset_fraction if self.train else 1.0,
                              group_by_sample=data.group_by_image, sources=self.shards.plan_sources(),
                              buckets=buckets)
        if self.train and len(self.plan) == 0:
            raise DataError(f"{self.shards} split {split!r}: {self.plan.total} {task} samples cannot fill one batch of "
                            f"{self.batch_size} on each of {world_size} ranks")
        self.collator = Collator(tokenizer, task, data, train=self.train, answers=answers)
        self.slots = image_slots(self.shards.images_per_sample)
        self.epoch, self.samples_consumed = 0, 0
        names = [s.name for s in self.shards.sources] if self.shards.mixed else []
        self.bad_samples = {k: 0 for k in BAD_KINDS} | {f"{n}/{k}": 0 for n in names for k in BAD_KINDS}

    # -- public API -----------------------------------------------------------------------------

    def __len__(self) -> int:
        """Batches per epoch on this rank (fewer are yielded when whole batches are bad data)."""
        return self.plan.num_batches()

    @property
    def num_samples(self) -> int:
        """Units (images, questions, examples) this rank reads per epoch."""
        return len(self.plan)

    def unit_keys(self) -> list[str]:
        """The units of epoch 0, all ranks, sorted: ``<sample key>#<unit of the sample>`` (an easy-VQA
        question: ``train_12#3``). From one folder of shards that is every unit kept, so with
        ``data.subset_fraction`` < 1 it names the subset (the same every epoch)."""
        shards, units = self.plan.stream(0)
        samples, subs = self.plan.locate(shards, units)
        return sorted({f"{self.shards.index(int(g))[int(j)].key}#{int(u)}" for g, j, u in zip(shards, samples, subs)})

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch, self.samples_consumed = epoch, 0

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "samples_consumed": self.samples_consumed, "bad_samples": dict(self.bad_samples),
                "world_size": self.world_size, "seed": self.seed, "split": self.split, "samples_per_epoch": len(self.plan),
                "sources": self._sources(), "group_by_aspect": self.group_by_aspect}

    def _sources(self) -> list[list]:
        return [[s.name, s.weight] for s in self.shards.sources]

    def load_state_dict(self, state: dict) -> None:
        for key, mine in (("world_size", self.world_size), ("seed", self.seed), ("split", self.split),
                          ("samples_per_epoch", len(self.plan)), ("sources", self._sources()),
                          ("group_by_aspect", self.group_by_aspect)):
            if state.get(key, mine) != mine:
                raise ValueError(f"loader state has {key}={state[key]!r}, this loader {mine!r}: it cannot resume exactly")
        if not 0 <= state["samples_consumed"] <= len(self.plan):
            raise ValueError(f"samples_consumed={state['samples_consumed']} outside [0, {len(self.plan)}]")
        self.epoch, self.samples_consumed = int(state["epoch"]), int(state["samples_consumed"])
        self.bad_samples.update(state.get("bad_samples", {}))

    def __iter__(self) -> Iterator[Batch]:
        epoch, start = self.epoch, self.samples_consumed
        shards, units = self.plan.rank_units(epoch)
        samples, subs = self.plan.locate(shards, units)
        refs = np.stack([shards, samples, subs], axis=1)  # (n, 3): shard, sample, unit in sample
        for end, batch, bad in self._produce(epoch, refs, start):
            self.samples_consumed = end
            for (shard, kind), n in bad.items():
                self.bad_samples[kind] += n
                if self.shards.mixed:
                    self.bad_samples[f"{self.shards.sources[self.shards.source_of(shard)[0]].name}/{kind}"] += n
            if batch is not None:
                yield batch
        if self.epoch == epoch:
            self.epoch, self.samples_consumed = epoch + 1, 0

    def close(self) -> None:
        self.shards.close()

    def _aspect_buckets(self) -> list | None:
        """Per shard, every sample's aspect bucket; None (said once, by rank 0) for shards built
        before image sizes were recorded: those train ungrouped."""
        sizes = self.shards.image_sizes()
        if sizes is None:
            if self.rank == 0:
                print(f"data.group_by_aspect: {self.shards} holds shards built without image sizes; training "
                      "without aspect grouping (rebuild the shards to group)", file=sys.stderr, flush=True)
            return None
        return [aspect_buckets(s) for s in sizes]

    # -- for the backends -----------------------------------------------------------------------

    def assemble(self, epoch: int, first: int, samples: list[Sample]) -> Batch | None:
        """Collate the good samples of the batch that starts at position ``first``."""
        # Randomness keyed by the batch's position, not by a counter: a resumed run draws the same.
        rng = np.random.default_rng([self.seed, epoch if self.train else 0, self.rank, first])
        return self.collator(samples, rng)

    def _batch_bounds(self, start: int, n: int) -> Iterator[tuple[int, int]]:
        for first in range(start, n, self.batch_size):
            yield first, min(first + self.batch_size, n)

    def _produce(self, epoch: int, refs: np.ndarray, start: int) -> Iterator[tuple[int, Batch | None, dict]]:
        """Per batch from position ``start``: (end position, Batch of its good samples or None,
        {(shard, bad kind): count}); batches are [first, first + batch_size) from ``_batch_bounds``.

        ``refs`` (n, 3): shard, sample in shard, unit in sample, of this rank's epoch."""
        raise NotImplementedError

    def make_sample(self, record_bytes: bytes, sub: int) -> Sample:
        """Record JSON -> Sample of unit ``sub``; raises BadSample."""
        return make_sample(parse_record(record_bytes), self.task, int(sub))

    def decode(self, data: bytes):
        """Encoded image -> (3, h, w) tensor as the model wants it; raises BadSample."""
        d = self.config.data
        return image_to_tensor(decode_image(data, d.max_image_pixels), d.image_size, d.max_image_size, d.mean, d.std)

    def check_image(self, data: bytes) -> None:
        """Raise BadSample if PIL cannot fully decode ``data`` (the builder's own check)."""
        decode_image(data, self.config.data.max_image_pixels)

    def read_sample(self, shard: int, sample: int, sub: int) -> Sample:
        """Read and decode one unit with PIL (the torch backend; DALI's fallback path)."""
        parts = self.shards.read(int(shard), int(sample))
        entry = self.shards.index(int(shard))[int(sample)]
        images = []
        for slot in self.slots:
            try:
                images.append(self.decode(parts[entry.image_ext(slot)]))
            except KeyError:
                raise BadSample("corrupt", f"{entry.key}: no image {slot}") from None
        if "json" not in parts:
            raise BadSample("bad_record", f"{entry.key}: no json")
        out = self.shards.name_sample(shard, self.make_sample(parts["json"], sub))
        out.images = images
        return out
