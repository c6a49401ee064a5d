"""What a fine-tuning trial tells Ray Tune after each evaluation, and where it resumes from.

The trial's real checkpoints are the training engine's (``<trial dir>/run/checkpoints``); the
Ray checkpoint reported with each epoch's metrics is only a small pointer to that step. Ray
copies a reported checkpoint into its storage, so copying DeepSpeed states (optimiser
included) every epoch would cost as much as the checkpoints themselves. When a sweep is
restored, a trial that has a Ray checkpoint resumes the engine from its latest checkpoint.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Callable

__all__ = ["epoch_reporter", "resume_point", "POINTER"]

POINTER = "engine_checkpoint.json"


def epoch_reporter(engine_dir: str | Path) -> Callable[[int, int, dict], None]:
    """``on_eval(step, epoch, metrics)`` for ``launcher.finetune.run``: ``ray.tune.report`` + a pointer checkpoint."""
    from ray import tune

    def report(step: int, epoch: int, metrics: dict) -> None:
        with tempfile.TemporaryDirectory() as d:
            (Path(d) / POINTER).write_text(json.dumps({"checkpoints": str(engine_dir), "step": step}))
            tune.report({**metrics, "step": step, "epoch": epoch}, checkpoint=tune.Checkpoint.from_directory(d))

    return report


def resume_point() -> str | None:
    """``"auto"`` when Ray restored this trial from a reported checkpoint (resume the engine), else None."""
    from ray import tune

    return "auto" if tune.get_checkpoint() is not None else None
