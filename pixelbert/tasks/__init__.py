"""One module per task (visual_words, pretrain, vqa, nlvr2, retrieval), one interface: tasks.base.Task.

``build_task(config)`` is the one way launchers turn ``train.task`` into a task object;
``TASK_HEADS`` says which model heads a task trains, so fine-tuning can load a pre-trained
model with exactly those heads (new ones start fresh, unused ones are dropped).
"""

from __future__ import annotations

from pixelbert.config import FINETUNE_TASKS, PRETRAIN_TASKS, TASKS, Config, ConfigError, did_you_mean

__all__ = ["TASKS", "PRETRAIN_TASKS", "TASK_HEADS", "FINETUNE_TASKS", "RETRIEVAL_HARD_NEGATIVES", "build_task", "check_task"]

# Retrieval scores pairs with the ITM head, as pre-training trained it.
TASK_HEADS = {"visual_words": ["words"], "pretrain": ["mlm", "itm"], "vqa": ["vqa"], "nlvr2": ["nlvr2"], "retrieval": ["itm"]}
# Hardest negatives in the retrieval softmax (the paper's 5 of 20).
RETRIEVAL_HARD_NEGATIVES = 5


def check_task(name: str, allowed: tuple[str, ...] = TASKS) -> str:
    """``name`` if it is a known task, else ConfigError with the closest name or the known ones."""
    if name not in allowed:
        raise ConfigError(f"unknown task {name!r} ({did_you_mean(name, allowed)})")
    return name


def build_task(config: Config):
    """The task object for ``config.train.task``; imports only the module it needs."""
    name = check_task(config.train.task)
    if name == "visual_words":
        from pixelbert.tasks.visual_words import VisualWordsTask

        return VisualWordsTask.from_config(config)
    if name == "pretrain":
        from pixelbert.tasks.pretrain import PretrainTask

        return PretrainTask.from_config(config)
    if name == "vqa":
        from pixelbert.tasks.vqa import VQATask

        return VQATask(loss=config.train.vqa_loss)
    if name == "nlvr2":
        from pixelbert.tasks.nlvr2 import NLVR2Task

        return NLVR2Task()
    from pixelbert.tasks.retrieval import RetrievalTask

    return RetrievalTask(num_hard=RETRIEVAL_HARD_NEGATIVES)
