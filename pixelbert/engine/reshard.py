"""Load a ZeRO 1-3 checkpoint on another number of ranks: merge the saved shards, cut new ones.

DeepSpeed refuses ZeRO optimiser shards saved with another data-parallel size. Its way round
(universal checkpoints, ``ds_to_universal``) assumes Adam: the converter reads only
``exp_avg``/``exp_avg_sq``, so the SplitOptimizer's SGD groups (``momentum_buffer``) fail, and its
ZeRO-3 loader gives every group the first group's hyper-parameters (SGD's, here). So this module
does the same job for any optimiser state:

1. ``merged_optimizer_state``: from every rank's shard file, each parameter's full tensor for
   every state kept per element (Adam's moments, SGD's momentum), plus the per-group values
   kept once (Adam's step count). Rank-free, on CPU; a ZeRO-1/2 shard names its slices, a
   ZeRO-3 shard holds ``ceil(numel / ranks)`` elements of each parameter in ``param_shapes`` order.
2. ``load_resharded``: each rank copies its new partition of the fp32 weights and of that state
   into the live engine (ZeRO-1/2 through each parameter's ``_hp_mapping``, ZeRO-3 through its
   ``grad_position``: the addresses DeepSpeed's own ``safe_set_full_*`` use), the module weights,
   the schedule and the step counters. Every rank reads every shard: it holds the full fp32
   weights and optimiser state in CPU memory for a moment.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from pixelbert.engine.checkpoint import consolidated_state_dict, safe_torch_load

__all__ = ["MergedOptimizerState", "zero_shard_files", "merged_optimizer_state", "load_resharded"]

_SHARD = re.compile(r"zero_pp_rank_(\d+)_mp_rank_\d+_optim_states\.pt$")


@dataclass
class MergedOptimizerState:
    """A ZeRO checkpoint's optimiser state with the rank partitioning undone."""

    per_param: dict[str, dict[str, torch.Tensor]]  # name -> {"fp32" | state key: tensor shaped like the parameter}
    per_group: list[dict[str, Any]]  # flat group i -> state kept once per group (e.g. Adam's "step")
    param_groups: list[dict[str, Any]]  # the base optimiser's saved param_groups, without "params"
    loss_scaling: dict[str, Any]  # fp16's loss scaler state, as the ZeRO optimiser saved it


def zero_shard_files(ckpt: Path) -> list[Path]:
    """The ZeRO optimiser shard files of ``ckpt`` in rank order (empty without ZeRO)."""
    found = [(int(m.group(1)), p) for p in Path(ckpt).glob("*optim_states.pt") if (m := _SHARD.search(p.name))]
    return [p for _, p in sorted(found)]


def merged_optimizer_state(ckpt: Path) -> MergedOptimizerState:
    """Every parameter's full fp32 weight and optimiser state from the shards of ``ckpt`` (CPU)."""
    ckpt = Path(ckpt)
    shards = [safe_torch_load(f, map_location="cpu")["optimizer_state_dict"] for f in zero_shard_files(ckpt)]
    model_file = sorted(ckpt.glob("*model_states.pt"))[0]
    shapes = safe_torch_load(model_file, map_location="cpu")["param_shapes"]
    zero3 = "fp32_flat_groups" in shards[0]  # ZeRO-1/2 and DeepSpeed's bf16 ZeRO-1 optimiser name it otherwise
    pieces: dict[str, dict[str, list[torch.Tensor]]] = defaultdict(lambda: defaultdict(list))
    for sd in shards:
        for g, (fp32, state, padding) in enumerate(_flat_groups(sd, zero3)):
            flats = {"fp32": fp32, **{k: v[: fp32.numel()] for k, v in state.items() if _per_element(v, fp32, padding)}}
            if zero3:  # each parameter's slice of this rank, in param_shapes order
                offset = 0
                for name, shape in shapes[g].items():
                    n = math.ceil(math.prod(shape) / len(shards))
                    for key, flat in flats.items():
                        pieces[name][key].append(flat.narrow(0, offset, n))
                    offset += n
                if offset != fp32.numel():
                    raise ValueError(f"{ckpt}: ZeRO-3 group {g} holds {fp32.numel()} elements, its parameters {offset}")
            else:
                for name, where in sd["param_slice_mappings"][g].items():
                    for key, flat in flats.items():
                        pieces[name][key].append(flat.narrow(0, where.start, where.numel))
    full = {name: shape for group in shapes for name, shape in group.items()}
    per_param = {name: {key: torch.cat(parts)[: math.prod(full[name])].view(full[name]).clone()
                        for key, parts in by_key.items()}
                 for name, by_key in pieces.items()}
    per_group = [{k: v for k, v in state.items() if not _per_element(v, fp32, padding)}
                 for fp32, state, padding in _flat_groups(shards[0], zero3)]
    base = shards[0]["optimizer_state_dict" if zero3 else "base_optimizer_state"]
    param_groups = [{k: v for k, v in group.items() if k != "params"} for group in base["param_groups"]]
    loss_scaling = {k: shards[0][k] for k in ("loss_scaler", "dynamic_loss_scale", "overflow") if k in shards[0]}
    return MergedOptimizerState(per_param, per_group, param_groups, loss_scaling)


