"""User mistakes end in one line on stderr and exit status 2, before any heavy work."""

from __future__ import annotations

import json

import pytest

from launcher import export, pretrain


def write(tmp_path, train=None, **sections) -> str:
    cfg = {"model": {"text_config": {"hidden_size": 64}}, "train": train or {}, **sections}
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(cfg))
    return str(path)


def exit_line(capsys, main, argv) -> str:
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_unknown_key(tmp_path, capsys):
    err = exit_line(capsys, pretrain.main, ["--config", write(tmp_path, {"lr": 1})])
    assert "unknown key 'train.lr'" in err


def test_bad_override(tmp_path, capsys):
    err = exit_line(capsys, pretrain.main, ["--config", write(tmp_path), "--set", "train.max_steps=-3"])
    assert "train.max_steps" in err


def test_zero_batch_size(tmp_path, capsys):
    err = exit_line(capsys, pretrain.main, ["--config", write(tmp_path), "--set", "data.micro_batch_size=0"])
    assert "data.micro_batch_size" in err


def test_global_batch_the_ranks_cannot_make(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "3")
    err = exit_line(capsys, pretrain.main, ["--config", write(tmp_path, {"global_batch_size": 64}),
                                            "--set", "data.micro_batch_size=16"])
    assert "'train.global_batch_size' 64" in err and "3 ranks" in err


def test_missing_config_file(tmp_path, capsys):
    assert "not found" in exit_line(capsys, pretrain.main, ["--config", str(tmp_path / "nope.json")])


def test_missing_resume_checkpoint(tmp_path, capsys):
    err = exit_line(capsys, pretrain.main, ["--config", write(tmp_path), "--resume", str(tmp_path / "gone")])
    assert "--resume" in err


def test_fine_tuning_task_given_to_the_pretrain_launcher(tmp_path, capsys):
    assert "train.task" in exit_line(capsys, pretrain.main, ["--config", write(tmp_path, {"task": "vqa"})])


def test_export_of_a_missing_checkpoint(tmp_path, capsys):
    assert "no such checkpoint" in exit_line(capsys, export.main, [str(tmp_path / "none"), str(tmp_path / "out")])


def test_export_of_a_folder_without_a_complete_checkpoint(tmp_path, capsys):
    (tmp_path / "ckpts").mkdir()
    assert "no complete checkpoint" in exit_line(capsys, export.main, [str(tmp_path / "ckpts"), str(tmp_path / "o")])


def test_a_new_run_into_a_folder_that_holds_a_run_is_refused(tmp_path, capsys):
    run = tmp_path / "run"
    (run / "export").mkdir(parents=True)
    (run / "export" / "model.safetensors").write_bytes(b"earlier run")
    err = exit_line(capsys, pretrain.main, ["--config", write(tmp_path, {"output_dir": str(run)})])
    assert "already holds a run" in err and "--resume auto" in err and "--overwrite" in err
    assert (run / "export" / "model.safetensors").read_bytes() == b"earlier run"
