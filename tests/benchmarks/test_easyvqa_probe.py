"""benchmarks/easyvqa_probe.py: labels read from the package's own answers; a short run reports both questions."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

easy_vqa = pytest.importorskip("easy_vqa")

from benchmarks import easyvqa_probe as probe  # noqa: E402
from pixelbert.config import load_config  # noqa: E402


def test_labels_are_the_packages_answers_for_the_same_image():
    config = load_config(REPO / "configs/finetune/easyvqa.json")
    questions = easy_vqa.get_test_questions()
    x, labels = probe.load_split(easy_vqa.get_test_image_paths(), questions, config)
    assert x.shape[1:] == (3, config.data.image_size, config.data.image_size)
    answers: dict[int, set[str]] = {}
    for _, answer, image in zip(*questions):
        answers.setdefault(image, set()).add(answer)
    ids = sorted(i for i, a in answers.items() if a & set(probe.SHAPES) and a & set(probe.COLOURS))
    assert len(ids) == len(x) > 500
    for row in (0, 1, len(ids) - 1):
        got = {probe.SHAPES[int(labels["shape"][row])], probe.COLOURS[int(labels["colour"][row])]}
        assert got <= answers[ids[row]]


@pytest.mark.parametrize("flags", [["--detach", "colour", "--steps", "2"],
                                   ["--trunk-first", "1", "--freeze-bn", "--lr-visual", "0.001", "--steps", "2"]])
def test_a_short_run_reports_test_accuracy_for_every_question(capsys, flags):
    probe.main(["--questions", "shape", "colour", "--batch", "4", *flags])
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("step 2 ")]
    found = re.search(r"\{'shape': ([0-9.]+), 'colour': ([0-9.]+)\}", lines[-1])
    assert found and all(0.0 <= float(v) <= 1.0 for v in found.groups())
