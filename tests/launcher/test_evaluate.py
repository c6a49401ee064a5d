"""launcher/evaluate.py: metrics JSON + table from a fine-tuned run, official result files, results-file
scoring without a model, attention pictures."""

from __future__ import annotations

import json
import os
import sys

import pytest

import processes  # tests/processes.py
from tiny_data import REPO, write_config


def _run(capsys, *args: str) -> str:
    from launcher import evaluate

    assert evaluate.main(list(args)) == 0
    return capsys.readouterr().out


def test_missing_checkpoint_is_one_line_and_exit_2(tmp_path):
    env = dict(os.environ, DS_ACCELERATOR="cpu", HF_HUB_OFFLINE="1")
    proc = processes.run([sys.executable, str(REPO / "launcher" / "evaluate.py"), "--task", "vqa", "--checkpoint",
                          str(tmp_path / "gone"), "--split", "val"], tmp_path / "logs", cwd=REPO, env=env)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: --checkpoint {tmp_path / 'gone'}: no such folder"]


def test_vqa_writes_metrics_the_official_results_file_and_attention_pictures(capsys, finetuned, task_data):
    run, _ = finetuned("vqa")
    out = _run(capsys, "--task", "vqa", "--checkpoint", str(run), "--split", "val", "--visualize", "2")
    folder = run / "eval" / "val"
    metrics = json.loads((folder / "metrics.json").read_text())["metrics"]
    assert metrics["num_questions"] == 12.0
    # The shards remember the official files: per-answer-type accuracy as the official tool computes it.
    assert metrics["vqa_accuracy_official"] == pytest.approx(metrics["vqa_accuracy"], abs=0.01)
    assert {"vqa_accuracy/yes/no", "vqa_accuracy/other"} <= set(metrics)
    assert "vqa_accuracy" in out and "metrics:" in out  # the short table
    results = json.loads((folder / "vqa_results.json").read_text())
    assert len(results) == 12 and all(set(r) == {"question_id", "answer"} and isinstance(r["question_id"], int)
                                      for r in results)
    assert len(list((folder / "attention").glob("vqa_q*.png"))) == 2
    assert list((folder / "tensorboard").glob("events.out.tfevents.*"))

    # The same file scored without the model, against the official files, gives the same accuracy.
    raw, _, _ = task_data("vqa")
    out = _run(capsys, "--task", "vqa", "--predictions", str(folder / "vqa_results.json"),
               "--questions", str(raw / "v2_OpenEnded_mscoco_val2014_questions.json"),
               "--annotations", str(raw / "v2_mscoco_val2014_annotations.json"), "--out", str(folder / "rescored"))
    rescored = json.loads((folder / "rescored" / "metrics.json").read_text())["metrics"]
    assert rescored["vqa_accuracy"] == metrics["vqa_accuracy_official"]


def test_predictions_mode_scores_a_results_file_with_known_accuracy(capsys, tmp_path, task_data):
    raw, _, _ = task_data("vqa")
    annotations = json.loads((raw / "v2_mscoco_val2014_annotations.json").read_text())["annotations"]
    # Every question answered with what 7 of 10 humans said (100%) except the first, answered with
    # what the other 3 said (leave-one-out: 3 matches -> 1.0 in 7 subsets, 2 -> 2/3 in 3: 0.9).
    rows = [{"question_id": a["question_id"], "answer": a["multiple_choice_answer"]} for a in annotations]
    rows[0]["answer"] = annotations[0]["answers"][-1]["answer"]
    results = tmp_path / "results.json"
    results.write_text(json.dumps(rows))
    _run(capsys, "--task", "vqa", "--predictions", str(results),
         "--questions", str(raw / "v2_OpenEnded_mscoco_val2014_questions.json"),
         "--annotations", str(raw / "v2_mscoco_val2014_annotations.json"))
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())["metrics"]
    assert metrics["vqa_accuracy"] == pytest.approx(round(100 * (11 + 0.9) / 12, 2))


