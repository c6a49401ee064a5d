"""save_pretrained -> from_pretrained restores the model exactly, with no outside file."""

import json
import shutil

import pytest
import torch
from safetensors import safe_open

from model_helpers import make_batch, tiny_model_config
from pixelbert import PixelBert, build_model, load_tokenizer


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model(tiny_model_config(pos_embed_2d=True, frozen_bn=True)).eval()
    directory = model.save_pretrained(tmp_path_factory.mktemp("export") / "tiny")
    return model, directory


def test_a_reloaded_model_gives_identical_outputs(saved, tmp_path):
    model, directory = saved
    moved = shutil.copytree(directory, tmp_path / "moved")  # nothing points back to the original
    reloaded = PixelBert.from_pretrained(moved).eval()
    batch = make_batch([(64, 64), (40, 24)], image_index=[0, 1, 1, 0])
    a, b = model(batch), reloaded(batch)
    assert torch.equal(a.hidden, b.hidden)
    for name in ("mlm_logits", "itm_logits", "vqa_logits", "nlvr2_logits"):
        assert torch.equal(getattr(model, name)(a)[:2], getattr(reloaded, name)(b)[:2])
    for (name, x), (_, y) in zip(model.state_dict().items(), reloaded.state_dict().items()):
        assert torch.equal(x, y), name


def test_the_export_holds_weights_full_config_and_tokenizer(saved):
    _, directory = saved
    cfg = json.loads((directory / "pixelbert_config.json").read_text())["model"]
    assert cfg["text_model"] is None and cfg["backbone_weights"] is None
    assert cfg["text_config"]["hidden_size"] == 64 and cfg["text_config"]["vocab_size"] == 30522
    assert cfg["pos_embed_2d"] is True and cfg["heads"] == ["mlm", "itm", "vqa", "nlvr2"]
    with safe_open(str(directory / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert "bert.embeddings.word_embeddings.weight" in keys
    assert "heads.mlm.decoder.weight" not in keys  # tied: stored once
    reloaded = PixelBert.from_pretrained(directory)
    assert load_tokenizer(reloaded.config)("a circle")["input_ids"][0] == 101


def test_the_reloaded_mlm_decoder_is_still_tied(saved):
    reloaded = PixelBert.from_pretrained(saved[1])
    assert reloaded.heads["mlm"].decoder.weight is reloaded.bert.embeddings.word_embeddings.weight


def test_fine_tuning_heads_replace_the_pretraining_heads(saved):
    model, directory = saved
    tuned = PixelBert.from_pretrained(directory, heads=["vqa"], num_answers=9)
    assert list(tuned.heads) == ["vqa"] and tuned.vqa_logits(tuned.eval()(make_batch([(32, 32)]))).shape == (1, 9)
    assert torch.equal(tuned.bert.embeddings.word_embeddings.weight, model.bert.embeddings.word_embeddings.weight)


def test_weights_of_another_architecture_fail_to_load(saved, tmp_path):
    _, directory = saved
    other = build_model(tiny_model_config(feature_stage=3))
    other.save_pretrained(tmp_path / "other")
    shutil.copy(tmp_path / "other" / "model.safetensors", tmp_path / "model.safetensors")
    shutil.copy(directory / "pixelbert_config.json", tmp_path / "pixelbert_config.json")
    with pytest.raises(ValueError, match=r"model\.safetensors.*(layer3|size mismatch)"):
        PixelBert.from_pretrained(tmp_path)
