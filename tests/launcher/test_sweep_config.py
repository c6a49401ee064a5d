"""Sweep files: validation, the search space, how sampled values become a trial's config (no Ray run)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pixelbert.config import ConfigError
from pixelbert.tune import base_config, load_sweep, max_epochs, search_space, trial_config, trial_resources

REPO = Path(__file__).resolve().parents[2]
SHIPPED = sorted((REPO / "configs" / "sweeps").glob("*.json"))


def _write(tmp_path, **fields) -> Path:
    sweep = {"name": "t", "base_config": str(REPO / "configs" / "finetune" / "easyvqa.json"),
             "search_space": {"train.lr_transformer": {"loguniform": [1e-5, 1e-3]}}}
    sweep.update(fields)
    path = tmp_path / "sweep.json"
    path.write_text(json.dumps(sweep))
    return path


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_sweep_files_load_and_every_sampled_key_fits_the_config(path, monkeypatch):
    monkeypatch.chdir(REPO)
    sweep = load_sweep(path)
    base = base_config(sweep)
    assert base["train"]["task"] in ("vqa", "nlvr2", "retrieval")
    assert set(search_space(sweep)) == set(sweep.search_space)


@pytest.mark.parametrize("fields, message", [
    ({"search_space": {"train.nope": {"choice": [1]}}}, "search_space key 'train.nope' is not a config key"),
    ({"search_space": {"train.epochs": {"between": [1, 2]}}}, "must be one of {uniform, loguniform, choice"),
    ({"search_space": {"train.lr_cnn": {"loguniform": [0, 1]}}}, "bad loguniform arguments [0, 1]"),
    ({"search_space": {"data.micro_batch_size": {"choice": ["big"]}}}, "'data.micro_batch_size' must be int"),
    ({"num_samples": "8"}, "'num_samples' must be int, got str"),
    ({"shards": "x"}, "unknown key 'shards'"),
    ({"mode": "best"}, "'mode' must be min or max"),
])
def test_a_bad_sweep_file_names_the_key(tmp_path, fields, message):
    path = _write(tmp_path, **fields)
    with pytest.raises(ConfigError) as error:
        base_config(load_sweep(path))
    assert message in str(error.value) and str(path) in str(error.value).splitlines()[0]


def test_sampled_values_override_the_base_config_of_a_trial(tmp_path):
    sweep = load_sweep(_write(tmp_path, set=["train.log_every=7"]))
    base = base_config(sweep)
    cfg = trial_config(base, {"train.lr_transformer": 3e-4, "data.micro_batch_size": 16}, tmp_path / "trial")
    assert cfg.train.lr_transformer == 3e-4 and cfg.data.micro_batch_size == 16
    assert cfg.train.log_every == 7 and cfg.train.output_dir == str(tmp_path / "trial")
    assert Path(cfg.data.shards).is_absolute()  # trials do not depend on their working directory


def test_asha_runs_up_to_the_most_epochs_the_space_allows(tmp_path):
    sweep = load_sweep(_write(tmp_path, search_space={"train.epochs": {"choice": [2, 6, 4]}}))
    assert max_epochs(sweep, base_config(sweep)) == 6
    plain = load_sweep(_write(tmp_path))
    assert max_epochs(plain, base_config(plain)) == base_config(plain)["train"]["epochs"]


def test_one_gpu_per_trial_on_gpu_clusters_else_cpu_slots(tmp_path):
    sweep = load_sweep(_write(tmp_path, cpus_per_trial=2))
    assert trial_resources(sweep, cluster_gpus=8) == {"cpu": 2, "gpu": 1}
    assert trial_resources(sweep, cluster_gpus=0) == {"cpu": 2}


def test_relative_paths_of_a_shard_mixture_are_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    mixture = [{"path": "runs/data/coco_karpathy", "weight": 1.0}, {"path": "runs/data/vg", "weight": 0.5}]
    sweep = load_sweep(_write(tmp_path, set=[f"data.shards={json.dumps(mixture)}"]))
    shards = base_config(sweep)["data"]["shards"]
    assert [s["path"] for s in shards] == [str(tmp_path / "runs/data/coco_karpathy"), str(tmp_path / "runs/data/vg")]
    assert [s["weight"] for s in shards] == [1.0, 0.5]
