"""Where a run's model comes from: pre-trained folders, run folders, checkpoints.

Folders a user may name: a ``save_pretrained`` folder (``pixelbert_config.json`` +
``model.safetensors``), a run folder (``train.output_dir``: ``config.json``, ``export/``,
``checkpoints/``) or one checkpoint (``checkpoints/step_*``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from pixelbert.config import CONFIG_NAME, Config, ConfigError
from pixelbert.tasks import TASK_HEADS

__all__ = ["FINETUNE_MODEL_KEYS", "default_eval_split", "resolve_init", "find_run_config", "load_model",
           "build_finetune_model", "vqa_answers", "export"]

# What a fine-tuning config may change in a pre-trained model; the rest is the architecture.
FINETUNE_MODEL_KEYS = ("num_answers", "visual_dropout", "attn_implementation", "frozen_bn")


def default_eval_split(task: str) -> str:
    """NLVR2 calls its validation split ``dev``; the others ``val``."""
    return "dev" if task == "nlvr2" else "val"


def resolve_init(path: str | Path) -> Path:
    """The save_pretrained folder ``path`` names (itself, or its ``export/``); ConfigError if none."""
    path = Path(path)
    for candidate in (path, path / "export"):
        if (candidate / CONFIG_NAME).is_file():
            return candidate.resolve()
    if not path.exists():
        raise ConfigError(f"--init {path}: no such folder")
    raise ConfigError(f"--init {path}: not a save_pretrained folder (no {CONFIG_NAME}; export a checkpoint "
                      "with launcher/export.py)")


def find_run_config(checkpoint: Path) -> Path | None:
    """The run's config.json: in the folder, or above an export/ or checkpoints/step_* folder."""
    for d in (checkpoint, checkpoint.parent, checkpoint.parent.parent):
        if (d / "config.json").is_file():
            return d / "config.json"
    return None


def load_model(checkpoint: str | Path, tmp: str | Path):
    """(PixelBert, its save_pretrained folder or None) from a save_pretrained folder, a run folder
    (its export/, else its latest complete checkpoint) or one checkpoint (exported into ``tmp``)."""
    from pixelbert.engine.checkpoint import export_pretrained, find_resume
    from pixelbert.modeling.model import PixelBert

    checkpoint = Path(checkpoint)
    for d in (checkpoint, checkpoint / "export"):
        if (d / CONFIG_NAME).is_file():
            return PixelBert.from_pretrained(d), d
    ckpt = find_resume(checkpoint / "checkpoints") if (checkpoint / "checkpoints").is_dir() else find_resume(checkpoint)
    if ckpt is None:
        raise ConfigError(f"--checkpoint {checkpoint}: no model there "
                          f"(no {CONFIG_NAME}, export/ or complete checkpoint)")
    return PixelBert.from_pretrained(export_pretrained(ckpt, tmp)), None


def vqa_answers(config: Config) -> list[str] | None:
    """The answer list of a run's VQA model (its shards' manifest ``answers``); None for other models."""
    if "vqa" not in config.model.heads:
        return None
    from data_pipeline.records import DataError
    from data_pipeline.shards import load_manifest

    shards = config.data.shards
    try:
        answers = load_manifest(shards).get("answers") if isinstance(shards, str) else None
    except DataError as e:
        raise ConfigError(f"a VQA model's export carries its answer list, read from its shards: {e}") from None
    if not answers:
        raise ConfigError(f"{shards}: no answer list in the manifest (a VQA model's export carries it)")
    return answers


def export(source: str | Path, out_dir: str | Path) -> Path:
    """The checkpoint ``source`` names (a run folder: its latest complete one; its ``checkpoints/``; one
    ``step_*`` folder) -> a save_pretrained folder with what prediction needs: the run's preprocessing
    and a VQA model's answer list."""
    from pixelbert.engine.checkpoint import checkpoint_config, export_pretrained

    source = Path(source)
    if not source.exists():
        raise ConfigError(f"{source}: no such checkpoint folder")
    root = source / "checkpoints" if (source / "checkpoints").is_dir() else source
    _, config = checkpoint_config(root)
    return export_pretrained(root, out_dir, answers=vqa_answers(config))


def build_finetune_model(config: Config, init: Path | None):
    """(PixelBert with the task's heads, one log line saying where the weights came from)."""
    from pixelbert.modeling.model import PixelBert, build_model

    heads = TASK_HEADS[config.train.task]
    if init is None:
        model = build_model(dataclasses.replace(config.model, heads=heads))
        return model, f"no --init: model built from {config.source} (heads {', '.join(heads)} freshly initialised)"
    keep = {k: getattr(config.model, k) for k in FINETUNE_MODEL_KEYS}
    model = PixelBert.from_pretrained(init, heads=heads, **keep)
    fresh, dropped = model.init_report["fresh"], model.init_report["dropped"]
    line = f"init from {init}: loaded the pre-trained weights"
    line += f"; heads freshly initialised (not in it): {', '.join(fresh)}" if fresh else "; every head loaded"
    if dropped:
        line += f"; unused heads dropped: {', '.join(dropped)}"
    if config.train.freeze_cnn:
        line += "\ntrain.freeze_cnn: BatchNorm statistics frozen too (model.frozen_bn)"
    return model, line
