"""Shard files: deterministic webdataset tars, DALI index files, the manifest, random access.

A shards folder holds, per split, ``{split}-{n:06d}.tar`` + ``.idx`` and one
``manifest.json``. Tar members are ``{key}.json`` and ``{key}.jpg|png`` (NLVR2:
``{key}.img0.png`` and ``{key}.img1.jpg``), headers fixed (mtime 0, uid/gid 0, mode 644) so
the same inputs give byte-identical tars. The index file is DALI's v1.2 format; both
loaders use it for random access (``os.pread`` at the listed offsets).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pixelbert.config import did_you_mean

from data_pipeline.images import IMAGE_EXTS
from data_pipeline.records import TASK_FIELD, DataError

__all__ = [
    "MANIFEST",
    "IndexEntry",
    "ShardSet",
    "image_slots",
    "load_manifest",
    "read_index",
    "sha256_file",
    "write_index",
    "write_tar",
]

MANIFEST = "manifest.json"
FORMAT = "pixelbert-shards/1"
INDEX_VERSION = "v1.2"


def image_slots(images_per_sample: int) -> list[str]:
    """Member-name prefixes of the image components: ``[""]`` or ``["img0.", "img1."]``."""
    return [""] if images_per_sample == 1 else [f"img{i}." for i in range(images_per_sample)]


@dataclass(frozen=True)
class IndexEntry:
    """One sample of an index file: its key, components ext -> (offset, size), the raw line."""

    key: str
    components: dict
    line: str

    def image_ext(self, slot: str) -> str:
        for ext in (slot + e for e in IMAGE_EXTS):
            if ext in self.components:
                return ext
        raise KeyError(f"{self.key}: no image component {slot}{{{','.join(IMAGE_EXTS)}}}")


def write_tar(path: Path, samples) -> list[list[tuple[str, int, int, str]]]:
    """Write ``samples`` [(key, [(ext, bytes), ...]), ...] as a tar; return the index rows
    [(ext, data_offset, size, member_name), ...] per sample."""
    rows = []
    with open(path, "wb") as f, tarfile.open(fileobj=f, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for key, components in samples:
            row = []
            for ext, data in components:
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size, info.mtime, info.mode = len(data), 0, 0o644
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                tar.addfile(info, io.BytesIO(data))
                # After addfile the position is past the data, padded to 512-byte blocks.
                data_offset = tar.offset - (len(data) + 511) // 512 * 512
                row.append((ext, data_offset, len(data), info.name))
            rows.append(row)
    return rows


def _format_index(rows) -> str:
    lines = [" ".join(f"{e} {o} {s} {n}" for e, o, s, n in row) for row in rows]
    return f"{INDEX_VERSION} {len(rows)}\n" + "".join(line + "\n" for line in lines)


def write_index(tar_path: Path, idx_path: Path, rows) -> None:
    """Write the DALI index of ``tar_path``: with DALI's own ``wds2idx`` when it is installed
    (it ships with nvidia-dali), else from the offsets ``write_tar`` returned. Either way the
    result is checked against those offsets."""
    try:
        from wds2idx import IndexCreator
    except ImportError:
        Path(idx_path).write_text(_format_index(rows))
    else:
        with IndexCreator(str(tar_path), str(idx_path), verbose=False) as creator:
            creator.create_index()
    if Path(idx_path).read_text() != _format_index(rows):
        raise RuntimeError(f"{idx_path}: index does not match the tar that was written")


def read_index(idx_path: Path) -> list[IndexEntry]:
    """Parse a v1.2 index file (``ext offset size name`` per component)."""
    try:
        text = Path(idx_path).read_text()
    except OSError as e:
        raise DataError(f"{idx_path}: cannot read index file ({e.strerror})") from None
    header, *lines = text.splitlines()
    parts = header.split()
    if len(parts) != 2 or parts[0] != INDEX_VERSION or int(parts[1]) != len(lines):
        raise DataError(f"{idx_path}: not a DALI {INDEX_VERSION} index file with {len(lines)} samples")
    entries = []
    for line in lines:
        tok = line.split()
        if not tok or len(tok) % 4:
            raise DataError(f"{idx_path}: malformed index line {line!r}")
        comps = {tok[i]: (int(tok[i + 1]), int(tok[i + 2])) for i in range(0, len(tok), 4)}
        entries.append(IndexEntry(tok[3].split(".", 1)[0], comps, line))
    return entries


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_manifest(shards_dir: str | Path) -> dict:
    """Read ``manifest.json``; a missing or foreign folder is one clear DataError."""
    path = Path(shards_dir) / MANIFEST
    if not path.is_file():
        raise DataError(
            f"{shards_dir}: no {MANIFEST}; build the shards first: "
            "python -m data_pipeline.build_shards --dataset NAME --root DIR --out " + str(shards_dir)
        )
    try:
        manifest = json.loads(path.read_text())
    except ValueError as e:
        raise DataError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DataError(f"{path}: not a {FORMAT} manifest")
    return manifest


class ShardSet:
    """The shards of one or more splits (``"train+val"``), with random access to any sample.

    Shard ``s`` is ``self.shards[s]``; sample ``j`` of it is read with ``read(s, j)``.
    """

    def __init__(self, shards_dir: str | Path, split: str):
        self.root = Path(shards_dir)
        self.manifest = load_manifest(self.root)
        splits = self.manifest["splits"]
        self.shards = []
        for name in split.split("+"):
            if name not in splits:
                raise DataError(f"{self.root}: no split {name!r} ({did_you_mean(name, sorted(splits))})")
            self.shards.extend(splits[name]["shards"])
        if not self.shards:
            raise DataError(f"{self.root}: split {split!r} has no samples")
        self.images_per_sample = int(self.manifest.get("images_per_sample", 1))
        self._index: dict[int, list[IndexEntry]] = {}
        self._fds: dict[int, int] = {}
        self._pid = os.getpid()

    @property
    def tasks(self) -> list[str]:
        return list(self.manifest.get("tasks", []))

    def path(self, s: int) -> Path:
        return self.root / self.shards[s]["tar"]

    def index_path(self, s: int) -> Path:
        return self.root / self.shards[s]["index"]

    def index(self, s: int) -> list[IndexEntry]:
        if s not in self._index:
            entries = read_index(self.index_path(s))
            if len(entries) != self.shards[s]["samples"]:
                raise DataError(f"{self.index_path(s)}: {len(entries)} samples, manifest says {self.shards[s]['samples']}")
            self._index[s] = entries
        return self._index[s]

    def units_per_sample(self, task: str) -> list[np.ndarray]:
        """Per shard, the number of ``task`` units of every sample (0: none, e.g. no caption)."""
        name = TASK_FIELD[task]
        out = []
        for shard in self.shards:
            counts = shard.get("counts", {}).get(name)
            if counts is None:  # one unit per sample (NLVR2 examples)
                counts = [1] * shard["samples"]
            elif name == "captions":
                counts = [min(1, c) for c in counts]
            out.append(np.asarray(counts, dtype=np.int64))
        return out

    def image_sizes(self) -> list[np.ndarray] | None:
        """Per shard, (samples, images per sample, 2) the stored (w, h) of every image; None for a
        build that predates recording them."""
        if any("image_sizes" not in shard for shard in self.shards):
            return None
        return [np.asarray(shard["image_sizes"], dtype=np.int64).reshape(shard["samples"], self.images_per_sample, 2)
                for shard in self.shards]

    def read(self, s: int, j: int) -> dict[str, bytes]:
        """All components of sample ``j`` of shard ``s``: ext -> bytes."""
        if os.getpid() != self._pid:  # forked into a worker: do not share file offsets/handles
            self._fds, self._pid = {}, os.getpid()
        if s not in self._fds:
            try:
                self._fds[s] = os.open(self.path(s), os.O_RDONLY)
            except OSError as e:
                raise DataError(f"{self.path(s)}: cannot open shard ({e.strerror})") from None
        fd = self._fds[s]
        return {ext: os.pread(fd, size, off) for ext, (off, size) in self.index(s)[j].components.items()}

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds = {}

    def __getstate__(self):  # file descriptors do not travel to other processes
        state = dict(self.__dict__)
        state["_fds"] = {}
        return state
