"""Fine-tune Pixel-BERT on VQA, NLVR2 or image-text retrieval, on the one training engine.

    python launcher/finetune.py --task vqa --config configs/finetune/vqa.json --init runs/r50_pretrain/export
    deepspeed --num_gpus 8 launcher/finetune.py --task retrieval --config configs/finetune/retrieval.json --init DIR

--init is a ``save_pretrained`` folder (``<pretrain output_dir>/export`` or launcher/export.py
output; a run folder holding ``export/`` works too). Its architecture is kept; the config's
model section only supplies the fine-tuning choices (FINETUNE_MODEL_KEYS); heads the task needs
and the folder lacks start fresh (logged). Without --init the model is built from the config
(the "no pre-training" baseline). All pixels are used (no sampling). The split --eval-split is
scored after every epoch (train.eval_every unset) and at the end.

Writes <train.output_dir>/{config.json, checkpoints/, tensorboard/, eval.json, export/}; VQA
also export/answers.json. Exit: 0 done (or stopped by a signal after a checkpoint), 1 training
failed, 2 bad arguments / config / missing path (one line, before any heavy work).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from launcher import cli  # noqa: E402
from pixelbert.config import Config, ConfigError  # noqa: E402
from pixelbert.tasks import FINETUNE_TASKS, TASK_HEADS, check_task  # noqa: E402

__all__ = ["FINETUNE_MODEL_KEYS", "FinetuneResult", "resolve_init", "default_eval_split", "build_finetune_model",
           "check_setup", "run", "main"]

# What a fine-tuning config may change in a pre-trained model; the rest is the architecture.
FINETUNE_MODEL_KEYS = ("num_answers", "visual_dropout", "attn_implementation", "frozen_bn")
_CONFIG_NAME = "pixelbert_config.json"


@dataclass
class FinetuneResult:
    step: int
    stopped_by_signal: bool
    export: Path | None
    metrics: dict[str, float] = field(default_factory=dict)  # last evaluation
    evals: list[dict] = field(default_factory=list)  # every evaluation: {"step", "epoch", "metrics"}


def default_eval_split(task: str) -> str:
    """NLVR2 calls its validation split ``dev``; the others ``val``."""
    return "dev" if task == "nlvr2" else "val"


def resolve_init(path: str | Path) -> Path:
    """The save_pretrained folder ``path`` names (itself, or its ``export/``); ConfigError if none."""
    path = Path(path)
    for candidate in (path, path / "export"):
        if (candidate / _CONFIG_NAME).is_file():
            return candidate.resolve()
    if not path.exists():
        raise ConfigError(f"--init {path}: no such folder")
    raise ConfigError(f"--init {path}: not a save_pretrained folder (no {_CONFIG_NAME}; export a checkpoint "
                      "with launcher/export.py)")


def build_finetune_model(config: Config, init: Path | None):
    """(PixelBert with the task's heads, one log line saying where the weights came from)."""
    from pixelbert.modeling.model import PixelBert, build_model

    heads = TASK_HEADS[config.train.task]
    if init is None:
        model = build_model(dataclasses.replace(config.model, heads=heads))
        return model, f"no --init: model built from {config.source} (heads {', '.join(heads)} freshly initialised)"
    saved = json.loads((init / _CONFIG_NAME).read_text())["model"]
    keep = {k: getattr(config.model, k) for k in FINETUNE_MODEL_KEYS}
    model = PixelBert.from_pretrained(init, heads=heads, **keep)
    fresh = [h for h in heads if h not in saved.get("heads", [])
             or (h == "vqa" and saved.get("num_answers") != config.model.num_answers)]
    dropped = [h for h in saved.get("heads", []) if h not in heads]
    line = f"init from {init}: loaded the pre-trained weights"
    line += f"; heads freshly initialised (not in it): {', '.join(fresh)}" if fresh else "; every head loaded"
    if dropped:
        line += f"; unused heads dropped: {', '.join(dropped)}"
    return model, line


def check_setup(config: Config, task: str, init: str | None, eval_split: str | None, resume: str | None) -> Path | None:
    """Everything a user can get wrong, checked before heavy work; sets ``config.train.task``."""
    from data_pipeline.loaders import check_shards
    from pixelbert.engine.trainer import plan_batch

    check_task(task, FINETUNE_TASKS)
    if config.train.task not in ("pretrain", task):
        raise ConfigError(f"{config.source}: 'train.task' is {config.train.task!r} but --task is {task!r}")
    config.train.task = task
    init_dir = resolve_init(init) if init is not None else None
    plan_batch(config, cli.world_size())
    if resume not in (None, "auto") and not Path(resume).exists():
        raise ConfigError(f"--resume {resume}: no such checkpoint")
    check_shards(config, ["train"] + ([eval_split] if eval_split else []))
    return init_dir


def run(config: Config, *, init: Path | None = None, eval_split: str | None = "val", resume: str | None = None,
        on_eval: Callable[[int, float, dict], None] | None = None,
        checkpoint_each_eval: bool = False) -> FinetuneResult:
    """Fine-tune on ``config.train.task``; ``on_eval(step, epoch, metrics)`` sees every evaluation
    (Ray Tune reports from there; epoch = epochs done, fractional between epochs).
    ``checkpoint_each_eval``: checkpoint at every evaluation, before ``on_eval`` (a restored trial
    resumes exactly at its last report)."""
    import torch.distributed as dist

    from data_pipeline.loaders import build_loader
    from pixelbert.engine.checkpoint import export_pretrained, seed_everything
    from pixelbert.engine.hardware import detect_hardware, init_distributed
    from pixelbert.engine.trainer import Trainer
    from pixelbert.evaluation.runner import EvalOptions, make_eval_fn
    from pixelbert.tasks import build_task

    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
    hw = detect_hardware(config)
    init_distributed(hw)
    rank, world = dist.get_rank(), dist.get_world_size()
    seed_everything(config.train.seed)  # the same fresh heads on every rank
    notes = []
    if config.train.freeze_cnn and not config.model.frozen_bn:
        # A frozen CNN must not drift through its BatchNorm running statistics either.
        config.model = dataclasses.replace(config.model, frozen_bn=True)
        notes.append("train.freeze_cnn: BatchNorm statistics frozen too (model.frozen_bn)")
    model, line = build_finetune_model(config, init)
    config.model = dataclasses.replace(model.config)  # the resolved architecture goes into config.json
    if rank == 0:
        print("\n".join([line, *notes]), flush=True)
    train_loader = build_loader(config, "train", rank, world)
    eval_loader = build_loader(config, eval_split, rank, world) if eval_split else None
    answers = train_loader.shards.manifest.get("answers")
    result = FinetuneResult(step=0, stopped_by_signal=False, export=None)
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

    eval_fn = make_eval_fn(config.train.task, EvalOptions(answers=answers), on_result=record) if eval_loader else None
    trainer = Trainer(model, build_task(config), train_loader, config, eval_loader=eval_loader, eval_fn=eval_fn,
                      hardware=hw)
    t = config.train
    if t.eval_every is None:
        t.eval_every = trainer.steps_per_epoch
    out = Path(t.output_dir)
    earlier = json.loads((out / "eval.json").read_text())["evals"] if resume and (out / "eval.json").is_file() else []
    fit = trainer.fit(resume=resume)
    result.step, result.stopped_by_signal = fit.step, fit.stopped_by_signal
    first_new = min((e["step"] for e in result.evals), default=fit.step + 1)
    result.evals = [e for e in earlier if e["step"] < first_new] + result.evals  # a resumed run keeps its history
    if rank == 0:
        (out / "eval.json").write_text(json.dumps({"split": eval_split, "evals": result.evals}, indent=1) + "\n")
        if not fit.stopped_by_signal:
            result.export = export_pretrained(out / "checkpoints", out / "export")
            if answers:
                (result.export / "answers.json").write_text(json.dumps(answers) + "\n")
    dist.barrier()
    return result


def main(argv: list[str] | None = None) -> int:
    p = cli.base_parser(__doc__.splitlines()[0])
    p.add_argument("--task", required=True, help=f"one of {', '.join(FINETUNE_TASKS)}")
    p.add_argument("--init", default=None, metavar="DIR",
                   help="pre-trained save_pretrained folder (omit: no pre-training)")
    p.add_argument("--eval-split", default=None, help="split scored every epoch (default: val; nlvr2: dev)")
    p.add_argument("--no-eval", action="store_true", help="train only")
    args = p.parse_args(argv)
    with cli.user_errors():  # cheap checks first: a typo must not wait for DeepSpeed to import
        check_task(args.task, FINETUNE_TASKS)
        if args.init is not None:
            resolve_init(args.init)
    config = cli.load(args)
    from data_pipeline.records import DataError
    from pixelbert.engine.trainer import TrainingError

    eval_split = None if args.no_eval else (args.eval_split or default_eval_split(args.task))
    with cli.user_errors(DataError):
        init = check_setup(config, args.task, args.init, eval_split, args.resume)
    try:
        with cli.user_errors(DataError):  # e.g. too little data for the ranks, found by the loader
            result = run(config, init=init, eval_split=eval_split, resume=args.resume)
    except TrainingError as e:
        if cli.rank() == 0:
            print(f"error: {e}", file=sys.stderr, flush=True)
        return 1
    if cli.rank() == 0:
        out = Path(config.train.output_dir)
        shown = " ".join(f"{k}={v:.4g}" for k, v in result.metrics.items())
        print(f"done: step {result.step}; {eval_split or 'no eval'}: {shown or '-'}")
        print(f"TensorBoard logs: {out / 'tensorboard'}")
        if result.export is not None:
            print(f"Fine-tuned model: {result.export}  (launcher/evaluate.py --task {args.task} --checkpoint {out})")
        else:
            print(f"stopped at step {result.step}; resume with --resume auto")
    return 0


if __name__ == "__main__":
    sys.exit(main())
