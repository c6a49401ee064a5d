"""What the engine decides before training: batch plan, DeepSpeed config (and DeepSpeed's verdict on it), hardware."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pixelbert import build_model
from pixelbert.config import DEEPSPEED_CONFIG_NAME, ConfigError, config_from_dict, load_config
from pixelbert.engine.deepspeed_check import check_deepspeed_config
from pixelbert.engine.hardware import Hardware, detect_hardware, init_distributed
from pixelbert.engine.trainer import Trainer, deepspeed_config, plan_batch
from pixelbert.tasks.pretrain import PretrainTask

from synthetic import SyntheticLoader, tiny_config  # tests/engine is on sys.path (conftest)

MODEL = {"text_config": {"hidden_size": 64}}
CONFIGS = Path(__file__).resolve().parents[2] / "configs"
SHIPPED = sorted(CONFIGS.glob("*.json")) + sorted(CONFIGS.glob("finetune/*.json"))


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
                 {"zero_optimization": {"stage": 2}})
    ds = deepspeed_config(cfg, cpu("bf16"), plan_batch(cfg, 2))
    assert ds["train_micro_batch_size_per_gpu"] == 16 and ds["gradient_accumulation_steps"] == 2
    assert ds["train_batch_size"] == 64
    assert ds["gradient_clipping"] == 10.0  # explicit: DeepSpeed's own default is 1.0
    assert ds["bf16"] == {"enabled": True}  # the hardware's decision for train.precision auto
    assert ds["zero_allow_untested_optimizer"] is True
    assert ds["zero_optimization"] == {"stage": 2}


def test_without_zero_in_fp32_the_optimizer_clips_instead_of_deepspeed():
    cfg = config(deepspeed={"zero_optimization": {"stage": 0}})
    assert deepspeed_config(cfg, cpu(), plan_batch(cfg, 1))["gradient_clipping"] == 0.0


def test_cpu_runs_fp32_with_torch_optimizers_and_sdpa(monkeypatch):
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")
    hw = detect_hardware(config())
    assert (hw.device.type, hw.precision, hw.optimizer_impl, hw.attn_implementation) == ("cpu", "fp32", "torch_fused", "sdpa")
    assert hw.dist_backend in ("gloo", "ccl")


def test_precision_in_the_config_overrides_auto_and_fp16_needs_a_gpu(monkeypatch):
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")
    assert detect_hardware(config({"precision": "bf16"})).dtype == torch.bfloat16
    with pytest.raises(ConfigError, match="fp16"):
        detect_hardware(config({"precision": "fp16"}))


def test_a_batch_size_in_the_deepspeed_section_is_refused_not_replaced():
    cfg = config()
    cfg.deepspeed["train_batch_size"] = 8  # set after loading: the assembly refuses it too
    with pytest.raises(ConfigError, match="'deepspeed.train_batch_size' is set by pixelbert; set "
                                          "train.global_batch_size instead"):
        deepspeed_config(cfg, cpu(), plan_batch(cfg, 1))


def test_the_sections_fp16_tuning_wins_over_pixelberts_loss_scaling_defaults():
    cfg = config({"precision": "fp16"}, deepspeed={"fp16": {"initial_scale_power": 12, "loss_scale_window": 100}})
    ds = deepspeed_config(cfg, cpu("fp16"), plan_batch(cfg, 1))
    assert ds["fp16"] == {"enabled": True, "loss_scale": 0, "initial_scale_power": 12, "loss_scale_window": 100}


# DeepSpeed's own verdict on the section, before the process group and the model ----------------

def deepspeed_error(section: dict) -> str:
    with pytest.raises(ConfigError) as err:
        check_deepspeed_config(config(deepspeed=section), micro_batch=2, accumulation=1)
    message = str(err.value)
    assert "\n" not in message and message.startswith("cfg.json: ")
    return message


def test_a_misspelt_key_of_a_section_deepspeed_models_is_one_line_naming_it():
    assert "unknown key 'deepspeed.zero_optimization.stag'" in deepspeed_error({"zero_optimization": {"stag": 2}})


def test_a_misspelt_key_of_a_section_deepspeed_reads_by_name_is_refused_with_the_near_key():
    message = deepspeed_error({"activation_checkpointing": {"partition_activation": True}})
    assert "unknown key 'deepspeed.activation_checkpointing.partition_activation'" in message
    assert "did you mean 'deepspeed.activation_checkpointing.partition_activations'?" in message


def test_a_top_level_key_deepspeed_does_not_read_is_refused_with_the_near_key():
    message = deepspeed_error({"steps_per_prnt": 100})
    assert "unknown key 'deepspeed.steps_per_prnt'" in message
    assert "did you mean 'deepspeed.steps_per_print'?" in message


def test_a_value_deepspeed_refuses_names_the_key_and_what_it_allows():
    message = deepspeed_error({"zero_optimization": {"stage": 7}})
    assert "'deepspeed.zero_optimization.stage': Input should be 0, 1, 2, 3" in message and "got 7" in message


def test_deepspeed_keys_beyond_zero_pass_the_check():
    section = {"zero_optimization": {"stage": 3, "overlap_comm": True, "offload_param": {"device": "cpu"},
                                     "stage3_max_live_parameters": 1e9},
               "activation_checkpointing": {"partition_activations": False, "cpu_checkpointing": False},
               "flops_profiler": {"enabled": False, "profile_step": 1},
               "tensorboard": {"enabled": False}, "comms_logger": {"enabled": False},
               "checkpoint": {"tag_validation": "Warn"}, "data_types": {"grad_accum_dtype": "fp32"},
               "steps_per_print": 100, "wall_clock_breakdown": False, "prescale_gradients": False}
    check_deepspeed_config(config(deepspeed=section), micro_batch=2, accumulation=1)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_the_shipped_configs_deepspeed_sections_pass_the_check(path):
    check_deepspeed_config(load_config(path), micro_batch=2, accumulation=1)


def test_the_resolved_deepspeed_config_is_saved_beside_the_runs_config(tmp_path):
    # A group of one process, as a plain ``python`` launch makes it; it stays for the session, and so
    # do the variables DeepSpeed reads (a later in-process launch joins the same group).
    init_distributed()
    cfg = tiny_config(tmp_path / "run", stage=0, max_steps=1)
    trainer = Trainer(build_model(cfg), PretrainTask.from_config(cfg), SyntheticLoader(cfg.data.micro_batch_size), cfg)
    trainer.fit()
    saved = json.loads((tmp_path / "run" / DEEPSPEED_CONFIG_NAME).read_text())
    assert saved == deepspeed_config(cfg, trainer.hw, trainer.plan) and saved["train_batch_size"] == 4
