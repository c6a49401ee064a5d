"""Pre-training and fine-tuning runs: the sequence every run follows, written once.

    cheap checks -> hardware -> process group -> seed -> model -> loaders -> Trainer.fit
    -> rank-0 export -> barrier

Both recipes take a :class:`~pixelbert.config.Config` and never change it (they work on a
copy). User mistakes raise ConfigError / DataError (one line) before any heavy work where they
can be found cheaply; a run that cannot go on raises TrainingError.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from pixelbert.config import SUBSET_NAME, Config, ConfigError
from pixelbert.recipes.models import build_finetune_model, default_eval_split, resolve_init
from pixelbert.recipes.rundir import claim_output_dir
from pixelbert.tasks import FINETUNE_TASKS, PRETRAIN_TASKS, check_task

__all__ = ["PretrainResult", "FinetuneResult", "pretrain", "finetune", "world_size"]


@dataclass
class PretrainResult:
    step: int
    stopped_by_signal: bool
    checkpoint: Path | None  # the last checkpoint written (the stop's, when stopped by a signal)
    export: Path | None  # None when stopped by a signal
    metrics: dict[str, float] = field(default_factory=dict)  # last training log window ("train/...")
    evaluation: dict[str, float] = field(default_factory=dict)  # last held-out evaluation
    summary_metrics: tuple[str, ...] = ()  # the task's headline metric names


@dataclass
class FinetuneResult:
    step: int
    stopped_by_signal: bool
    export: Path | None
    eval_split: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)  # last evaluation
    evals: list[dict] = field(default_factory=list)  # every evaluation: {"step", "epoch", "train_seconds", "metrics"}
    stopped_at_target: bool = False  # ended early: ``stop_at`` was reached


def world_size() -> int:
    """Ranks of this run, as the launcher (deepspeed, torchrun) announced them; 1 for plain python."""
    import os

    return int(os.environ.get("WORLD_SIZE", "1"))


def _check(config: Config, splits: list[str], resume: str | None, overwrite: bool) -> None:
    """Everything a user can get wrong that is cheap to find: before the process group and the model."""
    from data_pipeline.loaders import check_shards
    from pixelbert.engine.deepspeed_check import check_deepspeed_config
    from pixelbert.engine.trainer import plan_batch

    claim_output_dir(config.train.output_dir, resume=resume, overwrite=overwrite, check_only=True)
    plan = plan_batch(config, world_size())
    if resume not in (None, "auto") and not Path(resume).exists():
        raise ConfigError(f"--resume {resume}: no such checkpoint")
    check_shards(config, splits)
    check_deepspeed_config(config, plan.micro_batch, plan.accumulation)  # imports DeepSpeed: last


def _start(config: Config):
    """(hardware, rank, world): the process group joined, DeepSpeed's chatter quietened."""
    import torch.distributed as dist

    from pixelbert.engine.hardware import detect_hardware, init_distributed

    hw = detect_hardware(config)
    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
    init_distributed(hw)
    return hw, dist.get_rank(), dist.get_world_size()


def _fit_and_export(trainer, resume: str | None, overwrite: bool, answers: list[str] | None = None,
                    finish: Callable | None = None):
    """Fit under the output-folder lock; then on rank 0 ``finish(fit)`` and, for a finished run, the
    export (with the preprocessing and a VQA model's ``answers`` beside the weights, for prediction);
    then every rank meets at a barrier."""
    import torch.distributed as dist

    from pixelbert.engine.checkpoint import export_pretrained

    out = trainer.output_dir
    with claim_output_dir(out, resume=resume, overwrite=overwrite, rank=trainer.rank):
        fit = trainer.fit(resume=resume)
        export = None
        if trainer.rank == 0:
            if finish is not None:
                finish(fit)
            if not fit.stopped_by_signal:
                export = export_pretrained(out / "checkpoints", out / "export", answers=answers)
        dist.barrier()
    return fit, export


def pretrain(config: Config, *, resume: str | None = None, overwrite: bool = False) -> PretrainResult:
    """Pre-train (``train.task`` pretrain: MLM + ITM) or run the CNN stage (``visual_words``).

    ``resume``: None (a new run), "auto" (the latest complete checkpoint under train.output_dir,
    or a fresh start) or a checkpoint path. ``overwrite``: a new run may replace an earlier run
    in train.output_dir (otherwise refused).
    """
    config = copy.deepcopy(config)
    if config.train.task not in PRETRAIN_TASKS:
        raise ConfigError(f"{config.source}: 'train.task' is {config.train.task!r}; pre-training runs "
                          f"{' or '.join(PRETRAIN_TASKS)} (fine-tuning tasks: pixelbert.recipes.finetune)")
    _check(config, ["train"] + (["val"] if config.train.eval_every else []), resume, overwrite)
    from data_pipeline.loaders import build_loader  # the heavy imports, once the cheap checks passed
    from pixelbert import build_model
    from pixelbert.engine.checkpoint import seed_everything
    from pixelbert.engine.trainer import Trainer, task_metrics_eval
    from pixelbert.tasks import build_task

    hw, rank, world = _start(config)
    task = build_task(config)
    loader = build_loader(config, "train", rank, world)
    evaluation = {}
    if config.train.eval_every:  # held-out task metrics (MLM / ITM accuracy) on the val split
        evaluation = dict(eval_loader=build_loader(config, "val", rank, world), eval_fn=task_metrics_eval(task))
    seed_everything(config.train.seed)  # identical initial weights on every rank
    trainer = Trainer(build_model(config), task, loader, config, hardware=hw, **evaluation)
    fit, export = _fit_and_export(trainer, resume, overwrite)
    return PretrainResult(step=fit.step, stopped_by_signal=fit.stopped_by_signal, checkpoint=fit.checkpoint,
                          export=export, metrics=fit.metrics, evaluation=fit.evaluation,
                          summary_metrics=tuple(task.summary_metrics))


