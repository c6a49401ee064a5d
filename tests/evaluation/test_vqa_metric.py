"""The official VQA accuracy: normalisation, leave-one-annotator-out scoring, files."""

import json

import pytest

from pixelbert.evaluation.vqa import (
    VQAFormatError,
    evaluate_vqa,
    load_vqa_results,
    normalize_answer,
    process_punctuation,
    vqa_accuracy,
    write_vqa_results,
)


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("Two", "2"),  # number words -> digits, lower case
        ("ten dogs", "10 dogs"),
        ("eleven", "eleven"),  # the official map stops at ten
        ("none", "0"),
        ("a dog.", "dog"),  # article dropped, trailing period stripped
        ("The  Dog ", "dog"),  # extra whitespace collapses
        ("an apple", "apple"),
        ("dont", "don't"),  # contraction restored
        ("don't", "don't"),  # "'" is not punctuation officially
        ("yes!", "yes"),  # "!" -> space, then split away
        ("What?", "what"),
        ("x-ray", "x ray"),  # inner mark with no space around -> space
        ("3.5", "3.5"),  # a period before a digit stays
        ("a.m.", "am"),
        ("1,000", "1000"),  # digit,digit comma: every mark deleted, not spaced
        ("hello, world", "hello world"),  # mark next to a space: deleted
        ("red\tand\nwhite", "red and white"),
    ],
)
def test_normalize_answer_matches_official_rules(raw, expected):
    assert normalize_answer(raw) == expected


def test_human_answers_only_get_punctuation_rule():
    # Officially the human answers are not lower-cased nor number-mapped: "Two" never matches.
    assert process_punctuation("Two") == "Two"
    assert vqa_accuracy("two", ["Two"] * 10) == 0.0
    assert vqa_accuracy("Two", ["2"] * 10) == 1.0


def test_unanimous_human_answers_are_used_verbatim():
    # With all ten equal, even punctuation is left alone ("yes!" stays "yes!").
    assert vqa_accuracy("yes", ["yes!"] * 10) == 0.0
    # With disagreement "yes!" becomes "yes " (trailing space) which still does not match "yes".
    assert vqa_accuracy("yes", ["yes!"] * 9 + ["no"]) == 0.0
    assert vqa_accuracy("x ray", ["x-ray"] * 9 + ["no"]) == 1.0


@pytest.mark.parametrize(
    "matches, expected",
    [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)],
)
def test_leave_one_out_partial_agreement(matches, expected):
    # 2 of 10: 8 subsets keep 2 matches (2/3), 2 subsets keep 1 (1/3) -> 0.6.
    humans = ["dog"] * matches + ["cat"] * (10 - matches)
    assert vqa_accuracy("dog", humans) == pytest.approx(expected)


def test_prediction_is_normalised_before_matching():
    assert vqa_accuracy("A Dog.", ["dog"] * 3 + ["cat"] * 7) == pytest.approx(0.9)


def test_vqa_accuracy_rejects_empty_answers():
    with pytest.raises(ValueError):
        vqa_accuracy("dog", [])


def _official_files(tmp_path):
    def ann(qid, answers, ans_type, q_type):
        return {
            "question_id": qid,
            "image_id": 1,
            "question_type": q_type,
            "answer_type": ans_type,
            "multiple_choice_answer": answers[0],
            "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": i + 1} for i, a in enumerate(answers)],
        }

    annotations = {
        "info": {},
        "license": {},
        "data_type": "mscoco",
        "data_subtype": "val2014",
        "annotations": [
            ann(1, ["yes"] * 10, "yes/no", "is the"),
            ann(2, ["2"] * 2 + ["3"] * 8, "number", "how many"),
            ann(3, ["red"] * 3 + ["blue"] * 7, "other", "what color"),
            ann(4, ["no"] * 10, "yes/no", "is the"),
        ],
    }
    questions = {
        "info": {},
        "task_type": "Open-Ended",
        "data_type": "mscoco",
        "data_subtype": "val2014",
        "license": {},
        "questions": [{"question_id": q, "image_id": 1, "question": "?"} for q in (1, 2, 3, 4)],
    }
    q_path, a_path = tmp_path / "questions.json", tmp_path / "annotations.json"
    q_path.write_text(json.dumps(questions))
    a_path.write_text(json.dumps(annotations))
    return q_path, a_path


