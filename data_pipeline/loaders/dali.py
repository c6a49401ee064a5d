"""DALI backend: ``fn.readers.webdataset`` sharded by rank, decode on the GPU or the CPU.

Pipeline: reader (shard_id = rank, num_shards = world size) -> ``decoders.image`` (device
"mixed" = nvJPEG on the GPU, or "cpu") -> resize (shorter side S, longer at most L) ->
normalise -> per-sample (3, h, w) tensors; padding and text happen in the shared collator.

Order. DALI reads the tars it is given in order, the samples of each in the order of its
index file, and gives rank r the contiguous range [N*r // W, N*(r+1) // W) -- the same split
as the plan's blocks. So for every (epoch, position) we write index files that list this
rank's remaining units in plan order in its own range. The other ranks' ranges only need
their lengths (DALI still counts them) and are filled with copies of one of our own units,
so an image from another rank's range can never reach this rank's decoder.

Bad data. DALI stops the whole pipeline on one undecodable image. When that happens we
decode the samples of the failing batch and the next ones with PIL (the builder's check),
record the bad ones, and rebuild the pipeline at the same position with each bad sample's
index line pointing to a good sample instead; its slot is dropped and counted when the
batch is collected, exactly as the torch backend drops it. Too-large images are caught
from ``peek_image_shape`` without a failure; an image too large even to allocate fails the
pipeline and is found the same way.
"""

from __future__ import annotations

import shutil
import tempfile
import weakref
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from nvidia.dali import fn, types
from nvidia.dali.backend import TensorGPU
from nvidia.dali.pipeline import Pipeline
from nvidia.dali.plugin.pytorch import feed_ndarray, to_torch_type

from pixelbert.batch import Batch

from data_pipeline.images import IMAGE_EXTS
from data_pipeline.loaders.base import ShardLoader
from data_pipeline.records import BadSample, DataError

__all__ = ["DaliLoader"]


def _to_torch(t) -> torch.Tensor:
    """Copy one DALI sample into a new torch tensor on the same device (DALI reuses its buffers)."""
    gpu = isinstance(t, TensorGPU)
    device = torch.device("cuda", t.device_id()) if gpu else torch.device("cpu")
    out = torch.empty(t.shape(), dtype=to_torch_type[t.dtype], device=device)
    feed_ndarray(t, out, cuda_stream=torch.cuda.current_stream(device) if gpu else None)
    return out


