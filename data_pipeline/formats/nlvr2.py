"""NLVR2: json-lines files ``train.json``, ``dev.json``, ``test1.json`` (one example per line:
``identifier``, ``sentence``, ``label`` "True"/"False", ``directory`` for train) and the
images ``{split}-{set}-{pair}-img0.png`` / ``-img1.png``.

One record per example with both images (``img0`` is the left one). Images are looked for
under ``images/{split}/{directory}/``, ``images/{split}/``, ``{split}/{directory}/`` and
``{split}/`` -- the layouts of the official download and of its common re-packagings.
A line that is not valid JSON, or lacks a field, is a rejected ``bad_record``.
"""

from __future__ import annotations

import json
from pathlib import Path

from data_pipeline.formats import Source, first_existing
from data_pipeline.records import DataError

__all__ = ["read_nlvr2"]

_FILES = {"train": "train.json", "dev": "dev.json", "test1": "test1.json"}
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".PNG", ".JPG")


def _image(root: Path, split: str, directory: str | None, stem: str) -> Path | None:
    dirs = [root / "images" / split, root / split]
    if directory is not None:
        dirs = [dirs[0] / directory, dirs[0], dirs[1] / directory, dirs[1]]
    return first_existing([d / f"{stem}{sfx}" for d in dirs for sfx in _IMAGE_SUFFIXES])


def read_nlvr2(root: str | Path) -> Source:
    root = Path(root)
    found = {s: p for s, f in _FILES.items() for p in (root / f, root / "data" / f) if p.is_file()}
    if not found:
        raise DataError(f"{root}: missing NLVR2 files (looked for {', '.join(_FILES.values())}, also under data/)")
    source = Source("nlvr2", ["nlvr2"], {}, sorted(found.values()), images_per_sample=2)
    for split, path in sorted(found.items()):
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as e:
            raise DataError(f"{path}: cannot read ({e.strerror})") from None
        for line in lines:
            if not line.strip():
                continue
            try:
                ex = json.loads(line)
                identifier, sentence, label = ex["identifier"], ex["sentence"], ex["label"]
                directory = ex.get("directory")
                label = {"true": 1, "false": 0}[str(label).lower()]
            except (ValueError, KeyError, TypeError):
                source.reject(split, "bad_record")
                continue
            stem = identifier.rsplit("-", 1)[0]  # train-10171-0-0 -> train-10171-0
            images = [_image(root, split, None if directory is None else str(directory), f"{stem}-img{i}") for i in (0, 1)]
            if None in images:
                source.reject(split, "missing_image")
                continue
            record = {
                "key": f"{split}_{identifier}",
                "split": split,
                "image_ids": [f"{stem}-img0", f"{stem}-img1"],
                "identifier": identifier,
                "sentence": sentence,
                "label": label,
            }
            source.splits.setdefault(split, []).append((record, images))
    return source
