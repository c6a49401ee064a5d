"""Ray Tune sweeps over fine-tuning runs: the sweep file, its search space, the Tuner, the best config.

A sweep file (``configs/sweeps/*.json``)::

    {"name": "easyvqa_lr",                          experiment folder under storage_path
     "base_config": "configs/finetune/easyvqa.json", the fine-tuning config every trial starts from
     "task": "vqa", "init": "runs/tiny_pretrain/export", "eval_split": "val",
     "metric": "vqa_accuracy", "mode": "max",       default: the task's main metric, max
     "num_samples": 8,
     "set": ["train.log_every=50"],                 fixed overrides of every trial
     "search_space": {"train.lr_transformer": {"loguniform": [1e-5, 3e-4]},
                      "data.micro_batch_size": {"choice": [16, 32]}, ...},
     "asha": {"grace_period": 1, "reduction_factor": 2},
     "storage_path": "runs/sweeps", "cpus_per_trial": 1, "gpus_per_trial": 1,
     "seed": 0}                                      sampling seed (null: a fresh draw each sweep)

Each trial is one fine-tuning run reporting its validation metrics after every epoch; ASHA
(``time_attr`` = reports = epochs, ``max_t`` the most epochs the space allows) stops the weak
ones early. Paths are made absolute here, so trials do not depend on their working directory.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

from pixelbert.config import (
    PATH_KEYS,
    SECTIONS,
    Config,
    ConfigError,
    check_fields,
    config_from_dict,
    load_config,
    read_json_object,
)

__all__ = ["Sweep", "SAMPLERS", "load_sweep", "search_space", "trial_config", "base_config", "max_epochs",
           "trial_resources", "trial_run_dir", "run_sweep", "unfinished_trials", "best_config", "write_best_config"]

SAMPLERS = ("uniform", "loguniform", "choice", "randint", "grid")


@dataclass
class Sweep:
    name: str
    base_config: str
    search_space: dict
    task: str | None = None
    init: str | None = None
    eval_split: str | None = None
    metric: str | None = None
    mode: str = "max"
    num_samples: int = 4
    set: list = field(default_factory=list)
    asha: dict = field(default_factory=lambda: {"grace_period": 1, "reduction_factor": 2})
    storage_path: str = "runs/sweeps"
    cpus_per_trial: int = 1
    gpus_per_trial: int = 1
    seed: int | None = None
    source: str = "<sweep>"

    @property
    def experiment_dir(self) -> Path:
        return Path(self.storage_path) / self.name


def _check_param(name: str, spec: Any, source: str) -> None:
    section, _, key = name.partition(".")
    if section not in SECTIONS or key not in {f.name for f in dataclasses.fields(SECTIONS[section])}:
        raise ConfigError(f"{source}: search_space key {name!r} is not a config key (section.key)")
    if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in SAMPLERS:
        raise ConfigError(f"{source}: search_space {name!r} must be one of "
                          f"{{{', '.join(SAMPLERS)}: ...}}, got {spec!r}")
    kind, args = next(iter(spec.items()))
    if kind in ("choice", "grid"):
        ok = isinstance(args, list) and len(args) > 0
    else:
        numbers = isinstance(args, list) and len(args) == 2 and all(
            isinstance(a, (int, float)) and not isinstance(a, bool) for a in args)
        ok = numbers and args[0] < args[1] and (kind != "loguniform" or args[0] > 0)
        ok = ok and (kind != "randint" or all(isinstance(a, int) for a in args))
    if not ok:
        raise ConfigError(f"{source}: search_space {name!r}: bad {kind} arguments {args!r} "
                          "(choice/grid: non-empty list; uniform/loguniform/randint: [low, high], low < high)")


def load_sweep(path: str | Path) -> Sweep:
    """Read and validate a sweep file; every problem is one ConfigError line naming the file and key."""
    path = Path(path)
    raw = read_json_object(path, "sweep file")
    for key in ("name", "base_config", "search_space"):
        if key not in raw:
            raise ConfigError(f"{path}: missing key '{key}'")
    check_fields(Sweep, raw, str(path), exclude=("source",))
    sweep = Sweep(**raw, source=str(path))
    if not sweep.search_space:
        raise ConfigError(f"{path}: 'search_space' is empty")
    for name, spec in sweep.search_space.items():
        _check_param(name, spec, str(path))
    if sweep.mode not in ("min", "max"):
        raise ConfigError(f"{path}: 'mode' must be min or max")
    if sweep.num_samples < 1 or sweep.cpus_per_trial < 1 or sweep.gpus_per_trial < 0:
        raise ConfigError(f"{path}: 'num_samples' and 'cpus_per_trial' must be >= 1, 'gpus_per_trial' >= 0")
    unknown = set(sweep.asha) - {"grace_period", "reduction_factor", "brackets"}
    if unknown:
        raise ConfigError(f"{path}: unknown key 'asha.{sorted(unknown)[0]}' "
                          "(known: grace_period, reduction_factor, brackets)")
    # Relative paths in the file are relative to where the sweep is started, as for every config.
    sweep.base_config = str(Path(sweep.base_config).resolve())
    sweep.storage_path = str(Path(sweep.storage_path).resolve())
    if sweep.init is not None:
        sweep.init = str(Path(sweep.init).resolve())
    return sweep


def base_config(sweep: Sweep) -> dict:
    """The base config with the sweep's fixed ``set`` overrides, validated, paths made absolute, as a dict."""
    cfg = load_config(sweep.base_config, list(sweep.set))
    raw = cfg.to_dict()
    def absolute(value):
        return str(Path(value).resolve()) if isinstance(value, str) and not value.startswith("pkg:") else value

    for section, key in PATH_KEYS:
        value = raw[section].get(key)
        if isinstance(value, list):  # data.shards as a mixture: [{"path", "weight", "name"}, ...]
            raw[section][key] = [{**v, "path": absolute(v["path"])} if isinstance(v, dict) else absolute(v)
                                 for v in value]
        else:
            raw[section][key] = absolute(value)
    if sweep.task is not None:
        raw["train"]["task"] = sweep.task
    # Every sampled value must fit its config field: check the first value of each domain now.
    first = {k: (v[0] if kind in ("choice", "grid") else (int(v[0]) if kind == "randint" else float(v[0])))
             for k, spec in sweep.search_space.items() for kind, v in spec.items()}
    trial_config(raw, first, "/tmp/pixelbert-sweep-check", source=sweep.source)
    return raw


