"""The paper's optimiser split as ONE optimiser, and its learning-rate schedule.

Pixel-BERT trains the CNN with SGD (lr 1e-2, wd 5e-4, momentum) and the transformer (with
the visual projection and the heads) with AdamW (lr 1e-4, wd 1e-2). DeepSpeed holds exactly
one optimiser, so :class:`SplitOptimizer` is a ``torch.optim.Optimizer`` whose param_groups
are the union of both sets, each group tagged with its ``rule`` ("sgd" | "adamw"), and whose
``step()`` hands each group present *at call time* to an SGD or AdamW child.

Why "at call time": ZeRO rewrites the groups it is given. Stage 1/2 replaces each group's
params with one flat fp32 partition and, for every group, temporarily sets
``optimizer.param_groups = [that group]`` before calling ``step()``; stage 3 sets one
group's params to its flat sub-group partition and every other group's to ``[]``. Both only
work if the optimiser steps whatever groups it holds right now, by each group's own
hyper-parameters, with state keyed by parameter, which is what this class does. Stage 3 thus
works too (tested); it only differs in that ZeRO-3 calls step once per sub-group.
ZeRO does not know this class, so the DeepSpeed config needs ``zero_allow_untested_optimizer``
(set by the trainer).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable

import torch
from torch import nn

from pixelbert.config import TrainConfig

__all__ = ["ADAMW_IMPLS", "SplitOptimizer", "build_param_groups", "build_optimizer", "WarmupStepDecay",
           "build_schedule"]

# The AdamW kernels SplitOptimizer can run (``adamw_impl``), and how a run's start-up line and
# TensorBoard name them. Which one a run gets is decided once, in engine/hardware.py.
ADAMW_IMPLS = {
    "torch": "torch.optim.AdamW",
    "torch_fused": "torch.optim.AdamW(fused=True)",
    "deepspeed_fused": "DeepSpeed FusedAdam",
}

# Parameters of norm layers, biases and other 1-D vectors (s_v) get no weight decay (BERT's rule).
_NO_DECAY_MODULES = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm)


def build_param_groups(model: nn.Module, train: TrainConfig) -> list[dict]:
    """Four groups: cnn / cnn_no_decay (SGD), transformer / transformer_no_decay (AdamW).

    The model decides which parameters are the CNN's: ``model.parameter_groups()`` gives its
    trainable parameters by name as {"cnn": ..., "transformer": ...} (PixelBert: the visual trunk;
    everything else, text embeddings, encoder, visual projection, s_v, heads, is the transformer's).
    Frozen parameters (e.g. ``train.freeze_cnn``) are not in it; empty groups are dropped.
    Norm weights, biases and 1-D vectors never decay; embeddings do (as in BERT).
    """
    buckets: dict[str, list[nn.Parameter]] = {k: [] for k in ("cnn", "cnn_no_decay", "transformer", "transformer_no_decay")}
    for part, named in model.parameter_groups().items():
        for name, p in named.items():
            owner, _, pname = name.rpartition(".")
            module = model.get_submodule(owner)
            no_decay = isinstance(module, _NO_DECAY_MODULES) or pname == "bias" or p.ndim <= 1
            buckets[part + ("_no_decay" if no_decay else "")].append(p)
    groups = []
    for name, params in buckets.items():
        if not params:
            continue
        cnn = name.startswith("cnn")
        lr, wd = (train.lr_cnn, train.weight_decay_cnn) if cnn else (train.lr_transformer, train.weight_decay_transformer)
        group = dict(params=params, name=name, lr=lr, base_lr=lr, weight_decay=0.0 if name.endswith("no_decay") else wd)
        if cnn and train.cnn_optimizer == "sgd":
            group.update(rule="sgd", momentum=train.momentum_cnn)
        else:  # the transformer, or a CNN trained from scratch (TrainConfig.cnn_optimizer = "adamw")
            group.update(rule="adamw", betas=(0.9, 0.999), eps=1e-8)
        groups.append(group)
    return groups


class SplitOptimizer(torch.optim.Optimizer):
    """SGD for groups with rule "sgd", AdamW for groups with rule "adamw" (see module docstring).

    ``adamw_impl``: a key of ADAMW_IMPLS ("deepspeed_fused" needs CUDA parameters).
    ``max_grad_norm``: clip and skip non-finite steps here. Only for runs where DeepSpeed does
    neither (ZeRO off, fp32); the trainer decides. Sets ``overflow`` and ``_global_grad_norm``
    which DeepSpeed's engine reads after ``step()``.
    """

    def __init__(self, param_groups: list[dict], adamw_impl: str = "torch", max_grad_norm: float | None = None):
        if adamw_impl not in ADAMW_IMPLS:
            raise ValueError(f"unknown adamw_impl {adamw_impl!r} (known: {', '.join(ADAMW_IMPLS)})")
        super().__init__(param_groups, defaults={})
        self.adamw_impl = adamw_impl
        self.max_grad_norm = max_grad_norm
        self.overflow = False
        self._children: dict[str, torch.optim.Optimizer] = {}
        for rule in ("sgd", "adamw"):
            groups = [g for g in self.param_groups if g["rule"] == rule]
            if not groups:
                continue
            child = self._make_child(rule, [dict(g) for g in groups])
            for g in groups:  # the child's defaults (foreach, nesterov, ...) become group keys
                for k, v in child.defaults.items():
                    g.setdefault(k, v)
            self._children[rule] = child

    def _make_child(self, rule: str, groups: list[dict]) -> torch.optim.Optimizer:
        if rule == "sgd":
            return torch.optim.SGD(groups, lr=groups[0]["lr"])
        if self.adamw_impl == "deepspeed_fused":
            from deepspeed.ops.adam import FusedAdam

            return FusedAdam(groups, lr=groups[0]["lr"], adam_w_mode=True)
        return torch.optim.AdamW(groups, lr=groups[0]["lr"], fused=True if self.adamw_impl == "torch_fused" else None)

    def _params_with_grad(self) -> list[torch.Tensor]:
        return [p for g in self.param_groups for p in g["params"] if p.grad is not None]

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        self.overflow = False
        if self.max_grad_norm is not None:
            params = self._params_with_grad()
            norm = torch.nn.utils.clip_grad_norm_(params, self.max_grad_norm) if params else torch.zeros(())
            self._global_grad_norm = float(norm)
            if not math.isfinite(self._global_grad_norm):
                self.overflow = True
                self.zero_grad(set_to_none=True)
                return loss
        for rule, child in self._children.items():
            groups = [g for g in self.param_groups if g["rule"] == rule]
            if groups:
                # Bind the groups and state as they are now (ZeRO may have swapped either).
                child.param_groups = groups
                child.state = self.state
                child.step()
        return loss


def build_optimizer(model: nn.Module, train: TrainConfig, adamw_impl: str = "torch",
                    max_grad_norm: float | None = None) -> SplitOptimizer:
    return SplitOptimizer(build_param_groups(model, train), adamw_impl=adamw_impl, max_grad_norm=max_grad_norm)


class WarmupStepDecay:
    """Linear warm-up, then x ``decay_factor`` at each decay step; per group, relative to its base_lr.

    The update with 0-based index ``s`` uses ``base_lr * min(1, (s+1)/warmup) * factor**k``,
    k = number of decay steps <= s. So the last warm-up update (s = warmup-1) already runs at
    the full base lr, and the update at a decay step is the first decayed one. Duck-typed like
    a torch scheduler (step, state_dict, load_state_dict, get_last_lr) for DeepSpeed, which
    steps it after each applied optimiser step (not after skipped ones) and checkpoints it.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, warmup_steps: int, decay_steps: Iterable[int], decay_factor: float):
        self.optimizer = optimizer
        self.warmup_steps = max(0, int(warmup_steps))
        self.decay_steps = sorted(int(s) for s in decay_steps)
        self.decay_factor = float(decay_factor)
        self.last_step = 0  # optimiser updates applied so far = index of the next update
        self._apply()

    def factor(self, s: int) -> float:
        warm = min(1.0, (s + 1) / self.warmup_steps) if self.warmup_steps > 0 else 1.0
        return warm * self.decay_factor ** bisect.bisect_right(self.decay_steps, s)

    def _apply(self) -> None:
        f = self.factor(self.last_step)
        for g in self.optimizer.param_groups:
            g["lr"] = g["base_lr"] * f

    def step(self, *args, **kwargs) -> None:
        self.last_step += 1
        self._apply()

    def get_last_lr(self) -> list[float]:
        return [g["lr"] for g in self.optimizer.param_groups]

    def state_dict(self) -> dict:
        return {"last_step": self.last_step, "warmup_steps": self.warmup_steps,
                "decay_steps": list(self.decay_steps), "decay_factor": self.decay_factor}

    def load_state_dict(self, state: dict) -> None:
        self.last_step = int(state["last_step"])
        self._apply()


def build_schedule(optimizer: torch.optim.Optimizer, train: TrainConfig, steps_per_epoch: int) -> WarmupStepDecay:
    """train.decay_epochs converted to optimiser steps with ``steps_per_epoch`` (updates per epoch)."""
    decay_steps = [round(e * steps_per_epoch) for e in train.decay_epochs]
    return WarmupStepDecay(optimizer, train.warmup_steps, decay_steps, train.decay_factor)
