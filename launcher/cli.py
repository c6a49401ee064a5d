"""Argument parsing shared by the launchers, and the rule that user errors end in one line + exit 2."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from typing import NoReturn

from pixelbert.config import Config, ConfigError, load_config

__all__ = ["base_parser", "fail", "user_errors", "load", "rank"]


def base_parser(description: str) -> argparse.ArgumentParser:
    """--config, repeatable --set section.key=value, --resume auto|PATH, --overwrite, DeepSpeed's --local_rank."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--config", required=True, help="JSON config file (configs/*.json)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one config value (JSON-parsed), e.g. --set train.max_steps=100; repeatable")
    p.add_argument("--resume", default=None, metavar="auto|PATH",
                   help="auto: the latest complete checkpoint under train.output_dir (none: start fresh); "
                        "PATH: a checkpoints folder or one checkpoint")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier run in train.output_dir (without it, a new run there is refused)")
    # The deepspeed launcher passes --local_rank; torchrun and plain python use LOCAL_RANK or nothing.
    p.add_argument("--local_rank", "--local-rank", type=int, default=int(os.environ.get("LOCAL_RANK", "0")),
                   help=argparse.SUPPRESS)
    return p


def fail(message: str) -> NoReturn:
    """One line on stderr (from rank 0 only: every rank finds the same problem), exit status 2."""
    if rank() == 0:
        print(f"error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(2)


@contextlib.contextmanager
def user_errors():
    """Config, data and missing-path errors become ``fail``; a run that cannot go on ends with exit 1."""
    from data_pipeline.records import DataError
    from pixelbert.engine.trainer import TrainingError

    try:
        yield
    except (ConfigError, DataError) as e:
        fail(str(e))
    except FileNotFoundError as e:
        fail(f"{e.filename or ''}: {e.strerror or e}" if e.filename else str(e))
    except TrainingError as e:
        if rank() == 0:
            print(f"error: {e}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None


def load(args: argparse.Namespace) -> Config:
    with user_errors():
        return load_config(args.config, args.set)


def rank() -> int:
    return int(os.environ.get("RANK", "0"))
