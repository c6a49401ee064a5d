"""VQA v2: ``v2_OpenEnded_mscoco_{subtype}_questions.json`` + ``v2_mscoco_{subtype}_annotations.json``
with the COCO images (``train2014/``, ``val2014/``, ``test2015/``).

Answers are normalised with the official VQA evaluation rules (``normalize_answer``). The
answer vocabulary is the ``top_answers`` (3129) most frequent normalised
``multiple_choice_answer`` over every annotated split found (train + val gives the usual
3129-answer list), ties broken alphabetically so the list is reproducible. A question's soft
target for a vocabulary answer is the official accuracy a model would get by predicting it
(``soft_score``); answers outside the vocabulary get no target.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from data_pipeline.formats import Source, first_existing, get, id_order, ident, load_json, text
from data_pipeline.records import BadSample, DataError
from pixelbert.answers import normalize_answer

__all__ = ["read_vqa", "soft_score", "answer_vocabulary", "question_targets"]

_SPLIT = {"train2014": "train", "val2014": "val", "test2015": "test", "test-dev2015": "test-dev"}
_IMAGE_DIR = {"train2014": "train2014", "val2014": "val2014", "test2015": "test2015", "test-dev2015": "test2015"}
_QUESTIONS = re.compile(r"v2_OpenEnded_mscoco_(\w+?\d{4})_questions\.json")


def soft_score(matches: int, humans: int) -> float:
    """Official VQA accuracy of an answer that ``matches`` of ``humans`` annotators gave.

    The mean over the leave-one-annotator-out subsets of min(#matches in the subset / 3, 1);
    with 10 annotators: 1 -> 0.3, 2 -> 0.6, 3 -> 0.9, 4+ -> 1.0. With one annotator (easy-VQA)
    there is no such subset; its answer scores 1.
    """
    if humans == 1:
        return float(matches)
    with_it = min(1.0, (matches - 1) / 3.0)  # subsets that left out one who gave it
    without_it = min(1.0, matches / 3.0)
    return (matches * with_it + (humans - matches) * without_it) / humans


def answer_vocabulary(answers, top: int) -> list[str]:
    """The ``top`` most frequent normalised answers, most frequent first (ties: alphabetical)."""
    counts = Counter(normalize_answer(a) for a in answers)
    counts.pop("", None)
    return [a for a, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top]]


def question_targets(answers: list[str], vocabulary: set[str]) -> dict[str, float]:
    """Soft targets of one question: vocabulary answer -> soft_score, zeros left out."""
    counts = Counter(normalize_answer(a) for a in answers)
    return {a: round(soft_score(c, len(answers)), 6) for a, c in sorted(counts.items()) if a in vocabulary}


def _question_files(root: Path) -> dict[str, Path]:
    found = {}
    for d in (root, root / "questions", root / "annotations"):
        for p in sorted(d.glob("v2_OpenEnded_mscoco_*_questions.json")):
            m = _QUESTIONS.fullmatch(p.name)
            if m and m.group(1) in _SPLIT:
                found.setdefault(m.group(1), p)
    return found


def _entries(path: Path, key: str, what: str) -> list:
    data = load_json(path)
    entries = data.get(key) if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise DataError(f"{path}: not a VQA {what} file (no {key!r} list)")
    return entries


def _annotations(path: Path, split: str, source: Source) -> dict:
    """question_id -> its annotation. One without a usable question_id is not counted here: its
    question then has no annotation and is counted as a bad record."""
    out = {}
    for ann in _entries(path, "annotations", "annotations"):
        try:
            qid = ident(ann, "question_id")
        except BadSample:
            continue
        if qid in out:
            source.reject(split, "duplicate_id")
        else:
            out[qid] = ann
    return out


def _answers(ann) -> tuple[list[str], str]:
    """The human answers and the multiple-choice answer of one annotation; raises BadSample."""
    answers = get(ann, "answers")
    if not isinstance(answers, list) or not answers:
        raise BadSample("bad_record", "'answers' is not a non-empty list")
    return [text(a, "answer") for a in answers], text(ann, "multiple_choice_answer")


def _question(q, seen: set, annotations: dict | None) -> tuple[int, dict, str | None]:
    """(image id, question entry, multiple-choice answer or None) of one question; raises BadSample."""
    qid = ident(q, "question_id")
    if qid in seen:
        raise BadSample("duplicate_id", str(qid))
    seen.add(qid)
    image_id, question = get(q, "image_id"), text(q, "question")
    if isinstance(image_id, bool) or not isinstance(image_id, int) or image_id < 0:
        raise BadSample("bad_record", f"question {qid}: image_id {image_id!r}")
    entry, choice = {"question_id": qid, "question": question}, None
    if annotations is not None:
        if qid not in annotations:
            raise BadSample("bad_record", f"question {qid} has no annotation")
        entry["answers"], choice = _answers(annotations[qid])
    return image_id, entry, choice


def read_vqa(root: str | Path, top_answers: int = 3129) -> Source:
    root = Path(root)
    questions_files = _question_files(root)
    if not questions_files:
        raise DataError(f"{root}: missing VQA v2 question files (looked for v2_OpenEnded_mscoco_train2014_questions.json, ...)")
    source = Source("vqa", ["vqa"], {}, [], options={"top_answers": top_answers})
    per_subtype, choices = {}, []
    for subtype, qpath in sorted(questions_files.items()):
        split, annotations = _SPLIT[subtype], None
        source.files.append(qpath)
        apath = first_existing([d / f"v2_mscoco_{subtype}_annotations.json" for d in (root, root / "annotations")])
        if apath is not None:
            source.files.append(apath)
            annotations = _annotations(apath, split, source)
        questions, seen = [], set()
        for q in _entries(qpath, "questions", "questions"):
            try:
                image_id, entry, choice = _question(q, seen, annotations)
            except BadSample as bad:
                source.reject(split, bad.kind)
                continue
            questions.append((image_id, entry))
            if choice is not None:
                choices.append(choice)
        per_subtype[subtype] = questions
    source.files.sort()
    source.answers = answer_vocabulary(choices, top_answers)
    vocab_set = set(source.answers)

    for subtype, questions in sorted(per_subtype.items()):
        split, image_dir = _SPLIT[subtype], _IMAGE_DIR[subtype]
        by_image: dict[int, list[dict]] = {}
        for image_id, entry in questions:
            if "answers" in entry:
                entry["targets"] = question_targets(entry["answers"], vocab_set)
            by_image.setdefault(image_id, []).append(entry)
        for image_id in sorted(by_image):
            name = f"COCO_{image_dir}_{image_id:012d}.jpg"
            image = first_existing([root / image_dir / name, root / "images" / image_dir / name])
            if image is None:
                source.reject(split, "missing_image")
                continue
            record = {
                "key": f"{split}_{image_id}",
                "split": split,
                "image_ids": [str(image_id)],
                "questions": sorted(by_image[image_id], key=lambda e: id_order(e["question_id"])),
            }
            source.splits.setdefault(split, []).append((record, [image]))
    return source
