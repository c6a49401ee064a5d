"""A run folder belongs to one run.

A new run into a folder that already holds one would keep the old model: its checkpoints
are not rewritten step by step and the old ``export/`` would look like the new one. So a new
run (no ``resume``) into such a folder is refused unless ``overwrite`` asks to replace it, and
while a run works in a folder it holds an exclusive lock on it, so that two runs started into
the same folder at once cannot both write.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

from pixelbert.config import DEEPSPEED_CONFIG_NAME, ConfigError

__all__ = ["RUN_ENTRIES", "LOCK_NAME", "holds_run", "claim_output_dir"]

# What a run writes into its folder; ``overwrite`` removes exactly these, nothing else.
RUN_ENTRIES = ("checkpoints", "export", "tensorboard", "config.json", DEEPSPEED_CONFIG_NAME, "eval.json", "eval")
LOCK_NAME = ".pixelbert.lock"


def holds_run(folder: str | Path) -> bool:
    """Whether ``folder`` holds the outputs of an earlier run."""
    folder = Path(folder)
    return any((folder / name).exists() for name in RUN_ENTRIES)


def _refusal(folder: Path, resume: str | None, overwrite: bool) -> str | None:
    if folder.exists() and not folder.is_dir():
        return f"train.output_dir {folder} is a file, not a folder"
    base = folder  # the folder, or the nearest parent that exists: where the run's first write lands
    while not base.exists() and base != base.parent:
        base = base.parent
    if not base.is_dir():
        return f"train.output_dir {folder}: {base} is a file, not a folder"
    if not os.access(base, os.W_OK | os.X_OK):
        return f"train.output_dir {folder} is not writable ({base} does not let this user create files)"
    if resume is None and not overwrite and holds_run(folder):
        return (f"train.output_dir {folder} already holds a run; resume it (--resume auto), replace it "
                "(--overwrite) or choose another train.output_dir")
    return None


def _lock(folder: Path):
    """An exclusive lock on ``folder`` (a file descriptor), or None if another run holds it."""
    import fcntl

    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def _agree(error: str | None, rank: int) -> str | None:
    """Rank 0's verdict, on every rank (when a process group is up)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return error
    box = [error if rank == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


@contextlib.contextmanager
def _held(folder: Path, resume: str | None, overwrite: bool, rank: int):
    fd, error = None, None
    if rank == 0:
        fd = _lock(folder)
        if fd is None:
            holder = (folder / LOCK_NAME).read_text().strip() or "?"
            error = (f"train.output_dir {folder} is in use by another run (pid {holder}); wait for it to end "
                     "or choose another train.output_dir")
        else:
            error = _refusal(folder, resume, overwrite)  # again, under the lock: a run may have ended meanwhile
            if error is None and resume is None and overwrite:
                for name in RUN_ENTRIES:
                    path = folder / name
                    if path.is_dir():
                        shutil.rmtree(path)
                    elif path.exists():
                        path.unlink()
    error = _agree(error, rank)
    try:
        if error is not None:
            raise ConfigError(error)
        yield
    finally:
        if fd is not None:
            os.close(fd)  # releases the lock


def claim_output_dir(folder: str | Path, *, resume: str | None, overwrite: bool = False, rank: int = 0,
                     check_only: bool = False):
    """Refuse (ConfigError, one line) a new run into a folder that holds one, unless ``overwrite``.

    ``check_only``: the cheap check before any heavy work (every rank, no lock, nothing removed).
    Otherwise a context manager to run inside: rank 0 locks the folder for the run's lifetime
    (refused if another run holds it) and, with ``overwrite``, removes the earlier run's outputs
    (``RUN_ENTRIES`` only); every rank gets rank 0's verdict.
    """
    folder = Path(folder)
    if check_only:
        error = _refusal(folder, resume, overwrite)
        if error is not None:
            raise ConfigError(error)
        return None
    return _held(folder, resume, overwrite, rank)
