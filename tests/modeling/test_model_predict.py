"""PixelBert's predict methods and the export folder they read: answers with probabilities, ITM
match probabilities, run folders, answer lists."""

from __future__ import annotations

import json

import pytest
import torch

from model_helpers import make_batch, tiny_model_config
from pixelbert import build_model
from pixelbert.config import ANSWERS_NAME, ConfigError
from pixelbert.modeling.model import PixelBert

ANSWERS = ["red", "blue", "circle", "yes", "no"]  # tiny_model_config: 5 answers


@pytest.fixture(scope="module")
def vqa_export(tmp_path_factory):
    """(a run folder whose export/ holds a VQA model with an answer list, that model)."""
    torch.manual_seed(0)
    model = build_model(tiny_model_config(heads=["itm", "vqa"]))
    model.answers = list(ANSWERS)
    run = tmp_path_factory.mktemp("run")
    model.save_pretrained(run / "export")
    return run, model.eval()


def test_from_pretrained_on_a_run_folder_loads_its_export(vqa_export):
    run, model = vqa_export
    loaded = PixelBert.from_pretrained(run)
    assert loaded.answers == ANSWERS
    for name, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name


def test_a_run_folder_without_export_says_how_to_export_it(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    with pytest.raises(ConfigError) as err:
        PixelBert.from_pretrained(tmp_path)
    assert f"python launcher/export.py {tmp_path} {tmp_path / 'export'}" in str(err.value)
    assert "\n" not in str(err.value)


def test_a_folder_holding_no_model_says_what_to_pass(tmp_path):
    with pytest.raises(ConfigError, match="pass a save_pretrained folder.* or a run folder holding export/"):
        PixelBert.from_pretrained(tmp_path)


def test_predict_vqa_gives_the_arg_max_answer_and_its_softmax_probability(vqa_export):
    _, model = vqa_export
    batch = make_batch([(32, 32), (32, 48)], image_index=[0, 1, 1], text_lengths=[5, 8, 3])
    with torch.no_grad():
        probs = model.vqa_logits(model(batch)).softmax(dim=-1)
    predicted = model.predict_vqa(batch)
    assert [a for a, _ in predicted] == [ANSWERS[i] for i in probs.argmax(dim=1).tolist()]
    assert [p for _, p in predicted] == pytest.approx(probs.max(dim=1).values.tolist(), abs=1e-6)


def test_predict_leaves_a_training_model_in_training_mode(vqa_export):
    run, _ = vqa_export
    model = PixelBert.from_pretrained(run).train()
    model.predict_vqa(make_batch([(32, 32)]))
    assert model.training


def test_predict_vqa_without_an_answer_list_is_one_line():
    model = build_model(tiny_model_config(heads=["vqa"]))
    with pytest.raises(ConfigError, match=f"no answer list \\({ANSWERS_NAME}\\)"):
        model.predict_vqa(make_batch([(32, 32)]))


def test_a_vqa_head_started_afresh_drops_the_old_answer_list(vqa_export):
    run, _ = vqa_export
    assert PixelBert.from_pretrained(run, num_answers=7).answers is None


def test_an_answer_list_of_the_wrong_length_names_the_file(vqa_export, tmp_path):
    import shutil

    run, _ = vqa_export
    shutil.copytree(run / "export", tmp_path / "export")
    (tmp_path / "export" / ANSWERS_NAME).write_text(json.dumps(ANSWERS[:3]))
    with pytest.raises(ConfigError, match=f"{ANSWERS_NAME}: must be a list of the 5 answers"):
        PixelBert.from_pretrained(tmp_path / "export")


def test_predict_itm_is_the_match_probability_in_the_order_of_the_retrieval_scores(vqa_export):
    _, model = vqa_export
    batch = make_batch([(32, 32)], image_index=[0, 0, 0, 0], text_lengths=[4, 6, 8, 5], seed=3)
    with torch.no_grad():
        scores = model.retrieval_scores(model(batch))
    probabilities = model.predict_itm(batch)
    assert probabilities == pytest.approx(torch.sigmoid(scores).tolist(), abs=1e-6)  # softmax of 2 = sigmoid of the gap
    assert all(0.0 < p < 1.0 for p in probabilities)
