"""Caption datasets: MS-COCO (official ``captions_*.json``), the Karpathy split files of
COCO (``dataset_coco.json``) and Flickr30K (``dataset_flickr30k.json``).

One record per image with all its captions. In the Karpathy COCO split, ``restval`` joins
``train`` (113,287 images): the paper pre-trains on train + restval, and nothing of the
5K val / 5K test images used for retrieval evaluation leaks into it.
"""

from __future__ import annotations

import re
from pathlib import Path

from data_pipeline.formats import Source, find_file, first_existing, load_json
from data_pipeline.records import DataError

__all__ = ["read_coco", "read_coco_karpathy", "read_flickr30k"]

_SPLIT_OF_SUBTYPE = {"train": "train", "val": "val", "test": "test"}


def _add(source: Source, split: str, record: dict, images: list[Path | None]) -> None:
    if any(p is None for p in images):
        source.reject(split, "missing_image")
    else:
        source.splits.setdefault(split, []).append((record, images))


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
        try:
            images = {im["id"]: im["file_name"] for im in data["images"]}
            captions: dict = {}
            for ann in data["annotations"]:
                captions.setdefault(ann["image_id"], []).append((ann["id"], ann["caption"]))
        except (KeyError, TypeError) as e:
            raise DataError(f"{path}: not a COCO captions file (missing {e})") from None
        for image_id in sorted(captions):
            caps = sorted(captions[image_id])
            record = {
                "key": f"{split}_{image_id}",
                "split": split,
                "image_ids": [str(image_id)],
                "captions": [c for _, c in caps],
                "caption_ids": [i for i, _ in caps],
            }
            name = images.get(image_id)
            where = [root / subtype / name, root / "images" / subtype / name] if name else []
            _add(source, split, record, [first_existing(where)])
    return source


def _read_karpathy(root: Path, dataset: str, filename: str, image_dirs) -> Source:
    path = find_file(root, [filename, f"annotations/{filename}", f"karpathy/{filename}"], f"Karpathy split file {filename}")
    data = load_json(path)
    source = Source(dataset, ["pretrain", "retrieval"], {}, [path])
    try:
        images = data["images"]
        for im in images:
            split = "train" if im["split"] == "restval" else im["split"]
            image_id = str(im.get("cocoid", Path(im["filename"]).stem))
            sentences = im["sentences"]
            record = {
                "key": f"{split}_{image_id}",
                "split": split,
                "image_ids": [image_id],
                "captions": [s["raw"].strip() for s in sentences],
                "caption_ids": [s["sentid"] for s in sentences],
            }
            _add(source, split, record, [first_existing(image_dirs(root, im))])
    except (KeyError, TypeError) as e:
        raise DataError(f"{path}: not a Karpathy split file (missing {e})") from None
    for items in source.splits.values():
        items.sort(key=lambda item: item[0]["key"])
    return source


def read_coco_karpathy(root: str | Path) -> Source:
    """``dataset_coco.json`` + ``{train2014,val2014}/`` images (splits train(+restval)/val/test)."""

    def where(root, im):
        sub = Path(im.get("filepath", "")) / im["filename"]
        return [root / sub, root / "images" / sub]

    return _read_karpathy(Path(root), "coco_karpathy", "dataset_coco.json", where)


def read_flickr30k(root: str | Path) -> Source:
    """``dataset_flickr30k.json`` + ``flickr30k-images/`` (splits train/val/test, 29000/1014/1000)."""

    def where(root, im):
        name = im["filename"]
        return [root / "flickr30k-images" / name, root / "images" / name, root / name]

    return _read_karpathy(Path(root), "flickr30k", "dataset_flickr30k.json", where)
