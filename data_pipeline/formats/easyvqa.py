"""easy-VQA (the ``easy-vqa`` package): 64 x 64 images of one coloured shape, 13 answers.

Our embedded default dataset. One record per image carries both its questions (VQA
fine-tuning) and a caption derived from them (pre-training), so one set of shards serves
both. Splits: ``train`` = the package's train images minus the last ``val_fraction`` of
them by image id, which form ``val``; ``test`` = the package's test split, kept for the
final evaluation.

How the caption is derived (``derive_caption``): every question is evidence for the shape
and colour words it proves the image shows --
  * an open question (its answer is a shape or a colour word) proves its answer and every
    shape/colour word in the question ("what color is the circle?" -> "blue" proves
    circle and blue; "what is the blue shape?" -> "rectangle" proves blue and rectangle);
  * a yes/no question proves the shape/colour words it mentions when the answer is "yes"
    and the question has no negation ("not", "no"), or the answer is "no" and it has one
    ("is there not a red shape?" -> "no" proves red).
The caption is "a {colour} {shape}"; an unproven colour is left out ("a circle"), an
unproven shape is called "shape" ("a blue shape"). An image with neither has no caption
(it still serves VQA). On the package data no two proofs ever disagree; if they did, the
image would get no caption. Of the package's 4,000 train images 3,542 get both words, 419
one and 39 none (test: 880 / 104 / 16 of 1,000).
"""

from __future__ import annotations

import re
from pathlib import Path

from data_pipeline.formats import Source, find_file, load_json, read_text
from data_pipeline.formats.vqa import question_targets
from data_pipeline.records import BadSample, DataError

__all__ = ["read_easyvqa", "derive_caption", "SHAPES", "COLORS"]

SHAPES = ("circle", "rectangle", "triangle")
COLORS = ("red", "green", "blue", "black", "gray", "teal", "brown", "yellow")
_NEGATIONS = {"not", "no"}


def derive_caption(questions: list[tuple[str, str]]) -> str | None:
    """The caption of one image from its (question, answer) pairs; None if nothing is proven."""
    shapes, colors = set(), set()
    for question, answer in questions:
        words = re.findall(r"[a-z]+", question.lower())
        if answer in SHAPES or answer in COLORS:
            proven = set(words) | {answer}
        elif answer in ("yes", "no") and (answer == "yes") != bool(_NEGATIONS & set(words)):
            proven = set(words)
        else:
            continue
        shapes |= proven & set(SHAPES)
        colors |= proven & set(COLORS)
    if len(shapes) > 1 or len(colors) > 1 or not (shapes or colors):
        return None
    words = [*colors, *(shapes or {"shape"})]
    return "a " + " ".join(words)


def _row(row) -> tuple[str, str, int]:
    """One ``[question, answer, image_id]`` row of a questions file; raises BadSample."""
    if not isinstance(row, list) or len(row) != 3:
        raise BadSample("bad_record", f"{row!r} is not [question, answer, image_id]")
    question, answer, image_id = row
    if not isinstance(question, str) or not isinstance(answer, str):
        raise BadSample("bad_record", f"{row!r}: question and answer must be text")
    if isinstance(image_id, bool) or not isinstance(image_id, int) or image_id < 0:
        raise BadSample("bad_record", f"{row!r}: image_id must be an integer >= 0")
    return question, answer, image_id


def _package_root() -> Path:
    try:
        import easy_vqa
    except ImportError:
        raise DataError("easy-vqa is not installed (pip install easy-vqa) and no --root was given") from None
    return Path(easy_vqa.__file__).parent / "data"


def read_easyvqa(root: str | Path | None = None, val_fraction: float = 0.1) -> Source:
    """``root``: a folder laid out like the package's ``data/`` (default: the installed package)."""
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"easyvqa: val_fraction must be in [0, 1), got {val_fraction}")
    root = Path(root) if root is not None else _package_root()
    answers_path = find_file(root, ["answers.txt"], "answers.txt")
    answers = [a.strip() for a in read_text(answers_path).splitlines() if a.strip()]
    vocab = set(answers)
    files = [answers_path]
    source = Source("easyvqa", ["pretrain", "retrieval", "vqa"], {}, files, answers=answers,
                    options={"val_fraction": val_fraction})
    for package_split in ("train", "test"):
        qpath = find_file(root, [f"{package_split}/questions.json"], f"{package_split}/questions.json")
        files.append(qpath)
        rows = load_json(qpath)
        if not isinstance(rows, list):
            raise DataError(f"{qpath}: expected a list of [question, answer, image_id] lists")
        by_image: dict[int, list] = {}
        for i, row in enumerate(rows):
            try:
                question, answer, image_id = _row(row)
            except BadSample as bad:
                source.reject(package_split, bad.kind)
                continue
            by_image.setdefault(image_id, []).append((i, question, answer))
        ids = sorted(by_image)
        n_val = int(round(len(ids) * val_fraction)) if package_split == "train" else 0
        val_ids = set(ids[len(ids) - n_val:]) if n_val else set()
        for image_id in ids:
            split = package_split if image_id not in val_ids else "val"
            qs = by_image[image_id]
            caption = derive_caption([(q, a) for _, q, a in qs])
            record = {
                "key": f"{split}_{image_id}",
                "split": split,
                "image_ids": [f"{package_split}/{image_id}"],
                "captions": [caption] if caption else [],
                "questions": [
                    {"question_id": f"{package_split}/{i}", "question": q, "answers": [a],
                     "targets": question_targets([a], vocab)}
                    for i, q, a in qs
                ],
            }
            image = root / package_split / "images" / f"{image_id}.png"
            if not image.is_file():
                source.reject(split, "missing_image")
                continue
            source.splits.setdefault(split, []).append((record, [image]))
    return source
