"""What the engine decides before training: batch plan, DeepSpeed config, hardware choice."""

from __future__ import annotations

import pytest
import torch

from pixelbert.config import ConfigError, config_from_dict
from pixelbert.engine.hardware import Hardware, detect_hardware
from pixelbert.engine.trainer import deepspeed_config, plan_batch

MODEL = {"text_config": {"hidden_size": 64}}


def config(train=None, data=None, deepspeed=None):
    return config_from_dict({"model": MODEL, "train": train or {}, "data": data or {},
                             "deepspeed": deepspeed or {"zero_optimization": {"stage": 2}}}, source="cfg.json")


def cpu(precision="fp32") -> Hardware:
    return Hardware(torch.device("cpu"), precision, "torch", "sdpa", "gloo")


def test_global_batch_derives_the_accumulation():
    plan = plan_batch(config({"global_batch_size": 4096}, {"micro_batch_size": 32}), world_size=64)
    assert (plan.micro_batch, plan.accumulation, plan.global_batch) == (32, 2, 4096)


def test_a_global_batch_the_ranks_cannot_make_is_one_line_naming_the_key():
    with pytest.raises(ConfigError) as err:
        plan_batch(config({"global_batch_size": 100}, {"micro_batch_size": 32}), world_size=2)
    assert "'train.global_batch_size' 100" in str(err.value) and "\n" not in str(err.value)


def test_an_explicit_accumulation_that_contradicts_the_global_batch_is_refused():
    with pytest.raises(ConfigError):
        plan_batch(config({"global_batch_size": 128, "gradient_accumulation": 4}, {"micro_batch_size": 32}), 2)


def test_without_a_global_batch_it_is_micro_x_accumulation_x_ranks():
    assert plan_batch(config({"gradient_accumulation": 3}, {"micro_batch_size": 8}), 2).global_batch == 48


def test_deepspeed_config_sets_batch_clipping_and_precision_explicitly():
    cfg = config({"global_batch_size": 64, "grad_clip": 10.0}, {"micro_batch_size": 16},
                 {"zero_optimization": {"stage": 2}, "bf16": {"enabled": False}})
    ds = deepspeed_config(cfg, cpu("bf16"), plan_batch(cfg, 2))
    assert ds["train_micro_batch_size_per_gpu"] == 16 and ds["gradient_accumulation_steps"] == 2
    assert ds["train_batch_size"] == 64
    assert ds["gradient_clipping"] == 10.0  # explicit: DeepSpeed's own default is 1.0
    assert ds["bf16"] == {"enabled": True}  # the hardware decision wins over the file
    assert ds["zero_allow_untested_optimizer"] is True
    assert ds["zero_optimization"] == {"stage": 2}


def test_without_zero_in_fp32_the_optimizer_clips_instead_of_deepspeed():
    cfg = config(deepspeed={"zero_optimization": {"stage": 0}})
    assert deepspeed_config(cfg, cpu(), plan_batch(cfg, 1))["gradient_clipping"] == 0.0


def test_cpu_runs_fp32_with_torch_optimizers_and_sdpa(monkeypatch):
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")
    hw = detect_hardware(config())
    assert (hw.device.type, hw.precision, hw.optimizer_impl, hw.attn_implementation) == ("cpu", "fp32", "torch", "sdpa")
    assert hw.dist_backend in ("gloo", "ccl")


def test_precision_in_the_config_overrides_auto_and_fp16_needs_a_gpu(monkeypatch):
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")
    assert detect_hardware(config({"precision": "bf16"})).dtype == torch.bfloat16
    with pytest.raises(ConfigError, match="fp16"):
        detect_hardware(config({"precision": "fp16"}))
