"""Soak test: a bounded pre-training run that must hold steady memory and throughput.

    python launcher/soak.py --minutes 3                      # CPU: DS_ACCELERATOR=cpu
    python launcher/soak.py --minutes 30 --ranks 8 --config configs/r50.json --set data.shards=...

Runs launcher/pretrain.py under torchrun and judges it (``pixelbert.recipes.soak``). Exit
status: 0 steady; 1 RSS grew more than --max-rss-growth-mb after warm-up, samples/s of the last
third fell more than --max-throughput-drop below the first third, or the run failed; 2 bad arguments.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from pixelbert.recipes.soak import SoakOptions, soak

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    d = SoakOptions(config=str(HERE.parent / "configs" / "tiny.json"))
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=d.minutes, help="how long to train before the SIGTERM")
    p.add_argument("--ranks", type=int, default=d.ranks, help="torchrun processes on this machine")
    p.add_argument("--config", default=d.config)
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="extra config overrides")
    p.add_argument("--out", default=None, help="run folder (default: a temporary folder, removed)")
    p.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every, help="steps between checkpoints")
    p.add_argument("--sample-s", type=float, default=d.sample_s, help="seconds between RSS samples")
    p.add_argument("--warmup", type=float, default=d.warmup, help="fraction of the run left out as warm-up")
    p.add_argument("--max-rss-growth-mb", type=float, default=d.max_rss_growth_mb)
    p.add_argument("--max-throughput-drop", type=float, default=d.max_throughput_drop,
                   help="allowed fractional drop of samples/s")
    args = p.parse_args(argv)
    if args.minutes <= 0 or args.ranks < 1 or args.sample_s <= 0 or not 0 <= args.warmup < 0.9:
        p.error("--minutes, --ranks, --sample-s must be > 0 and --warmup in [0, 0.9)")
    if not Path(args.config).is_file():
        p.exit(2, f"error: {args.config}: config not found\n")
    options = SoakOptions(**{k: v for k, v in vars(args).items() if k != "out"})
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        return soak(options, Path(args.out), HERE / "pretrain.py")
    with tempfile.TemporaryDirectory(prefix="pixelbert_soak_") as tmp:
        return soak(options, Path(tmp), HERE / "pretrain.py")


if __name__ == "__main__":
    sys.exit(main())
