"""Visual Genome region descriptions: ``region_descriptions.json`` + ``image_data.json``.

Every region phrase becomes a caption of the *whole* image (the paper pairs VG region
descriptions with the full image; there are no boxes in Pixel-BERT). All images form the
split ``train``. ``exclude_coco_karpathy``: a ``dataset_coco.json`` whose val/test images
are dropped from VG (about half of VG's images are COCO images), so retrieval results on
COCO are not evaluated on images seen in pre-training; counted as rejected ``coco_overlap``.
"""

from __future__ import annotations

from pathlib import Path

from data_pipeline.formats import Source, find_file, first_existing, get, id_order, ident, inside, load_json, text
from data_pipeline.records import BadSample, DataError

__all__ = ["read_vg"]


def _coco_eval_ids(path: Path) -> set[int]:
    data = load_json(path)
    try:
        return {im["cocoid"] for im in data["images"] if im["split"] in ("val", "test")}
    except (KeyError, TypeError) as e:
        raise DataError(f"{path}: not a Karpathy dataset_coco.json (missing {e})") from None


def _json_list(path: Path) -> list:
    data = load_json(path)
    if not isinstance(data, list):
        raise DataError(f"{path}: not a Visual Genome file (expected a list, got {type(data).__name__})")
    return data


def _image_id(entry, keys: tuple[str, str]) -> int | str:
    """The image id of an entry, under the first of ``keys`` it has (the two files differ)."""
    return ident(entry, next((k for k in keys if isinstance(entry, dict) and k in entry), keys[0]))


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
    meta = {}
    for m in _json_list(meta_path):
        try:
            image_id = _image_id(m, ("image_id", "id"))
        except BadSample as bad:
            source.reject("train", bad.kind)
            continue
        if image_id in meta:
            source.reject("train", "duplicate_id")
        else:
            meta[image_id] = m
    entries, seen_regions = {}, set()
    for entry in _json_list(regions_path):
        try:
            image_id = _image_id(entry, ("id", "image_id"))
            if image_id in entries:
                raise BadSample("duplicate_id", str(image_id))
            regions = get(entry, "regions")
            if not isinstance(regions, list):
                raise BadSample("bad_record", "'regions' is not a list")
        except BadSample as bad:
            source.reject("train", bad.kind)
            continue
        entries[image_id] = regions
    for image_id in sorted(entries, key=id_order):
        m = meta.get(image_id, {})
        if m.get("coco_id") in excluded:
            source.reject("train", "coco_overlap")
            continue
        captions, caption_ids = [], []
        for region in entries[image_id]:
            try:
                phrase, region_id = text(region, "phrase"), ident(region, "region_id")
                if region_id in seen_regions:
                    raise BadSample("duplicate_id", str(region_id))
            except BadSample as bad:
                source.reject("train", bad.kind)
                continue
            seen_regions.add(region_id)
            captions.append(phrase.strip())
            caption_ids.append(region_id)
        if entries[image_id] and not captions:  # every region rejected (and counted) already
            continue
        try:
            # The URL names the folder (VG_100K or VG_100K_2) the image was released in.
            url = m.get("url", "")
            url_dir = Path(url).parent.name if isinstance(url, str) else ""
            where = [inside(root, d, f"{image_id}.jpg") for d in (url_dir, "VG_100K", "VG_100K_2", "images") if d]
        except BadSample as bad:
            source.reject("train", bad.kind)
            continue
        record = {
            "key": f"train_{image_id}",
            "split": "train",
            "image_ids": [str(image_id)],
            "captions": captions,
            "caption_ids": caption_ids,
        }
        image = first_existing(where)
        if image is None:
            source.reject("train", "missing_image")
        else:
            source.splits.setdefault("train", []).append((record, [image]))
    return source
