"""Runs, as a library: what the launchers (and Ray Tune trials, notebooks, scripts) call.

    from pixelbert import load_config, recipes
    done = recipes.pretrain(load_config("configs/tiny.json"))            # -> done.export
    ft = recipes.finetune(load_config("configs/finetune/easyvqa.json"), init=done.export)
    scores = recipes.evaluate(ft.export.parent, "vqa", split="test")      # the run folder -> scores.metrics

Each recipe works on a copy of the config it is given; user mistakes raise ConfigError or
DataError (one line), a run that cannot go on raises TrainingError.
"""

from pixelbert.recipes.models import (
    FINETUNE_MODEL_KEYS,
    build_finetune_model,
    default_eval_split,
    export,
    find_run_config,
    load_model,
    resolve_init,
    vqa_answers,
)
from pixelbert.recipes.rundir import claim_output_dir, holds_run
from pixelbert.recipes.scoring import EvaluationResult, evaluate, official_vqa_files, score_predictions
from pixelbert.recipes.training import FinetuneResult, PretrainResult, finetune, pretrain, world_size

__all__ = [
    "pretrain",
    "finetune",
    "evaluate",
    "export",
    "vqa_answers",
    "score_predictions",
    "PretrainResult",
    "FinetuneResult",
    "EvaluationResult",
    "FINETUNE_MODEL_KEYS",
    "default_eval_split",
    "resolve_init",
    "find_run_config",
    "load_model",
    "build_finetune_model",
    "official_vqa_files",
    "claim_output_dir",
    "holds_run",
    "world_size",
]
