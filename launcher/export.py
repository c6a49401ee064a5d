"""Consolidate a training checkpoint (ZeRO shards included) into a ``save_pretrained`` folder.

    python launcher/export.py CHECKPOINT_DIR OUT_DIR

CHECKPOINT_DIR is ``<output_dir>/checkpoints`` (its latest complete checkpoint) or one
``step_*`` folder. OUT_DIR loads with ``PixelBert.from_pretrained`` and fine-tuning.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from launcher.cli import fail, user_errors  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint_dir")
    p.add_argument("out_dir")
    args = p.parse_args(argv)
    if not Path(args.checkpoint_dir).exists():
        fail(f"{args.checkpoint_dir}: no such checkpoint folder")
    from pixelbert.engine.checkpoint import export_pretrained

    with user_errors():
        out = export_pretrained(args.checkpoint_dir, args.out_dir)
    print(f"exported model: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
