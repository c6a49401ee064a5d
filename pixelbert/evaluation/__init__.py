"""Model-independent evaluation: official VQA accuracy, retrieval Recall@K, NLVR2 accuracy.

Each metric takes plain predictions (strings, score matrices, labels), never a model, so it
scores another system's outputs as well as ours.
"""

from pixelbert.evaluation.nlvr2 import evaluate_nlvr2, nlvr2_accuracy, nlvr2_consistency
from pixelbert.evaluation.retrieval import coco_1k_folds, retrieval_recall
from pixelbert.evaluation.vqa import (
    VQAFormatError,
    evaluate_vqa,
    load_vqa_results,
    normalize_answer,
    vqa_accuracy,
    write_vqa_results,
)

__all__ = [
    "VQAFormatError",
    "coco_1k_folds",
    "evaluate_nlvr2",
    "evaluate_vqa",
    "load_vqa_results",
    "nlvr2_accuracy",
    "nlvr2_consistency",
    "normalize_answer",
    "retrieval_recall",
    "vqa_accuracy",
    "write_vqa_results",
]
