"""Evaluate a fine-tuned Pixel-BERT, or score an existing results file, with the official metrics.

    python launcher/evaluate.py --task vqa --checkpoint runs/vqa_ft --split val [--visualize 8]
    python launcher/evaluate.py --task retrieval --checkpoint runs/ret_ft --split test [--retrieval-topk 128]
    python launcher/evaluate.py --task vqa --predictions results.json --questions Q.json --annotations A.json
    python launcher/evaluate.py --task nlvr2 --predictions predictions.csv --annotations dev.json

--checkpoint: a fine-tuning run folder (its config.json says where the data is, its export/ or
latest checkpoint holds the weights), a ``save_pretrained`` folder, or a checkpoint folder;
--config gives the data section when the folder has no config.json. Writes to --out (default
<checkpoint>/eval/<split>): metrics.json, and vqa_results.json (official submission format),
nlvr2_predictions.csv (official format) or retrieval_scores.pt; --visualize N adds N word-to-pixel
attention pictures under attention/ and in tensorboard/. Exit 2: bad arguments, missing files.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from launcher import cli  # noqa: E402
from pixelbert.config import ConfigError, load_config  # noqa: E402
from pixelbert.tasks import FINETUNE_TASKS, TASK_HEADS, check_task  # noqa: E402

__all__ = ["find_run_config", "load_model", "official_vqa_files", "print_table", "main"]

# VQA v2 split -> the COCO subtype its official files are named after.
_VQA_SUBTYPE = {"train": "train2014", "val": "val2014"}


def find_run_config(checkpoint: Path) -> Path | None:
    """The run's config.json: in the folder, or above an export/ or checkpoints/step_* folder."""
    for d in (checkpoint, checkpoint.parent, checkpoint.parent.parent):
        if (d / "config.json").is_file():
            return d / "config.json"
    return None


def load_model(checkpoint: Path, tmp: str):
    """PixelBert from a save_pretrained folder, a run folder (export/ or checkpoints/) or a checkpoint."""
    from pixelbert.engine.checkpoint import export_pretrained, find_resume
    from pixelbert.modeling.model import CONFIG_NAME, PixelBert

    for d in (checkpoint, checkpoint / "export"):
        if (d / CONFIG_NAME).is_file():
            return PixelBert.from_pretrained(d), d
    ckpt = find_resume(checkpoint / "checkpoints") if (checkpoint / "checkpoints").is_dir() else find_resume(checkpoint)
    if ckpt is None:
        raise ConfigError(f"--checkpoint {checkpoint}: no model there "
                          f"(no {CONFIG_NAME}, export/ or complete checkpoint)")
    return PixelBert.from_pretrained(export_pretrained(ckpt, tmp)), None


def official_vqa_files(manifest: dict, split: str) -> tuple[str | None, str | None]:
    """(questions, annotations) official files of a VQA v2 split, from the shards' manifest, if still there."""
    subtype = _VQA_SUBTYPE.get(split)
    root = (manifest.get("source") or {}).get("root")
    if manifest.get("dataset") != "vqa" or subtype is None or root is None:
        return None, None
    found = {}
    for f in manifest["source"].get("files", []):
        path = Path(root) / f["path"]
        for kind, name in (("q", f"v2_OpenEnded_mscoco_{subtype}_questions.json"),
                           ("a", f"v2_mscoco_{subtype}_annotations.json")):
            if path.name == name and path.is_file():
                found[kind] = str(path)
    return found.get("q"), found.get("a")


def print_table(title: str, metrics: dict) -> None:
    width = max(len(k) for k in metrics) if metrics else 10
    print(title)
    for k, v in metrics.items():
        print(f"  {k:<{width}}  {v:.2f}" if isinstance(v, float) else f"  {k:<{width}}  {v}")


def _write(out: Path, name: str, payload) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    (out / name).write_text(json.dumps(payload, indent=1) + "\n")
    return out / name


