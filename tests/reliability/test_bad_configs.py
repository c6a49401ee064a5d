"""Bad configs and arguments the launcher tests do not already cover: exit 2, one line naming the
problem, no traceback, before any heavy work (tests/launcher/test_cli.py has unknown key, zero
batch, impossible global batch, missing config / checkpoint, task of another launcher)."""

from __future__ import annotations

import json
import time

import pytest

from launcher import pretrain
from runs import write_config


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
def test_a_bad_value_is_exit_2_and_one_line_naming_it(tmp_path, capsys, argv, named):
    started = time.monotonic()
    with pytest.raises(SystemExit) as stop:
        pretrain.main(["--config", config_file(tmp_path), *argv])
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and err.startswith("error: ") and "\n" not in err and named in err, err
    assert time.monotonic() - started < 5  # refused before any import of DeepSpeed or model building


def test_a_wrong_type_in_the_file_names_the_file_and_key(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        pretrain.main(["--config", config_file(tmp_path, epochs="2")])
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and "cfg.json" in err and "train.epochs" in err and "\n" not in err


def test_missing_shards_stop_the_launcher_with_one_line_before_the_model_is_built(tmp_path, capsys):
    cfg = write_config(tmp_path / "cfg.json", tmp_path / "no_such_shards", tmp_path / "run")
    started = time.monotonic()
    with pytest.raises(SystemExit) as stop:
        pretrain.main(["--config", str(cfg)])
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and err.startswith("error: ") and "\n" not in err and "no_such_shards" in err, err
    assert not (tmp_path / "run").exists()  # nothing trained, nothing written
    assert time.monotonic() - started < 5  # checked before the process group, DeepSpeed and the model
