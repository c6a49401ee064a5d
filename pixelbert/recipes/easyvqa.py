"""The easy-VQA result and its ablation: pre-train on the caption corpus, fine-tune, score test.

    python launcher/easyvqa.py                       # the result: writes runs/easyvqa/result/
    python launcher/easyvqa.py --ablation            # the paper's ablation, small: runs/easyvqa/ablation/

Each run is the documented launchers in sequence, as separate processes (what a user would
type): ``launcher/pretrain.py`` on ``configs/tiny_cnn.json`` (the CNN stage, task
``visual_words``: the trunk learns to name the caption words from the image alone, standing in
for the ImageNet weights the paper starts from; every arm gets it), then MLM + ITM pre-training
on ``configs/pretrain/easyvqa.json`` with that trunk as ``model.backbone_weights`` (skipped by
the ``no_pretrain`` arm; the trunk stays fixed there, ``train.freeze_cnn``, and the transformer
learns at the paper's 1e-4: both measured on val, docs/easyvqa-notes.md; with ``--cnn-steps 0``
add ``--pretrain-set train.freeze_cnn=false``), BatchNorm frozen from then on
(``model.frozen_bn``), then
``launcher/finetune.py --task vqa`` on ``configs/finetune/easyvqa.json`` scoring the ``val``
split (the last 10% of the package's train images) after every epoch, then
``launcher/evaluate.py --split test`` once, at the end: the test split chooses nothing.

Arms (``--arms``; the ablation runs all of them with the same budgets, each on every label
fraction ``--subset`` (shares of the training questions) with every fine-tuning seed ``--seeds``;
the subset is drawn with the fine-tuning seed, so for one seed it is the same in every arm and
nested across fractions):
  no_pretrain       fine-tune from BERT (MiniLM) + the CNN stage's trunk
  mlm               pre-train with MLM only (no ITM loss, no negatives)
  mlm_itm           MLM + ITM, random pixel sampling on (the paper's recipe)
  mlm_itm_nosample  MLM + ITM, every pixel a token in pre-training

Writes per run ``<out>/<arm>/frac<F>[_seed<S>]/summary.json`` (wall times of each stage, the val
curve against time, the number of training questions, the test accuracy; with ``--stop-at-val``
the first minute val reached it; the fine-tuning folder's train_subset.json names the questions),
``<out>/table.md`` for several runs (mean +- standard deviation over seeds when there are seeds),
``<out>/curve.png`` (val accuracy against the run's wall-clock minutes; the ablation scores no val:
its table compares test end points) and ``<out>/study.json``
(the study's wall time).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from pixelbert.config import SUBSET_NAME, WEIGHTS_NAME, ConfigError
from pixelbert.engine.hardware import usable_cores

__all__ = ["ARMS", "StudyOptions", "StudyError", "cell_name", "child_env", "finetune_sets", "run_cnn_stage", "pretrain_arm",
           "run_arm", "run_study", "used_outputs", "write_table", "write_seed_table", "plot"]


class StudyError(RuntimeError):
    """A stage of the study failed; the message names its log."""


ARMS = {
    "no_pretrain": None,
    "mlm": ["train.itm_weight=0", "data.itm_paired_negatives=false", "data.itm_negative_probability=0"],
    "mlm_itm": [],
    "mlm_itm_nosample": ["model.pixel_sampling=false"],
}




@dataclass
class StudyOptions:
    """What to run; ``for_study`` fills in the defaults of the result or of the ablation."""

    launchers: Path  # the folder of launcher/pretrain.py, finetune.py, evaluate.py (run as a user would)
    cwd: Path  # where they run (the repository root: config paths are relative to it)
    out: Path
    arms: list = field(default_factory=lambda: ["mlm_itm"])
    fractions: list = field(default_factory=lambda: [1.0])  # shares of the training questions, one cell each
    seeds: list | None = None  # fine-tuning seeds (train.seed), one run each; None: the config's own
    cnn_steps: int = 400
    pretrain_steps: int = 500
    finetune_epochs: int | None = None
    finetune_steps: int | None = None  # train.max_steps of every fine-tuning run (equal budgets)
    stop_at_val: float | None = None  # end a fine-tuning run at its first val accuracy >= this (%)
    cnn_config: str = "configs/tiny_cnn.json"
    pretrain_config: str = "configs/pretrain/easyvqa.json"
    finetune_config: str = "configs/finetune/easyvqa.json"
    cnn_set: list = field(default_factory=list)
    pretrain_set: list = field(default_factory=list)
    finetune_set: list = field(default_factory=list)
    jobs: int = 1  # runs at once after the CNN stage, the cores shared evenly between them
    finetune_val: bool = True  # score val after every fine-tuning epoch (the val curve)

    @classmethod
    def for_study(cls, ablation: bool, **given) -> "StudyOptions":
        """The result (mlm_itm on every question) or the ablation (every arm, 3 seeds, few labels, equal
        budgets); ``given`` values that are None keep the default."""
        given = {k: v for k, v in given.items() if v is not None}
        defaults = dict(arms=list(ARMS), out=Path("runs/easyvqa/ablation"), fractions=[0.02, 0.1], jobs=2,
                        seeds=[0, 1, 2], pretrain_steps=500, finetune_steps=150) if ablation \
            else dict(out=Path("runs/easyvqa/result"))
        options = cls(**{**defaults, **given})
        # The ablation's table compares test end points: no val scoring (unless a run stops on val).
        options.finetune_val = not ablation or options.stop_at_val is not None
        if options.jobs < 1:
            raise ConfigError(f"--jobs must be at least 1, got {options.jobs}")
        if not all(0.0 < f <= 1.0 for f in options.fractions):
            raise ConfigError(f"subset fractions must be in (0, 1], got {options.fractions}")
        options.out = Path(options.out).resolve()
        return options

    def threads(self) -> int | None:
        """Torch threads of each run when several run at once (None: one run, it takes every core)."""
        return None if self.jobs == 1 else max(1, usable_cores() // self.jobs)

    def cells(self) -> list[tuple[float, int | None]]:
        """(fraction, seed) of every fine-tuning run of an arm, in run order."""
        return [(f, s) for f in self.fractions for s in (self.seeds or [None])]


def cell_name(fraction: float, seed: int | None) -> str:
    return f"frac{fraction:g}" + ("" if seed is None else f"_seed{seed}")


def finetune_sets(options: StudyOptions, fraction: float, seed: int | None) -> list[str]:
    """The overrides a fine-tuning run gets for its cell: the same in every arm, so the arms see
    the same questions (the subset is drawn with train.seed: nested across fractions)."""
    return [f"data.subset_fraction={fraction}", *([f"train.seed={seed}"] if seed is not None else []),
            *([f"train.epochs={options.finetune_epochs}"] if options.finetune_epochs else []),
            *([f"train.max_steps={options.finetune_steps}"] if options.finetune_steps else [])]


# A process group's variables: a caller that joined one (or set MASTER_PORT) would hand every run
# the same rendezvous port, and two runs at once would collide on it.
_PROCESS_GROUP_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def child_env(threads: int | None) -> dict[str, str]:
    """The environment of one run: a single-process job that finds its own free port; ``threads``:
    its torch threads (None: its own choice)."""
    env = {k: v for k, v in os.environ.items() if k not in _PROCESS_GROUP_VARS}
    return env if threads is None else {**env, "OMP_NUM_THREADS": str(threads)}


def _run(cmd: list[str], log: Path, cwd: Path, threads: int | None = None) -> float:
    """Run one launcher with its output in ``log`` (``threads``: see ``child_env``); its wall
    seconds. Fails loudly with the log's tail."""
    started = time.monotonic()
    with log.open("w") as f:
        code = subprocess.run(cmd, cwd=cwd, env=child_env(threads), stdout=f, stderr=subprocess.STDOUT).returncode
    if code != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-5:])
        raise StudyError(f"{' '.join(cmd[1:3])} exited {code}; see {log}\n{tail}")
    return time.monotonic() - started