def test_a_malformed_results_file_is_one_line_and_exit_2(capsys, tmp_path, task_data):
    from launcher import evaluate

    raw, _, _ = task_data("vqa")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"question_id": 10, "answer": 3}]))
    with pytest.raises(SystemExit) as stop:
        evaluate.main(["--task", "vqa", "--predictions", str(bad), "--annotations",
                       str(raw / "v2_mscoco_val2014_annotations.json")])
    assert stop.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: {bad}: entry 0: 'answer' must be a string, got 3"]


def test_nlvr2_writes_accuracy_and_the_official_predictions_csv(capsys, finetuned, task_data):
    run, _ = finetuned("nlvr2")
    _run(capsys, "--task", "nlvr2", "--checkpoint", str(run / "export"), "--split", "dev", "--out", str(run / "ev"))
    metrics = json.loads((run / "ev" / "metrics.json").read_text())["metrics"]
    lines = (run / "ev" / "nlvr2_predictions.csv").read_text().splitlines()
    assert len(lines) == 4 and all(line.split(",")[1] in ("True", "False") for line in lines)
    raw, _, _ = task_data("nlvr2")
    truth = {ex["identifier"]: ex["label"] for ex in map(json.loads, (raw / "dev.json").read_text().splitlines())}
    right = sum(truth[identifier] == predicted for identifier, predicted in (line.split(",") for line in lines))
    assert metrics["num_examples"] == 4.0 and metrics["nlvr2_accuracy"] == pytest.approx(100 * right / 4)
    # ... which the predictions mode scores against the official jsonl to the same accuracy.
    _run(capsys, "--task", "nlvr2", "--predictions", str(run / "ev" / "nlvr2_predictions.csv"),
         "--annotations", str(raw / "dev.json"), "--out", str(run / "ev2"))
    assert json.loads((run / "ev2" / "metrics.json").read_text())["metrics"]["accuracy"] == metrics["nlvr2_accuracy"]


def test_retrieval_recalls_on_the_karpathy_test_split_with_and_without_the_first_stage(capsys, finetuned):
    run, _ = finetuned("retrieval", freeze_cnn=True)
    out = _run(capsys, "--task", "retrieval", "--checkpoint", str(run), "--split", "test", "--visualize", "1")
    folder = run / "eval" / "test"
    full = json.loads((folder / "metrics.json").read_text())["metrics"]
    assert full["num_images"] == 2.0 and full["num_texts"] == 10.0 and "txt_r1" in out
    assert len(list((folder / "attention").glob("retrieval_img*.png"))) == 1
    _run(capsys, "--task", "retrieval", "--checkpoint", str(run), "--split", "test", "--retrieval-topk", "10",
         "--out", str(run / "topk"))
    assert json.loads((run / "topk" / "metrics.json").read_text())["metrics"] == full  # k covers every pair
    # k = 1 (the first stage sees every pixel of these 32 px images): Recall@1 is exact.
    _run(capsys, "--task", "retrieval", "--checkpoint", str(run), "--split", "test", "--retrieval-topk", "1",
         "--out", str(run / "top1"))
    top1 = json.loads((run / "top1" / "metrics.json").read_text())["metrics"]
    assert (top1["txt_r1"], top1["img_r1"]) == (full["txt_r1"], full["img_r1"])


def test_a_checkpoint_without_the_task_head_is_refused(capsys, tmp_path, task_data, pretrained):
    from launcher import evaluate

    _, shards, manifest = task_data("vqa")
    cfg = write_config(tmp_path / "c.json", "vqa", shards, manifest, tmp_path / "run")
    with pytest.raises(SystemExit) as stop:
        evaluate.main(["--task", "vqa", "--checkpoint", str(pretrained), "--config", str(cfg), "--split", "val"])
    assert stop.value.code == 2
    assert "has no vqa head" in capsys.readouterr().err
