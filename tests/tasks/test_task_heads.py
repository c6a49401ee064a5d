"""The task names and head names of the config are the ones the tasks use."""

from pixelbert.config import HEAD_NAMES
from pixelbert.tasks import TASK_HEADS, TASKS


def test_every_task_names_the_heads_it_trains():
    assert set(TASK_HEADS) == set(TASKS)


def test_tasks_train_only_heads_the_config_accepts():
    assert {head for heads in TASK_HEADS.values() for head in heads} <= set(HEAD_NAMES)
