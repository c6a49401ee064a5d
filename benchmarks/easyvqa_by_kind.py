"""Accuracy of an easy-VQA results file per kind of question; it only reports (test is scored
once, at the end, and nothing is chosen from it).

    python benchmarks/easyvqa_by_kind.py runs/easyvqa/result/mlm_itm/finetune/eval/test/vqa_results.json

Kinds: open colour ("what color is the shape?"), open shape ("what is the blue shape?", "what
shape is in the image?"), yes/no about a colour, yes/no about a shape. The question ids are the
easy-VQA format's ``<package split>/<index>``; questions and answers are read from the package.

It only reports: given the test predictions of a finished run (scored once, at the end), it
splits that final number by kind. Nothing is chosen from it; on a val results file it reads the
val questions the same way.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from data_pipeline.formats.easyvqa import SHAPES  # noqa: E402

KINDS = ("open colour", "open shape", "yes/no colour", "yes/no shape")


def question_kind(question: str) -> str:
    if question.startswith("what"):
        return "open colour" if "color" in question else "open shape"
    return "yes/no shape" if any(s in question for s in SHAPES) else "yes/no colour"


def accuracy_by_kind(results: list[dict]) -> dict[str, tuple[int, float]]:
    """kind -> (questions, accuracy) of ``[{"question_id": "train/12", "answer": ...}, ...]``."""
    import easy_vqa

    package = {"train": easy_vqa.get_train_questions(), "test": easy_vqa.get_test_questions()}
    total, right = Counter(), Counter()
    for r in results:
        split, index = r["question_id"].split("/")
        questions, answers, _ = package[split]
        kind = question_kind(questions[int(index)])
        total[kind] += 1
        right[kind] += r["answer"] == answers[int(index)]
    return {k: (total[k], right[k] / total[k]) for k in KINDS if total[k]}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results", type=Path, help="vqa_results.json written by launcher/evaluate.py")
    args = p.parse_args(argv)
    for kind, (n, acc) in accuracy_by_kind(json.loads(args.results.read_text())).items():
        print(f"{kind:14s} {n:6d} questions  accuracy {acc:.3f}")


if __name__ == "__main__":
    main()
