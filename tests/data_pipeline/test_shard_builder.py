"""build_shards: webdataset tars + DALI indexes + manifest, deterministic, validating every image."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import tarfile

import pytest
from PIL import Image

from data_pipeline.build_shards import build_shards, main
from data_pipeline.records import DataError
from data_pipeline.shards import ShardSet, read_index, write_index, write_tar

from fake_datasets import FORMATS, image_bytes, write_coco

EXPECTED_SAMPLES = {
    "coco": {"train": 8, "val": 4},
    "coco_karpathy": {"train": 9, "val": 3, "test": 3},
    "flickr30k": {"train": 8, "val": 3, "test": 3},
    "vg": {"train": 10},
    "vqa": {"train": 6, "val": 3, "test": 3},
    "nlvr2": {"train": 8, "dev": 4},
    "easyvqa": {"train": 18, "val": 2, "test": 8},
}


@pytest.mark.parametrize("name", FORMATS)
def test_every_format_builds_readable_shards(name, shards):
    out = shards(name)
    manifest = json.loads((out / "manifest.json").read_text())
    assert {s: v["samples"] for s, v in manifest["splits"].items()} == EXPECTED_SAMPLES[name]
    for split, info in manifest["splits"].items():
        assert sum(sh["samples"] for sh in info["shards"]) == info["samples"]
        for sh in info["shards"]:
            with tarfile.open(out / sh["tar"]) as tar:
                names = tar.getnames()
            assert len([n for n in names if n.endswith(".json")]) == sh["samples"]
            assert len(read_index(out / sh["index"])) == sh["samples"]
    assert manifest["source"]["files"] and all(len(f["sha256"]) == 64 for f in manifest["source"]["files"])


def test_standard_webdataset_reads_our_tars(shards):
    import webdataset as wds

    out = shards("coco")
    tar = json.loads((out / "manifest.json").read_text())["splits"]["train"]["shards"][0]["tar"]
    samples = list(wds.WebDataset(str(out / tar), shardshuffle=False))
    assert len(samples) == 3 and all({"jpg", "json"} <= set(s) for s in samples)


def test_index_is_exactly_what_dalis_wds2idx_writes(tmp_path, monkeypatch):
    rows = write_tar(tmp_path / "a.tar", [(f"k{i}", [("jpg", image_bytes(i)), ("json", b"{}")]) for i in range(5)])
    write_index(tmp_path / "a.tar", tmp_path / "dali.idx", rows)  # DALI's IndexCreator
    monkeypatch.setitem(sys.modules, "wds2idx", None)  # as if DALI were not installed
    write_index(tmp_path / "a.tar", tmp_path / "own.idx", rows)
    assert (tmp_path / "own.idx").read_bytes() == (tmp_path / "dali.idx").read_bytes()


def test_rebuild_is_byte_identical_whatever_the_worker_count(raw_root, tmp_path):
    a = build_shards("coco", raw_root("coco"), tmp_path / "a", shard_size=2, workers=1, progress=False)
    b = build_shards("coco", raw_root("coco"), tmp_path / "b", shard_size=2, workers=2, progress=False)
    assert a == b
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert files == sorted(p.name for p in (tmp_path / "b").iterdir()) and len(files) == 13
    for name in files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_pre_resize_caps_the_stored_size(raw_root, tmp_path):
    build_shards("flickr30k", raw_root("flickr30k"), tmp_path, shard_size=50, resize_shorter=24, resize_longer=40,
                 workers=1, progress=False)
    shards = ShardSet(tmp_path, "train")
    for j in range(shards.shards[0]["samples"]):
        w, h = Image.open(io.BytesIO(shards.read(0, j)["jpg"])).size
        assert min(w, h) <= 24 and max(w, h) <= 40


def _with_bad_images(root):
    """COCO with one image of every bad kind among good ones."""
    write_coco(root)
    train = root / "train2014"
    (train / "COCO_train2014_000000000001.jpg").write_bytes(b"this is not an image")  # corrupt
    good = (train / "COCO_train2014_000000000002.jpg").read_bytes()
    (train / "COCO_train2014_000000000002.jpg").write_bytes(good[: len(good) // 2])  # truncated
    bomb = io.BytesIO()
    Image.new("RGB", (2000, 1500)).save(bomb, "PNG")  # 3M pixels in a few kB
    (train / "COCO_train2014_000000000003.jpg").write_bytes(bomb.getvalue())
    (train / "COCO_train2014_000000000004.jpg").unlink()  # missing
    ann = json.loads((root / "annotations/captions_train2014.json").read_text())
    for a in ann["annotations"]:
        if a["image_id"] == 5:
            a["caption"] = "   "  # empty text
    (root / "annotations/captions_train2014.json").write_text(json.dumps(ann))


def test_bad_images_and_texts_are_rejected_and_counted(tmp_path):
    _with_bad_images(tmp_path / "raw")
    manifest = build_shards("coco", tmp_path / "raw", tmp_path / "out", max_image_pixels=1_000_000, workers=1, progress=False)
    train = manifest["splits"]["train"]
    assert train["rejected"] == {"corrupt": 2, "too_large": 1, "missing_image": 1, "empty_text": 1}
    assert train["samples"] == 3 and manifest["splits"]["val"]["samples"] == 4
    assert manifest["rejected"] == train["rejected"]


def test_cli_builds_and_reports(raw_root, tmp_path, capsys):
    assert main(["--dataset", "nlvr2", "--root", str(raw_root("nlvr2")), "--out", str(tmp_path), "--no-progress"]) == 0
    assert "train: 8 samples" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["--dataset", "coco", "--root", "/nonexistent/coco"], "/nonexistent/coco: no such folder"),
    (["--dataset", "imagenet", "--root", "."], "unknown dataset 'imagenet'"),
    (["--dataset", "vqa"], "needs --root"),
    (["--dataset", "coco", "--root", ".", "--top-answers", "10"], "does not apply"),
])
def test_cli_input_problems_are_one_line_errors(args, message, tmp_path, capsys):
    assert main(args + ["--out", str(tmp_path / "out"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err


def test_dataset_with_no_usable_sample_is_an_error(tmp_path):
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations/captions_train2014.json").write_text(json.dumps({"images": [], "annotations": []}))
    with pytest.raises(DataError, match="no samples found"):
        build_shards("coco", tmp_path, tmp_path / "out", progress=False)


def test_split_whose_images_are_all_missing_is_an_error(raw_root, tmp_path):
    for p in raw_root("coco").iterdir():
        if p.name != "val2014":
            (tmp_path / p.name).symlink_to(p)
    with pytest.raises(DataError, match=r"split 'val' has no usable sample \(rejected: {'missing_image': 4}\)"):
        build_shards("coco", tmp_path, tmp_path / "out", progress=False)


# --out: only ever a new or empty folder, or an earlier build, is replaced -----------------------

def _snapshot(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_out_equal_to_root_is_refused_and_the_dataset_is_untouched(tmp_path, capsys):
    write_coco(tmp_path / "coco")
    before = _snapshot(tmp_path / "coco")
    args = ["--dataset", "coco", "--root", str(tmp_path / "coco"), "--out", str(tmp_path / "coco"), "--no-progress"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "not shards of an earlier build" in err and "\n" not in err
    assert _snapshot(tmp_path / "coco") == before


def test_out_holding_other_files_is_refused_and_they_are_kept(raw_root, tmp_path):
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "thesis.tex").write_text("years of work")
    with pytest.raises(DataError, match=r"thesis\.tex"):
        build_shards("coco", raw_root("coco"), tmp_path / "home", workers=1, progress=False)
    assert [p.name for p in (tmp_path / "home").iterdir()] == ["thesis.tex"]


def test_out_that_is_a_file_is_refused(raw_root, tmp_path):
    (tmp_path / "out").write_text("not a folder")
    with pytest.raises(DataError, match="is not a folder"):
        build_shards("coco", raw_root("coco"), tmp_path / "out", workers=1, progress=False)
    assert (tmp_path / "out").read_text() == "not a folder"


def test_an_empty_out_folder_is_written_into(raw_root, tmp_path):
    (tmp_path / "out").mkdir()
    manifest = build_shards("coco", raw_root("coco"), tmp_path / "out", workers=1, progress=False)
    assert manifest["splits"]["train"]["samples"] == 8 and (tmp_path / "out" / "manifest.json").is_file()


def test_an_earlier_build_is_replaced(raw_root, tmp_path):
    build_shards("coco", raw_root("coco"), tmp_path / "out", shard_size=2, workers=1, progress=False)
    manifest = build_shards("coco", raw_root("coco"), tmp_path / "out", shard_size=50, workers=1, progress=False)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "manifest.json", "train-000000.idx", "train-000000.tar", "val-000000.idx", "val-000000.tar"]
    assert manifest["options"]["shard_size"] == 50


def test_an_earlier_build_with_a_file_added_is_refused(raw_root, tmp_path):
    build_shards("coco", raw_root("coco"), tmp_path / "out", workers=1, progress=False)
    (tmp_path / "out" / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match=r"notes\.txt"):
        build_shards("coco", raw_root("coco"), tmp_path / "out", workers=1, progress=False)
    assert (tmp_path / "out" / "notes.txt").read_text() == "mine"


def test_scratch_folders_of_killed_builds_are_removed_by_the_next_build(raw_root, tmp_path):
    host = socket.gethostname()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a process id that no longer runs, as after a killed build
    killed = [tmp_path / f".out.{kind}-{host}-{gone.pid}" for kind in ("building", "old")]
    killed.append(tmp_path / f".out.building-{gone.pid}")  # named as builds before the machine was in the name
    running = tmp_path / f".out.building-{host}-{os.getppid()}"  # a build still in progress: left alone
    for folder in killed + [running]:
        folder.mkdir()
        (folder / "train-000000.tar").write_bytes(b"partial")
    build_shards("coco", raw_root("coco"), tmp_path / "out", workers=1, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([running.name, "out"])
