"""A damaged model file is one line naming it, never a traceback from safetensors, torch or json:
a ConfigError, which every launcher prints as ``error: ...`` with exit status 2. The same from
``PixelBert.from_pretrained``, fine-tuning's ``--init`` and ``model.backbone_weights``."""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import save_file

from pixelbert import build_model
from pixelbert.config import ConfigError
from pixelbert.modeling.backbone import build_backbone
from pixelbert.modeling.model import PixelBert

from model_helpers import tiny_model_config

DAMAGE = {  # name -> (file of the export, what becomes of its bytes)
    "truncated-weights": ("model.safetensors", lambda data: data[: len(data) // 2]),
    "empty-weights": ("model.safetensors", lambda data: b""),
    "garbage-weights": ("model.safetensors", lambda data: b"\x07" * 64),
    "truncated-config": ("pixelbert_config.json", lambda data: data[: len(data) // 2]),
    "config-without-model": ("pixelbert_config.json", lambda data: b'{"weights": "elsewhere"}'),
}


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    torch.manual_seed(0)
    return build_model(tiny_model_config()).save_pretrained(tmp_path_factory.mktemp("export") / "export")


def damaged_copy(export, tmp_path, damage: str):
    """(a copy of ``export`` with one file damaged, that file)."""
    folder = tmp_path / "export"
    shutil.copytree(export, folder)
    name, change = DAMAGE[damage]
    path = folder / name
    path.write_bytes(change(path.read_bytes()))
    return folder, path


def one_line_naming(err: Exception, path) -> bool:
    return str(path) in str(err) and "\n" not in str(err)


@pytest.mark.parametrize("damage", DAMAGE)
def test_from_pretrained_names_the_damaged_file_in_one_line(damage, export, tmp_path):
    folder, path = damaged_copy(export, tmp_path, damage)
    with pytest.raises(ConfigError) as err:
        PixelBert.from_pretrained(folder)
    assert one_line_naming(err.value, path), err.value


@pytest.mark.parametrize("damage", ["truncated-weights", "truncated-config"])
def test_fine_tuning_from_a_damaged_init_is_exit_2_and_one_line(damage, export, tmp_path, capsys):
    from data_pipeline.build_shards import build_shards
    from launcher import finetune
    from tiny_data import write_config, write_vqa_v2

    folder, path = damaged_copy(export, tmp_path, damage)
    write_vqa_v2(tmp_path / "raw")
    manifest = build_shards("vqa", tmp_path / "raw", tmp_path / "shards", workers=1, progress=False)
    cfg = write_config(tmp_path / "config.json", "vqa", tmp_path / "shards", manifest, tmp_path / "run")
    with pytest.raises(SystemExit) as stop:
        finetune.main(["--task", "vqa", "--config", str(cfg), "--init", str(folder)])
    # The launcher's own output; DeepSpeed's import may log a line about CUDA before it.
    [err] = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert stop.value.code == 2 and one_line_naming(err, path), err


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
@pytest.mark.parametrize("damage", ["truncated", "empty"])
def test_damaged_backbone_weights_name_the_file_in_one_line(suffix, damage, tmp_path):
    trunk, _ = build_backbone(tiny_model_config())
    path = tmp_path / f"resnet18{suffix}"
    state = {k: v.contiguous() for k, v in trunk.state_dict().items()}
    save_file(state, str(path)) if suffix == ".safetensors" else torch.save(state, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"")
    with pytest.raises(ConfigError) as err:
        build_backbone(tiny_model_config(backbone_weights=str(path)))
    assert one_line_naming(err.value, path), err.value
