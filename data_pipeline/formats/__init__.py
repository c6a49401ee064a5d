"""One reader per raw dataset format: the files users download -> records (see records.py).

Every reader is ``read(root, **options) -> Source``. Readers only parse annotations and
locate image files; the builder decodes and validates every image. A missing or unreadable
annotation file is a DataError naming it. Everything smaller is skipped and counted by kind
(``Source.reject``), never fatal: a missing image (``missing_image``), one annotation of the
wrong type or without a field it needs (``bad_record``: a caption, a question, an NLVR2 line;
the image's other annotations are kept), an id seen before (``duplicate_id``), a path that
leads outside ``root`` (``bad_path``). An image whose every annotation was rejected is left
out with them, counted once per annotation.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable

from pixelbert.config import did_you_mean

from data_pipeline.records import BadSample, DataError

__all__ = ["Source", "READERS", "get_reader", "load_json", "read_text", "find_file", "first_existing", "get",
           "text", "ident", "id_order", "split_name", "inside"]


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
    rejected_without_split: dict[str, int] = field(default_factory=dict)

    def reject(self, split: str | None, kind: str, n: int = 1) -> None:
        """Count ``n`` rejected records of ``split`` (None: a record whose split is unusable)."""
        counts = self.rejected_without_split if split is None else self.rejected.setdefault(split, {})
        counts[kind] = counts.get(kind, 0) + n


def read_text(path: Path) -> str:
    """A UTF-8 text file, with or without a byte-order mark; unreadable: one DataError naming it."""
    try:
        return Path(path).read_text(encoding="utf-8-sig")
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None


def load_json(path: Path) -> Any:
    try:
        return json.loads(read_text(path))
    except ValueError as e:
        raise DataError(f"{path}: not valid JSON ({e})") from None


# Per-record checks: each raises BadSample, which the reader counts and moves past.

def get(obj: Any, key: str) -> Any:
    """``obj[key]`` of an annotation that must be an object holding ``key``."""
    if not isinstance(obj, dict):
        raise BadSample("bad_record", f"expected an object, got {type(obj).__name__}")
    if key not in obj:
        raise BadSample("bad_record", f"no {key!r}")
    return obj[key]


def text(obj: Any, key: str) -> str:
    """A text field (caption, question, answer): a string, possibly empty; a number or null is a bad record."""
    value = get(obj, key)
    if not isinstance(value, str):
        raise BadSample("bad_record", f"{key!r} is {type(value).__name__}, not text")
    return value


def ident(obj: Any, key: str) -> int | str:
    """An id field: an integer or a non-empty string."""
    value = get(obj, key)
    if isinstance(value, bool) or not isinstance(value, (int, str)) or value == "":
        raise BadSample("bad_record", f"{key!r} is {value!r}, not an id")
    return value


def id_order(value: int | str) -> tuple[bool, int | str]:
    """Sort key of ids that may mix integers and strings (integers first)."""
    return isinstance(value, str), value


_SPLIT_NAME = re.compile(r"[A-Za-z0-9_-]+")


def split_name(value: Any) -> str:
    """A split named in an annotation file; it names shard files, so only letters, digits, _ and -."""
    if not isinstance(value, str) or not _SPLIT_NAME.fullmatch(value):
        raise BadSample("bad_record", f"split {value!r}")
    return value


def inside(root: Path, *parts: Any) -> Path:
    """``root / parts`` for path parts read from an annotation file; one that is absolute or
    climbs out with ``..`` is ``bad_path``. Checked on the text, not on resolved links, so an
    image folder that is a symlink (a common way to lay out downloads) stays inside."""
    for part in parts:
        if not isinstance(part, str):
            raise BadSample("bad_record", f"path {part!r} is not text")
        path = PurePosixPath(part)
        if path.is_absolute() or ".." in path.parts:
            raise BadSample("bad_path", part)
    return Path(root).joinpath(*parts)


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
        raise DataError(f"unknown dataset {name!r} ({did_you_mean(name, sorted(READERS))})")
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
