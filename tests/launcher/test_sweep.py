"""launcher/sweep.py: a Ray Tune sweep of fine-tuning runs, on CPU, end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import processes  # tests/processes.py
from tiny_data import REPO, write_config

pytestmark = pytest.mark.slow

_DIST_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def _env() -> dict:
    """The launcher's environment: CPU DeepSpeed, offline, and no process group inherited from
    in-process tests (a trial must start its own)."""
    env = dict(os.environ, DS_ACCELERATOR="cpu", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1",
               RAY_AUTH_MODE="disabled", PYTHONPATH=str(REPO))
    for k in _DIST_VARS:
        env.pop(k, None)
    return env


def _sweep(config, *args: str) -> subprocess.CompletedProcess:
    """launcher/sweep.py on the sweep file ``config``, waited for as long as the sweep makes progress
    (its output, and what the trials write under the sweep's folder)."""
    return processes.run([sys.executable, str(REPO / "launcher" / "sweep.py"), "--config", str(config), *args],
                         config.parent / "logs", cwd=REPO, env=_env(), watch=[config.parent / "sweeps"])


@pytest.fixture(scope="module")
def sweep_file(tmp_path_factory, task_data, pretrained):
    tmp = tmp_path_factory.mktemp("sweep")
    _, shards, manifest = task_data("vqa")
    base = write_config(tmp / "base.json", "vqa", shards, manifest, tmp / "unused", log_every=4)
    sweep = {"name": "tiny_vqa", "base_config": str(base), "init": str(pretrained), "num_samples": 1,
             "search_space": {"train.lr_transformer": {"grid": [1e-3, 1e-5]}},
             "asha": {"grace_period": 1, "reduction_factor": 2}, "storage_path": str(tmp / "sweeps"),
             "cpus_per_trial": 1}
    path = tmp / "sweep.json"
    path.write_text(json.dumps(sweep))
    return path, tmp / "sweeps" / "tiny_vqa"


def test_two_trial_sweep_runs_to_completion_and_writes_a_ready_to_use_best_config(sweep_file):
    path, experiment = sweep_file
    proc = _sweep(path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    best = experiment / "best_config.json"
    assert f"best config: {best}" in proc.stdout
    from pixelbert.config import load_config

    cfg = load_config(best)  # validates: a fine-tuning config as any other
    assert cfg.train.task == "vqa" and cfg.train.lr_transformer in (1e-3, 1e-5)
    assert f"train.lr_transformer = {cfg.train.lr_transformer}" in proc.stdout
    trials = sorted(p for p in experiment.iterdir() if p.name.startswith("trial_"))
    assert len(trials) == 2
    for trial in trials:  # each trial: an engine run with its own TensorBoard logs, one report per epoch
        assert list((trial / "run" / "tensorboard").glob("events.out.tfevents.*"))
        reports = [json.loads(line) for line in (trial / "result.json").read_text().splitlines()]
        assert [r["epoch"] for r in reports] == [1.0, 2.0][: len(reports)] and "vqa_accuracy" in reports[0]
    best_trial = next(line.split(": ", 1)[1] for line in proc.stdout.splitlines() if line.startswith("best trial: "))
    best_dir = experiment / best_trial.rsplit("/", 1)[-1]
    assert (best_dir / "run" / "export" / "model.safetensors").is_file()
    # The best trial is one whose last report scores highest, and the best config is its config.
    last = {t.name: json.loads((t / "result.json").read_text().splitlines()[-1])["vqa_accuracy"] for t in trials}
    assert last[best_dir.name] == max(last.values())
    assert load_config(best_dir / "run" / "config.json").train.lr_transformer == cfg.train.lr_transformer


def test_a_finished_sweep_resumes_without_rerunning_and_a_second_start_is_refused(sweep_file, capsys):
    from launcher import sweep

    path, experiment = sweep_file
    if not (experiment / "best_config.json").exists():
        pytest.skip("needs the sweep of the previous test")
    with pytest.raises(SystemExit) as stop:  # refused before Ray starts
        sweep.main(["--config", str(path)])
    assert stop.value.code == 2 and "--resume" in capsys.readouterr().err
    before = {p: p.stat().st_mtime for p in experiment.glob("trial_*/run/eval.json")}
    resumed = _sweep(path, "--resume")
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "best config:" in resumed.stdout
    assert {p: p.stat().st_mtime for p in experiment.glob("trial_*/run/eval.json")} == before


def test_a_bad_sweep_file_is_one_line_and_exit_2(tmp_path, capsys):
    from launcher import sweep

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"name": "x", "base_config": "configs/finetune/easyvqa.json",
                               "search_space": {"train.lr_transformr": {"loguniform": [1e-5, 1e-3]}}}))
    with pytest.raises(SystemExit) as stop:
        sweep.main(["--config", str(bad)])
    assert stop.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: {bad}: search_space key 'train.lr_transformr' is not a config key (section.key)"]
