"""Evaluate a fine-tuned Pixel-BERT, or score an existing results file, with the official metrics.

    python launcher/evaluate.py --task vqa --checkpoint runs/vqa_ft --split val [--visualize 8]
    python launcher/evaluate.py --task retrieval --checkpoint runs/ret_ft --split test [--retrieval-topk 128]
    python launcher/evaluate.py --task vqa --predictions results.json --questions Q.json --annotations A.json
    python launcher/evaluate.py --task nlvr2 --predictions predictions.csv --annotations dev.json

--checkpoint: a fine-tuning run folder (its config.json says where the data is, its export/ or
latest checkpoint holds the weights), a ``save_pretrained`` folder, or a checkpoint folder;
--config gives the data section when the folder has no config.json. Writes to --out (default
<checkpoint>/eval/<split>): metrics.json, and vqa_results.json (official submission format),
nlvr2_predictions.csv (official format) or retrieval_scores.pt; --visualize N adds N word-to-pixel
attention pictures under attention/ and in tensorboard/: every word of the text (or
--visualize-words color,shape), the mean of the last 2 layers and all heads (or --visualize-layers 1,2
--visualize-heads 3), one colour scale per picture. Exit 2: bad arguments, missing files.
"""

from __future__ import annotations

import argparse
import os
import sys

from launcher import cli
from pixelbert.tasks import FINETUNE_TASKS, check_task


def print_table(title: str, metrics: dict) -> None:
    width = max(len(k) for k in metrics) if metrics else 10
    print(title)
    for k, v in metrics.items():
        print(f"  {k:<{width}}  {v:.2f}" if isinstance(v, float) else f"  {k:<{width}}  {v}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", required=True, help=f"one of {', '.join(FINETUNE_TASKS)}")
    p.add_argument("--checkpoint", help="run folder, save_pretrained folder or checkpoint")
    p.add_argument("--split", default=None, help="split of the shards to score (default val; nlvr2: dev)")
    p.add_argument("--config", help="config whose data section names the shards (default: the run's config.json)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a config value")
    p.add_argument("--out", help="output folder (default <checkpoint>/eval/<split>)")
    p.add_argument("--visualize", type=int, default=0, metavar="N", help="draw N word-to-pixel attention pictures")
    for what in ("words", "layers", "heads"):  # default: every word, the last 2 layers, all heads
        p.add_argument(f"--visualize-{what}", type=lambda s: s.split(","), help=f"pictures: only these {what}, e.g. 1,2")
    p.add_argument("--retrieval-topk", type=int, default=None, metavar="K",
                   help="retrieval: re-score only each query's top K of a cheap first stage (default: all pairs)")
    p.add_argument("--first-stage-pixels", type=int, default=16, help="pixels per image in that first stage")
    p.add_argument("--predictions", help="score this results file instead of a model")
    p.add_argument("--questions", help="VQA: official questions file (with --predictions)")
    p.add_argument("--annotations", help="VQA: official annotations file; NLVR2: the split's jsonl (with --predictions)")
    p.add_argument("--local_rank", "--local-rank", type=int, default=int(os.environ.get("LOCAL_RANK", "0")),
                   help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    from pixelbert import recipes

    with cli.user_errors():
        check_task(args.task, FINETUNE_TASKS)
        if args.predictions:
            if args.annotations is None:
                cli.fail("--predictions needs --annotations (VQA: the official annotations json; "
                         "NLVR2: the jsonl split file)")
            result = recipes.score_predictions(args.task, args.predictions, args.annotations, args.questions, args.out)
            title = f"{args.task} {args.predictions}"
        elif not args.checkpoint:
            cli.fail("give --checkpoint DIR (a model to run) or --predictions FILE (a results file to score)")
        else:
            result = recipes.evaluate(args.checkpoint, args.task, split=args.split, config=args.config,
                                      overrides=args.set, out=args.out, retrieval_topk=args.retrieval_topk,
                                      first_stage_pixels=args.first_stage_pixels,
                                      **{k: v for k, v in vars(args).items() if k.startswith("visualize")})
            title = f"{args.task} {args.split or recipes.default_eval_split(args.task)} ({args.checkpoint})"
    if result.metrics_file is None:  # not rank 0
        return 0
    print_table(title, result.metrics)
    print(f"metrics: {result.metrics_file}")
    if result.predictions_file is not None:
        print(f"predictions: {result.predictions_file}")
    if result.pictures:
        print(f"attention pictures: {len(result.pictures)} in {result.pictures[0].parent}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
