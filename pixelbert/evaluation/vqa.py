"""The official VQA accuracy, answer normalisation included.

Reproduces the behaviour of ``vqaEval.py`` of the VQA API (GT-Vision-Lab/VQA, Python 3
version) so that numbers here compare with every published VQA v2 result:

- a predicted answer goes through :func:`normalize_answer` of ``pixelbert.answers``
  (whitespace, punctuation, lower case, number words -> digits, articles dropped,
  contractions restored);
- the human answers go through :func:`process_punctuation` only, and only when the ten
  humans did not all give the same string (the official code does exactly this; the
  released annotations are already normalised, so it rarely matters);
- a prediction scores ``min(#matching humans among the other 9 / 3, 1)`` averaged over the
  10 leave-one-annotator-out subsets (2 of 10 humans -> 0.6, 3 -> 0.9, 4 or more -> 1).

:func:`evaluate_vqa` scores a whole split from the official annotation files and reports,
like the official tool, percentages rounded to two decimals.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from pixelbert.answers import normalize_answer, process_digit_article, process_punctuation

__all__ = [
    "VQAFormatError",
    "normalize_answer",
    "process_punctuation",
    "process_digit_article",
    "vqa_accuracy",
    "load_vqa_results",
    "load_vqa_annotations",
    "evaluate_vqa",
    "write_vqa_results",
]


class VQAFormatError(ValueError):
    """A malformed VQA file or a results/annotations mismatch, as one line naming the file."""


def _human_answers_as_scored(human_answers: Sequence[str]) -> list[str]:
    # Officially, human answers only get the punctuation rule, and only when they disagree.
    if len(set(human_answers)) > 1:
        return [process_punctuation(a) for a in human_answers]
    return list(human_answers)


def vqa_accuracy(predicted: str, human_answers: Sequence[str]) -> float:
    """Score in [0, 1] of one predicted answer against the (usually 10) human answers."""
    if not human_answers:
        raise ValueError("vqa_accuracy: no human answers given")
    pred = normalize_answer(predicted)
    humans = _human_answers_as_scored(human_answers)
    matches = sum(h == pred for h in humans)
    # Leaving out annotator j removes one match iff j gave the predicted answer.
    total = sum(min(1.0, (matches - (h == pred)) / 3.0) for h in humans)
    return total / len(humans)


# ---------------------------------------------------------------------------------------------
# Files in the official formats


def _read_json(path: str | Path, what: str) -> Any:
    path = Path(path)
    if not path.is_file():
        raise VQAFormatError(f"{path}: {what} file not found")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise VQAFormatError(f"{path}: {what} file is not valid JSON ({e.msg} at line {e.lineno})") from None


def _as_qid(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise VQAFormatError(f"{where}: question_id must be an integer, got {value!r}")
    try:
        return int(value)
    except ValueError:
        raise VQAFormatError(f"{where}: question_id must be an integer, got {value!r}") from None


def load_vqa_results(path: str | Path) -> dict[int, str]:
    """Read a results file ``[{"question_id": int, "answer": str}, ...]`` -> {qid: answer}."""
    data = _read_json(path, "results")
    if not isinstance(data, list):
        raise VQAFormatError(f"{path}: results must be a JSON list of {{\"question_id\", \"answer\"}} objects")
    results: dict[int, str] = {}
    for i, item in enumerate(data):
        where = f"{path}: entry {i}"
        if not isinstance(item, dict) or "question_id" not in item or "answer" not in item:
            raise VQAFormatError(f"{where}: expected an object with 'question_id' and 'answer', got {item!r:.80}")
        if not isinstance(item["answer"], str):
            raise VQAFormatError(f"{where}: 'answer' must be a string, got {item['answer']!r}")
        qid = _as_qid(item["question_id"], where)
        if qid in results:
            raise VQAFormatError(f"{where}: question_id {qid} appears more than once")
        results[qid] = item["answer"]
    return results


def load_vqa_annotations(annotations: str | Path | Mapping) -> dict[int, dict]:
    """Official ``v2_mscoco_*_annotations.json`` (path or loaded dict) -> {qid: annotation}.

    Each annotation keeps ``answers`` (list of strings), ``answer_type`` and ``question_type``.
    """
    source = "annotations" if isinstance(annotations, Mapping) else str(annotations)
    data = annotations if isinstance(annotations, Mapping) else _read_json(annotations, "annotations")
    if not isinstance(data, Mapping) or not isinstance(data.get("annotations"), list):
        raise VQAFormatError(f"{source}: expected an object with an 'annotations' list (official VQA annotations format)")
    out: dict[int, dict] = {}
    for i, ann in enumerate(data["annotations"]):
        where = f"{source}: annotations[{i}]"
        if not isinstance(ann, Mapping) or "question_id" not in ann or not isinstance(ann.get("answers"), list):
            raise VQAFormatError(f"{where}: expected 'question_id' and an 'answers' list")
        try:
            answers = [a["answer"] for a in ann["answers"]]
        except (TypeError, KeyError):
            raise VQAFormatError(f"{where}: every entry of 'answers' needs an 'answer' string") from None
        if not answers or not all(isinstance(a, str) for a in answers):
            raise VQAFormatError(f"{where}: 'answers' must hold at least one 'answer' string")
        qid = _as_qid(ann["question_id"], where)
        out[qid] = {
            "answers": answers,
            "answer_type": str(ann.get("answer_type", "unknown")),
            "question_type": str(ann.get("question_type", "unknown")),
        }
    return out


def _question_ids(questions: str | Path | Mapping) -> set[int]:
    source = "questions" if isinstance(questions, Mapping) else str(questions)
    data = questions if isinstance(questions, Mapping) else _read_json(questions, "questions")
    if not isinstance(data, Mapping) or not isinstance(data.get("questions"), list):
        raise VQAFormatError(f"{source}: expected an object with a 'questions' list (official VQA questions format)")
    ids = set()
    for i, q in enumerate(data["questions"]):
        if not isinstance(q, Mapping) or "question_id" not in q:
            raise VQAFormatError(f"{source}: questions[{i}] has no 'question_id'")
        ids.add(_as_qid(q["question_id"], f"{source}: questions[{i}]"))
    return ids


def _mismatch(ids: set[int], message: str, hint: str = "") -> VQAFormatError:
    return VQAFormatError(f"{message}: {len(ids)} question ids, e.g. {sorted(ids)[:3]}{hint}")


def evaluate_vqa(
    predictions: Mapping[int, str] | str | Path,
    questions: str | Path | Mapping | None,
    annotations: str | Path | Mapping,
    *,
    require_all: bool = True,
    ndigits: int = 2,
) -> dict[str, Any]:
    """Official VQA accuracy of a split, in percent.

    ``predictions``: {question_id: answer} or a results file path. ``questions`` (optional,
    path or loaded dict) is checked to cover the annotated ids. As the official tool does,
    every annotated question must have a prediction unless ``require_all=False`` (then only
    the predicted ones are scored). Returns ``{"overall", "perAnswerType",
    "perQuestionType", "num_questions"}``.
    """
    if not isinstance(predictions, Mapping):
        predictions = load_vqa_results(predictions)
    else:
        predictions = {_as_qid(k, "predictions"): v for k, v in predictions.items()}
        bad = next((q for q, a in predictions.items() if not isinstance(a, str)), None)
        if bad is not None:
            raise VQAFormatError(f"predictions: answer of question {bad} must be a string, got {predictions[bad]!r}")
    gts = load_vqa_annotations(annotations)
    if questions is not None:
        missing_q = set(gts) - _question_ids(questions)
        if missing_q:
            raise _mismatch(missing_q, "annotations and questions files disagree: annotated but not in questions")
    unknown = set(predictions) - set(gts)
    if unknown:
        raise _mismatch(unknown, "predictions for questions not in the annotations")
    missing = set(gts) - set(predictions)
    if missing and require_all:
        raise _mismatch(missing, "no prediction for annotated questions", " (require_all=False scores a subset)")
    if not predictions:
        raise VQAFormatError("no predictions to score")

    scores: list[float] = []
    by_answer_type: dict[str, list[float]] = defaultdict(list)
    by_question_type: dict[str, list[float]] = defaultdict(list)
    for qid in sorted(predictions):
        ann = gts[qid]
        acc = vqa_accuracy(predictions[qid], ann["answers"])
        scores.append(acc)
        by_answer_type[ann["answer_type"]].append(acc)
        by_question_type[ann["question_type"]].append(acc)

    def pct(values: list[float]) -> float:
        return round(100.0 * sum(values) / len(values), ndigits)

    return {
        "overall": pct(scores),
        "perAnswerType": {k: pct(v) for k, v in sorted(by_answer_type.items())},
        "perQuestionType": {k: pct(v) for k, v in sorted(by_question_type.items())},
        "num_questions": len(scores),
    }


def write_vqa_results(path: str | Path, qids: Iterable[int], answers: Iterable[str]) -> Path:
    """Write the official submission format ``[{"question_id": int, "answer": str}]``."""
    qids, answers = list(qids), list(answers)
    if len(qids) != len(answers):
        raise ValueError(f"write_vqa_results: {len(qids)} question ids but {len(answers)} answers")
    rows = [{"question_id": int(q), "answer": str(a)} for q, a in zip(qids, answers)]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(rows))
    tmp.replace(path)
    return path