def test_evaluate_vqa_from_official_files_end_to_end(tmp_path):
    q_path, a_path = _official_files(tmp_path)
    res_path = write_vqa_results(tmp_path / "results.json", [1, 2, 3, 4], ["Yes", "two", "red", "yes"])
    assert json.loads(res_path.read_text())[1] == {"question_id": 2, "answer": "two"}
    metrics = evaluate_vqa(res_path, q_path, a_path)
    # per question: 1.0, 0.6, 0.9, 0.0
    assert metrics["overall"] == pytest.approx(62.5)
    assert metrics["perAnswerType"] == {"number": 60.0, "other": 90.0, "yes/no": 50.0}
    assert metrics["perQuestionType"]["how many"] == 60.0
    assert metrics["num_questions"] == 4


def test_evaluate_vqa_accepts_a_prediction_dict(tmp_path):
    q_path, a_path = _official_files(tmp_path)
    metrics = evaluate_vqa({1: "yes", 2: "3", 3: "blue", 4: "no"}, q_path, a_path)
    assert metrics["overall"] == pytest.approx(100.0)


def test_missing_predictions_fail_in_one_line_unless_subset_allowed(tmp_path):
    q_path, a_path = _official_files(tmp_path)
    with pytest.raises(VQAFormatError, match=r"no prediction for annotated questions: 2 question ids, e.g. \[3, 4\]"):
        evaluate_vqa({1: "yes", 2: "3"}, q_path, a_path)
    metrics = evaluate_vqa({1: "yes", 2: "3"}, q_path, a_path, require_all=False)
    assert metrics["num_questions"] == 2


def test_non_string_predicted_answer_fails(tmp_path):
    q_path, a_path = _official_files(tmp_path)
    with pytest.raises(VQAFormatError, match="answer of question 2 must be a string"):
        evaluate_vqa({1: "yes", 2: 3, 3: "red", 4: "no"}, q_path, a_path)


def test_predictions_for_unknown_questions_fail(tmp_path):
    q_path, a_path = _official_files(tmp_path)
    with pytest.raises(VQAFormatError, match="not in the annotations"):
        evaluate_vqa({1: "yes", 2: "3", 3: "red", 4: "no", 99: "x"}, q_path, a_path)


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "not valid JSON"),
        ('{"question_id": 1}', "must be a JSON list"),
        ('[{"question_id": 1}]', "entry 0: expected an object with 'question_id' and 'answer'"),
        ('[{"question_id": 1, "answer": 3}]', "'answer' must be a string"),
        ('[{"question_id": "x", "answer": "a"}]', "question_id must be an integer"),
        ('[{"question_id": 1, "answer": "a"}, {"question_id": 1, "answer": "b"}]', "more than once"),
    ],
)
def test_malformed_results_file_gives_one_line_error(tmp_path, content, message):
    path = tmp_path / "results.json"
    path.write_text(content)
    with pytest.raises(VQAFormatError, match=message) as info:
        load_vqa_results(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_malformed_annotations_file_is_named(tmp_path):
    q_path, _ = _official_files(tmp_path)
    bad = tmp_path / "bad_annotations.json"
    bad.write_text(json.dumps({"questions": []}))
    with pytest.raises(VQAFormatError, match="bad_annotations.json: expected an object with an 'annotations' list"):
        evaluate_vqa({}, q_path, bad)
    with pytest.raises(VQAFormatError, match="annotations file not found"):
        evaluate_vqa({}, q_path, tmp_path / "absent.json")


def test_questions_file_must_cover_annotations(tmp_path):
    _, a_path = _official_files(tmp_path)
    q_path = tmp_path / "other_questions.json"
    q_path.write_text(json.dumps({"questions": [{"question_id": 1}]}))
    with pytest.raises(VQAFormatError, match="annotations and questions files disagree"):
        evaluate_vqa({1: "yes", 2: "3", 3: "red", 4: "no"}, q_path, a_path)


def test_write_vqa_results_checks_lengths(tmp_path):
    with pytest.raises(ValueError, match="2 question ids but 1 answers"):
        write_vqa_results(tmp_path / "r.json", [1, 2], ["a"])
