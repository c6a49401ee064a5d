"""Hyper-parameter sweep of a fine-tuning run with Ray Tune (ASHA early stopping).

    python launcher/sweep.py --config configs/sweeps/easyvqa.json              # local Ray, dashboard off
    python launcher/sweep.py --config configs/sweeps/easyvqa.json --resume     # continue an interrupted sweep
    python launcher/sweep.py --config configs/sweeps/easyvqa.json --address HOST:6379   # join a cluster

Each trial is ``launcher/finetune.py``'s run on the same engine, reporting its validation
metrics after every epoch; one GPU per trial on GPU machines, ``cpus_per_trial`` CPU slots
otherwise. Writes <storage_path>/<name>/: one folder per trial (engine checkpoints and
TensorBoard logs under run/), and best_config.json, a ready-to-use fine-tuning config.
Exit 2: bad sweep file or arguments (one line); 1: no trial finished.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from launcher import cli  # noqa: E402

__all__ = ["trial", "main"]


def trial(params: dict, *, base: dict, init: str | None, eval_split: str | None, experiment_dir: str) -> None:
    """One Ray Tune trial: fine-tune with the sampled ``params`` ({"section.key": value})."""
    from launcher.finetune import run
    from pixelbert.tune import epoch_reporter, resume_point, trial_config, trial_run_dir

    out = trial_run_dir(experiment_dir)
    config = trial_config(base, params, out)
    resume = resume_point()
    if resume is None and out.exists():  # Ray restarts this trial from scratch: so does the engine
        shutil.rmtree(out)
    run(config, init=None if init is None else Path(init), eval_split=eval_split, resume=resume,
        on_eval=epoch_reporter(out / "checkpoints"), checkpoint_each_eval=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True, help="sweep file (configs/sweeps/*.json)")
    p.add_argument("--address", default=None, help="join this running Ray cluster (default: start Ray locally)")
    p.add_argument("--resume", action="store_true", help="continue the sweep in <storage_path>/<name>")
    p.add_argument("--init", default=None, help="override the sweep file's pre-trained model folder")
    args = p.parse_args(argv)
    from launcher.finetune import default_eval_split, resolve_init
    from pixelbert.evaluation.runner import MAIN_METRIC
    from pixelbert.tasks import FINETUNE_TASKS, check_task
    from pixelbert.tune import base_config, best_config, load_sweep, run_sweep, unfinished_trials, write_best_config

    with cli.user_errors():
        sweep = load_sweep(args.config)
        if args.init is not None:
            sweep.init = str(Path(args.init).resolve())
        base = base_config(sweep)
        task = check_task(base["train"]["task"], FINETUNE_TASKS)
        init = str(resolve_init(sweep.init)) if sweep.init is not None else None
    metric = sweep.metric or MAIN_METRIC[task]
    eval_split = sweep.eval_split or default_eval_split(task)
    from ray import tune

    fn = tune.with_parameters(trial, base=base, init=init, eval_split=eval_split,
                              experiment_dir=str(sweep.experiment_dir))
    with cli.user_errors():
        grid = run_sweep(sweep, fn, base, metric, address=args.address, resume=args.resume)
    if unfinished_trials(sweep):  # stopped (Ctrl-C) before every trial ended
        print(f"sweep interrupted; continue it with: python launcher/sweep.py --config {args.config} --resume",
              file=sys.stderr)
        return 1
    try:
        raw, metrics, trial_dir = best_config(grid, base, metric, sweep.mode)
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    path = write_best_config(sweep, raw)
    params = {k: raw[k.split(".")[0]][k.split(".", 1)[1]] for k in sweep.search_space}
    print(f"best trial: {trial_dir}")
    print(f"  {metric} = {metrics[metric]:.4g} after {metrics.get('training_iteration', '?')} epochs")
    for k, v in params.items():
        print(f"  {k} = {v}")
    print(f"best config: {path}")
    print(f"  python launcher/finetune.py --task {task} --config {path}" + (f" --init {init}" if init else ""))
    print(f"TensorBoard of every trial: tensorboard --logdir {sweep.experiment_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
