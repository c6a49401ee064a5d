"""Readers: each real format -> records with the right splits, texts, ids and targets."""

from __future__ import annotations

import json

import pytest

from data_pipeline.formats import READERS, get_reader
from data_pipeline.formats.easyvqa import derive_caption, read_easyvqa
from data_pipeline.formats.vqa import answer_vocabulary, question_targets, soft_score
from data_pipeline.records import DataError
from pixelbert.evaluation.vqa import vqa_accuracy

from fake_datasets import FORMATS, write_vg


def _sizes(source):
    return {split: len(items) for split, items in source.splits.items()}


def test_every_issue_format_has_a_reader():
    assert set(READERS) == set(FORMATS)


def test_coco_official_groups_captions_per_image(raw_root):
    src = READERS["coco"](raw_root("coco"))
    assert _sizes(src) == {"train": 8, "val": 4}
    record, paths = src.splits["train"][0]
    assert record["image_ids"] == ["1"] and len(record["captions"]) == 2 == len(record["caption_ids"])
    assert paths[0].name == "COCO_train2014_000000000001.jpg"


def test_karpathy_restval_joins_train(raw_root):
    src = READERS["coco_karpathy"](raw_root("coco_karpathy"))
    assert _sizes(src) == {"train": 9, "val": 3, "test": 3}
    assert all(len(r["captions"]) == 5 for r, _ in src.splits["test"])


def test_flickr30k_uses_the_flickr_file_name_as_image_id(raw_root):
    src = READERS["flickr30k"](raw_root("flickr30k"))
    assert _sizes(src) == {"train": 8, "val": 3, "test": 3}
    assert src.splits["val"][0][0]["image_ids"] == ["1008"]


def test_vg_region_phrases_become_whole_image_captions(raw_root):
    src = READERS["vg"](raw_root("vg"))
    assert _sizes(src) == {"train": 10}
    record, paths = src.splits["train"][0]
    assert len(record["captions"]) == 3 and paths[0].parent.name == "VG_100K_2"


def test_vg_can_leave_out_coco_evaluation_images(tmp_path):
    write_vg(tmp_path)
    meta = json.loads((tmp_path / "image_data.json").read_text())
    meta[0]["coco_id"], meta[1]["coco_id"] = 77, 78  # 77 is a Karpathy test image, 78 a train one
    (tmp_path / "image_data.json").write_text(json.dumps(meta))
    karpathy = tmp_path / "dataset_coco.json"
    karpathy.write_text(json.dumps({"images": [{"cocoid": 77, "split": "test"}, {"cocoid": 78, "split": "train"}]}))
    src = READERS["vg"](tmp_path, exclude_coco_karpathy=karpathy)
    assert _sizes(src) == {"train": 9} and src.rejected["train"] == {"coco_overlap": 1}


def test_vqa_soft_score_is_the_official_accuracy():
    humans = ["2"] * 3 + ["3"] * 7
    for answer, matches in (("2", 3), ("3", 7), ("4", 0)):
        assert soft_score(matches, 10) == pytest.approx(vqa_accuracy(answer, humans))
    assert [round(soft_score(m, 10), 6) for m in (1, 2, 3, 4, 10)] == [0.3, 0.6, 0.9, 1.0, 1.0]
    assert soft_score(1, 1) == 1.0  # one-annotator datasets (easy-VQA)


def test_vqa_answers_are_normalised_before_vocabulary_and_targets():
    assert answer_vocabulary(["Two", "2", "two.", "a dog", "dog", "cat"], top=2) == ["2", "dog"]
    targets = question_targets(["Two", "2", "two", "2", "3", "2", "two", "2", "2", "2"], {"2", "3"})
    assert targets == {"2": 1.0, "3": 0.3}


def test_vqa_reader_splits_vocabulary_and_unannotated_test(raw_root):
    src = READERS["vqa"](raw_root("vqa"), top_answers=4)
    assert set(src.splits) == {"train", "val", "test"}
    assert src.answers == ["red", "2", "dog", "no"]  # by count (5, 4, 3, 3), ties alphabetically
    first = src.splits["train"][0][0]["questions"][0]
    assert first["targets"] == {"2": 1.0} and len(first["answers"]) == 10
    assert all("targets" not in q for r, _ in src.splits["test"] for q in r["questions"])


def test_nlvr2_pairs_left_and_right_images(raw_root):
    src = READERS["nlvr2"](raw_root("nlvr2"))
    assert _sizes(src) == {"train": 8, "dev": 4} and src.images_per_sample == 2
    record, paths = src.splits["train"][1]
    assert record["label"] == 1 and [p.name for p in paths] == ["train-1-0-img0.png", "train-1-0-img1.png"]


def test_nlvr2_malformed_line_is_a_counted_bad_record(raw_root, tmp_path):
    for p in raw_root("nlvr2").iterdir():
        (tmp_path / p.name).symlink_to(p)
    (tmp_path / "dev.json").unlink()
    lines = (raw_root("nlvr2") / "dev.json").read_text().splitlines()
    (tmp_path / "dev.json").write_text("\n".join(lines[:2] + ["{not json", '{"identifier": "dev-9-0-0"}'] + lines[2:]))
    src = READERS["nlvr2"](tmp_path)
    assert _sizes(src)["dev"] == 4 and src.rejected["dev"] == {"bad_record": 2}


def test_easyvqa_caption_rule():
    assert derive_caption([("what shape is in the image?", "circle"), ("what color is the shape?", "blue")]) == "a blue circle"
    assert derive_caption([("what is the red shape?", "triangle")]) == "a red triangle"
    assert derive_caption([("is there not a teal shape?", "no"), ("does the image contain a circle?", "no")]) == "a teal shape"
    assert derive_caption([("is there a rectangle in the image?", "yes")]) == "a rectangle"
    assert derive_caption([("is a red shape present?", "no")]) is None


def test_easyvqa_package_splits_hold_out_the_last_train_images_for_val():
    src = read_easyvqa()
    assert {k: len(v) for k, v in src.splits.items()} == {"train": 3600, "val": 400, "test": 1000}
    val_ids = [int(r["image_ids"][0].split("/")[1]) for r, _ in src.splits["val"]]
    assert min(val_ids) == 3600 and len(src.answers) == 13
    record = src.splits["train"][0][0]
    assert record["captions"] == ["a blue rectangle"] and record["questions"][0]["targets"] == {"rectangle": 1.0}


@pytest.mark.parametrize("name", FORMATS)
def test_missing_input_is_one_clear_error(name, tmp_path):
    with pytest.raises(DataError) as err:
        get_reader(name)(tmp_path)
    assert "\n" not in str(err.value) and str(tmp_path) in str(err.value)
