"""Hyper-parameter sweep of a fine-tuning run with Ray Tune (ASHA early stopping).

    python launcher/sweep.py --config configs/sweeps/easyvqa.json              # local Ray, dashboard off
    python launcher/sweep.py --config configs/sweeps/easyvqa.json --resume     # continue an interrupted sweep
    python launcher/sweep.py --config configs/sweeps/easyvqa.json --address HOST:6379   # join a cluster

Each trial is ``pixelbert.recipes.finetune`` on the same engine, reporting its validation
metrics after every epoch; one GPU per trial on GPU machines, ``cpus_per_trial`` CPU slots
otherwise. Writes <storage_path>/<name>/: one folder per trial (engine checkpoints and
TensorBoard logs under run/), and best_config.json, a ready-to-use fine-tuning config.
Exit 2: bad sweep file or arguments (one line); 1: no trial finished.
"""

from __future__ import annotations

import argparse
import sys

from launcher import cli


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True, help="sweep file (configs/sweeps/*.json)")
    p.add_argument("--address", default=None, help="join this running Ray cluster (default: start Ray locally)")
    p.add_argument("--resume", action="store_true", help="continue the sweep in <storage_path>/<name>")
    p.add_argument("--init", default=None, help="override the sweep file's pre-trained model folder")
    args = p.parse_args(argv)
    from pixelbert.tune.experiment import sweep

    try:
        with cli.user_errors():
            done = sweep(args.config, init=args.init, address=args.address, resume=args.resume)
    except RuntimeError as e:  # no trial reported the metric
        print(f"error: {e}", file=sys.stderr)
        return 1
    if done.interrupted:
        print(f"sweep interrupted; continue it with: python launcher/sweep.py --config {args.config} --resume",
              file=sys.stderr)
        return 1
    m = done.best_metrics
    print(f"best trial: {done.best_trial}")
    print(f"  {done.metric} = {m[done.metric]:.4g} after {m.get('training_iteration', '?')} epochs")
    for k, v in done.best_params.items():
        print(f"  {k} = {v}")
    print(f"best config: {done.best_config}")
    print(f"  python launcher/finetune.py --task {done.task} --config {done.best_config}"
          + (f" --init {done.init}" if done.init else ""))
    print(f"TensorBoard of every trial: tensorboard --logdir {done.experiment_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