def _sets(values: list[str]) -> list[str]:
    return [a for v in values for a in ("--set", v)]


def run_cnn_stage(out: Path, args: StudyOptions) -> tuple[Path | None, float]:
    """The CNN stage, once for all arms (the same trunk for each): (its weights, wall seconds).
    No stage (``--cnn-steps 0``): (None, 0), the arms start from a random trunk."""
    if not args.cnn_steps:
        return None, 0.0
    out.mkdir(parents=True, exist_ok=True)
    sets = [f"train.output_dir={json.dumps(str(out))}", f"train.max_steps={args.cnn_steps}",
            f"train.eval_every={args.cnn_steps}", f"train.checkpoint_every={args.cnn_steps}", *args.cnn_set]
    seconds = _run([sys.executable, str(args.launchers / "pretrain.py"), "--config", args.cnn_config, *_sets(sets)],
                   out.parent / "cnn.log", args.cwd)
    return out / "export" / WEIGHTS_NAME, round(seconds, 1)


def pretrain_arm(arm: str, out: Path, args: StudyOptions, trunk: Path | None) -> tuple[Path | None, float]:
    """The arm's pre-training, once for all its cells: (its export or None for no_pretrain, wall seconds)."""
    if ARMS[arm] is None:
        return None, 0.0
    out.mkdir(parents=True, exist_ok=True)
    pre = out / "pretrain"
    # The CNN stage's trunk takes the place of ImageNet weights (the config keeps it fixed).
    weights = [f"model.backbone_weights={json.dumps(str(trunk))}"] if trunk else []
    sets = [f"train.output_dir={json.dumps(str(pre))}", f"train.max_steps={args.pretrain_steps}",
            f"train.eval_every={args.pretrain_steps}", *weights, *ARMS[arm], *args.pretrain_set]
    seconds = _run([sys.executable, str(args.launchers / "pretrain.py"), "--config", args.pretrain_config,
                    *_sets(sets)], out / "pretrain.log", args.cwd, args.threads())
    return pre / "export", round(seconds, 1)


