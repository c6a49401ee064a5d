"""launcher/finetune.py: each task fine-tunes end to end from a pre-trained folder on data in its real format."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from tiny_data import REPO, write_config


def _script(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, DS_ACCELERATOR="cpu", HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, str(REPO / "launcher" / "finetune.py"), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


def test_bad_task_name_is_one_line_and_exit_2():
    proc = _script("--task", "captioning", "--config", "configs/finetune/vqa.json", "--init", "nowhere")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: unknown task 'captioning' (known: vqa, nlvr2, retrieval)"]


def test_missing_init_folder_is_one_line_and_exit_2(tmp_path, capsys):
    from launcher import finetune

    with pytest.raises(SystemExit) as stop:
        finetune.main(["--task", "vqa", "--config", "configs/finetune/vqa.json", "--init", str(tmp_path / "nope")])
    assert stop.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"error: --init {tmp_path / 'nope'}: no such folder"]


def test_a_config_for_another_task_is_refused(tmp_path, task_data, pretrained):
    from launcher import finetune

    _, shards, manifest = task_data("vqa")
    cfg = write_config(tmp_path / "c.json", "vqa", shards, manifest, tmp_path / "run")
    with pytest.raises(SystemExit) as stop:
        finetune.main(["--task", "nlvr2", "--config", str(cfg), "--init", str(pretrained)])
    assert stop.value.code == 2


def _weights(folder):
    return load_file(str(folder / "model.safetensors"))


def test_vqa_fine_tunes_from_the_pretrained_folder_with_a_fresh_answer_head(finetuned, pretrained):
    run, out = finetuned("vqa")
    assert f"init from {pretrained}" in out and "freshly initialised (not in it): vqa" in out
    assert "unused heads dropped: mlm, itm" in out
    export = run / "export"
    saved = json.loads((export / "pixelbert_config.json").read_text())["model"]
    assert saved["heads"] == ["vqa"]
    answers = json.loads((export / "answers.json").read_text())
    assert len(answers) == saved["num_answers"]
    evals = json.loads((run / "eval.json").read_text())["evals"]
    assert [e["epoch"] for e in evals] == [1.0, 2.0]  # the val split after every epoch
    assert all(0.0 <= e["metrics"]["vqa_accuracy"] <= 100.0 for e in evals)
    # Fine-tuning trained the transformer it was given (weights moved away from the pre-trained ones).
    before, after = _weights(pretrained), _weights(export)
    key = "bert.encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(before[key], after[key])


def test_nlvr2_fine_tunes_the_pair_head(finetuned):
    run, out = finetuned("nlvr2")
    assert "freshly initialised (not in it): nlvr2" in out
    evals = json.loads((run / "eval.json").read_text())
    assert evals["split"] == "dev" and "nlvr2_accuracy" in evals["evals"][-1]["metrics"]
    assert json.loads((run / "export" / "pixelbert_config.json").read_text())["model"]["heads"] == ["nlvr2"]


def test_retrieval_keeps_the_pretrained_itm_head_and_a_frozen_cnn(finetuned, pretrained):
    run, out = finetuned("retrieval", freeze_cnn=True)
    assert "every head loaded" in out
    before, after = _weights(pretrained), _weights(run / "export")
    cnn = [k for k in after if k.startswith("backbone.")]
    assert cnn and all(torch.equal(before[k], after[k]) for k in cnn)  # BatchNorm statistics included
    assert not torch.equal(before["heads.itm.classifier.weight"], after["heads.itm.classifier.weight"])
    assert "r_mean" in json.loads((run / "eval.json").read_text())["evals"][-1]["metrics"]
