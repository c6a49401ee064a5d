"""A mistyped name (a --set key, a section, a task, a dataset, a split) is one line that says
"did you mean" the closest known name, with exit status 2, before any model is built."""

from __future__ import annotations

import json

import pytest

from tiny_data import write_config


def _error_line(capsys, main, argv) -> str:
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    [line] = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error: ")]
    return line


def _tiny_vqa_config(task_data, tmp_path):
    _, shards, manifest = task_data("vqa")
    return write_config(tmp_path / "config.json", "vqa", shards, manifest, tmp_path / "run")


def test_a_mistyped_set_key_suggests_the_key(capsys, task_data, tmp_path):
    from launcher import finetune

    line = _error_line(capsys, finetune.main, ["--task", "vqa", "--config", str(_tiny_vqa_config(task_data, tmp_path)),
                                               "--set", "train.lr_transformr=1e-4"])
    assert "unknown key 'train.lr_transformr' (did you mean 'train.lr_transformer'?)" in line


def test_a_mistyped_set_section_suggests_the_section(capsys, task_data, tmp_path):
    from launcher import finetune

    line = _error_line(capsys, finetune.main, ["--task", "vqa", "--config", str(_tiny_vqa_config(task_data, tmp_path)),
                                               "--set", "trian.epochs=1"])
    assert "unknown section 'trian' (did you mean 'train'?)" in line


def test_a_key_like_no_known_key_lists_the_known_keys(capsys, task_data, tmp_path):
    from launcher import finetune

    line = _error_line(capsys, finetune.main, ["--task", "vqa", "--config", str(_tiny_vqa_config(task_data, tmp_path)),
                                               "--set", "model.zzz=1"])
    assert "unknown key 'model.zzz' (known: " in line and "pixel_samples" in line


def test_a_mistyped_task_suggests_the_task(capsys, task_data, tmp_path):
    from launcher import finetune

    line = _error_line(capsys, finetune.main, ["--task", "vqq", "--config", str(_tiny_vqa_config(task_data, tmp_path))])
    assert line == "error: unknown task 'vqq' (did you mean 'vqa'?)"


def test_a_mistyped_dataset_suggests_the_dataset(capsys, tmp_path):
    from data_pipeline.build_shards import main

    assert main(["--dataset", "coco_karpaty", "--root", ".", "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    assert "unknown dataset 'coco_karpaty' (did you mean 'coco_karpathy'?)" in capsys.readouterr().err


def test_a_mistyped_evaluation_split_suggests_the_split_before_the_model_loads(capsys, finetuned, monkeypatch):
    from launcher import evaluate
    from pixelbert.recipes import scoring

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the split was checked")

    monkeypatch.setattr(scoring, "load_model", no_model)
    run, _ = finetuned("vqa")
    line = _error_line(capsys, evaluate.main, ["--task", "vqa", "--checkpoint", str(run), "--split", "vall"])
    assert "no split 'vall' (did you mean 'val'?)" in line


def test_a_sweep_with_a_mistyped_split_stops_before_ray_starts(capsys, task_data, tmp_path, monkeypatch):
    import builtins

    from launcher import sweep

    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise AssertionError("Ray was imported before the sweep file's split was checked")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    spec = tmp_path / "sweep.json"
    spec.write_text(json.dumps({"name": "typo", "base_config": str(_tiny_vqa_config(task_data, tmp_path)),
                                "task": "vqa", "eval_split": "vall", "storage_path": str(tmp_path / "sweeps"),
                                "search_space": {"train.lr_transformer": {"choice": [1e-4]}}}))
    line = _error_line(capsys, sweep.main, ["--config", str(spec)])
    assert "no split 'vall' (did you mean 'val'?)" in line