class DaliLoader(ShardLoader):
    backend = "dali"

    def __init__(self, config, split, rank, world_size, tokenizer, train, device: str = "cpu", device_id: int | None = None):
        super().__init__(config, split, rank, world_size, tokenizer, train)
        self.device, self.device_id = device, device_id
        self._bad: dict[tuple[int, int], str] = {}  # (shard, sample) -> kind, found after a DALI failure
        self._good: tuple[int, int] | None = None  # a sample known to decode: stands in for bad ones
        self._tmp = Path(tempfile.mkdtemp(prefix="pixelbert-dali-"))
        # Removed when the loader is collected or, at the latest, when the interpreter exits.
        self._cleanup = weakref.finalize(self, shutil.rmtree, str(self._tmp), True)

    # -- index files --------------------------------------------------------------------------

    def _line(self, shard: int, sample: int) -> tuple[int, str]:
        if (shard, sample) in self._bad:
            shard, sample = self._good
        return shard, self.shards.index(shard)[sample].line

    def _write_stream(self, refs: np.ndarray, pos: int, folder: Path) -> tuple[list[str], list[str]]:
        """Index files for a pipeline that starts at ``pos`` of this rank's units."""
        mine = [self._line(int(s), int(j)) for s, j in refs[pos:, :2]]
        total = self.plan.total - self.world_size * pos  # every block shortened by pos: DALI's split still lines up
        start, _ = self.plan.bounds(self.rank, total)
        filler = mine[0]
        runs: list[tuple[int, list[str]]] = []
        for shard, line in [filler] * start + mine + [filler] * (total - start - len(mine)):
            if runs and runs[-1][0] == shard:
                runs[-1][1].append(line)
            else:
                runs.append((shard, [line]))
        paths, indexes = [], []
        for n, (shard, lines) in enumerate(runs):
            idx = folder / f"{n:06d}.idx"
            idx.write_text(f"v1.2 {len(lines)}\n" + "\n".join(lines) + "\n")
            paths.append(str(self.shards.path(shard)))
            indexes.append(str(idx))
        return paths, indexes

    # -- pipeline -----------------------------------------------------------------------------

    def _pipeline(self, paths: list[str], indexes: list[str]) -> Pipeline:
        d = self.config.data
        pipe = Pipeline(batch_size=self.batch_size, num_threads=max(1, d.num_workers), device_id=self.device_id,
                        prefetch_queue_depth=d.prefetch, seed=self.seed)
        exts = [";".join(slot + e for e in IMAGE_EXTS) for slot in self.slots]
        with pipe:
            *encoded, record = fn.readers.webdataset(
                paths=paths, index_paths=indexes, ext=exts + ["json"], shard_id=self.rank, num_shards=self.world_size,
                random_shuffle=False, missing_component_behavior="empty")
            images, shapes = [], []
            for enc in encoded:
                shapes.append(fn.peek_image_shape(enc))
                img = fn.decoders.image(enc, device=self.device, output_type=types.RGB)
                # subpixel_scale=False maps the whole image onto the whole (rounded) output, as
                # torch does; DALI's default keeps the exact scale and shifts the grid slightly.
                img = fn.resize(img, resize_shorter=d.image_size, max_size=d.max_image_size, antialias=True,
                                interp_type=types.INTERP_LINEAR, subpixel_scale=False)
                images.append(fn.crop_mirror_normalize(
                    img, dtype=types.FLOAT, output_layout="CHW",
                    mean=[255.0 * m for m in d.mean], std=[255.0 * s for s in d.std]))
            pipe.set_outputs(*images, *shapes, record)
        pipe.build()
        return pipe

    def _produce(self, epoch: int, refs: np.ndarray, start: int) -> Iterator[tuple[int, Batch | None, dict]]:
        pos = start
        while pos < len(refs):
            if self._good is None and self._bad and all(tuple(r) in self._bad for r in refs[pos:, :2].tolist()):
                # Nothing left that decodes: count the rest without a pipeline.
                for first, end in self._batch_bounds(pos, len(refs)):
                    yield end, *self._collect(epoch, refs, first, end, None)
                return
            folder = Path(tempfile.mkdtemp(prefix=f"e{epoch}-p{pos}-", dir=self._tmp))
            pipe = self._pipeline(*self._write_stream(refs, pos, folder))
            failure = None
            try:
                for first, end in self._batch_bounds(pos, len(refs)):
                    try:
                        outputs = pipe.run()
                    except RuntimeError as e:  # "Critical error in pipeline": some image did not decode
                        failure = e
                        break
                    yield end, *self._collect(epoch, refs, first, end, outputs)
                    pos = end
            finally:
                del pipe
                shutil.rmtree(folder, ignore_errors=True)
            if failure is not None and not self._find_bad(refs, pos):
                raise DataError(f"DALI failed at position {pos} of epoch {epoch}, but every image there decodes "
                                f"with PIL; try data.backend=torch. DALI said: {str(failure).splitlines()[-1]}") from failure

    def _collect(self, epoch: int, refs: np.ndarray, first: int, end: int, outputs) -> tuple[Batch | None, dict]:
        k = len(self.slots)
        images, shapes, records = (outputs[:k], outputs[k:2 * k], outputs[2 * k]) if outputs else ([], [], None)
        good, bad = [], {}
        for i, (shard, sample, sub) in enumerate(refs[first:end].tolist()):
            try:
                if (shard, sample) in self._bad:
                    raise BadSample(self._bad[shard, sample])
                for shape in shapes:
                    h, w = (int(v) for v in np.asarray(shape[i])[:2])
                    if h * w > self.config.data.max_image_pixels:
                        raise BadSample("too_large")
                out = self.make_sample(np.asarray(records[i]).tobytes(), sub)
            except BadSample as e:
                bad[shard, e.kind] = bad.get((shard, e.kind), 0) + 1
                continue
            out = self.shards.name_sample(shard, out)
            expected = self.shards.key(shard, sample)
            if out.key != expected:  # would mean DALI read something other than the plan
                raise RuntimeError(f"DALI returned sample {out.key!r} where the plan has {expected!r}")
            out.images = [_to_torch(t[i]) for t in images]
            good.append(out)
        return self.assemble(epoch, first, good), bad

    def _image_problem(self, shard: int, sample: int) -> str | None:
        """The bad-data kind of a sample's images under the builder's PIL check, or None."""
        parts, entry = self.shards.read(shard, sample), self.shards.index(shard)[sample]
        try:
            for slot in self.slots:
                if not any(slot + e in parts for e in IMAGE_EXTS):
                    raise BadSample("corrupt", f"{entry.key}: no image {slot}")
                self.check_image(parts[entry.image_ext(slot)])
        except BadSample as e:
            return e.kind
        return None

    def _find_bad(self, refs: np.ndarray, pos: int) -> bool:
        """Check with PIL the samples DALI may have been decoding; True if new bad ones were found."""
        window = refs[pos: pos + self.batch_size * (self.config.data.prefetch + 2), :2].tolist()
        found = False
        for ref in dict.fromkeys(map(tuple, window)):
            if ref in self._bad:
                continue
            kind = self._image_problem(*ref)
            if kind is not None:
                self._bad[ref], found = kind, True
            elif self._good is None:
                self._good = ref
        if found and self._good is None:  # the whole window is bad: look further for a stand-in
            for ref in dict.fromkeys(map(tuple, refs[pos:, :2].tolist())):
                if ref not in self._bad:
                    kind = self._image_problem(*ref)
                    if kind is None:
                        self._good = ref
                        break
                    self._bad[ref] = kind
        return found

    def close(self) -> None:
        super().close()
        self._cleanup()
