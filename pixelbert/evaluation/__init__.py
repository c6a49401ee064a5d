"""Model-independent evaluation: official VQA accuracy, retrieval recall@K, NLVR2 accuracy.

Each metric takes plain predictions (strings, score matrices, labels), never a model, so it
can score another system's outputs as well as ours.
"""

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
    "evaluate_vqa",
    "load_vqa_results",
    "normalize_answer",
    "vqa_accuracy",
    "write_vqa_results",
]
