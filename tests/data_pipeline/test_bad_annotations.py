"""Readers never stop on one bad annotation: it is skipped and counted by kind in the manifest,
in every format. Only a missing or unreadable annotation file stops the build, in one line."""

from __future__ import annotations

import codecs
import json
import shutil

import pytest

from data_pipeline.build_shards import build_shards
from data_pipeline.formats import READERS
from data_pipeline.records import DataError

from bad_annotations import SPOILED, WITHOUT_SPLIT, spoil_coco
from fake_datasets import CAPTIONS, FORMATS, image_bytes

MAIN_FILE = {
    "coco": "annotations/captions_train2014.json",
    "coco_karpathy": "dataset_coco.json",
    "flickr30k": "dataset_flickr30k.json",
    "vg": "region_descriptions.json",
    "vqa": "v2_OpenEnded_mscoco_train2014_questions.json",
    "nlvr2": "train.json",
    "easyvqa": "train/questions.json",
}


@pytest.fixture
def copy_of(raw_root, tmp_path):
    """copy_of(name) -> a copy of the fake raw dataset ``name`` under tmp_path, free to edit."""

    def get(name):
        root = tmp_path / "raw"
        shutil.copytree(raw_root(name), root)
        return root

    return get


def records(source) -> dict:
    return {split: [record for record, _ in items] for split, items in source.splits.items()}


@pytest.mark.parametrize("name", FORMATS)
def test_a_bad_annotation_is_skipped_and_counted_by_kind(name, copy_of, tmp_path):
    spoil, samples, rejected = SPOILED[name]
    root = copy_of(name)
    spoil(root)
    manifest = build_shards(name, root, tmp_path / "out", workers=1, progress=False)
    assert {split: info["samples"] for split, info in manifest["splits"].items()} == samples
    assert {split: info["rejected"] for split, info in manifest["splits"].items() if info["rejected"]} == rejected
    assert manifest.get("rejected_without_split", {}) == WITHOUT_SPLIT.get(name, {})


def test_an_image_keeps_its_good_captions_when_one_is_bad(copy_of):
    root = copy_of("coco")
    spoil_coco(root)  # the first caption of image 1 is the number 12345
    record = next(r for r, _ in READERS["coco"](root).splits["train"] if r["image_ids"] == ["1"])
    assert record["captions"] == [CAPTIONS[1]] and record["caption_ids"] == [11]


@pytest.mark.parametrize("name", FORMATS)
def test_annotation_files_with_a_byte_order_mark_are_read(name, copy_of, raw_root):
    root = copy_of(name)
    for path in root.rglob("*"):
        if path.suffix in (".json", ".txt"):
            path.write_bytes(codecs.BOM_UTF8 + path.read_bytes())
    with_mark, plain = READERS[name](root), READERS[name](raw_root(name))
    assert records(with_mark) == records(plain) and with_mark.rejected == plain.rejected


@pytest.mark.parametrize("name", FORMATS)
def test_an_unreadable_annotation_file_is_one_line_naming_it(name, copy_of):
    root = copy_of(name)
    (root / MAIN_FILE[name]).write_bytes(b"\xff\xfe\x00 not text")
    with pytest.raises(DataError) as err:
        READERS[name](root)
    assert MAIN_FILE[name] in str(err.value) and "\n" not in str(err.value)


def test_a_path_out_of_the_dataset_folder_is_rejected_though_the_file_is_there(copy_of, tmp_path):
    root = copy_of("coco")
    (tmp_path / "outside.jpg").write_bytes(image_bytes(99))
    path = root / "annotations" / "captions_train2014.json"
    data = json.loads(path.read_text())
    data["images"][0]["file_name"] = "../../outside.jpg"  # root/train2014/../../outside.jpg
    data["images"][1]["file_name"] = str(tmp_path / "outside.jpg")
    path.write_text(json.dumps(data))
    manifest = build_shards("coco", root, tmp_path / "out", workers=1, progress=False)
    assert manifest["splits"]["train"]["rejected"] == {"bad_path": 2} and manifest["splits"]["train"]["samples"] == 6
