"""NLVR2 accuracy and consistency, as the official evaluation defines them."""

import json

import pytest
import torch

from pixelbert.evaluation.nlvr2 import (
    evaluate_nlvr2,
    load_nlvr2_predictions,
    nlvr2_accuracy,
    nlvr2_consistency,
    write_nlvr2_predictions,
)


def test_accuracy_accepts_bools_ints_strings_and_tensors():
    assert nlvr2_accuracy([True, False, True, True], ["True", "False", "false", "TRUE"]) == pytest.approx(75.0)
    assert nlvr2_accuracy(torch.tensor([1, 0]), torch.tensor([1, 1])) == pytest.approx(50.0)


def test_accuracy_rejects_length_mismatch_and_bad_labels():
    with pytest.raises(ValueError, match="2 predictions for 1 labels"):
        nlvr2_accuracy([True, False], [True])
    with pytest.raises(ValueError, match=r"labels\[0\]: expected True/False"):
        nlvr2_accuracy([True], ["maybe"])


def test_consistency_groups_image_pairs_of_one_sentence():
    # Sentence 0 of set 1 is judged on pairs 0, 1, 2; sentence 1 on pairs 0, 1.
    ids = ["dev-1-0-0", "dev-1-1-0", "dev-1-2-0", "dev-1-0-1", "dev-1-1-1"]
    labels = [True, False, True, True, True]
    preds = [True, False, True, True, False]  # one error, on sentence 1
    assert nlvr2_consistency(ids, preds, labels) == pytest.approx(50.0)
    assert nlvr2_accuracy(preds, labels) == pytest.approx(80.0)


def test_consistency_rejects_unknown_identifier_format():
    with pytest.raises(ValueError, match="split-set-pair-sentence"):
        nlvr2_consistency(["dev-1-0"], [True], [True])


def test_evaluate_from_official_files_end_to_end(tmp_path):
    examples = [
        {"identifier": "test1-7-0-0", "sentence": "s", "left_url": "l", "right_url": "r", "label": "True"},
        {"identifier": "test1-7-1-0", "sentence": "s", "left_url": "l", "right_url": "r", "label": "False"},
        {"identifier": "test1-8-0-1", "sentence": "t", "left_url": "l", "right_url": "r", "label": "False"},
    ]
    data = tmp_path / "test1.json"
    data.write_text("\n".join(json.dumps(e) for e in examples) + "\n")
    csv = write_nlvr2_predictions(tmp_path / "preds.csv", ["test1-7-0-0", "test1-7-1-0", "test1-8-0-1"], [1, 1, 0])
    assert csv.read_text().splitlines()[0] == "test1-7-0-0,True"
    metrics = evaluate_nlvr2(load_nlvr2_predictions(csv), data)
    assert metrics == {"accuracy": pytest.approx(200 / 3), "consistency": pytest.approx(50.0), "num_examples": 3}


def test_evaluate_requires_a_prediction_per_example():
    with pytest.raises(ValueError, match="no prediction for 1 of 2 NLVR2 examples"):
        evaluate_nlvr2({"a-1-0-0": True}, [{"identifier": "a-1-0-0", "label": "True"}, {"identifier": "a-1-1-0", "label": "True"}])