def run_arm(arm: str, out: Path, args: StudyOptions, trunk: Path | None, cnn_s: float,
            init: Path | None = None, pre_s: float = 0.0, fraction: float | None = None,
            seed: int | None = None) -> dict:
    """Fine-tune one cell of an arm (from ``init``, the arm's pre-trained export), score test once;
    returns and writes ``<out>/summary.json``. ``trunk``/``cnn_s``: the CNN stage's weights and wall
    time, ``pre_s`` the arm's pre-training wall time (both counted in the total)."""
    out.mkdir(parents=True, exist_ok=True)
    fraction = args.fractions[0] if fraction is None else fraction
    frozen = ["model.frozen_bn=true"] if trunk else []
    # With an init the trunk comes from the pre-trained model; frozen_bn is a fine-tuning choice.
    weights = [] if init or not trunk else [f"model.backbone_weights={json.dumps(str(trunk))}"]
    py = sys.executable
    summary: dict = {"arm": arm, "subset_fraction": fraction, "seed": seed, "cnn_steps": args.cnn_steps,
                     "pretrain_steps": args.pretrain_steps if init else 0, "finetune_epochs": args.finetune_epochs,
                     "finetune_steps": args.finetune_steps, "cnn_wall_s": cnn_s, "pretrain_wall_s": pre_s}
    ft = out / "finetune"
    sets = [*weights, *frozen, f"train.output_dir={json.dumps(str(ft))}", *finetune_sets(args, fraction, seed),
            *args.finetune_set]
    stop = ["--stop-at-val", str(args.stop_at_val)] if args.stop_at_val is not None else []
    stop += [] if args.finetune_val else ["--no-eval"]
    summary["finetune_wall_s"] = round(_run([py, str(args.launchers / "finetune.py"), "--task", "vqa",
                                             "--config", args.finetune_config,
                                             *(["--init", str(init)] if init else []), *stop, *_sets(sets)],
                                            out / "finetune.log", args.cwd, args.threads()), 1)
    summary["total_wall_s"] = round(summary["cnn_wall_s"] + summary["pretrain_wall_s"] + summary["finetune_wall_s"], 1)
    _run([py, str(args.launchers / "evaluate.py"), "--task", "vqa", "--checkpoint", str(ft), "--split", "test"],
         out / "evaluate.log", args.cwd, args.threads())
    test = json.loads((ft / "eval" / "test" / "metrics.json").read_text())["metrics"]
    evals = json.loads((ft / "eval.json").read_text())["evals"] if args.finetune_val else []
    before = summary["cnn_wall_s"] + summary["pretrain_wall_s"]
    summary["val_curve"] = [{"epoch": e["epoch"], "minutes": round((before + e["train_seconds"]) / 60, 2),
                             "val_accuracy": e["metrics"]["vqa_accuracy"]} for e in evals]
    if args.stop_at_val is not None:  # the first minute val reached the bar, and the test of that checkpoint
        reached = [p for p in summary["val_curve"] if p["val_accuracy"] >= args.stop_at_val]
        summary["stop_at_val"] = args.stop_at_val
        summary["minutes_to_val"] = reached[0]["minutes"] if reached else None
    subset = ft / SUBSET_NAME  # a few-label run names its training questions
    summary["train_questions"] = len(json.loads(subset.read_text())["units"]) if subset.is_file() else None
    summary["test_accuracy"] = test["vqa_accuracy"]
    summary["test_questions"] = int(test["num_questions"])
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(f"{arm} {cell_name(fraction, seed)}: test accuracy {summary['test_accuracy']:.2f}% after "
          f"{summary['total_wall_s'] / 60:.1f} min (CNN stage {summary['cnn_wall_s'] / 60:.1f}, pre-training "
          f"{summary['pretrain_wall_s'] / 60:.1f}, fine-tuning {summary['finetune_wall_s'] / 60:.1f})", flush=True)
    return summary