def search_space(sweep: Sweep) -> dict:
    """{"section.key": ray.tune domain} for Tuner(param_space=...)."""
    from ray import tune

    make: dict[str, Callable] = {
        "uniform": lambda a: tune.uniform(*a), "loguniform": lambda a: tune.loguniform(*a),
        "randint": lambda a: tune.randint(a[0], a[1] + 1),  # inclusive upper bound, as written
        "choice": tune.choice, "grid": tune.grid_search,
    }
    return {name: make[kind](args) for name, spec in sweep.search_space.items() for kind, args in spec.items()}


def max_epochs(sweep: Sweep, base: dict) -> int:
    """The most epochs a trial can run (ASHA's max_t)."""
    spec = sweep.search_space.get("train.epochs")
    if spec is None:
        return int(base["train"]["epochs"])
    kind, args = next(iter(spec.items()))
    return int(max(args))


def trial_config(base: dict, params: dict, output_dir: str | Path, source: str = "<sweep trial>") -> Config:
    """The base config dict with one trial's sampled ``{"section.key": value}`` applied, validated."""
    raw = copy.deepcopy(base)
    for name, value in params.items():
        section, key = name.split(".", 1)
        raw[section][key] = value
    raw["train"]["output_dir"] = str(output_dir)
    return config_from_dict(raw, source=f"{source} {params}")


def _trial_dirname(trial) -> str:
    return f"trial_{trial.trial_id}"


def trial_run_dir(experiment_dir: str | Path) -> Path:
    """Where the running trial's engine writes (checkpoints, TensorBoard): ``<experiment>/<trial>/run``.

    Not ``tune.get_context().get_trial_dir()``: that is a staging folder under the Ray session,
    copied to storage at every report and gone in a new session, so a restored trial would
    find no engine checkpoint there. The experiment folder must be shared by all nodes (as
    Ray requires of ``storage_path`` on a cluster).
    """
    from ray import tune

    return Path(experiment_dir) / _trial_dirname(SimpleNamespace(trial_id=tune.get_context().get_trial_id())) / "run"


