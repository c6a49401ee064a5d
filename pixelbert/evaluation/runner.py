"""Model-based evaluation, shared by ``launcher/evaluate.py`` and the training engine's eval hook.

:func:`evaluate` runs a model over an evaluation loader and scores the predictions with the
official metrics of this package (VQA accuracy, NLVR2 accuracy / consistency, retrieval
Recall@K). Every rank scores its share of the split and the results are gathered, so the
same call works in a one-process run and under DeepSpeed. :func:`make_eval_fn` wraps it as
the ``Trainer``'s ``eval_fn``. All pixels are used (no sampling), as the paper evaluates.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import torch
import torch.distributed as dist

from pixelbert.batch import Batch
from pixelbert.engine.monitor import PROGRESS_EVERY_S, progress
from pixelbert.evaluation.nlvr2 import nlvr2_consistency
from pixelbert.evaluation.pair_scoring import candidate_mask, combine, encode_pairs_side, pad_texts, score_rows
from pixelbert.evaluation.retrieval import coco_1k_folds, retrieval_recall
from pixelbert.evaluation.vqa import evaluate_vqa, normalize_answer, vqa_accuracy

__all__ = ["EvalOptions", "EvalResult", "MAIN_METRIC", "evaluate", "make_eval_fn", "prepare_batch", "unwrap",
           "question_score"]

# The number a sweep or a model selection optimises, per task (all: higher is better).
MAIN_METRIC = {"vqa": "vqa_accuracy", "nlvr2": "nlvr2_accuracy", "retrieval": "r_mean"}


@dataclass
class EvalOptions:
    answers: list[str] | None = None  # VQA answer vocabulary (the shards manifest's "answers")
    vqa_annotations: str | None = None  # official annotations file: adds per-answer-type accuracy
    vqa_questions: str | None = None
    retrieval_topk: int | None = None  # first-stage filter; None = score every pair (paper protocol)
    first_stage_pixels: int = 16
    pair_batch: int = 256
    progress_every: float | None = PROGRESS_EVERY_S  # seconds between progress lines (None: none)


@dataclass
class EvalResult:
    """metrics: flat {name: float}; predictions: vqa {question_id: answer}, nlvr2 {identifier: bool},
    retrieval {"scores": (I, T), "text_to_image": (T,), "image_keys", "caption_ids"}."""

    metrics: dict[str, float]
    predictions: Any = field(default=None)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The PixelBert inside a DeepSpeed engine (or the model itself)."""
    return getattr(model, "module", model)


def prepare_batch(module: torch.nn.Module, batch: Batch) -> Batch:
    """Batch on the model's device, images in the model's dtype (bf16 under DeepSpeed bf16)."""
    param = next(module.parameters())
    return batch.to(param.device, param.dtype)


