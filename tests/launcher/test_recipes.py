"""pixelbert.recipes as a library: the caller's config is never changed, the result says what was run."""

from __future__ import annotations

import copy

from tiny_data import write_config

from pixelbert import recipes
from pixelbert.config import load_config


def test_finetune_leaves_the_callers_config_as_it_was(tmp_path, task_data, pretrained):
    _, shards, manifest = task_data("vqa")
    path = write_config(tmp_path / "c.json", "vqa", shards, manifest, tmp_path / "run", max_steps=1)
    config = load_config(path, ["train.task=\"pretrain\"", "train.freeze_cnn=true"])
    before = copy.deepcopy(config.to_dict())
    result = recipes.finetune(config, task="vqa", init=pretrained)
    assert config.to_dict() == before  # task, eval_every and the model section were resolved on a copy
    assert result.step == 1 and result.eval_split == "val" and result.export.is_dir()
    saved = load_config(tmp_path / "run" / "config.json")
    steps_per_epoch = round(result.evals[0]["step"] / result.evals[0]["epoch"])
    assert saved.train.task == "vqa" and saved.train.eval_every == steps_per_epoch  # eval_every unset: each epoch
    assert saved.model.frozen_bn  # train.freeze_cnn implies frozen BatchNorm


def test_finetune_stops_at_its_target_as_a_finished_run(tmp_path, task_data, pretrained):
    _, shards, manifest = task_data("vqa")
    path = write_config(tmp_path / "c.json", "vqa", shards, manifest, tmp_path / "run", epochs=3)
    result = recipes.finetune(load_config(path), init=pretrained, stop_at=("vqa_accuracy", 0.0))
    steps_per_epoch = round(result.evals[0]["step"] / result.evals[0]["epoch"])
    assert result.stopped_at_target and not result.stopped_by_signal
    assert result.step == steps_per_epoch and len(result.evals) == 1  # the first evaluation reached it
    assert (result.export / "model.safetensors").is_file()  # exported like a finished run