def trial_resources(sweep: Sweep, cluster_gpus: float) -> dict:
    """One GPU per trial where the cluster has GPUs, else CPU slots only."""
    if cluster_gpus > 0 and sweep.gpus_per_trial > 0:
        return {"cpu": sweep.cpus_per_trial, "gpu": sweep.gpus_per_trial}
    return {"cpu": sweep.cpus_per_trial}


def run_sweep(sweep: Sweep, trainable: Callable, base: dict, metric: str, *, address: str | None = None,
              resume: bool = False):
    """Run (or, with ``resume``, continue) the sweep; returns Ray's ResultGrid.

    Ray starts locally (dashboard off) unless ``address`` names a running cluster; an already
    initialised Ray (a notebook, a test) is used as it is.
    """
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import BasicVariantGenerator

    path = str(sweep.experiment_dir)
    if resume and not tune.Tuner.can_restore(path):
        raise ConfigError(f"{path}: no sweep to resume there")
    if not resume and sweep.experiment_dir.exists():
        raise ConfigError(f"{path} exists: pass --resume to continue that sweep, or change 'name'")
    if not ray.is_initialized():
        # Trials import only the installed pixelbert package; relative paths were made absolute.
        env = {"env_vars": {"RAY_CHDIR_TO_TRIAL_DIR": "0"}}
        if address:
            ray.init(address=address, runtime_env=env)
        else:
            ray.init(include_dashboard=False, runtime_env=env)
    fn = tune.with_resources(trainable, trial_resources(sweep, ray.cluster_resources().get("GPU", 0)))
    if resume:
        return tune.Tuner.restore(path, trainable=fn, resume_unfinished=True, resume_errored=True).fit()
    # stop_last_trials=False: a trial that survives every rung ends by itself, after its export.
    scheduler = ASHAScheduler(time_attr="training_iteration", max_t=max_epochs(sweep, base), stop_last_trials=False,
                              **{"grace_period": 1, "reduction_factor": 2, **sweep.asha})
    tuner = tune.Tuner(
        fn,
        param_space=search_space(sweep),
        tune_config=tune.TuneConfig(metric=metric, mode=sweep.mode, scheduler=scheduler,
                                    num_samples=sweep.num_samples,
                                    search_alg=BasicVariantGenerator(random_state=sweep.seed),
                                    trial_dirname_creator=_trial_dirname),
        run_config=tune.RunConfig(name=sweep.name, storage_path=sweep.storage_path,
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=1), verbose=1),
    )
    return tuner.fit()


def unfinished_trials(sweep: Sweep) -> int:
    """Trials the saved experiment state still lists as to run (the sweep was interrupted)."""
    from ray.tune import ExperimentAnalysis

    saved = ExperimentAnalysis(str(sweep.experiment_dir))
    return sum(t.status not in ("TERMINATED", "ERROR") for t in saved.trials)


def best_config(grid, base: dict, metric: str, mode: str) -> tuple[dict, dict, str]:
    """(config dict of the best trial, its last metrics, its folder) by the metric of its last report."""
    try:
        best = grid.get_best_result(metric=metric, mode=mode, scope="last")
    except RuntimeError:  # Ray's way of saying no trial reported the metric
        best = None
    if best is None or best.metrics is None or metric not in best.metrics:
        errors = [str(r.error).splitlines()[0] for r in grid if r.error is not None]
        raise RuntimeError(f"no trial reported {metric!r}" + (f"; first error: {errors[0]}" if errors else ""))
    params = {k: v for k, v in best.config.items()}
    raw = trial_config(base, params, "-").to_dict()
    return raw, dict(best.metrics), str(best.path)


def write_best_config(sweep: Sweep, raw: dict, path: str | Path | None = None) -> Path:
    """Write the best trial's config as a ready-to-use fine-tuning config file."""
    raw = copy.deepcopy(raw)
    raw["train"]["output_dir"] = f"runs/{sweep.name}_best"
    path = Path(path) if path is not None else sweep.experiment_dir / "best_config.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(raw, indent=2) + "\n")
    return path
