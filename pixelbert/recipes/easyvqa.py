"""The easy-VQA result and its ablation: pre-train on the caption corpus, fine-tune, score test.

    python launcher/easyvqa.py                       # the result: writes runs/easyvqa/result/
    python launcher/easyvqa.py --ablation            # the paper's ablation, small: runs/easyvqa/ablation/

Each run is the documented launchers in sequence, as separate processes (what a user would
type): ``launcher/pretrain.py`` on ``configs/tiny_cnn.json`` (the CNN stage, task
``visual_words``: the trunk learns to name the caption words from the image alone, standing in
for the ImageNet weights the paper starts from; every arm gets it), then on
``configs/tiny.json`` with that trunk as ``model.backbone_weights`` (skipped by the
``no_pretrain`` arm), BatchNorm frozen from then on (``model.frozen_bn``), then
``launcher/finetune.py --task vqa`` on ``configs/finetune/easyvqa.json`` scoring the ``val``
split (the last 10% of the package's train images) after every epoch, then
``launcher/evaluate.py --split test`` once, at the end: the test split chooses nothing.

Arms (``--arms``; the ablation runs all of them with the same budgets, on
``--subset`` of the training questions):
  no_pretrain       fine-tune from BERT (MiniLM) + the CNN stage's trunk
  mlm               pre-train with MLM only (no ITM loss, no negatives)
  mlm_itm           MLM + ITM, random pixel sampling on (the paper's recipe)
  mlm_itm_nosample  MLM + ITM, every pixel a token in pre-training

Writes per arm ``<out>/<arm>/summary.json`` (wall times of each stage, the val curve against
time, the test accuracy) and, for several arms, ``<out>/table.md``; ``<out>/curve.png`` plots
val accuracy against the run's wall-clock minutes.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from pixelbert.config import WEIGHTS_NAME, ConfigError

__all__ = ["ARMS", "StudyOptions", "StudyError", "run_cnn_stage", "run_arm", "run_study", "used_outputs",
           "write_table", "plot"]


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
    subset: float = 1.0
    cnn_steps: int = 400
    pretrain_steps: int = 500
    finetune_epochs: int | None = None
    cnn_config: str = "configs/tiny_cnn.json"
    pretrain_config: str = "configs/tiny.json"
    finetune_config: str = "configs/finetune/easyvqa.json"
    cnn_set: list = field(default_factory=list)
    pretrain_set: list = field(default_factory=list)
    finetune_set: list = field(default_factory=list)

    @classmethod
    def for_study(cls, ablation: bool, **given) -> "StudyOptions":
        """The result (mlm_itm on every question) or the ablation (every arm on 10%, shorter budgets);
        ``given`` values that are None keep the default."""
        given = {k: v for k, v in given.items() if v is not None}
        defaults = dict(arms=list(ARMS), out=Path("runs/easyvqa/ablation"), subset=0.1, pretrain_steps=150,
                        finetune_epochs=5) if ablation else dict(out=Path("runs/easyvqa/result"))
        options = cls(**{**defaults, **given})
        if ablation:  # one val score at the end of each arm: the table compares end points
            options.finetune_set = ["train.eval_every=1000000", *options.finetune_set]
        if not 0.0 < options.subset <= 1.0:
            raise ConfigError(f"subset must be in (0, 1], got {options.subset}")
        options.out = Path(options.out).resolve()
        return options


def _run(cmd: list[str], log: Path, cwd: Path) -> float:
    """Run one launcher with its output in ``log``; its wall seconds. Fails loudly with the log's tail."""
    started = time.monotonic()
    with log.open("w") as f:
        code = subprocess.run(cmd, cwd=cwd, stdout=f, stderr=subprocess.STDOUT).returncode
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