def write_table(summaries: list[dict], path: Path) -> None:
    lines = ["| arm | CNN stage (min) | pre-training (min) | fine-tuning (min) | best val acc (%) | final val acc (%) "
             "| test acc (%) |", "|---|---|---|---|---|---|---|"]
    for s in summaries:
        vals = [p["val_accuracy"] for p in s["val_curve"]]
        lines.append(f"| {s['arm']} | {s.get('cnn_wall_s', 0.0) / 60:.1f} | {s['pretrain_wall_s'] / 60:.1f} | "
                     f"{s['finetune_wall_s'] / 60:.1f} | "
                     f"{max(vals):.2f} | {vals[-1]:.2f} | {s['test_accuracy']:.2f} |")
    path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def plot(summaries: list[dict], path: Path) -> None:
    from pixelbert.evaluation.plots import line_chart

    series, one_per_arm = {}, len(summaries) == len({s["arm"] for s in summaries})
    for s in summaries:
        name = s["arm"] if one_per_arm else f"{s['arm']} {cell_name(s['subset_fraction'], s.get('seed'))}"
        series[f"{name} val"] = [(p["minutes"], p["val_accuracy"]) for p in s["val_curve"]]
        series[f"{name} test (end) {s['test_accuracy']:.2f}%"] = [(s["total_wall_s"] / 60, s["test_accuracy"])]
    line_chart(series, path, xlabel="wall-clock minutes since the CNN stage started (2 CPU cores)",
               ylabel="VQA accuracy (%)", title="easy-VQA", hline=(93.8, "author baseline 93.8%"))


def write_seed_table(summaries: list[dict], path: Path) -> None:
    """Test accuracy per arm and label fraction: mean +- standard deviation over seeds, and each seed."""
    import statistics

    cells: dict[tuple[str, float], list[dict]] = {}
    for s in summaries:
        cells.setdefault((s["arm"], s["subset_fraction"]), []).append(s)
    lines = ["| arm | labels (questions per seed) | seeds | test acc mean +- std (%) | each seed (%) "
             "| fine-tuning (min, mean) |", "|---|---|---|---|---|---|"]
    for (arm, fraction), runs in cells.items():
        tests = [r["test_accuracy"] for r in runs]
        spread = statistics.stdev(tests) if len(tests) > 1 else 0.0
        counts = sorted({r.get("train_questions") for r in runs} - {None})
        labels = f"{fraction:.0%}" + (f" ({', '.join(map(str, counts))})" if counts else "")
        lines.append(f"| {arm} | {labels} | {len(runs)} | {statistics.mean(tests):.2f} +- {spread:.2f} | "
                     + ", ".join(f"{t:.2f}" for t in tests)
                     + f" | {statistics.mean(r['finetune_wall_s'] for r in runs) / 60:.1f} |")
    path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def used_outputs(options: StudyOptions) -> list[Path]:
    """Folders of ``options.out`` that already hold a run: stale checkpoints and eval files would mix
    with the new run's, so a study never writes there."""
    return [d for d in [options.out / "cnn", *(options.out / a for a in options.arms)] if d.is_dir() and any(d.iterdir())]


def run_study(options: StudyOptions) -> list[dict]:
    """The CNN stage once, each arm's pre-training once, then every (fraction, seed) cell of every arm,
    ``options.jobs`` of them at once; table.md (several runs) and curve.png. Returns the summaries."""
    used = used_outputs(options)
    if used:
        raise ConfigError(f"{used[0]} already holds a run; choose another --out")
    started = time.monotonic()
    trunk, cnn_s = run_cnn_stage(options.out / "cnn", options)
    # Every pre-training is queued before any cell: the pool starts work in queue order, so a cell
    # that waits for its arm's pre-training waits on one that is running or done, never on a queued one.
    pool = ThreadPoolExecutor(options.jobs)
    try:
        pretrained = {arm: pool.submit(pretrain_arm, arm, options.out / arm, options, trunk) for arm in options.arms}

        def cell(arm: str, fraction: float, seed: int | None) -> dict:
            init, pre_s = pretrained[arm].result()
            return run_arm(arm, options.out / arm / cell_name(fraction, seed), options, trunk, cnn_s, init, pre_s,
                           fraction, seed)

        runs = [pool.submit(cell, arm, f, s) for arm in options.arms for f, s in options.cells()]
        summaries = [r.result() for r in runs]  # run order, whatever order they finish in
    finally:
        pool.shutdown(cancel_futures=True)
    if len(options.cells()) > 1:
        write_seed_table(summaries, options.out / "table.md")
    elif len(summaries) > 1:
        write_table(summaries, options.out / "table.md")
    if any(s["val_curve"] for s in summaries):
        plot(summaries, options.out / "curve.png")
    (options.out / "study.json").write_text(json.dumps(
        {"wall_s": round(time.monotonic() - started, 1), "runs": len(summaries)}, indent=1) + "\n")
    return summaries
