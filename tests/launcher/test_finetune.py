"""launcher/finetune.py: each task fine-tunes end to end from a pre-trained folder on data in its real format."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

import processes  # tests/processes.py
from tiny_data import REPO, write_config


def _script(logs, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, DS_ACCELERATOR="cpu", HF_HUB_OFFLINE="1")
    return processes.run([sys.executable, str(REPO / "launcher" / "finetune.py"), *args], logs, cwd=REPO, env=env)


def test_bad_task_name_is_one_line_and_exit_2(tmp_path):
    proc = _script(tmp_path, "--task", "captioning", "--config", "configs/finetune/vqa.json", "--init", "nowhere")
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


def _val_accuracy_by_hand(run, raw) -> float:
    """The exported model's val answers scored with the tiny data's rule: 7 of 10 humans gave the
    annotation's answer (1.0), the other 3 one other answer (3 of the other 9 agree: 0.9)."""
    from data_pipeline.loaders import build_loader
    from pixelbert import PixelBert
    from pixelbert.config import load_config
    from pixelbert.evaluation.runner import EvalOptions, evaluate

    export = run / "export"
    answers = json.loads((export / "answers.json").read_text())
    loader = build_loader(load_config(run / "config.json"), "val")
    predicted = evaluate(PixelBert.from_pretrained(export), loader, "vqa", EvalOptions(answers=answers)).predictions
    annotations = json.loads((raw / "v2_mscoco_val2014_annotations.json").read_text())["annotations"]
    score = {a["question_id"]: {a["multiple_choice_answer"]: 1.0, a["answers"][-1]["answer"]: 0.9} for a in annotations}
    assert sorted(predicted) == sorted(score)
    return 100 * sum(score[q].get(answer, 0.0) for q, answer in predicted.items()) / len(predicted)


def test_vqa_fine_tunes_from_the_pretrained_folder_with_a_fresh_answer_head(finetuned, pretrained, task_data):
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
    # The last evaluation (the end of training) is the exported model's accuracy on the val split.
    assert evals[-1]["metrics"]["vqa_accuracy"] == pytest.approx(_val_accuracy_by_hand(run, task_data("vqa")[0]))
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
