"""Prediction from an export in five lines (the README's): the same answers as launcher/evaluate.py,
the same input tensors as the evaluation loader, and every export carries what it needs."""

from __future__ import annotations

import json
import os
import stat

import torch

from tiny_data import write_config


def _val_questions(task_data):
    """(image paths, question texts, question ids) of the tiny VQA v2 val split, in file order."""
    raw, _, _ = task_data("vqa")
    questions = json.loads((raw / "v2_OpenEnded_mscoco_val2014_questions.json").read_text())["questions"]
    images = [str(raw / "val2014" / f"COCO_val2014_{q['image_id']:012d}.jpg") for q in questions]
    return images, [q["question"] for q in questions], [q["question_id"] for q in questions]


def test_the_readme_five_lines_give_the_answers_of_launcher_evaluate(capsys, finetuned, task_data):
    from launcher import evaluate

    run, _ = finetuned("vqa")
    assert evaluate.main(["--task", "vqa", "--checkpoint", str(run), "--split", "val",
                          "--out", str(run / "eval_for_predict")]) == 0
    evaluated = {r["question_id"]: r["answer"]
                 for r in json.loads((run / "eval_for_predict" / "vqa_results.json").read_text())}
    images, questions, ids = _val_questions(task_data)

    # The README's five lines, on the run folder itself.
    from pixelbert import PixelBert, Processor
    model = PixelBert.from_pretrained(run)
    processor = Processor.from_pretrained(run)
    batch = processor(images, questions)
    answers = model.predict_vqa(batch)

    assert [answer for answer, _ in answers] == [evaluated[q] for q in ids]
    assert all(0.0 < p <= 1.0 for _, p in answers)


def test_the_processor_makes_the_tensors_the_evaluation_loader_makes(task_data, tmp_path):
    from data_pipeline.loaders import build_loader
    from pixelbert import Processor, load_config

    _, shards, manifest = task_data("vqa")
    config = load_config(write_config(tmp_path / "c.json", "vqa", shards, manifest, tmp_path / "run"))
    loaded = next(iter(build_loader(config, "val")))
    images, questions, ids = _val_questions(task_data)
    rows = [ids.index(q) for q in loaded.meta["question_ids"]]
    made = Processor.from_config(config)([images[i] for i in rows], [questions[i] for i in rows])
    assert len(loaded) > 1 and made.meta["texts"] == loaded.meta["texts"]
    assert torch.equal(made.input_ids, loaded.input_ids)
    assert torch.equal(made.attention_mask, loaded.attention_mask)
    assert torch.equal(made.images, loaded.images)
    assert torch.equal(made.pixel_mask, loaded.pixel_mask)
    assert torch.equal(made.row_images(), loaded.row_images())


def test_launcher_export_carries_the_answers_and_the_preprocessing(finetuned, tmp_path):
    from launcher import export
    from pixelbert.config import ANSWERS_NAME, PREPROCESSOR_NAME

    run, _ = finetuned("vqa")
    assert export.main([str(run), str(tmp_path / "again")]) == 0
    for name in (ANSWERS_NAME, PREPROCESSOR_NAME):
        assert (tmp_path / "again" / name).read_text() == (run / "export" / name).read_text()
    preprocessing = json.loads((tmp_path / "again" / PREPROCESSOR_NAME).read_text())
    config = json.loads((run / "config.json").read_text())["data"]
    assert preprocessing == {k: config[k] for k in preprocessing}
    assert preprocessing["image_size"] == 32 and preprocessing["max_text_len"] == 16


def test_every_exported_file_is_readable_by_others(finetuned):
    run, _ = finetuned("vqa")
    umask = os.umask(0o022)
    os.umask(umask)
    for path in (run / "export").iterdir():
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == 0o666 & ~umask, (path.name, oct(mode))