def finetune(config: Config, *, task: str | None = None, init: str | Path | None = None,
             eval_split: str | None = "default", resume: str | None = None, overwrite: bool = False,
             on_eval: Callable[[int, float, dict], None] | None = None,
             checkpoint_each_eval: bool = False, stop_at: tuple[str, float] | None = None) -> FinetuneResult:
    """Fine-tune on VQA, NLVR2 or retrieval on the one training engine.

    ``task``: the fine-tuning task (default ``config.train.task``); a config written for another
    task is refused. ``init``: a ``save_pretrained`` folder or a run folder holding ``export/``
    (None: no pre-training, the model is built from the config). ``eval_split``: scored after
    every epoch (train.eval_every unset) and at the end; "default": the task's validation split,
    None: no evaluation. ``on_eval(step, epoch, metrics)`` sees every evaluation (Ray Tune
    reports from there; epoch = epochs done, fractional between epochs);
    ``checkpoint_each_eval`` checkpoints before each ``on_eval`` (a restored trial resumes
    exactly at its last report). ``stop_at`` (metric, value): the run ends, checkpointed and
    exported like a finished one, at the first evaluation where the metric reaches the value
    (``stopped_at_target``). Writes eval.json beside the checkpoints; the export carries the
    preprocessing (preprocessor_config.json) and, for VQA, the answer list (answers.json).
    """
    from data_pipeline.loaders import build_loader
    from pixelbert.engine.checkpoint import seed_everything
    from pixelbert.engine.trainer import Trainer
    from pixelbert.evaluation.runner import EvalOptions, make_eval_fn
    from pixelbert.tasks import build_task

    config = copy.deepcopy(config)
    task = check_task(task or config.train.task, FINETUNE_TASKS)
    if config.train.task not in ("pretrain", task):
        raise ConfigError(f"{config.source}: 'train.task' is {config.train.task!r} but the task is {task!r}")
    config.train.task = task
    eval_split = default_eval_split(task) if eval_split == "default" else eval_split
    init_dir = resolve_init(init) if init is not None else None
    _check(config, ["train"] + ([eval_split] if eval_split else []), resume, overwrite)
    hw, rank, world = _start(config)
    seed_everything(config.train.seed)  # the same fresh heads on every rank
    model, line = build_finetune_model(config, init_dir)
    config.model = dataclasses.replace(model.config)  # the resolved architecture goes into config.json
    if rank == 0:
        print(line, flush=True)
    train_loader = build_loader(config, "train", rank, world)
    eval_loader = build_loader(config, eval_split, rank, world) if eval_split else None
    answers = train_loader.shards.manifest.get("answers")
    result = FinetuneResult(step=0, stopped_by_signal=False, export=None, eval_split=eval_split)
    trainer = None

    def record(metrics: dict) -> None:
        step = trainer.state.step
        entry = {"step": step, "epoch": round(step / trainer.steps_per_epoch, 3),
                 "train_seconds": round(trainer.state.train_seconds, 1), "metrics": metrics}
        result.evals.append(entry)
        result.metrics = metrics
        if checkpoint_each_eval:  # before reporting: whoever acts on the report can resume from here
            trainer.save()
        if on_eval is not None:
            on_eval(entry["step"], entry["epoch"], metrics)
        if stop_at is not None and metrics.get(stop_at[0], float("-inf")) >= stop_at[1]:
            trainer.finish_now = result.stopped_at_target = True  # every rank sees the same reduced metrics

    eval_fn = make_eval_fn(task, EvalOptions(answers=answers), on_result=record) if eval_loader else None
    trainer = Trainer(model, build_task(config), train_loader, config, eval_loader=eval_loader, eval_fn=eval_fn,
                      hardware=hw)
    if config.train.eval_every is None:  # the trainer reads this copy of the config
        config.train.eval_every = trainer.steps_per_epoch
    out = trainer.output_dir
    earlier = json.loads((out / "eval.json").read_text())["evals"] if resume and (out / "eval.json").is_file() else []

    def finish(fit) -> None:  # a resumed run keeps its evaluation history
        first_new = min((e["step"] for e in result.evals), default=fit.step + 1)
        result.evals = [e for e in earlier if e["step"] < first_new] + result.evals
        (out / "eval.json").write_text(json.dumps({"split": eval_split, "evals": result.evals}, indent=1) + "\n")
        if config.data.subset_fraction < 1.0:  # which labels a few-label run saw, for comparing runs
            (out / SUBSET_NAME).write_text(json.dumps({"subset_fraction": config.data.subset_fraction,
                                                       "seed": config.train.seed,
                                                       "units": train_loader.unit_keys()}) + "\n")

    fit, result.export = _fit_and_export(trainer, resume, overwrite, answers, finish=finish)
    result.step, result.stopped_by_signal = fit.step, fit.stopped_by_signal
    return result
