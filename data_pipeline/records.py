"""The sample record stored in every shard, and the rules that make a record usable.

One record per *image* (two for NLVR2): captions, questions and sentences ride along in the
record's JSON, so an image shared by five captions or five questions is stored once. What a
loader iterates over is a *unit*: one image for caption tasks, one question for VQA, one
example for NLVR2.

Record JSON (only the fields of its dataset are present)::

    {"key": "train_391895", "split": "train", "image_ids": ["391895"],
     "captions": ["a man ..."], "caption_ids": [770337],             # caption datasets
     "questions": [{"question_id": 1, "question": "...",             # VQA datasets
                    "answers": ["2", "two", ...], "targets": {"2": 1.0}}],
     "identifier": "dev-850-0-0", "sentence": "...", "label": 1}      # NLVR2

The builder and both loaders share these checks, so a sample rejected at build time would
be skipped (and counted the same way) by a loader reading shards built elsewhere.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "BAD_KINDS",
    "BUILD_KINDS",
    "BadSample",
    "DataError",
    "Sample",
    "TASK_FIELD",
    "parse_record",
    "make_sample",
    "units_per_sample",
]

# Kinds of bad data a loader skips and counts.
BAD_KINDS = ("corrupt", "too_large", "bad_record", "empty_text")

# What only the readers and the builder reject on top of those: an image that is not there, a path
# in an annotation file that leads outside the dataset folder, an id seen before (the first one is
# kept), a Visual Genome image among the COCO evaluation images.
BUILD_KINDS = ("missing_image", "bad_path", "duplicate_id", "coco_overlap")

# Which record field a task reads; it also names the per-sample unit counts in the manifest.
TASK_FIELD = {"pretrain": "captions", "retrieval": "captions", "vqa": "questions", "nlvr2": "sentence"}


class DataError(RuntimeError):
    """A problem with the inputs as a whole (missing file, empty dataset), phrased as one line."""


class BadSample(Exception):
    """One sample (or one annotation of it) that cannot be used; ``kind``: one of BAD_KINDS or BUILD_KINDS."""

    def __init__(self, kind: str, detail: str = ""):
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind


@dataclass
class Sample:
    """One unit, ready for the collator. ``texts``: the candidate captions, or the one
    question / sentence. ``images``: (3, h, w) tensors, filled in by the loader backend."""

    key: str
    image_ids: list[str]
    texts: list[str]
    targets: dict[str, float] | None = None
    answers: list[str] | None = None
    question_id: Any = None
    label: int | None = None
    caption_ids: list[Any] | None = None
    images: list[Any] = field(default_factory=list)


def parse_record(raw: bytes | str | dict) -> dict:
    """Decode one record's JSON; anything that is not an object with a key is ``bad_record``."""
    if isinstance(raw, dict):
        rec = raw
    else:
        try:
            rec = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as e:
            raise BadSample("bad_record", f"invalid JSON ({e})") from None
    if not isinstance(rec, dict) or not isinstance(rec.get("key"), str):
        raise BadSample("bad_record", "record is not an object with a string 'key'")
    ids = rec.get("image_ids")
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
        raise BadSample("bad_record", f"{rec['key']}: 'image_ids' must be a non-empty list of strings")
    return rec


def _clean_texts(values: Any, key: str, name: str) -> list[str]:
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise BadSample("bad_record", f"{key}: '{name}' must be a list of strings")
    return [" ".join(v.split()) for v in values if v.strip()]


def units_per_sample(rec: dict, task: str) -> int:
    """How many units of ``task`` a (valid) record holds: 0 when it has none of them."""
    name = TASK_FIELD[task]
    value = rec.get(name)
    if name == "captions":
        return min(1, len([c for c in value or [] if isinstance(c, str) and c.strip()]))
    if name == "questions":
        return len(value) if isinstance(value, list) else 0
    return 1 if isinstance(value, str) and value.strip() else 0


def make_sample(rec: dict, task: str, sub: int = 0) -> Sample:
    """Unit ``sub`` of a parsed record for ``task``; raises BadSample(bad_record | empty_text)."""
    key, ids = rec["key"], rec["image_ids"]
    if task in ("pretrain", "retrieval"):
        captions = _clean_texts(rec.get("captions"), key, "captions")
        if not captions:
            raise BadSample("empty_text", f"{key}: no caption")
        cids = rec.get("caption_ids")
        if isinstance(cids, list) and len(cids) == len(rec["captions"]):
            cids = [c for c, t in zip(cids, rec["captions"]) if isinstance(t, str) and t.strip()]
        else:
            cids = None
        return Sample(key, ids, captions, caption_ids=cids)
    if task == "vqa":
        questions = rec.get("questions")
        if not isinstance(questions, list) or not 0 <= sub < len(questions) or not isinstance(questions[sub], dict):
            raise BadSample("bad_record", f"{key}: no question {sub}")
        q = questions[sub]
        text = q.get("question")
        if not isinstance(text, str):
            raise BadSample("bad_record", f"{key}: question {sub} has no text")
        if not text.strip():
            raise BadSample("empty_text", f"{key}: question {sub} is empty")
        targets = q.get("targets") or {}
        if not isinstance(targets, dict) or not all(isinstance(v, (int, float)) for v in targets.values()):
            raise BadSample("bad_record", f"{key}: question {sub} targets must map answers to scores")
        answers = q.get("answers")
        answers = [a for a in answers if isinstance(a, str)] if isinstance(answers, list) else None
        return Sample(key, ids, [" ".join(text.split())], targets=targets, answers=answers,
                      question_id=q.get("question_id"))
    if task == "nlvr2":
        sentence, label = rec.get("sentence"), rec.get("label")
        if not isinstance(sentence, str) or label not in (0, 1) or len(ids) != 2:
            raise BadSample("bad_record", f"{key}: NLVR2 needs a sentence, a 0/1 label and two images")
        if not sentence.strip():
            raise BadSample("empty_text", f"{key}: empty sentence")
        return Sample(key, ids, [" ".join(sentence.split())], label=int(label),
                      question_id=rec.get("identifier"))
    raise ValueError(f"unknown task {task!r}")
