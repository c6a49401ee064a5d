"""Evaluation runs: a model on a split of its shards, or a results file against official annotations.

Both write ``metrics.json`` into their output folder; a model run also writes its predictions
in the official format of the task (VQA ``vqa_results.json``, NLVR2 ``nlvr2_predictions.csv``,
retrieval ``retrieval_scores.pt``) and, on request, word-to-pixel attention pictures.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from pixelbert.config import ConfigError, load_config
from pixelbert.recipes.models import default_eval_split, find_run_config, load_model
from pixelbert.tasks import FINETUNE_TASKS, TASK_HEADS, check_task

__all__ = ["EvaluationResult", "evaluate", "score_predictions", "official_vqa_files"]

# VQA v2 split -> the COCO subtype its official files are named after.
_VQA_SUBTYPE = {"train": "train2014", "val": "val2014"}


@dataclass
class EvaluationResult:
    metrics: dict
    metrics_file: Path | None  # None on ranks other than 0
    predictions_file: Path | None = None
    pictures: list[Path] = field(default_factory=list)


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


def _write(out: Path, name: str, payload) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    (out / name).write_text(json.dumps(payload, indent=1) + "\n")
    return out / name


def score_predictions(task: str, predictions: str | Path, annotations: str | Path,
                      questions: str | Path | None = None, out: str | Path | None = None) -> EvaluationResult:
    """The official metric of a results file, no model (VQA: results json; NLVR2: predictions csv).
    Writes ``<out>/metrics.json`` (default ``<predictions folder>/eval``)."""
    from pixelbert.evaluation import evaluate_nlvr2, evaluate_vqa
    from pixelbert.evaluation.nlvr2 import load_nlvr2_predictions

    if task not in ("vqa", "nlvr2"):
        raise ConfigError("results files are scored for vqa and nlvr2 (retrieval needs the model's score matrix)")
    for path in (predictions, questions, annotations):
        if path is not None and not Path(path).is_file():
            raise ConfigError(f"{path}: no such file")
    try:
        if task == "vqa":
            m = evaluate_vqa(predictions, questions, annotations)
            metrics = {"vqa_accuracy": m["overall"], **{f"vqa_accuracy/{k}": v for k, v in m["perAnswerType"].items()},
                       "num_questions": m["num_questions"]}
            detail = m
        else:
            metrics = detail = evaluate_nlvr2(load_nlvr2_predictions(predictions), annotations)
    except ValueError as e:  # VQAFormatError included: one line naming the file
        raise ConfigError(str(e)) from None
    out = Path(out) if out else Path(predictions).parent / "eval"
    path = _write(out, "metrics.json", {"task": task, "predictions": str(predictions), "metrics": metrics,
                                        "detail": detail})
    return EvaluationResult(metrics=metrics, metrics_file=path)


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


def _pictures(model, loader, config, task: str, answers, count: int, out: Path, **choice) -> list[Path]:
    """``count`` attention pictures; ``choice``: the words, layers and heads (``batch_figures``)."""
    from pixelbert.evaluation.runner import prepare_batch
    from pixelbert.evaluation.visualize import batch_figures, save_figures
    from pixelbert.modeling.tokenizer import load_tokenizer

    tokenizer, figures = load_tokenizer(config.model), []
    for batch in loader:
        batch = prepare_batch(model, batch)
        figures += batch_figures(model, batch, tokenizer, task, answers=answers, max_rows=count - len(figures),
                                 mean=config.data.mean, std=config.data.std, **choice)
        if len(figures) >= count:
            break
    names, images = [n for n, _ in figures], [f for _, f in figures]
    return save_figures(images, out / "attention", names, tensorboard_dir=out / "tensorboard")


def evaluate(checkpoint: str | Path, task: str, *, split: str | None = None, config: str | Path | None = None,
             overrides: list[str] | None = None, out: str | Path | None = None, retrieval_topk: int | None = None,
             first_stage_pixels: int = 16, visualize: int = 0, visualize_words: list | None = None,
             visualize_layers: list | None = None, visualize_heads: list | None = None) -> EvaluationResult:
    """Score ``checkpoint`` (a run folder, a save_pretrained folder or a checkpoint) on ``split``
    (default: the task's validation split) of the shards its run config (or ``config``) names.
    Writes ``metrics.json`` and the predictions into ``out`` (default
    ``<checkpoint>/eval/<split>``); ``visualize``: that many attention pictures under attention/, of
    ``visualize_words`` (default every word), averaged over ``visualize_layers`` and
    ``visualize_heads`` (1-based; default the last 2 layers, all heads)."""
    import torch.distributed as dist

    from data_pipeline.loaders import build_loader, check_shards
    from pixelbert.engine.hardware import detect_hardware, init_distributed
    from pixelbert.evaluation.runner import EvalOptions, evaluate as run_evaluation

    check_task(task, FINETUNE_TASKS)
    split = split or default_eval_split(task)
    if retrieval_topk is not None and retrieval_topk < 1:
        raise ConfigError(f"--retrieval-topk must be >= 1, got {retrieval_topk}")
    checkpoint = Path(checkpoint)
    if not checkpoint.exists():
        raise ConfigError(f"--checkpoint {checkpoint}: no such folder")
    config_path = config or find_run_config(checkpoint)
    if config_path is None:
        raise ConfigError(f"--checkpoint {checkpoint}: no config.json with it; "
                          "give --config (its data section names the shards)")
    cfg = load_config(config_path, overrides)
    check_shards(cfg, [split])  # a mistyped split is one line before the model loads
    with tempfile.TemporaryDirectory() as tmp:
        model, model_dir = load_model(checkpoint, tmp)
        missing = [h for h in TASK_HEADS[task] if h not in model.config.heads]
        if missing:
            raise ConfigError(f"--checkpoint {checkpoint}: the model has no {', '.join(missing)} head (heads: "
                              f"{', '.join(model.config.heads)}); fine-tune it with launcher/finetune.py --task {task}")
        if visualize:  # a layer or head the model lacks is one line before the split is scored, not after
            from pixelbert.evaluation.visualize import pick_layers_heads

            pick_layers_heads(model.bert.config.num_hidden_layers, model.bert.config.num_attention_heads,
                              visualize_layers, visualize_heads)
        cfg.train.task, cfg.model = task, model.config
        hw = detect_hardware(cfg)
        init_distributed(hw)
        rank, world = dist.get_rank(), dist.get_world_size()
        model = model.to(hw.device, hw.dtype).eval()
        loader = build_loader(cfg, split, rank, world)
        manifest = loader.shards.manifest
        answers = manifest.get("answers")
        if model_dir is not None and (model_dir / "answers.json").is_file():
            answers = json.loads((model_dir / "answers.json").read_text())
        questions, annotations = official_vqa_files(manifest, split) if task == "vqa" else (None, None)
        options = EvalOptions(answers=answers, vqa_annotations=annotations, vqa_questions=questions,
                              retrieval_topk=retrieval_topk, first_stage_pixels=first_stage_pixels)
        evaluation = run_evaluation(model, loader, task, options)
        result = EvaluationResult(metrics=evaluation.metrics, metrics_file=None)
        out = Path(out) if out else checkpoint / "eval" / split
        if rank == 0:
            out.mkdir(parents=True, exist_ok=True)
            result.predictions_file = _save_predictions(task, out, evaluation.predictions)
            result.metrics_file = _write(out, "metrics.json", {"task": task, "split": split,
                                                               "checkpoint": str(checkpoint),
                                                               "metrics": evaluation.metrics})
            if visualize:
                result.pictures = _pictures(model, loader, cfg, task, answers, visualize, out, words=visualize_words,
                                            layers=visualize_layers, heads=visualize_heads)
    if world > 1:
        dist.barrier()
    return result
