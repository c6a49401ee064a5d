"""Bad configs and arguments (launchers, build_shards) the launcher tests do not already cover:
exit 2, one line naming the problem, no traceback, before any heavy work (tests/launcher/test_cli.py
has unknown key, zero batch, impossible global batch, missing config / checkpoint, task of another
launcher). A run whose weights become non-finite ends with exit 1 and exports nothing."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from launcher import pretrain
from pixelbert.engine.checkpoint import find_resume
from runs import write_config


@pytest.fixture
def no_heavy_work(monkeypatch):
    """The process group, the hardware probe and the model refuse to start: a test using this
    fixture passes only if the problem is found before any of them (no clock involved)."""
    import pixelbert.engine.trainer  # noqa: F401  (bound to the real functions before they are patched)
    from pixelbert.engine import hardware
    from pixelbert.modeling import model

    def refuse(*args, **kwargs):
        raise AssertionError("heavy work started before the bad input was refused")

    monkeypatch.setattr(hardware, "init_distributed", refuse)
    monkeypatch.setattr(hardware, "detect_hardware", refuse)
    monkeypatch.setattr(model.PixelBert, "__init__", refuse)


def config_file(tmp_path, **train) -> str:
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps({"model": {"text_config": {"hidden_size": 64}}, "train": train}))
    return str(path)


@pytest.mark.parametrize("argv, named", [
    (["--set", "data.micro_batch_size=-4"], "data.micro_batch_size"),
    (["--set", 'train.max_steps="ten"'], "train.max_steps"),
    (["--set", "train.grad_clip=[1]"], "train.grad_clip"),
    (["--set", 'train.task="pretrian"'], "pretrian"),
    (["--set", "train.max_bad_steps=-1"], "train.max_bad_steps"),
], ids=["negative-batch", "string-for-int", "list-for-float", "unknown-task", "negative-max-bad-steps"])
def test_a_bad_value_is_exit_2_and_one_line_naming_it(tmp_path, capsys, argv, named, no_heavy_work):
    with pytest.raises(SystemExit) as stop:
        pretrain.main(["--config", config_file(tmp_path), *argv])
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and err.startswith("error: ") and "\n" not in err and named in err, err


def test_a_wrong_type_in_the_file_names_the_file_and_key(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        pretrain.main(["--config", config_file(tmp_path, epochs="2")])
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and "cfg.json" in err and "train.epochs" in err and "\n" not in err


def test_missing_shards_stop_the_launcher_with_one_line_before_the_model_is_built(tmp_path, capsys, no_heavy_work):
    cfg = write_config(tmp_path / "cfg.json", tmp_path / "no_such_shards", tmp_path / "run")
    with pytest.raises(SystemExit) as stop:
        pretrain.main(["--config", str(cfg)])
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and err.startswith("error: ") and "\n" not in err and "no_such_shards" in err, err
    assert not (tmp_path / "run").exists()  # nothing trained, nothing written


def exit_of(argv: list[str], capsys) -> tuple[int, str]:
    """(exit status, stderr) of launcher/pretrain.py run in this process."""
    with pytest.raises(SystemExit) as stop:
        pretrain.main(argv)
    return stop.value.code, capsys.readouterr().err.strip()


@pytest.mark.parametrize("argv, named", [
    (["--set", "train.lr_cnn=NaN"], "'train.lr_cnn' must be finite and >= 0, got nan"),
    (["--set", "train.itm_weight=-1"], "'train.itm_weight' must be finite and >= 0, got -1"),
    (["--set", "train.log_every=0"], "'train.log_every' must be > 0, got 0"),
    (["--set", "train.eval_every=0"], "'train.eval_every' must be > 0, got 0"),
    (["--set", "model.backbone=resnet51"], "'model.backbone' must be resnet18, "),
    (["--set", 'model.heads=["mlm", "itn"]'], "'model.heads' must be mlm, itm, "),
    (["--set", "deepspeed.gradient_clipping=1.0"],
     "'deepspeed.gradient_clipping' is set by pixelbert; set train.grad_clip"),
    (["--set", "deepspeed.bf16.enabled=true"], "'deepspeed.bf16.enabled' is set by pixelbert; set train.precision"),
], ids=["nan-lr", "negative-weight", "log-every-0", "eval-every-0", "unknown-backbone", "unknown-head",
        "deepspeed-clipping", "deepspeed-precision"])
def test_a_value_outside_its_range_is_exit_2_naming_the_key_and_the_range(tmp_path, capsys, argv, named,
                                                                         no_heavy_work):
    code, err = exit_of(["--config", config_file(tmp_path), *argv], capsys)
    assert code == 2 and err.startswith("error: ") and "\n" not in err and named in err, err


def test_an_output_dir_this_user_cannot_write_to_is_exit_2_naming_it(tmp_path, capsys, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    if os.geteuid() == 0:  # root may write anywhere a mode forbids: answer for this folder as for a user
        real = os.access
        monkeypatch.setattr(os, "access", lambda path, mode, **kw: Path(path) != locked and real(path, mode, **kw))
    code, err = exit_of(["--config", config_file(tmp_path, output_dir=str(locked / "run"))], capsys)
    assert code == 2 and "\n" not in err and f"train.output_dir {locked / 'run'} is not writable" in err, err


def test_an_output_dir_inside_a_file_is_exit_2_naming_the_file(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("x")
    code, err = exit_of(["--config", config_file(tmp_path, output_dir=str(tmp_path / "notes.txt" / "run"))], capsys)
    assert code == 2 and "\n" not in err and f"{tmp_path / 'notes.txt'} is a file, not a folder" in err, err


def test_a_key_deepspeed_does_not_know_is_exit_2_naming_it_and_nothing_is_written(tmp_path, capsys, bad_shards):
    cfg = write_config(tmp_path / "cfg.json", bad_shards[0], tmp_path / "run")
    code, err = exit_of(["--config", str(cfg), "--set", "deepspeed.zero_optimization.stag=2"], capsys)
    assert code == 2 and "\n" not in err and "unknown key 'deepspeed.zero_optimization.stag'" in err, err
    assert not (tmp_path / "run").exists()


def test_weights_that_become_non_finite_end_the_run_with_exit_1_and_no_export(tmp_path, capsys, bad_shards,
                                                                              monkeypatch):
    from pixelbert.engine.optim import SplitOptimizer

    real_step = SplitOptimizer.step

    def overflowing_step(self, closure=None):  # every update overflows one weight (a far too high lr does)
        loss = real_step(self, closure)
        self.param_groups[0]["params"][0].data.fill_(float("inf"))
        return loss

    monkeypatch.setattr(SplitOptimizer, "step", overflowing_step)
    # The non-finite losses that follow stay within train.max_bad_steps (2) up to max_steps.
    cfg = write_config(tmp_path / "cfg.json", bad_shards[0], tmp_path / "run", max_steps=3, checkpoint_every=2)
    code, err = exit_of(["--config", str(cfg), "--set", "deepspeed.zero_optimization.stage=0"], capsys)
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == 1 and len(errors) == 1 and "non-finite weights at step 2" in errors[0], err
    assert not (tmp_path / "run" / "export").exists()
    assert find_resume(tmp_path / "run" / "checkpoints") is None  # nothing non-finite was saved


@pytest.mark.parametrize("args, named", [
    (["--shard-size", "0"], "--shard-size must be an integer >= 1, got 0"),
    (["--workers", "-2"], "--workers must be an integer >= 1, got -2"),
    (["--resize-shorter", "0"], "--resize-shorter must be an integer >= 1, got 0"),
    (["--max-image-pixels", "0"], "--max-image-pixels must be an integer >= 1, got 0"),
    (["--resize-shorter", "800", "--resize-longer", "600"],
     "--resize-longer must be >= --resize-shorter (800), got 600"),
], ids=["shard-size", "workers", "resize-shorter", "max-image-pixels", "longer-below-shorter"])
def test_a_build_shards_size_out_of_range_is_exit_2_naming_the_option_before_any_work(tmp_path, capsys, args, named):
    from data_pipeline.build_shards import main

    assert main(["--dataset", "easyvqa", "--out", str(tmp_path / "out"), "--no-progress", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert named in err and "\n" not in err, err
    assert not (tmp_path / "out").exists()


def test_a_vqa_answer_vocabulary_of_0_is_exit_2_naming_the_option(tmp_path, capsys):
    from data_pipeline.build_shards import main

    args = ["--dataset", "vqa", "--root", str(tmp_path), "--out", str(tmp_path / "out"), "--top-answers", "0"]
    assert main(args) == 2
    assert "--top-answers must be an integer >= 1, got 0" in capsys.readouterr().err
