"""Tiny copies of every raw dataset format, written the way users download them.

Images are small (40..96 px), of varied sizes and aspect ratios, JPEG and PNG, with
smooth content plus a shape (so resize and decode differences are realistic, not noise).
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

FORMATS = ("coco", "coco_karpathy", "flickr30k", "vg", "vqa", "nlvr2", "easyvqa")


def image_bytes(seed: int, fmt: str = "JPEG", size: tuple[int, int] | None = None) -> bytes:
    rng = np.random.default_rng(seed)
    w, h = size or (int(rng.integers(40, 97)), int(rng.integers(40, 97)))
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([(xx * 255 // w), (yy * 255 // h), np.full_like(xx, int(rng.integers(256)))], -1).astype(np.uint8)
    im = Image.fromarray(base)
    draw = ImageDraw.Draw(im)
    x0, y0 = int(rng.integers(0, w // 2)), int(rng.integers(0, h // 2))
    draw.ellipse([x0, y0, x0 + w // 3, y0 + h // 3], fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    buf = io.BytesIO()
    im.save(buf, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buf.getvalue()


def _img(path: Path, seed: int, fmt: str = "JPEG") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(image_bytes(seed, fmt))


def _json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


CAPTIONS = ["a dog runs on the left of a red car", "two cats sleep on a sofa", "a man rides a bike to the right",
            "a plate with food and a fork", "people walk in the rain", "a blue bus on a street", "a bird on a branch"]


def write_coco(root: Path, n_train: int = 8, n_val: int = 4) -> None:
    for sub, n, off in (("train2014", n_train, 0), ("val2014", n_val, 100)):
        images, anns = [], []
        for i in range(n):
            image_id = off + i + 1
            name = f"COCO_{sub}_{image_id:012d}.jpg"
            images.append({"id": image_id, "file_name": name})
            for c in range(2 + i % 2):
                anns.append({"id": image_id * 10 + c, "image_id": image_id, "caption": CAPTIONS[(i + c) % len(CAPTIONS)]})
            _img(root / sub / name, image_id)
        _json(root / "annotations" / f"captions_{sub}.json", {"images": images, "annotations": anns})


def _karpathy_images(splits: list[str]) -> list[dict]:
    out = []
    for i, split in enumerate(splits):
        sents = [{"raw": CAPTIONS[(i + k) % len(CAPTIONS)], "sentid": i * 5 + k} for k in range(5)]
        out.append({"split": split, "sentences": sents, "imgid": i})
    return out


def write_coco_karpathy(root: Path) -> None:
    splits = ["train"] * 6 + ["restval"] * 3 + ["val"] * 3 + ["test"] * 3
    images = _karpathy_images(splits)
    for i, im in enumerate(images):
        sub = "train2014" if im["split"] in ("train", "restval") else "val2014"
        im.update(filepath=sub, filename=f"COCO_{sub}_{i + 1:012d}.jpg", cocoid=i + 1)
        _img(root / sub / im["filename"], 200 + i)
    _json(root / "dataset_coco.json", {"images": images, "dataset": "coco"})


def write_flickr30k(root: Path) -> None:
    images = _karpathy_images(["train"] * 8 + ["val"] * 3 + ["test"] * 3)
    for i, im in enumerate(images):
        im["filename"] = f"{1000 + i}.jpg"
        _img(root / "flickr30k-images" / im["filename"], 300 + i)
    _json(root / "dataset_flickr30k.json", {"images": images, "dataset": "flickr30k"})


def write_vg(root: Path, n: int = 10) -> None:
    regions, meta = [], []
    for i in range(n):
        image_id = i + 1
        folder = "VG_100K" if i % 2 else "VG_100K_2"
        _img(root / folder / f"{image_id}.jpg", 400 + i)
        meta.append({"image_id": image_id, "url": f"https://cs.stanford.edu/people/rak248/{folder}/{image_id}.jpg",
                     "width": 64, "height": 48, "coco_id": None, "flickr_id": None})
        regions.append({"id": image_id, "regions": [
            {"region_id": image_id * 100 + k, "image_id": image_id, "phrase": CAPTIONS[(i + k) % len(CAPTIONS)],
             "x": 0, "y": 0, "width": 10, "height": 10} for k in range(3 + i % 3)]})
    _json(root / "region_descriptions.json", regions)
    _json(root / "image_data.json", meta)


VQA_ANSWER_SETS = [
    ["Two", "2", "two", "2", "3", "2", "two", "2", "2", "2"],  # normalises to 2 x9, 3 x1
    ["yes"] * 10,
    ["red", "red", "a red one", "Red.", "blue", "blue", "green", "red", "red", "red"],
    ["no", "no", "yes", "no", "no", "no", "no", "nope", "no", "no"],
    ["dog", "dogs", "the dog", "dog", "puppy", "dog", "dog", "cat", "dog", "dog"],
]


def write_vqa(root: Path) -> None:
    qid = 0
    for sub, n, first_id, annotated in (("train2014", 6, 500, True), ("val2014", 3, 550, True), ("test2015", 3, 590, False)):
        img_dir = sub
        questions, annotations = [], []
        for i in range(n):
            image_id = first_id + i
            _img(root / img_dir / f"COCO_{img_dir}_{image_id:012d}.jpg", image_id)
            for k in range(1 + i % 3):
                qid += 1
                questions.append({"image_id": image_id, "question": f"what is shown number {k}?", "question_id": qid})
                answers = VQA_ANSWER_SETS[(i + k) % len(VQA_ANSWER_SETS)]
                annotations.append({
                    "question_id": qid, "image_id": image_id, "question_type": "what", "answer_type": "other",
                    "multiple_choice_answer": answers[0],
                    "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": j + 1} for j, a in enumerate(answers)]})
        _json(root / f"v2_OpenEnded_mscoco_{sub}_questions.json", {"data_subtype": sub, "questions": questions})
        if annotated:
            _json(root / f"v2_mscoco_{sub}_annotations.json", {"data_subtype": sub, "annotations": annotations})


def write_nlvr2(root: Path) -> None:
    for split, n in (("train", 8), ("dev", 4)):
        lines = []
        for i in range(n):
            stem = f"{split}-{i}-0"
            directory = str(i % 2) if split == "train" else None
            folder = root / "images" / split / directory if directory else root / split
            for side in (0, 1):
                _img(folder / f"{stem}-img{side}.png", 600 + i * 2 + side + (0 if split == "train" else 50), "PNG")
            ex = {"identifier": f"{stem}-{i % 3}", "sentence": "The left image has more dogs than the right image.",
                  "label": "True" if i % 2 else "False", "synset": "dog", "query": "dogs"}
            if directory:
                ex["directory"] = directory
            lines.append(json.dumps(ex))
        (root / f"{split}.json").write_text("\n".join(lines) + "\n")


def write_easyvqa(root: Path, n_train: int = 20, n_test: int = 8) -> None:
    """A small copy of the easy-vqa package's data folder: its first images and their questions."""
    import easy_vqa

    pkg = Path(easy_vqa.__file__).parent / "data"
    shutil.copy(pkg / "answers.txt", root / "answers.txt")
    for split, n in (("train", n_train), ("test", n_test)):
        qs = [q for q in json.loads((pkg / split / "questions.json").read_text()) if q[2] < n]
        _json(root / split / "questions.json", qs)
        (root / split / "images").mkdir(parents=True, exist_ok=True)
        for i in range(n):
            shutil.copy(pkg / split / "images" / f"{i}.png", root / split / "images" / f"{i}.png")


WRITERS = {
    "coco": write_coco,
    "coco_karpathy": write_coco_karpathy,
    "flickr30k": write_flickr30k,
    "vg": write_vg,
    "vqa": write_vqa,
    "nlvr2": write_nlvr2,
    "easyvqa": write_easyvqa,
}

# (task, split) each format is read back with in the loader tests.
TASK_OF = {"coco": "pretrain", "coco_karpathy": "retrieval", "flickr30k": "retrieval", "vg": "pretrain",
           "vqa": "vqa", "nlvr2": "nlvr2", "easyvqa": "vqa"}