def run_arm(arm: str, out: Path, args: StudyOptions, trunk: Path | None, cnn_s: float) -> dict:
    """Pre-train (unless no_pretrain), fine-tune, score test; returns and writes the summary.

    ``trunk``/``cnn_s``: the CNN stage's weights and wall time (counted in every arm's total)."""
    out.mkdir(parents=True, exist_ok=True)
    # The CNN stage's trunk takes the place of ImageNet weights, and BatchNorm keeps the statistics
    # learned there (frozen: small fine-tuning image batches cannot swing them).
    weights = [f"model.backbone_weights={json.dumps(str(trunk))}"] if trunk else []
    frozen = ["model.frozen_bn=true"] if trunk else []
    py = sys.executable
    summary: dict = {"arm": arm, "subset_fraction": args.subset, "cnn_steps": args.cnn_steps,
                     "pretrain_steps": args.pretrain_steps, "finetune_epochs": args.finetune_epochs,
                     "cnn_wall_s": cnn_s, "pretrain_wall_s": 0.0}
    init = []
    if ARMS[arm] is not None:
        pre = out / "pretrain"
        sets = [f"train.output_dir={json.dumps(str(pre))}", f"train.max_steps={args.pretrain_steps}",
                f"train.eval_every={args.pretrain_steps}", "data.micro_batch_size=24",
                "deepspeed.zero_optimization.stage=0",  # one process: ZeRO would only add copies
                *weights, *frozen, *ARMS[arm], *args.pretrain_set]
        summary["pretrain_wall_s"] = round(_run([py, str(args.launchers / "pretrain.py"), "--config",
                                                 args.pretrain_config, *_sets(sets)], out / "pretrain.log", args.cwd), 1)
        init = ["--init", str(pre / "export")]
    ft = out / "finetune"
    # With --init the trunk comes from the pre-trained model; frozen_bn is a fine-tuning choice.
    sets = [*([] if init else weights), *frozen, f"train.output_dir={json.dumps(str(ft))}",
            f"data.subset_fraction={args.subset}",
            *([f"train.epochs={args.finetune_epochs}"] if args.finetune_epochs else []), *args.finetune_set]
    summary["finetune_wall_s"] = round(_run([py, str(args.launchers / "finetune.py"), "--task", "vqa",
                                             "--config", args.finetune_config, *init, *_sets(sets)],
                                            out / "finetune.log", args.cwd), 1)
    summary["total_wall_s"] = round(summary["cnn_wall_s"] + summary["pretrain_wall_s"] + summary["finetune_wall_s"], 1)
    _run([py, str(args.launchers / "evaluate.py"), "--task", "vqa", "--checkpoint", str(ft), "--split", "test"],
         out / "evaluate.log", args.cwd)
    test = json.loads((ft / "eval" / "test" / "metrics.json").read_text())["metrics"]
    evals = json.loads((ft / "eval.json").read_text())["evals"]
    pre_s = summary["cnn_wall_s"] + summary["pretrain_wall_s"]
    summary["val_curve"] = [{"epoch": e["epoch"], "minutes": round((pre_s + e["train_seconds"]) / 60, 2),
                             "val_accuracy": e["metrics"]["vqa_accuracy"]} for e in evals]
    summary["test_accuracy"] = test["vqa_accuracy"]
    summary["test_questions"] = int(test["num_questions"])
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(f"{arm}: test accuracy {summary['test_accuracy']:.2f}% after {summary['total_wall_s'] / 60:.1f} min "
          f"(CNN stage {summary['cnn_wall_s'] / 60:.1f}, pre-training {summary['pretrain_wall_s'] / 60:.1f}, "
          f"fine-tuning {summary['finetune_wall_s'] / 60:.1f})", flush=True)
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

    series = {}
    for s in summaries:
        series[f"{s['arm']} val"] = [(p["minutes"], p["val_accuracy"]) for p in s["val_curve"]]
        series[f"{s['arm']} test (end) {s['test_accuracy']:.2f}%"] = [(s["total_wall_s"] / 60, s["test_accuracy"])]
    line_chart(series, path, xlabel="wall-clock minutes since the CNN stage started (2 CPU cores)",
               ylabel="VQA accuracy (%)", title="easy-VQA", hline=(93.8, "author baseline 93.8%"))


def used_outputs(options: StudyOptions) -> list[Path]:
    """Folders of ``options.out`` that already hold a run: stale checkpoints and eval files would mix
    with the new run's, so a study never writes there."""
    return [d for d in [options.out / "cnn", *(options.out / a for a in options.arms)] if d.is_dir() and any(d.iterdir())]


def run_study(options: StudyOptions) -> list[dict]:
    """The CNN stage once, then every arm; table.md (several arms) and curve.png. Returns the summaries."""
    used = used_outputs(options)
    if used:
        raise ConfigError(f"{used[0]} already holds a run; choose another --out")
    trunk, cnn_s = run_cnn_stage(options.out / "cnn", options)
    summaries = [run_arm(arm, options.out / arm, options, trunk, cnn_s) for arm in options.arms]
    if len(summaries) > 1:
        write_table(summaries, options.out / "table.md")
    plot(summaries, options.out / "curve.png")
    return summaries
