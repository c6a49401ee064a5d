"""A whole sweep, as one call: validate the sweep file, run (or continue) it, write the best config.

Each Ray Tune trial is :func:`trial`: ``pixelbert.recipes.finetune`` with the sampled values,
reporting its validation metrics after every epoch. Trials import only ``pixelbert``, so Ray
workers need nothing on their path but the installed package.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["SweepOutcome", "trial", "sweep"]


@dataclass
class SweepOutcome:
    task: str
    metric: str
    init: str | None
    experiment_dir: Path
    interrupted: bool = False  # stopped (Ctrl-C) before every trial ended: nothing below is set
    best_config: Path | None = None
    best_trial: str | None = None
    best_metrics: dict = field(default_factory=dict)
    best_params: dict = field(default_factory=dict)


def trial(params: dict, *, base: dict, init: str | None, eval_split: str | None, experiment_dir: str) -> None:
    """One Ray Tune trial: fine-tune with the sampled ``params`` ({"section.key": value})."""
    from pixelbert.recipes import finetune
    from pixelbert.tune.report import epoch_reporter, resume_point
    from pixelbert.tune.sweep import trial_config, trial_run_dir

    out = trial_run_dir(experiment_dir)
    config = trial_config(base, params, out)
    resume = resume_point()
    if resume is None and out.exists():  # Ray restarts this trial from scratch: so does the engine
        shutil.rmtree(out)
    finetune(config, init=init, eval_split=eval_split, resume=resume,
             on_eval=epoch_reporter(out / "checkpoints"), checkpoint_each_eval=True)


def sweep(path: str | Path, *, init: str | None = None, address: str | None = None,
          resume: bool = False) -> SweepOutcome:
    """Run the sweep file ``path`` (``resume``: continue it); ``init`` overrides its pre-trained folder.

    Bad files (and splits the shards lack) raise ConfigError / DataError before Ray starts; no trial
    reporting the metric raises RuntimeError.
    """
    from data_pipeline.loaders import check_shards
    from pixelbert.config import config_from_dict
    from pixelbert.evaluation.runner import MAIN_METRIC
    from pixelbert.recipes import default_eval_split, resolve_init
    from pixelbert.tasks import FINETUNE_TASKS, check_task
    from pixelbert.tune.sweep import base_config, best_config, load_sweep, run_sweep, unfinished_trials, write_best_config

    spec = load_sweep(path)
    if init is not None:
        spec.init = str(Path(init).resolve())
    base = base_config(spec)
    task = check_task(base["train"]["task"], FINETUNE_TASKS)
    init_dir = str(resolve_init(spec.init)) if spec.init is not None else None
    metric = spec.metric or MAIN_METRIC[task]
    eval_split = spec.eval_split or default_eval_split(task)
    check_shards(config_from_dict(base, source=spec.source), ["train", eval_split])
    from ray import tune

    fn = tune.with_parameters(trial, base=base, init=init_dir, eval_split=eval_split,
                              experiment_dir=str(spec.experiment_dir))
    grid = run_sweep(spec, fn, base, metric, address=address, resume=resume)
    outcome = SweepOutcome(task=task, metric=metric, init=init_dir, experiment_dir=spec.experiment_dir)
    if unfinished_trials(spec):
        outcome.interrupted = True
        return outcome
    raw, outcome.best_metrics, outcome.best_trial = best_config(grid, base, metric, spec.mode)
    outcome.best_config = write_best_config(spec, raw)
    outcome.best_params = {k: raw[k.split(".")[0]][k.split(".", 1)[1]] for k in spec.search_space}
    return outcome
