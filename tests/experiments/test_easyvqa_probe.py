"""experiments/easyvqa_probe/probe.py: labels read from the package's own answers; a short run reports both
questions; at its defaults it scores val images and never opens a test image."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]

easy_vqa = pytest.importorskip("easy_vqa")

from data_pipeline.formats.easyvqa import read_easyvqa  # noqa: E402
from pixelbert.config import load_config  # noqa: E402

_spec = importlib.util.spec_from_file_location("easyvqa_probe", REPO / "experiments/easyvqa_probe/probe.py")
probe = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(probe)


def test_labels_are_the_packages_answers_for_the_same_image():
    config = load_config(REPO / "configs/finetune/easyvqa.json")
    entries = read_easyvqa().splits["val"]
    x, labels = probe.load_split(entries, config)
    assert x.shape[1:] == (3, config.data.image_size, config.data.image_size)
    answers: dict[int, set[str]] = {}
    for _, answer, image in zip(*easy_vqa.get_train_questions()):
        answers.setdefault(image, set()).add(answer)
    val = {int(record["image_ids"][0].split("/")[1]) for record, _ in entries}
    ids = sorted(i for i in val if answers[i] & set(probe.SHAPES) and answers[i] & set(probe.COLOURS))
    assert len(ids) == len(x) > 0
    for row in (0, 1, len(ids) - 1):
        got = {probe.SHAPES[int(labels["shape"][row])], probe.COLOURS[int(labels["colour"][row])]}
        assert got <= answers[ids[row]]


@pytest.mark.parametrize("flags", [["--detach", "colour", "--steps", "2"],
                                   ["--trunk-first", "1", "--freeze-bn", "--lr-visual", "0.001", "--steps", "2"]])
def test_a_short_run_reports_accuracy_for_every_question(capsys, flags):
    probe.main(["--questions", "shape", "colour", "--batch", "4", *flags])
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("step 2 ")]
    found = re.search(r"\{'shape': ([0-9.]+), 'colour': ([0-9.]+)\}", lines[-1])
    assert found and all(0.0 <= float(v) <= 1.0 for v in found.groups())


def test_at_its_defaults_the_probe_scores_val_images_and_opens_no_test_image(monkeypatch, capsys):
    opened, real_open = [], Image.open

    def recording_open(path, *args, **kwargs):
        opened.append(Path(path).resolve())
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(Image, "open", recording_open)
    probe.main(["--batch", "2", "--steps", "1"])
    test_images = (Path(easy_vqa.__file__).parent / "data" / "test").resolve()
    assert opened and not [p for p in opened if p.is_relative_to(test_images)]
    val = {Path(path).resolve() for _, (path,) in read_easyvqa().splits["val"]}
    assert set(opened) & val and "val accuracy" in capsys.readouterr().out