def score_file(args) -> int:
    """--predictions mode: the official metric of a results file, no model."""
    from pixelbert.evaluation import evaluate_nlvr2, evaluate_vqa
    from pixelbert.evaluation.nlvr2 import load_nlvr2_predictions

    if args.annotations is None:
        cli.fail("--predictions needs --annotations (VQA: the official annotations json; NLVR2: the jsonl split file)")
    for path in (args.predictions, args.questions, args.annotations):
        if path is not None and not Path(path).is_file():
            cli.fail(f"{path}: no such file")
    try:
        if args.task == "vqa":
            m = evaluate_vqa(args.predictions, args.questions, args.annotations)
            metrics = {"vqa_accuracy": m["overall"], **{f"vqa_accuracy/{k}": v for k, v in m["perAnswerType"].items()},
                       "num_questions": m["num_questions"]}
            detail = m
        elif args.task == "nlvr2":
            metrics = detail = evaluate_nlvr2(load_nlvr2_predictions(args.predictions), args.annotations)
        else:
            cli.fail("--predictions scores vqa and nlvr2 files (retrieval needs the model's score matrix)")
    except ValueError as e:  # VQAFormatError included: one line naming the file
        cli.fail(str(e))
    out = Path(args.out) if args.out else Path(args.predictions).parent / "eval"
    path = _write(out, "metrics.json", {"task": args.task, "predictions": args.predictions, "metrics": metrics,
                                        "detail": detail})
    print_table(f"{args.task} {args.predictions}", metrics)
    print(f"metrics: {path}")
    return 0


def _save_predictions(task: str, out: Path, predictions) -> Path:
    import torch

    from pixelbert.evaluation import write_vqa_results
    from pixelbert.evaluation.nlvr2 import write_nlvr2_predictions

    if task == "vqa":
        if all(isinstance(q, int) or str(q).isdigit() for q in predictions):
            return write_vqa_results(out / "vqa_results.json", predictions.keys(), predictions.values())
        # Non-numeric ids (easy-VQA): same layout, ids kept as they are.
        return _write(out, "vqa_results.json", [{"question_id": q, "answer": a} for q, a in predictions.items()])
    if task == "nlvr2":
        return write_nlvr2_predictions(out / "nlvr2_predictions.csv", predictions.keys(), predictions.values())
    torch.save(predictions, out / "retrieval_scores.pt")
    return out / "retrieval_scores.pt"


def evaluate_checkpoint(args) -> int:
    checkpoint = Path(args.checkpoint)
    if not checkpoint.exists():
        cli.fail(f"--checkpoint {checkpoint}: no such folder")
    config_path = args.config or find_run_config(checkpoint)
    if config_path is None:
        cli.fail(f"--checkpoint {checkpoint}: no config.json with it; "
                 "give --config (its data section names the shards)")
    with cli.user_errors():
        config = load_config(config_path, args.set)
    import torch.distributed as dist

    from data_pipeline.loaders import build_loader
    from data_pipeline.records import DataError
    from pixelbert.engine.hardware import detect_hardware, init_distributed
    from pixelbert.evaluation.runner import EvalOptions, evaluate

    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        with cli.user_errors():
            model, model_dir = load_model(checkpoint, tmp)
        missing = [h for h in TASK_HEADS[args.task] if h not in model.config.heads]
        if missing:
            cli.fail(f"--checkpoint {checkpoint}: the model has no {', '.join(missing)} head (heads: "
                     f"{', '.join(model.config.heads)}); fine-tune it with launcher/finetune.py --task {args.task}")
        config.train.task, config.model = args.task, model.config
        with cli.user_errors():
            hw = detect_hardware(config)
        init_distributed(hw)
        rank, world = dist.get_rank(), dist.get_world_size()
        model = model.to(hw.device, hw.dtype).eval()
        with cli.user_errors(DataError):
            loader = build_loader(config, args.split, rank, world)
        manifest = loader.shards.manifest
        answers = manifest.get("answers")
        if model_dir is not None and (model_dir / "answers.json").is_file():
            answers = json.loads((model_dir / "answers.json").read_text())
        questions, annotations = official_vqa_files(manifest, args.split) if args.task == "vqa" else (None, None)
        options = EvalOptions(answers=answers, vqa_annotations=annotations, vqa_questions=questions,
                              retrieval_topk=args.retrieval_topk, first_stage_pixels=args.first_stage_pixels)
        result = evaluate(model, loader, args.task, options)
        out = Path(args.out) if args.out else checkpoint / "eval" / args.split
        if rank == 0:
            out.mkdir(parents=True, exist_ok=True)
            saved = _save_predictions(args.task, out, result.predictions)
            path = _write(out, "metrics.json", {"task": args.task, "split": args.split, "checkpoint": str(checkpoint),
                                                "metrics": result.metrics})
            print_table(f"{args.task} {args.split} ({checkpoint})", result.metrics)
            print(f"metrics: {path}\npredictions: {saved}")
            if args.visualize:
                paths = visualize(model, loader, config, args.task, answers, args.visualize, out)
                print(f"attention pictures: {len(paths)} in {out / 'attention'} (and {out / 'tensorboard'})")
    if world > 1:
        dist.barrier()
    return 0


