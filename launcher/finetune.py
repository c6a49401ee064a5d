"""Fine-tune Pixel-BERT on VQA, NLVR2 or image-text retrieval, on the one training engine.

    python launcher/finetune.py --task vqa --config configs/finetune/vqa.json --init runs/r50_pretrain/export
    deepspeed --num_gpus 8 launcher/finetune.py --task retrieval --config configs/finetune/retrieval.json --init DIR

--init is a ``save_pretrained`` folder (``<pretrain output_dir>/export`` or launcher/export.py
output; a run folder holding ``export/`` works too). Its architecture is kept; the config's
model section only supplies the fine-tuning choices; heads the task needs and the folder lacks
start fresh (logged). Without --init the model is built from the config (the "no
pre-training" baseline). All pixels are used (no sampling). The split --eval-split is scored
after every epoch (train.eval_every unset) and at the end.

Writes <train.output_dir>/{config.json, checkpoints/, tensorboard/, eval.json, export/}; VQA
also export/answers.json. Exit: 0 done (or stopped by a signal after a checkpoint), 1 training
failed, 2 bad arguments / config / missing path (one line, before any heavy work).
"""

from __future__ import annotations

import sys
from pathlib import Path

from launcher import cli
from pixelbert.tasks import FINETUNE_TASKS, check_task


def main(argv: list[str] | None = None) -> int:
    p = cli.base_parser(__doc__.splitlines()[0])
    p.add_argument("--task", required=True, help=f"one of {', '.join(FINETUNE_TASKS)}")
    p.add_argument("--init", default=None, metavar="DIR", help="pre-trained save_pretrained folder (omit: no pre-training)")
    p.add_argument("--eval-split", default="default", help="split scored every epoch (default: val; nlvr2: dev)")
    p.add_argument("--no-eval", action="store_true", help="train only")
    p.add_argument("--stop-at-val", type=float, metavar="VALUE",
                   help="end (checkpointed and exported) at the first evaluation where the task's main metric >= VALUE")
    args = p.parse_args(argv)
    from pixelbert import recipes

    with cli.user_errors():  # cheap checks first: a typo must not wait for the config or DeepSpeed
        check_task(args.task, FINETUNE_TASKS)
        if args.init is not None:
            recipes.resolve_init(args.init)
    config = cli.load(args)
    from pixelbert.evaluation.runner import MAIN_METRIC

    with cli.user_errors():
        result = recipes.finetune(config, task=args.task, init=args.init, resume=args.resume,
                                  eval_split=None if args.no_eval else args.eval_split, overwrite=args.overwrite,
                                  stop_at=None if args.stop_at_val is None else (MAIN_METRIC[args.task], args.stop_at_val))
    if cli.rank() == 0:
        out = Path(config.train.output_dir)
        shown = " ".join(f"{k}={v:.4g}" for k, v in result.metrics.items())
        print(f"done: step {result.step}; {result.eval_split or 'no eval'}: {shown or '-'}")
        print(f"TensorBoard logs: {out / 'tensorboard'}")
        if result.export is not None:
            print(f"Fine-tuned model: {result.export}  (launcher/evaluate.py --task {args.task} --checkpoint {out})")
        else:
            print(f"stopped at step {result.step}; resume with --resume auto")
    return 0


if __name__ == "__main__":
    sys.exit(main())
