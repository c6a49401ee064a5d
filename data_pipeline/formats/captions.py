"""Caption datasets: MS-COCO (official ``captions_*.json``), the Karpathy split files of
COCO (``dataset_coco.json``) and Flickr30K (``dataset_flickr30k.json``).

One record per image with all its captions. In the Karpathy COCO split, ``restval`` joins
``train`` (113,287 images): the paper pre-trains on train + restval, and nothing of the
5K val / 5K test images used for retrieval evaluation leaks into it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

from data_pipeline.formats import (Source, find_file, first_existing, get, id_order, ident, inside, load_json,
                                  split_name, text)
from data_pipeline.records import BadSample, DataError

__all__ = ["read_coco", "read_coco_karpathy", "read_flickr30k"]

_SPLIT_OF_SUBTYPE = {"train": "train", "val": "val", "test": "test"}


def _add(source: Source, split: str, record: dict, images: list[Path | None]) -> None:
    if any(p is None for p in images):
        source.reject(split, "missing_image")
    else:
        source.splits.setdefault(split, []).append((record, images))


def _list(data, key: str, path: Path, what: str) -> list:
    value = data.get(key) if isinstance(data, dict) else None
    if not isinstance(value, list):
        raise DataError(f"{path}: not a {what} (no {key!r} list)")
    return value


def read_coco(root: str | Path) -> Source:
    """``annotations/captions_{train,val}{2014,2017}.json`` + ``{train,val}{year}/`` images."""
    root = Path(root)
    files = sorted(p for d in (root, root / "annotations") for p in d.glob("captions_*.json"))
    files = [p for p in files if re.fullmatch(r"captions_(train|val)\d{4}\.json", p.name)]
    if not files:
        raise DataError(f"{root}: missing COCO caption files (looked for annotations/captions_train2014.json, ...)")
    source = Source("coco", ["pretrain", "retrieval"], {}, files)
    for path in files:
        subtype = path.stem.split("_", 1)[1]  # train2014
        split = _SPLIT_OF_SUBTYPE[re.sub(r"\d+", "", subtype)]
        data = load_json(path)
        images: dict = {}  # image id -> where its file may be (None: its entry was rejected and counted)
        for im in _list(data, "images", path, "COCO captions file"):
            try:
                image_id = ident(im, "id")
                if image_id in images:
                    raise BadSample("duplicate_id", str(image_id))
                images[image_id] = None
                name = get(im, "file_name")
                images[image_id] = [inside(root, subtype, name), inside(root, "images", subtype, name)]
            except BadSample as bad:
                source.reject(split, bad.kind)
        captions: dict = {}
        seen = set()
        for ann in _list(data, "annotations", path, "COCO captions file"):
            taken = _first_sighting(source, split, seen,
                                    lambda: (ident(ann, "id"), (ident(ann, "image_id"), text(ann, "caption"))))
            if taken is not None:
                ann_id, (image_id, caption) = taken
                captions.setdefault(image_id, []).append((ann_id, caption))
        for image_id in sorted(captions, key=id_order):
            if image_id in images and images[image_id] is None:  # its image entry is counted already
                continue
            caps = sorted(captions[image_id], key=lambda c: id_order(c[0]))
            record = {
                "key": f"{split}_{image_id}",
                "split": split,
                "image_ids": [str(image_id)],
                "captions": [c for _, c in caps],
                "caption_ids": [i for i, _ in caps],
            }
            _add(source, split, record, [first_existing(images.get(image_id) or [])])
    return source


def _first_sighting(source: Source, split, seen: set, read: Callable[[], tuple]) -> tuple | None:
    """``read()`` -> (id, payload) of one annotation, the first time its id is seen; a bad or
    repeated one is counted by kind (``bad_record``, ``duplicate_id``, ...) and gives None."""
    try:
        item_id, payload = read()
        if item_id in seen:
            raise BadSample("duplicate_id", str(item_id))
    except BadSample as bad:
        source.reject(split, bad.kind)
        return None
    seen.add(item_id)
    return item_id, payload


def _read_karpathy(root: Path, dataset: str, filename: str, locate: Callable[[Path, dict], list[Path]]) -> Source:
    """``locate(root, image entry)``: where its file may be; raises BadSample for a bad entry."""
    path = find_file(root, [filename, f"annotations/{filename}", f"karpathy/{filename}"], f"Karpathy split file {filename}")
    source = Source(dataset, ["pretrain", "retrieval"], {}, [path])
    seen_images, seen_sentences = set(), set()
    for im in _list(load_json(path), "images", path, "Karpathy split file"):
        split = None
        try:
            split = split_name(get(im, "split"))
            split = "train" if split == "restval" else split
            image_id = ident(im, "cocoid") if "cocoid" in im else Path(text(im, "filename")).stem
            if image_id in seen_images:
                raise BadSample("duplicate_id", str(image_id))
            seen_images.add(image_id)
            where = locate(root, im)
            sentences = get(im, "sentences")
            if not isinstance(sentences, list):
                raise BadSample("bad_record", "'sentences' is not a list")
        except BadSample as bad:
            source.reject(split, bad.kind)
            continue
        captions, caption_ids = [], []
        for sentence in sentences:
            taken = _first_sighting(source, split, seen_sentences,
                                    lambda: (ident(sentence, "sentid"), text(sentence, "raw")))
            if taken is not None:
                caption_ids.append(taken[0])
                captions.append(taken[1].strip())
        if sentences and not captions:  # every caption rejected (and counted) already
            continue
        record = {
            "key": f"{split}_{image_id}",
            "split": split,
            "image_ids": [str(image_id)],
            "captions": captions,
            "caption_ids": caption_ids,
        }
        _add(source, split, record, [first_existing(where)])
    for items in source.splits.values():
        items.sort(key=lambda item: item[0]["key"])
    return source


def read_coco_karpathy(root: str | Path) -> Source:
    """``dataset_coco.json`` + ``{train2014,val2014}/`` images (splits train(+restval)/val/test)."""

    def where(root, im):
        sub = (im.get("filepath", ""), get(im, "filename"))
        return [inside(root, *sub), inside(root, "images", *sub)]

    return _read_karpathy(Path(root), "coco_karpathy", "dataset_coco.json", where)


def read_flickr30k(root: str | Path) -> Source:
    """``dataset_flickr30k.json`` + ``flickr30k-images/`` (splits train/val/test, 29000/1014/1000)."""

    def where(root, im):
        name = get(im, "filename")
        return [inside(root, "flickr30k-images", name), inside(root, "images", name), inside(root, name)]

    return _read_karpathy(Path(root), "flickr30k", "dataset_flickr30k.json", where)