def _flat_groups(sd: dict, zero3: bool) -> list[tuple[torch.Tensor, dict, int]]:
    """(fp32 partition, its optimiser state, padding the state carries beyond it) per flat group."""
    if zero3:
        state = sd["optimizer_state_dict"]["state"]
        return [(fp32, state.get(g, {}), 0) for g, fp32 in enumerate(sd["fp32_flat_groups"])]
    state = sd["base_optimizer_state"]["state"]
    groups = sd["single_partition_of_fp32_groups"]
    paddings = sd.get("group_paddings", [0] * len(groups))
    return [(fp32, state.get(g, {}), paddings[g]) for g, fp32 in enumerate(groups)]


def _per_element(value: Any, fp32: torch.Tensor, padding: int) -> bool:
    """A state tensor laid out like the fp32 partition (which ZeRO-1/2 saves without its padding)."""
    return torch.is_tensor(value) and value.dim() == 1 and value.numel() in (fp32.numel(), fp32.numel() + padding)


@torch.no_grad()
def load_resharded(engine, ckpt: Path) -> None:
    """Load ``ckpt`` (ZeRO 1-3, saved on any number of ranks) into ``engine``. Collective."""
    ckpt = Path(ckpt)
    weights = consolidated_state_dict(ckpt)  # every parameter (frozen too) and buffer, fp32
    merged = merged_optimizer_state(ckpt)
    opt, module = engine.optimizer, engine.module
    mine = {n: tuple(getattr(p, "ds_shape", p.shape)) for n, p in module.named_parameters() if p.requires_grad}
    saved = {n: tuple(state["fp32"].shape) for n, state in merged.per_param.items()}
    if mine != saved:
        differ = sorted(n for n in mine.keys() | saved.keys() if mine.get(n) != saved.get(n))
        raise ValueError(f"{ckpt}: its trained parameters are not this model's ({', '.join(differ[:3])} ...)")
    zero3 = hasattr(opt, "fp32_partitioned_groups_flat")
    if zero3:
        opt.checkpoint_event_prologue()  # every parameter back to its partition
    flats = _write_optimizer_partitions(engine, merged, zero3)
    for name, p in module.named_parameters():
        if zero3:
            part = p.ds_tensor.data
            _copy_slice(part, weights[name], _rank(opt) * part.numel())
        else:
            p.data.copy_(weights[name])
    for name, b in module.named_buffers():
        if name in weights:  # persistent buffers only
            b.copy_(weights[name])
    if zero3:
        for lp, fp32 in zip(opt.fp16_partitioned_groups_flat, flats):
            lp.data.copy_(fp32.data)
        opt.checkpoint_event_epilogue()  # re-gathers the parameters ZeRO-3 keeps whole
    for key, value in merged.loss_scaling.items():
        if hasattr(opt, key):
            setattr(opt, key, value)
    counters = safe_torch_load(sorted(ckpt.glob("*model_states.pt"))[0], map_location="cpu")
    if engine.lr_scheduler is not None:
        engine.lr_scheduler.load_state_dict(counters["lr_scheduler"])
    engine.global_steps = counters["global_steps"]
    engine.global_samples = counters.get("global_samples", engine.global_steps * engine.train_batch_size())
    engine.skipped_steps = counters["skipped_steps"]


def _write_optimizer_partitions(engine, merged: MergedOptimizerState, zero3: bool) -> list[torch.Tensor]:
    """This rank's slices of the fp32 weights and optimiser state; returns the flat fp32 partitions."""
    opt = engine.optimizer
    base = opt.optimizer  # the SplitOptimizer, stepping flat fp32 partitions
    names = {id(p): n for n, p in engine.module.named_parameters()}
    if zero3:
        flats, groups = list(opt.fp32_partitioned_groups_flat), opt.fp16_groups
        slices = []
        for g, params in enumerate(groups):
            for p in params:
                _, start, numel = opt.grad_position[opt.get_param_id(p)]
                slices.append((names[id(p)], g, start, _rank(opt) * numel, numel))
    else:
        flats = [group["params"][0] for group in base.param_groups]
        groups = opt.bf16_groups if hasattr(opt, "bf16_groups") else opt.bit16_groups
        slices = [(names[id(p)], g, m.hp_fragment_address.start, m.lp_fragment_address.start,
                   m.lp_fragment_address.numel)
                  for g, params in enumerate(groups) for p in params if (m := p._hp_mapping) is not None]
    if len(merged.per_group) != len(flats):
        raise ValueError(f"the checkpoint has {len(merged.per_group)} optimiser groups, this engine {len(flats)}")
    for g, (flat, once) in enumerate(zip(flats, merged.per_group)):
        keys = {k for p in groups[g] for k in merged.per_param[names[id(p)]] if k != "fp32"}
        base.state[flat] = {**{k: v.clone() if torch.is_tensor(v) else v for k, v in once.items()},
                            **{k: torch.zeros_like(flat) for k in keys}}  # zeros where ZeRO pads
    for group, saved in zip(base.param_groups, merged.param_groups):
        if "step" in saved:  # FusedAdam counts its steps per group
            group["step"] = saved["step"]
    for name, g, start, src, numel in slices:
        for key, full in merged.per_param[name].items():
            target = flats[g].data if key == "fp32" else base.state[flats[g]][key]
            _copy_slice(target.narrow(0, start, numel), full, src)
    return flats


def _copy_slice(dst: torch.Tensor, full: torch.Tensor, src: int) -> None:
    """dst = full.flatten()[src:], as far as both reach (ZeRO pads the last rank's slice)."""
    n = max(0, min(dst.numel(), full.numel() - src))
    dst.narrow(0, 0, n).copy_(full.reshape(-1).narrow(0, src, n))


def _rank(opt) -> int:
    return dist.get_rank(group=opt.dp_process_group)
