"""Pre-train Pixel-BERT (MLM + ITM) with DeepSpeed; also the CNN stage (``train.task=visual_words``).

    deepspeed --num_gpus N launcher/pretrain.py --config configs/x152.json [--set k=v] [--resume auto]
    torchrun --nnodes 2 --node_rank R --master_addr HOST --nproc_per_node N launcher/pretrain.py --config ...
    python launcher/pretrain.py --config configs/tiny.json          # one process

Writes <train.output_dir>/{config.json, checkpoints/, tensorboard/, export/}. Exit status:
0 done (or stopped by SIGTERM/SIGINT after saving a checkpoint), 1 training failed, 2 bad
config / arguments / missing path / a folder that holds another run (one line, before any heavy work).
"""

from __future__ import annotations

import sys
from pathlib import Path

from launcher import cli


def main(argv: list[str] | None = None) -> int:
    args = cli.base_parser(__doc__.splitlines()[0]).parse_args(argv)
    config = cli.load(args)
    from pixelbert import recipes

    with cli.user_errors():
        result = recipes.pretrain(config, resume=args.resume, overwrite=args.overwrite)
    if cli.rank() != 0:
        return 0
    out = Path(config.train.output_dir)
    if result.stopped_by_signal:
        print(f"stopped at step {result.step}; resume with --resume auto (checkpoint {result.checkpoint})")
        return 0
    shown, m, v = result.summary_metrics, result.metrics, result.evaluation
    line = f"done: step {result.step}; train (last log window) " + \
        " ".join(f"{k} {m.get('train/' + k, float('nan')):.3f}" for k in shown)
    if v:
        line += "; val " + " ".join(f"{k} {v.get(k, float('nan')):.3f}" for k in shown)
    print(line)
    print(f"TensorBoard logs: {out / 'tensorboard'}  (tensorboard --logdir {out / 'tensorboard'})")
    print(f"Exported model:   {result.export}  (PixelBert.from_pretrained)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