def _gather(obj: Any) -> list:
    """[obj of rank 0, obj of rank 1, ...] (CPU objects); [obj] outside a process group."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        out = [None] * dist.get_world_size()
        dist.all_gather_object(out, obj)
        return out
    return [obj]


def question_score(predicted: str, humans: list[str]) -> float:
    """Official VQA accuracy; a one-annotator dataset (easy-VQA) scores exact match, as its targets do."""
    if len(humans) == 1:
        return float(normalize_answer(predicted) == normalize_answer(humans[0]))
    return vqa_accuracy(predicted, humans)


@torch.no_grad()
def _vqa(module, loader, options: EvalOptions) -> EvalResult:
    from pixelbert.tasks.vqa import VQATask

    if not options.answers:
        raise ValueError("VQA evaluation needs the answer vocabulary (EvalOptions.answers)")
    task, local = VQATask(), []
    for batch in progress(loader, "eval vqa", options.progress_every):
        batch = prepare_batch(module, batch)
        picked = task.predict(module, batch).tolist()
        humans = batch.meta.get("answers") or [None] * len(picked)
        for qid, i, hum in zip(batch.meta["question_ids"], picked, humans):
            answer = options.answers[i]
            local.append((qid, answer, question_score(answer, hum) if hum else None))
    rows = {qid: (a, s) for part in _gather(local) for qid, a, s in part}  # dedupe by id
    predictions = {qid: a for qid, (a, _) in rows.items()}
    scored = [s for _, s in rows.values() if s is not None]
    metrics = {"num_questions": float(len(rows))}
    if scored:
        metrics["vqa_accuracy"] = 100.0 * sum(scored) / len(scored)
    if options.vqa_annotations:
        official = evaluate_vqa(predictions, options.vqa_questions, options.vqa_annotations, require_all=False)
        metrics["vqa_accuracy_official"] = official["overall"]
        metrics.update({f"vqa_accuracy/{k}": v for k, v in official["perAnswerType"].items()})
    return EvalResult(metrics, predictions)


@torch.no_grad()
def _nlvr2(module, loader, options: EvalOptions) -> EvalResult:
    from pixelbert.tasks.nlvr2 import NLVR2Task

    task, local = NLVR2Task(), []
    for batch in progress(loader, "eval nlvr2", options.progress_every):
        batch = prepare_batch(module, batch)
        preds = task.predict(module, batch).tolist()
        local += list(zip(batch.meta["identifiers"], preds, batch.labels.bool().tolist()))
    rows = {ident: (p, y) for part in _gather(local) for ident, p, y in part}
    if not rows:
        raise ValueError("NLVR2 evaluation: the loader gave no example")
    ids = list(rows)
    preds, labels = [rows[i][0] for i in ids], [rows[i][1] for i in ids]
    metrics = {"nlvr2_accuracy": 100.0 * sum(p == y for p, y in zip(preds, labels)) / len(ids),
               "num_examples": float(len(ids))}
    try:
        metrics["nlvr2_consistency"] = nlvr2_consistency(ids, preds, labels)
    except ValueError:  # identifiers not in the official split-set-pair-sentence form
        pass
    return EvalResult(metrics, dict(zip(ids, preds)))


@torch.no_grad()
def _retrieval(module, loader, options: EvalOptions) -> EvalResult:
    side = encode_pairs_side(module, progress(loader, "eval retrieval: encoding", options.progress_every),
                             lambda b: prepare_batch(module, b))
    # Every rank needs every caption; each scores its own images against all of them.
    parts = _gather({"texts": side.texts, "text_to_image": side.text_to_image, "caption_ids": side.caption_ids,
                     "image_keys": side.image_keys, "num_images": len(side.image_tokens)})
    offsets = [0]
    for p in parts:
        offsets.append(offsets[-1] + p["num_images"])
    texts = [t for p in parts for t in p["texts"]]
    text_to_image = torch.tensor([offsets[r] + i for r, p in enumerate(parts) for i in p["text_to_image"]])
    if not texts:
        raise ValueError("retrieval evaluation: the loader gave no caption")
    ids, mask = pad_texts(texts)

    def score(**kw) -> torch.Tensor:  # this rank's image rows x all captions, gathered: (I, T)
        return torch.cat(_gather(score_rows(module, side.image_tokens, ids, mask, pair_batch=options.pair_batch,
                                            progress_every=options.progress_every, **kw)))

    if options.retrieval_topk is None:
        scores = score()
    else:
        coarse = score(pixels=options.first_stage_pixels)
        cand = candidate_mask(coarse, options.retrieval_topk)
        mine = cand[offsets[_rank()] : offsets[_rank() + 1]]
        scores = combine(coarse, score(candidates=mine), cand)
    metrics = retrieval_recall(scores, text_to_image)
    num_images = scores.shape[0]
    if num_images > 1000 and num_images % 1000 == 0:  # COCO 5K test: also the 1K protocol
        metrics.update({f"coco1k/{k}": v for k, v in coco_1k_folds(scores, text_to_image).items()})
    metrics.update(num_images=float(num_images), num_texts=float(len(texts)))
    predictions = {"scores": scores, "text_to_image": text_to_image,
                   "image_keys": [k for p in parts for k in p["image_keys"]],
                   "caption_ids": [c for p in parts for c in p["caption_ids"]]}
    return EvalResult(metrics, predictions)


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def evaluate(model: torch.nn.Module, loader: Iterable[Batch], task: str,
             options: EvalOptions | None = None) -> EvalResult:
    """Score ``model`` (PixelBert or a DeepSpeed engine around it) on ``loader`` for ``task``.

    Call it on every rank with that rank's loader; every rank returns the full result.
    """
    options = options or EvalOptions()
    module = unwrap(model)
    was_training = module.training
    module.eval()
    try:
        if task == "vqa":
            return _vqa(module, loader, options)
        if task == "nlvr2":
            return _nlvr2(module, loader, options)
        if task == "retrieval":
            return _retrieval(module, loader, options)
        raise ValueError(f"no evaluation for task {task!r} (known: {', '.join(MAIN_METRIC)})")
    finally:
        module.train(was_training)


def make_eval_fn(task: str, options: EvalOptions | None = None,
                 on_result: Callable[[dict[str, float]], None] | None = None
                 ) -> Callable[[torch.nn.Module, Iterable[Batch]], dict[str, float]]:
    """The Trainer's ``eval_fn``: metrics only; ``on_result(metrics)`` sees each evaluation (e.g. Ray Tune)."""

    def eval_fn(model, loader):
        metrics = evaluate(model, loader, task, options).metrics
        if on_result is not None:
            on_result(metrics)
        return metrics

    return eval_fn
