"""Checkpoints that survive crashes, exact resume, safe loading, and graceful stop on signals.

Layout under ``<output_dir>/checkpoints``::

    step_00000100/        DeepSpeed files (model, ZeRO shards, scheduler, counters)
                          + rank_00000.pt ... (per-rank RNG and data position)
                          + meta.json (written last: its presence marks the checkpoint complete)
    latest                one line, the tag of the newest complete checkpoint (DeepSpeed's format,
                          so DeepSpeed's own tools such as zero_to_fp32 read it too)

A save writes into ``step_N.tmp``, fsyncs every file, renames the folder to ``step_N`` and
only then replaces ``latest`` (write a temp file, fsync, ``os.replace``). A crash at any
point leaves either the previous ``latest`` or the new one, never a pointer to half a
checkpoint; ``.tmp`` leftovers are ignored and removed by the next save. The folder is
assumed to be on a file system all ranks share (as DeepSpeed's own checkpoints assume).

Every load goes through :func:`safe_loading`: ``torch.load`` with ``weights_only=True``
(DeepSpeed's own loaders ask for ``weights_only=False``), with the few plain DeepSpeed
classes its files contain allow-listed, so a crafted pickle cannot run code.

A checkpoint loads on another number of ranks too: without ZeRO DeepSpeed loads the whole
optimiser state anywhere; ZeRO 1-3 shards are merged and cut anew by :mod:`.reshard`
(weights, every optimiser state, schedule, counters). Per-rank files then no longer match the
ranks: only rank 0's counters are used (the trainer decides what happens to the data order).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

__all__ = [
    "seed_everything", "rng_state", "set_rng_state", "safe_loading", "safe_torch_load",
    "CheckpointManager", "GracefulStop", "find_resume", "is_complete", "read_meta", "consolidated_state_dict",
    "checkpoint_config", "export_pretrained",
]

_TAG = re.compile(r"^step_(\d{8,})$")
META = "meta.json"
LATEST = "latest"


# ---- RNG -----------------------------------------------------------------------------

def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """Python, numpy, torch (and CUDA) RNG states as tensors and plain values (weights_only-safe)."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": {"version": version, "state": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    py = state["python"]
    random.setstate((py["version"], tuple(int(x) for x in py["state"].tolist()), py["gauss"]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---- safe loading ---------------------------------------------------------------------

def _deepspeed_safe_globals() -> list:
    """Plain-data classes DeepSpeed pickles into its checkpoints (no code runs on load)."""
    import argparse
    import collections

    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return [LossScaler, DynamicLossScaler, ZeroStageEnum, fragment_address, argparse.Namespace,
            collections.OrderedDict, set]


_real_torch_load = torch.load


def safe_torch_load(path, map_location=None, **kwargs):
    """``torch.load`` that always uses ``weights_only=True`` (plus DeepSpeed's plain classes)."""
    kwargs.pop("weights_only", None)
    with torch.serialization.safe_globals(_deepspeed_safe_globals()):
        return _real_torch_load(path, map_location=map_location, weights_only=True, **kwargs)


@contextlib.contextmanager
def safe_loading():
    """Within this block every ``torch.load`` (DeepSpeed's included) is weights_only."""
    previous = torch.load
    torch.load = safe_torch_load
    try:
        yield
    finally:
        torch.load = previous


# ---- files ----------------------------------------------------------------------------

def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    for dirpath, _, files in os.walk(root):
        for name in files:
            _fsync_file(Path(dirpath) / name)
        _fsync_file(Path(dirpath))


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_file(path.parent)


def read_meta(ckpt: Path) -> dict[str, Any]:
    """The checkpoint's meta.json: step, world_size, config, ... (written by :meth:`CheckpointManager.save`)."""
    return json.loads((Path(ckpt) / META).read_text())


def is_complete(ckpt: Path) -> bool:
    try:
        return bool(read_meta(ckpt).get("complete"))
    except (OSError, ValueError):
        return False


def _step_dirs(root: Path) -> list[Path]:
    found = [p for p in root.iterdir() if p.is_dir() and _TAG.match(p.name)] if root.is_dir() else []
    return sorted(found, key=lambda p: int(_TAG.match(p.name).group(1)))


def find_resume(path: str | Path) -> Path | None:
    """The checkpoint folder to resume from, or None.

    ``path`` is a checkpoints root (use ``latest`` when it names a complete checkpoint, else
    the newest complete ``step_*``) or one checkpoint folder (must be complete).
    """
    path = Path(path)
    if (path / META).exists():
        return path if is_complete(path) else None
    latest = path / LATEST
    if latest.is_file():
        candidate = path / latest.read_text().strip()
        if is_complete(candidate):
            return candidate
    complete = [p for p in _step_dirs(path) if is_complete(p)]
    return complete[-1] if complete else None


# ---- manager --------------------------------------------------------------------------

class CheckpointManager:
    """Save / load DeepSpeed checkpoints atomically under ``root``, keeping the last ``keep_last``."""

    def __init__(self, root: str | Path, keep_last: int, rank: int, world_size: int):
        self.root = Path(root)
        self.keep_last = keep_last
        self.rank = rank
        self.world_size = world_size

    def _barrier(self) -> None:
        if dist.is_available() and dist.is_initialized():
            dist.barrier()

    def save(self, engine, step: int, rank_state: dict[str, Any], meta: dict[str, Any] | None = None) -> Path:
        """Collective: every rank calls it at the same step. Returns the final folder."""
        tag = f"step_{step:08d}"
        final, tmp = self.root / tag, self.root / f"{tag}.tmp"
        if is_complete(final):  # e.g. the end of a run that was resumed from its last step
            return final
        if self.rank == 0:
            self.root.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)  # leftover of a crashed save
        self._barrier()
        engine.save_checkpoint(str(self.root), tag=tmp.name, client_state={"pixelbert_step": step}, save_latest=False)
        rank_file = tmp / f"rank_{self.rank:05d}.pt"
        torch.save(rank_state, rank_file)
        _fsync_file(rank_file)
        self._barrier()
        if self.rank == 0:
            _fsync_tree(tmp)
            info = {"step": step, "tag": tag, "world_size": self.world_size, "time": time.time(), **(meta or {}),
                    "complete": True}
            _atomic_write(tmp / META, json.dumps(info, indent=2) + "\n")
            os.rename(tmp, final)
            _fsync_file(self.root)
            _atomic_write(self.root / LATEST, tag + "\n")
            self._prune(keep=final)
        self._barrier()
        return final

    def _prune(self, keep: Path) -> None:
        complete = [p for p in _step_dirs(self.root) if is_complete(p)]
        for old in complete[: max(0, len(complete) - self.keep_last)]:
            if old != keep:
                shutil.rmtree(old, ignore_errors=True)
        for leftover in self.root.glob("step_*.tmp"):
            shutil.rmtree(leftover, ignore_errors=True)

    def load(self, engine, ckpt: Path) -> dict[str, Any] | None:
        """Load model, optimiser, scheduler and counters, on any number of ranks. Returns the saved
        per-rank state: this rank's, or rank 0's when the number of ranks changed (None if absent)."""
        from pixelbert.engine.reshard import load_resharded, zero_shard_files

        ckpt = Path(ckpt)
        same_ranks = read_meta(ckpt).get("world_size") == self.world_size
        if same_ranks or not zero_shard_files(ckpt):
            with safe_loading():
                path, _ = engine.load_checkpoint(str(ckpt.parent), tag=ckpt.name)
            if path is None:
                raise FileNotFoundError(f"{ckpt}: DeepSpeed could not load this checkpoint")
        else:  # DeepSpeed refuses ZeRO shards of another data-parallel size
            load_resharded(engine, ckpt)
        rank_file = ckpt / f"rank_{self.rank if same_ranks else 0:05d}.pt"
        return safe_torch_load(rank_file, map_location="cpu") if rank_file.exists() else None


# ---- export ---------------------------------------------------------------------------

def consolidated_state_dict(ckpt: Path) -> dict[str, torch.Tensor]:
    """Full fp32 model state dict of one checkpoint folder, whatever the ZeRO stage (rank-free, CPU).

    ZeRO 1-3 checkpoints hold the fp32 master weights only as per-rank shards; DeepSpeed's
    zero_to_fp32 merges them. Without ZeRO the model file holds the full weights.
    """
    ckpt = Path(ckpt)
    with safe_loading():
        if any(ckpt.glob("*optim_states.pt")) and any(ckpt.glob("zero_pp_rank_*")):
            from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

            return get_fp32_state_dict_from_zero_checkpoint(str(ckpt.parent), tag=ckpt.name)
        state = safe_torch_load(ckpt / "mp_rank_00_model_states.pt", map_location="cpu")["module"]
        return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def checkpoint_config(checkpoint: str | Path):
    """(the complete checkpoint ``checkpoint`` names: a folder, or a checkpoints root's latest; the run
    config saved in it)."""
    from pixelbert.config import ConfigError, config_from_dict

    ckpt = find_resume(checkpoint)
    if ckpt is None:
        raise ConfigError(f"{checkpoint}: no complete checkpoint there")
    meta = json.loads((ckpt / META).read_text())
    return ckpt, config_from_dict(meta["config"], source=str(ckpt / META))


def export_pretrained(checkpoint: str | Path, out_dir: str | Path, answers: list[str] | None = None) -> Path:
    """Checkpoint (a folder, or a checkpoints root: its latest) -> ``save_pretrained`` folder in fp32,
    with what prediction needs beside the weights: the run's preprocessing (preprocessor_config.json)
    and, for a VQA model, ``answers`` (answers.json)."""
    from pixelbert.modeling.model import build_model
    from pixelbert.processor import save_preprocessing

    ckpt, config = checkpoint_config(checkpoint)
    model = build_model(config).float()
    model.load_state_dict(consolidated_state_dict(ckpt), strict=True)
    model.answers = answers
    out = model.save_pretrained(out_dir)
    save_preprocessing(config.data, out)
    return out


# ---- signals --------------------------------------------------------------------------

class GracefulStop:
    """SIGTERM / SIGINT set a flag; the trainer checkpoints at the next step boundary and stops.

    A second SIGINT falls back to the default handler (Ctrl-C twice interrupts at once).
    Handlers are only installed from the main thread (signal module rule).
    """

    def __init__(self, signals=(signal.SIGTERM, signal.SIGINT)):
        self.signals = signals
        self.requested = False
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum, frame) -> None:
        if self.requested and signum == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.default_int_handler)
        self.requested, self.signum = True, signum

    def __enter__(self) -> "GracefulStop":
        import threading

        if threading.current_thread() is threading.main_thread():
            for s in self.signals:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()
