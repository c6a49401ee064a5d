"""benchmarks/easyvqa_by_kind.py: questions sorted into the four kinds, accuracy per kind."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

easy_vqa = pytest.importorskip("easy_vqa")

from benchmarks import easyvqa_by_kind as by_kind  # noqa: E402


@pytest.mark.parametrize("question, kind", [
    ("what color is the shape?", "open colour"), ("what is the blue shape?", "open shape"),
    ("what shape is in the image?", "open shape"), ("is there a red shape?", "yes/no colour"),
    ("does the image not contain a gray shape?", "yes/no colour"),
    ("is there a triangle in the image?", "yes/no shape"), ("does the image contain a rectangle?", "yes/no shape")])
def test_question_kinds(question, kind):
    assert by_kind.question_kind(question) == kind


def test_accuracy_per_kind_of_a_results_file(tmp_path, capsys):
    questions, answers, _ = easy_vqa.get_test_questions()
    seen: dict[str, list[int]] = {}
    for i, q in enumerate(questions):
        seen.setdefault(by_kind.question_kind(q), []).append(i)
    results = []
    for kind, ids in seen.items():  # per kind: 4 questions, the first `right` of them answered correctly
        right = by_kind.KINDS.index(kind)
        for n, i in enumerate(ids[:4]):
            results.append({"question_id": f"test/{i}", "answer": answers[i] if n < right else "no such answer"})
    got = by_kind.accuracy_by_kind(results)
    assert got == {k: (4, by_kind.KINDS.index(k) / 4) for k in by_kind.KINDS}
    path = tmp_path / "vqa_results.json"
    path.write_text(json.dumps(results))
    by_kind.main([str(path)])
    assert "yes/no shape        4 questions  accuracy 0.750" in capsys.readouterr().out
