"""NLVR2 accuracy and consistency, as the official ``nlvr2/eval/metrics.py`` defines them.

An example is one sentence with a pair of images, labelled True/False. Identifiers read
``split-set-pair-sentence`` (e.g. ``dev-850-0-0``); the same sentence is judged against
several image pairs, and *consistency* is the share of sentences whose examples are all
right (the official tool groups by the identifier with its pair field blanked).

Both are percentages, as the paper reports them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import torch

__all__ = [
    "nlvr2_accuracy",
    "nlvr2_consistency",
    "load_nlvr2_examples",
    "evaluate_nlvr2",
    "write_nlvr2_predictions",
    "load_nlvr2_predictions",
]


def _as_bool(value: Any, where: str) -> bool:
    """True/False from a bool, 0/1 or "true"/"false" (any case: the official files use "True")."""
    if isinstance(value, torch.Tensor):
        value = value.item()
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    if isinstance(value, (bool, int)) and value in (0, 1):
        return bool(value)
    raise ValueError(f"{where}: expected True/False (or 1/0), got {value!r}")


def _as_bools(values: Sequence[Any] | torch.Tensor, what: str) -> list[bool]:
    if isinstance(values, torch.Tensor):
        values = values.flatten().tolist()
    return [_as_bool(v, f"{what}[{i}]") for i, v in enumerate(values)]


def nlvr2_accuracy(predictions: Sequence[Any] | torch.Tensor, labels: Sequence[Any] | torch.Tensor) -> float:
    """Percent of examples whose True/False prediction equals the label."""
    preds, gold = _as_bools(predictions, "predictions"), _as_bools(labels, "labels")
    if len(preds) != len(gold) or not gold:
        raise ValueError(f"nlvr2_accuracy: {len(preds)} predictions for {len(gold)} labels")
    return 100.0 * sum(p == g for p, g in zip(preds, gold)) / len(gold)


def _sentence_key(identifier: str) -> str:
    parts = identifier.split("-")
    if len(parts) != 4:
        raise ValueError(f"NLVR2 identifier {identifier!r} is not split-set-pair-sentence")
    parts[2] = ""  # the image pair varies, the sentence stays
    return "-".join(parts)


def nlvr2_consistency(
    identifiers: Sequence[str], predictions: Sequence[Any] | torch.Tensor, labels: Sequence[Any] | torch.Tensor
) -> float:
    """Percent of unique sentences for which every example (image pair) is predicted right."""
    preds, gold = _as_bools(predictions, "predictions"), _as_bools(labels, "labels")
    if not (len(identifiers) == len(preds) == len(gold)) or not gold:
        raise ValueError(f"nlvr2_consistency: {len(identifiers)} ids, {len(preds)} predictions, {len(gold)} labels")
    all_right: dict[str, bool] = {}
    for ident, p, g in zip(identifiers, preds, gold):
        key = _sentence_key(ident)
        all_right[key] = all_right.get(key, True) and p == g
    return 100.0 * sum(all_right.values()) / len(all_right)


def load_nlvr2_examples(path: str | Path) -> list[dict]:
    """Read an official NLVR2 jsonl file (one object per line with ``identifier`` and ``label``)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: NLVR2 file not found")
    examples = []
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            ex = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
        if not isinstance(ex, dict) or "identifier" not in ex or "label" not in ex:
            raise ValueError(f"{path}:{lineno}: expected an object with 'identifier' and 'label'")
        examples.append(ex)
    return examples


def evaluate_nlvr2(predictions: Mapping[str, Any], examples: str | Path | Sequence[Mapping]) -> dict[str, float]:
    """Score {identifier: True/False} against official examples -> {"accuracy", "consistency", "num_examples"}.

    Like the official tool, every example needs a prediction.
    """
    if isinstance(examples, (str, Path)):
        examples = load_nlvr2_examples(examples)
    ids = [str(ex["identifier"]) for ex in examples]
    missing = [i for i in ids if i not in predictions]
    if missing:
        raise ValueError(f"no prediction for {len(missing)} of {len(ids)} NLVR2 examples, e.g. {missing[:3]}")
    preds = [predictions[i] for i in ids]
    labels = [ex["label"] for ex in examples]
    return {
        "accuracy": nlvr2_accuracy(preds, labels),
        "consistency": nlvr2_consistency(ids, preds, labels),
        "num_examples": len(ids),
    }


def write_nlvr2_predictions(path: str | Path, identifiers: Iterable[str], predictions: Iterable[Any]) -> Path:
    """Write the official predictions CSV: one ``identifier,True|False`` line per example."""
    identifiers = list(identifiers)
    preds = _as_bools(list(predictions), "predictions")
    if len(identifiers) != len(preds):
        raise ValueError(f"write_nlvr2_predictions: {len(identifiers)} identifiers but {len(preds)} predictions")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{i},{p}\n" for i, p in zip(identifiers, preds)))
    return path


def load_nlvr2_predictions(path: str | Path) -> dict[str, bool]:
    """Read an official predictions CSV (``identifier,True|False`` lines) -> {identifier: bool}."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: predictions file not found")
    out: dict[str, bool] = {}
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        ident, sep, value = line.strip().partition(",")
        if not sep:
            raise ValueError(f"{path}:{lineno}: expected 'identifier,True|False', got {line.strip()!r}")
        out[ident] = _as_bool(value, f"{path}:{lineno}")
    return out
