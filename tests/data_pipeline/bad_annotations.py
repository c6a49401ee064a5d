"""One bad annotation of every kind, written into a copy of each fake raw dataset.

``SPOILED[name] = (spoil, samples per split, rejected per split)``: ``spoil(root)`` edits the
annotation files under ``root`` in place; the counts are what ``build_shards`` must then report.
Every spoiled image keeps its other, good annotations unless the comment says it loses them all.
A path that leads out of the dataset folder points to a real image there, so only the check on
the path (not a missing file) can reject it.
"""

from __future__ import annotations

import json
from pathlib import Path

from fake_datasets import image_bytes


def _edit(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def _outside(root: Path) -> Path:
    """A real image next to (not inside) the dataset folder."""
    target = root.parent / "outside.jpg"
    target.write_bytes(image_bytes(99))
    return target


def spoil_coco(root: Path) -> None:
    _outside(root)

    def change(data):
        anns, images = data["annotations"], data["images"]
        first = {a["image_id"]: a for a in reversed(anns)}
        first[1]["caption"] = 12345  # image 1 keeps its other caption
        first[2]["caption"] = None
        del first[3]["caption"]
        anns.append(dict(first[4]))  # the same annotation id twice
        anns.append("not an object")
        images[4]["file_name"] = "../../outside.jpg"  # image 5: root/train2014/../../outside.jpg
        images[5]["file_name"] = str(root.parent / "outside.jpg")  # image 6: absolute

    _edit(root / "annotations" / "captions_train2014.json", change)


def spoil_coco_karpathy(root: Path) -> None:
    _outside(root)

    def change(data):
        images = data["images"]
        images[0]["sentences"][0]["raw"] = 7
        del images[1]["sentences"][1]["raw"]
        images[2]["split"] = None  # counted without a split, the image dropped
        images.append(dict(images[3]))  # the same cocoid twice
        images[4]["filepath"], images[4]["filename"] = "..", "outside.jpg"

    _edit(root / "dataset_coco.json", change)


def spoil_flickr30k(root: Path) -> None:
    _outside(root)

    def change(data):
        images = data["images"]
        images[0]["sentences"][2]["raw"] = None
        del images[1]["sentences"]  # the image has no caption list: dropped
        images[2]["filename"] = "../outside.jpg"
        images[3]["sentences"][0]["sentid"] = images[3]["sentences"][1]["sentid"]

    _edit(root / "dataset_flickr30k.json", change)


def spoil_vg(root: Path) -> None:
    def regions(data):
        data[0]["regions"][0]["phrase"] = None
        del data[1]["regions"][0]["region_id"]
        data.append(dict(data[2]))  # image 3 twice
        for region in data[4]["regions"]:  # image 5: every phrase a number (4 regions), dropped
            region["phrase"] = 5

    def meta(data):
        data[3]["url"] = "https://cs.stanford.edu/../4.jpg"  # its folder would be root/..

    _edit(root / "region_descriptions.json", regions)
    _edit(root / "image_data.json", meta)


def spoil_vqa(root: Path) -> None:
    def questions(data):
        qs = data["questions"]
        qs[0]["question"] = 5  # image 500's only question: dropped
        del qs[5]["question_id"]
        qs.append(dict(qs[6]))

    def annotations(data):
        anns = data["annotations"]
        anns[1]["multiple_choice_answer"] = 2  # image 501 keeps its other question
        anns[3]["answers"][0]["answer"] = 3
        del anns[4]["answers"]  # with qs[5], all of image 502's questions: dropped

    _edit(root / "v2_OpenEnded_mscoco_train2014_questions.json", questions)
    _edit(root / "v2_mscoco_train2014_annotations.json", annotations)


def spoil_nlvr2(root: Path) -> None:
    lines = [json.loads(line) for line in (root / "train.json").read_text().splitlines()]
    lines[0]["sentence"] = 3
    lines[1]["label"] = None
    lines.append(dict(lines[4]))
    lines[5]["directory"] = "../../.."
    (root / "train.json").write_text("\n".join(json.dumps(line) for line in lines) + "\n")


def spoil_easyvqa(root: Path) -> None:
    def change(rows):  # rows 0..3 are questions of image 0, which has 8 more
        rows[0][0] = 7
        rows[1][1] = None
        rows[2][2] = "0"
        rows[3] = rows[3][:2]

    _edit(root / "train" / "questions.json", change)


SPOILED = {
    "coco": (spoil_coco, {"train": 6, "val": 4}, {"train": {"bad_record": 4, "duplicate_id": 1, "bad_path": 2}}),
    "coco_karpathy": (spoil_coco_karpathy, {"train": 7, "val": 3, "test": 3},
                      {"train": {"bad_record": 2, "duplicate_id": 1, "bad_path": 1}}),
    "flickr30k": (spoil_flickr30k, {"train": 6, "val": 3, "test": 3},
                  {"train": {"bad_record": 2, "duplicate_id": 1, "bad_path": 1}}),
    "vg": (spoil_vg, {"train": 8}, {"train": {"bad_record": 6, "duplicate_id": 1, "bad_path": 1}}),
    "vqa": (spoil_vqa, {"train": 4, "val": 3, "test": 3}, {"train": {"bad_record": 5, "duplicate_id": 1}}),
    "nlvr2": (spoil_nlvr2, {"train": 5, "dev": 4}, {"train": {"bad_record": 2, "duplicate_id": 1, "bad_path": 1}}),
    "easyvqa": (spoil_easyvqa, {"train": 18, "val": 2, "test": 8}, {"train": {"bad_record": 4}}),
}

# Records whose split itself is unusable ("split": null): in the manifest's totals only.
WITHOUT_SPLIT = {"coco_karpathy": {"bad_record": 1}}
