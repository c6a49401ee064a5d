"""launcher/easyvqa.py: the arms are valid overrides of the shipped configs; the table and curve it writes."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from launcher import easyvqa
from pixelbert.recipes import easyvqa as study
from pixelbert.config import load_config

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("arm", [a for a, sets in study.ARMS.items() if sets is not None])
def test_every_pretraining_arm_is_a_valid_override_of_the_shipped_config(arm):
    cfg = load_config(REPO / study.StudyOptions.pretrain_config, study.ARMS[arm])
    assert cfg.train.freeze_cnn and cfg.model.frozen_bn  # the CNN stage's trunk stays as it was learned
    if arm == "mlm":
        assert cfg.train.itm_weight == 0 and cfg.data.itm_negative_probability == 0
        assert not cfg.data.itm_paired_negatives  # no negatives at all: MLM learns on every row
    if arm == "mlm_itm_nosample":
        assert not cfg.model.pixel_sampling  # every pixel a token
    ft = load_config(REPO / "configs/finetune/easyvqa.json", ["data.subset_fraction=0.1"])
    assert ft.train.task == "vqa" and ft.model.feature_stage == cfg.model.feature_stage


def test_the_cnn_stage_config_builds_the_trunk_the_other_stages_load():
    cnn = load_config(REPO / "configs/tiny_cnn.json")
    assert cnn.train.task == "visual_words" and cnn.model.heads == ["words"]
    assert cnn.data.itm_negative_probability == 0 and not cnn.data.itm_paired_negatives  # every caption its own image's
    for path in ("configs/tiny.json", "configs/pretrain/easyvqa.json", "configs/finetune/easyvqa.json"):
        other = load_config(REPO / path)
        for key in ("backbone", "feature_stage"):
            assert getattr(other.model, key) == getattr(cnn.model, key), (path, key)
        assert (other.data.image_size, other.data.mean, other.data.std) == (cnn.data.image_size, cnn.data.mean,
                                                                           cnn.data.std)


def test_an_output_folder_that_already_holds_a_run_is_refused(tmp_path, capsys):
    (tmp_path / "mlm_itm" / "finetune").mkdir(parents=True)
    with pytest.raises(SystemExit) as exit_info:
        easyvqa.main(["--out", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "already holds a run; choose another --out" in capsys.readouterr().err
    assert (tmp_path / "mlm_itm" / "finetune").is_dir()  # nothing removed


def test_no_cnn_stage_means_a_random_trunk(tmp_path):
    args = argparse.Namespace(cnn_steps=0)
    assert study.run_cnn_stage(tmp_path / "cnn", args) == (None, 0.0)
    assert not (tmp_path / "cnn").exists()


def summary(arm, curve, test, pre_s, ft_s, cnn_s=0.0):
    return {"arm": arm, "cnn_wall_s": cnn_s, "pretrain_wall_s": pre_s, "finetune_wall_s": ft_s,
            "total_wall_s": cnn_s + pre_s + ft_s, "test_accuracy": test,
            "val_curve": [{"minutes": m, "val_accuracy": a} for m, a in curve]}


def test_table_has_one_row_per_arm_with_best_and_final_val_and_test(tmp_path):
    rows = [summary("no_pretrain", [(1, 50.0), (2, 70.0), (3, 65.0)], 64.5, 0, 180, cnn_s=90),
            summary("mlm_itm", [(4, 80.0), (5, 90.0)], 89.25, 180, 120, cnn_s=90)]
    study.write_table(rows, tmp_path / "table.md")
    lines = (tmp_path / "table.md").read_text().splitlines()
    assert len(lines) == 4
    assert lines[2] == "| no_pretrain | 1.5 | 0.0 | 3.0 | 70.00 | 65.00 | 64.50 |"
    assert lines[3] == "| mlm_itm | 1.5 | 3.0 | 2.0 | 90.00 | 90.00 | 89.25 |"


def test_curve_png_draws_the_val_curve_and_the_test_point_of_each_arm(tmp_path):
    study.plot([summary("mlm_itm", [(4, 80.0), (5, 90.0)], 89.25, 180, 120)], tmp_path / "curve.png")
    colours = {tuple(c) for c in np.asarray(Image.open(tmp_path / "curve.png").convert("RGB")).reshape(-1, 3)}
    assert (31, 119, 180) in colours and (255, 127, 14) in colours  # the val series, then the test series
