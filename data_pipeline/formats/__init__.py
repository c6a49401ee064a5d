"""One reader per raw dataset format: the files users download -> records (see records.py).

Every reader is ``read(root, **options) -> Source``. Readers only parse annotations and
locate image files; the builder decodes and validates every image. A missing annotation
file or image folder is a DataError naming it; a single missing image is a rejected sample.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from data_pipeline.records import DataError

__all__ = ["Source", "READERS", "get_reader", "load_json", "find_file", "first_existing"]


@dataclass
class Source:
    """What a reader found: per split, [(record, [image paths])]; the annotation files read
    (checksummed into the manifest); the answer vocabulary of VQA datasets; samples the
    reader already rejected, per split and kind."""

    dataset: str
    tasks: list[str]
    splits: dict[str, list[tuple[dict, list[Path]]]]
    files: list[Path]
    answers: list[str] | None = None
    images_per_sample: int = 1
    rejected: dict[str, dict[str, int]] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)

    def reject(self, split: str, kind: str, n: int = 1) -> None:
        counts = self.rejected.setdefault(split, {})
        counts[kind] = counts.get(kind, 0) + n


def load_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from None
    except ValueError as e:
        raise DataError(f"{path}: not valid JSON ({e})") from None


def first_existing(candidates: list[Path]) -> Path | None:
    """The first candidate that is a file (images may sit in one of several layouts)."""
    return next((p for p in candidates if p.is_file()), None)


def find_file(root: Path, names: list[str], what: str) -> Path:
    """The first of ``root/name`` that exists, else one DataError listing where we looked."""
    for name in names:
        if (root / name).is_file():
            return root / name
    raise DataError(f"{root}: missing {what} (looked for {', '.join(names)})")


def get_reader(name: str) -> Callable[..., Source]:
    if name not in READERS:
        raise DataError(f"unknown dataset {name!r} (known: {', '.join(sorted(READERS))})")
    return READERS[name]


# Imported last: the reader modules use the helpers above.
from data_pipeline.formats import captions, easyvqa, nlvr2, vg, vqa  # noqa: E402

READERS: dict[str, Callable[..., Source]] = {
    "coco": captions.read_coco,
    "coco_karpathy": captions.read_coco_karpathy,
    "flickr30k": captions.read_flickr30k,
    "vg": vg.read_vg,
    "vqa": vqa.read_vqa,
    "nlvr2": nlvr2.read_nlvr2,
    "easyvqa": easyvqa.read_easyvqa,
}
