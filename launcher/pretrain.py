"""Pre-train Pixel-BERT (MLM + ITM) with DeepSpeed; also the CNN stage (``train.task=visual_words``).

    deepspeed --num_gpus N launcher/pretrain.py --config configs/x152.json [--set k=v] [--resume auto]
    torchrun --nnodes 2 --node_rank R --master_addr HOST --nproc_per_node N launcher/pretrain.py --config ...
    python launcher/pretrain.py --config configs/tiny.json          # one process

Writes <train.output_dir>/{config.json, checkpoints/, tensorboard/, export/}. Exit status:
0 done (or stopped by SIGTERM/SIGINT after saving a checkpoint), 1 training failed, 2 bad
config / arguments / missing path (one line, before any heavy work).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from launcher import cli  # noqa: E402
from pixelbert.tasks import PRETRAIN_TASKS  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    args = cli.base_parser(__doc__.splitlines()[0]).parse_args(argv)
    config = cli.load(args)
    from pixelbert.engine.hardware import detect_hardware, init_distributed
    from pixelbert.engine.trainer import TrainingError, plan_batch

    from data_pipeline.loaders import check_shards
    from data_pipeline.records import DataError

    with cli.user_errors(DataError):  # everything a user can get wrong, checked before heavy work
        if config.train.task not in PRETRAIN_TASKS:
            cli.fail(f"{config.source}: 'train.task' is {config.train.task!r}; launcher/pretrain.py runs "
                     f"{' or '.join(PRETRAIN_TASKS)}")
        plan_batch(config, cli.world_size())
        if args.resume not in (None, "auto") and not Path(args.resume).exists():
            cli.fail(f"--resume {args.resume}: no such checkpoint")
        check_shards(config, ["train"] + (["val"] if config.train.eval_every else []))
        hw = detect_hardware(config)

    import torch.distributed as dist

    from data_pipeline.loaders import build_loader
    from pixelbert import build_model
    from pixelbert.engine.checkpoint import export_pretrained, seed_everything
    from pixelbert.engine.trainer import Trainer, task_metrics_eval
    from pixelbert.tasks import build_task

    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
    init_distributed(hw)
    rank, world = dist.get_rank(), dist.get_world_size()
    task = build_task(config)
    evaluation = {}
    with cli.user_errors(DataError):  # missing shards, too little data for the ranks: before the model
        loader = build_loader(config, "train", rank, world)
        if config.train.eval_every:  # held-out task metrics (MLM / ITM accuracy) on the val split
            evaluation = dict(eval_loader=build_loader(config, "val", rank, world), eval_fn=task_metrics_eval(task))
    seed_everything(config.train.seed)  # identical initial weights on every rank
    model = build_model(config)
    trainer = Trainer(model, task, loader, config, hardware=hw, **evaluation)
    try:
        with cli.user_errors():
            result = trainer.fit(resume=args.resume)
    except TrainingError as e:
        if rank == 0:
            print(f"error: {e}", file=sys.stderr, flush=True)
        return 1
    out = Path(config.train.output_dir)
    if result.stopped_by_signal:
        if rank == 0:
            print(f"stopped at step {result.step}; resume with --resume auto (checkpoint {result.checkpoint})")
        return 0
    if rank == 0:
        export = export_pretrained(out / "checkpoints", out / "export")
        shown = task.summary_metrics
        m, v = result.metrics, result.evaluation
        line = f"done: step {result.step}; train (last log window) " + \
            " ".join(f"{k} {m.get('train/' + k, float('nan')):.3f}" for k in shown)
        if v:
            line += "; val " + " ".join(f"{k} {v.get(k, float('nan')):.3f}" for k in shown)
        print(line)
        print(f"TensorBoard logs: {out / 'tensorboard'}  (tensorboard --logdir {out / 'tensorboard'})")
        print(f"Exported model:   {export}  (PixelBert.from_pretrained)")
    dist.barrier()
    return 0


if __name__ == "__main__":
    sys.exit(main())
