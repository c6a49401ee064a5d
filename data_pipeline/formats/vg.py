"""Visual Genome region descriptions: ``region_descriptions.json`` + ``image_data.json``.

Every region phrase becomes a caption of the *whole* image (the paper pairs VG region
descriptions with the full image; there are no boxes in Pixel-BERT). All images form the
split ``train``. ``exclude_coco_karpathy``: a ``dataset_coco.json`` whose val/test images
are dropped from VG (about half of VG's images are COCO images), so retrieval results on
COCO are not evaluated on images seen in pre-training; counted as rejected ``coco_overlap``.
"""

from __future__ import annotations

from pathlib import Path

from data_pipeline.formats import Source, find_file, first_existing, load_json
from data_pipeline.records import DataError

__all__ = ["read_vg"]


def _coco_eval_ids(path: Path) -> set[int]:
    data = load_json(path)
    try:
        return {im["cocoid"] for im in data["images"] if im["split"] in ("val", "test")}
    except (KeyError, TypeError) as e:
        raise DataError(f"{path}: not a Karpathy dataset_coco.json (missing {e})") from None


def read_vg(root: str | Path, exclude_coco_karpathy: str | Path | None = None) -> Source:
    root = Path(root)
    regions_path = find_file(root, ["region_descriptions.json", "annotations/region_descriptions.json"], "region_descriptions.json")
    meta_path = find_file(root, ["image_data.json", "annotations/image_data.json"], "image_data.json")
    files = [regions_path, meta_path]
    excluded: set[int] = set()
    if exclude_coco_karpathy:
        files.append(Path(exclude_coco_karpathy))
        excluded = _coco_eval_ids(Path(exclude_coco_karpathy))
    source = Source("vg", ["pretrain"], {}, files, options={"exclude_coco_karpathy": bool(exclude_coco_karpathy)})
    try:
        meta = {m.get("image_id", m.get("id")): m for m in load_json(meta_path)}
        entries = sorted(load_json(regions_path), key=lambda e: e.get("id", e.get("image_id")))
        for entry in entries:
            image_id = entry.get("id", entry.get("image_id"))
            m = meta.get(image_id, {})
            if m.get("coco_id") in excluded:
                source.reject("train", "coco_overlap")
                continue
            # The URL names the folder (VG_100K or VG_100K_2) the image was released in.
            url_dir = Path(m.get("url", "")).parent.name
            names = [d for d in (url_dir, "VG_100K", "VG_100K_2", "images") if d]
            where = [root / d / f"{image_id}.jpg" for d in names]
            record = {
                "key": f"train_{image_id}",
                "split": "train",
                "image_ids": [str(image_id)],
                "captions": [r["phrase"].strip() for r in entry["regions"]],
                "caption_ids": [r["region_id"] for r in entry["regions"]],
            }
            image = first_existing(where)
            if image is None:
                source.reject("train", "missing_image")
            else:
                source.splits.setdefault("train", []).append((record, [image]))
    except (KeyError, TypeError, AttributeError) as e:
        raise DataError(f"{regions_path}: not a Visual Genome region file (missing {e})") from None
    return source
