"""tasks.base.Task, the type of the trainer's task: every task build_task makes satisfies it."""

from __future__ import annotations

from pathlib import Path

import pytest

from pixelbert.config import load_config
from pixelbert.tasks import TASKS, build_task
from pixelbert.tasks.base import Task

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", TASKS)
def test_every_task_is_a_task_named_after_its_config_value(name):
    task = build_task(load_config(REPO / "configs/tiny.json", [f"train.task={name}"]))
    assert isinstance(task, Task) and task.name == name