def visualize(model, loader, config, task: str, answers, count: int, out: Path) -> list[Path]:
    from pixelbert.evaluation.runner import prepare_batch
    from pixelbert.evaluation.visualize import batch_figures, save_figures
    from pixelbert.modeling.tokenizer import load_tokenizer

    tokenizer, figures = load_tokenizer(config.model), []
    for batch in loader:
        batch = prepare_batch(model, batch)
        figures += batch_figures(model, batch, tokenizer, task, answers=answers, max_rows=count - len(figures),
                                 mean=config.data.mean, std=config.data.std)
        if len(figures) >= count:
            break
    names, images = [n for n, _ in figures], [f for _, f in figures]
    return save_figures(images, out / "attention", names, tensorboard_dir=out / "tensorboard")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", required=True, help=f"one of {', '.join(FINETUNE_TASKS)}")
    p.add_argument("--checkpoint", help="run folder, save_pretrained folder or checkpoint")
    p.add_argument("--split", default=None, help="split of the shards to score (default val; nlvr2: dev)")
    p.add_argument("--config", help="config whose data section names the shards (default: the run's config.json)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a config value")
    p.add_argument("--out", help="output folder (default <checkpoint>/eval/<split>)")
    p.add_argument("--visualize", type=int, default=0, metavar="N", help="draw N word-to-pixel attention pictures")
    p.add_argument("--retrieval-topk", type=int, default=None, metavar="K",
                   help="retrieval: re-score only each query's top K of a cheap first stage (default: all pairs)")
    p.add_argument("--first-stage-pixels", type=int, default=16, help="pixels per image in that first stage")
    p.add_argument("--predictions", help="score this results file instead of a model")
    p.add_argument("--questions", help="VQA: official questions file (with --predictions)")
    p.add_argument("--annotations",
                   help="VQA: official annotations file; NLVR2: the split's jsonl (with --predictions)")
    p.add_argument("--local_rank", "--local-rank", type=int, default=int(os.environ.get("LOCAL_RANK", "0")),
                   help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    with cli.user_errors():
        check_task(args.task, FINETUNE_TASKS)
    if args.predictions:
        return score_file(args)
    if not args.checkpoint:
        cli.fail("give --checkpoint DIR (a model to run) or --predictions FILE (a results file to score)")
    from launcher.finetune import default_eval_split

    args.split = args.split or default_eval_split(args.task)
    if args.retrieval_topk is not None and args.retrieval_topk < 1:
        cli.fail(f"--retrieval-topk must be >= 1, got {args.retrieval_topk}")
    return evaluate_checkpoint(args)


if __name__ == "__main__":
    sys.exit(main())
