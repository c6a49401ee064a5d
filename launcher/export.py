"""Consolidate a training checkpoint (ZeRO shards included) into a ``save_pretrained`` folder.

    python launcher/export.py CHECKPOINT_DIR OUT_DIR

CHECKPOINT_DIR is a run folder (``train.output_dir``: its latest complete checkpoint), its
``checkpoints/`` folder or one ``step_*`` folder. OUT_DIR loads with ``PixelBert.from_pretrained``,
``Processor.from_pretrained`` (the run's preprocessing; a VQA model's answer list) and fine-tuning.
"""

from __future__ import annotations

import argparse
import sys

from launcher.cli import user_errors


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint_dir")
    p.add_argument("out_dir")
    args = p.parse_args(argv)
    from pixelbert import recipes

    with user_errors():
        out = recipes.export(args.checkpoint_dir, args.out_dir)
    print(f"exported model: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
