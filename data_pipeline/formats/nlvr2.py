"""NLVR2: json-lines files ``train.json``, ``dev.json``, ``test1.json`` (one example per line:
``identifier``, ``sentence``, ``label`` "True"/"False", ``directory`` for train) and the
images ``{split}-{set}-{pair}-img0.png`` / ``-img1.png``.

One record per example with both images (``img0`` is the left one). Images are looked for
under ``images/{split}/{directory}/``, ``images/{split}/``, ``{split}/{directory}/`` and
``{split}/`` -- the layouts of the official download and of its common re-packagings.
A line that is not valid JSON, or lacks a field, or has one of the wrong type, is a rejected
``bad_record``; an identifier seen before in its file, a ``duplicate_id``.
"""

from __future__ import annotations

import json
from pathlib import Path

from data_pipeline.formats import Source, first_existing, get, inside, read_text, text
from data_pipeline.records import BadSample, DataError

__all__ = ["read_nlvr2"]

_FILES = {"train": "train.json", "dev": "dev.json", "test1": "test1.json"}
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".PNG", ".JPG")
_LABELS = {"true": 1, "false": 0}


def _image(root: Path, split: str, directory: str | None, stem: str) -> Path | None:
    dirs = [("images", split), (split,)]
    if directory is not None:
        dirs = [(*dirs[0], directory), dirs[0], (*dirs[1], directory), dirs[1]]
    return first_existing([inside(root, *d, f"{stem}{sfx}") for d in dirs for sfx in _IMAGE_SUFFIXES])


def _example(line: str, split: str, root: Path, seen: set) -> tuple[dict, list[Path | None]]:
    """One line -> (record, [left image, right image] where found); raises BadSample."""
    try:
        ex = json.loads(line)
    except ValueError:
        raise BadSample("bad_record", "invalid JSON") from None
    identifier, sentence, label = text(ex, "identifier"), text(ex, "sentence"), get(ex, "label")
    label = _LABELS.get(str(label).lower()) if isinstance(label, (str, bool)) else None
    if label is None or not identifier:
        raise BadSample("bad_record", f"{identifier!r}: label {ex['label']!r}")
    if identifier in seen:
        raise BadSample("duplicate_id", identifier)
    seen.add(identifier)
    directory = ex.get("directory")
    directory = None if directory is None else str(directory)
    stem = identifier.rsplit("-", 1)[0]  # train-10171-0-0 -> train-10171-0
    images = [_image(root, split, directory, f"{stem}-img{i}") for i in (0, 1)]
    record = {
        "key": f"{split}_{identifier}",
        "split": split,
        "image_ids": [f"{stem}-img0", f"{stem}-img1"],
        "identifier": identifier,
        "sentence": sentence,
        "label": label,
    }
    return record, images


def read_nlvr2(root: str | Path) -> Source:
    root = Path(root)
    found = {s: p for s, f in _FILES.items() for p in (root / f, root / "data" / f) if p.is_file()}
    if not found:
        raise DataError(f"{root}: missing NLVR2 files (looked for {', '.join(_FILES.values())}, also under data/)")
    source = Source("nlvr2", ["nlvr2"], {}, sorted(found.values()), images_per_sample=2)
    for split, path in sorted(found.items()):
        seen: set[str] = set()
        for line in read_text(path).splitlines():
            if not line.strip():
                continue
            try:
                record, images = _example(line, split, root, seen)
            except BadSample as bad:
                source.reject(split, bad.kind)
                continue
            if None in images:
                source.reject(split, "missing_image")
                continue
            source.splits.setdefault(split, []).append((record, images))
    return source
