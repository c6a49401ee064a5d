"""The easy-VQA result and its ablation: pre-train on the caption corpus, fine-tune, score test.

    python launcher/easyvqa.py                       # the result: writes runs/easyvqa/result/
    python launcher/easyvqa.py --ablation            # the paper's ablation, small: runs/easyvqa/ablation/

Runs launcher/pretrain.py (the CNN stage, then pre-training), launcher/finetune.py and, once at
the end, launcher/evaluate.py --split test, as separate processes; the stages, arms and outputs
are described in ``pixelbert.recipes.easyvqa``. Exit 2: bad arguments or an --out that holds a
run; 1: a stage failed (its log is named).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pixelbert.config import ConfigError
from pixelbert.recipes.easyvqa import ARMS, StudyError, StudyOptions, run_study

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ablation", action="store_true", help="all four arms, 3 seeds, 2%% and 10%% of the questions, 2 runs at once")
    p.add_argument("--arms", nargs="+", choices=list(ARMS), help="arms to run (default: mlm_itm; --ablation: all)")
    p.add_argument("--out", type=Path, help="output folder (default runs/easyvqa/result or runs/easyvqa/ablation)")
    p.add_argument("--subset", dest="fractions", type=float, nargs="+",
                   help="fractions of the training questions (default 1.0; --ablation 0.02 0.1)")
    p.add_argument("--seeds", type=int, nargs="+", help="fine-tuning seeds (default: the config's; --ablation 0 1 2)")
    p.add_argument("--finetune-steps", type=int, help="fine-tuning steps of every run (--ablation 150)")
    p.add_argument("--jobs", type=int, help="runs at once after the CNN stage, sharing the cores (default 1; --ablation 2)")
    p.add_argument("--stop-at-val", type=float, metavar="ACC", help="end fine-tuning at the first val accuracy >= ACC %%")
    p.add_argument("--pretrain-steps", type=int, help="pre-training steps of 24 images (default 500)")
    p.add_argument("--finetune-epochs", type=int, help="fine-tuning epochs (default: the config's)")
    p.add_argument("--cnn-steps", type=int, help="CNN-stage steps of 64 images (default 400; 0: none, a random trunk)")
    p.add_argument("--cnn-config")
    p.add_argument("--pretrain-config")
    p.add_argument("--finetune-config")
    p.add_argument("--cnn-set", action="append", default=[], metavar="K=V", help="extra CNN-stage override")
    p.add_argument("--pretrain-set", action="append", default=[], metavar="K=V", help="extra pre-training override")
    p.add_argument("--finetune-set", action="append", default=[], metavar="K=V", help="extra fine-tuning override")
    args = vars(p.parse_args(argv))
    try:
        options = StudyOptions.for_study(args.pop("ablation"), launchers=HERE, cwd=HERE.parent, **args)
        run_study(options)
    except (ConfigError, StudyError) as e:
        p.exit(2 if isinstance(e, ConfigError) else 1, f"error: {e}\n")
    print(f"results: {options.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
