"""Which image property the model learns from which questions: a controlled probe on easy-VQA.

    python experiments/easyvqa_probe/probe.py --questions shape            # one question, shape labels
    python experiments/easyvqa_probe/probe.py --questions shape colour     # half of every batch each
    python experiments/easyvqa_probe/probe.py --questions shape colour --detach colour   # colour rows: no CNN gradient
    python experiments/easyvqa_probe/probe.py --questions shape colour --first-only 150   # shape first, then both
    python experiments/easyvqa_probe/probe.py --head trunk                 # linear probe on the CNN alone
    python experiments/easyvqa_probe/probe.py --questions shape colour --steps 700 --trunk-first 400 --freeze-bn
                                    # the CNN stage first (trunk head), then the model head, BN frozen
    python experiments/easyvqa_probe/probe.py --split test          # score test images (final figures only)

Why it exists: the easy-VQA run (README) learned colour but never shape. This trains the model of
``configs/finetune/easyvqa.json`` (MiniLM + a random CNN, no pre-training) on the easy-VQA
format's ``train`` images with fixed questions -- "what shape is in the image?" (circle /
rectangle / triangle) and "what color is the shape?" (8 colours), labels read from the package's
own questions -- and a linear head over the pooled output, and prints accuracy per question on
``--split`` (default ``val``: the format's held-out last 10% of the package's train images; the
test split chooses nothing) every ``--steps / 5`` steps. One thread (``--threads``) so two probes
can run side by side on 2 cores.

The logs in ``logs/`` predate the val default: they trained on all 4,000 package train images and
scored 500 test images.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from data_pipeline.formats.easyvqa import COLORS, SHAPES, read_easyvqa  # noqa: E402
from data_pipeline.images import image_to_tensor  # noqa: E402
from pixelbert.batch import Batch  # noqa: E402
from pixelbert.config import load_config  # noqa: E402
from pixelbert.modeling.model import build_model  # noqa: E402
from pixelbert.modeling.tokenizer import load_tokenizer  # noqa: E402

SHAPES, COLOURS = list(SHAPES), list(COLORS)  # the format's answer words, in its order
QUESTIONS = {"shape": ("what shape is in the image?", SHAPES), "colour": ("what color is the shape?", COLOURS)}
EVAL_IMAGES = 500  # the first this many images of --split are scored (a bound on the time each score takes)


def load_split(entries, config) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Normalised images with both a shape and a colour answer, and their labels per question kind.

    ``entries``: one split of the easy-VQA format's Source, [(record, [image path])]."""
    from PIL import Image

    kept, labels = [], {kind: [] for kind in QUESTIONS}
    for record, (path,) in entries:
        found = {}
        for q in record["questions"]:
            for kind, (_, classes) in QUESTIONS.items():
                if q["answers"][0] in classes:
                    found[kind] = classes.index(q["answers"][0])
        if len(found) == len(QUESTIONS):
            kept.append(path)
            for kind in QUESTIONS:
                labels[kind].append(found[kind])
    d = config.data  # the loaders' resize and normalisation
    x = torch.stack([image_to_tensor(Image.open(path).convert("RGB"), d.image_size, d.max_image_size, d.mean, d.std)
                     for path in kept])
    return x, {k: torch.tensor(v) for k, v in labels.items()}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--questions", nargs="+", choices=list(QUESTIONS), default=["shape"])
    p.add_argument("--head", choices=["model", "trunk"], default="model",
                   help="model: linear head on the pooled joint output; trunk: on the CNN's mean feature")
    p.add_argument("--detach", nargs="*", choices=list(QUESTIONS), default=[],
                   help="rows of these questions send no gradient into the CNN")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--first-only", type=int, default=0, metavar="N",
                   help="the first N steps ask only the first of --questions (a curriculum)")
    p.add_argument("--batch", type=int, default=32, help="images per step (also BatchNorm's batch)")
    p.add_argument("--cnn-sgd", type=float, default=None, metavar="LR", help="SGD (momentum 0.9) for the CNN")
    p.add_argument("--no-pixel-norm", action="store_true",
                   help="drop the LayerNorm over the pixel tokens (probe only: is it what squeezes one property out?)")
    p.add_argument("--pool", choices=["model", "pixels"], default="model",
                   help="model: the model's pooling (config); pixels: mean of the pixel tokens' final states only")
    p.add_argument("--per-question-softmax", action="store_true",
                   help="each row's softmax over its own question's answers only (no shape-vs-colour competition)")
    p.add_argument("--lr-visual", type=float, default=None, metavar="LR",
                   help="own AdamW learning rate for the pixel embedding (visual.*) and the probe's head")
    p.add_argument("--trunk-first", type=int, default=0, metavar="N",
                   help="the first N steps train the CNN with the trunk head (a CNN pre-training stage), then the model head")
    p.add_argument("--trunk-aux", type=float, default=0.0, metavar="W",
                   help="add W x the trunk head's loss to every model-head step (an auxiliary CNN loss)")
    p.add_argument("--freeze-bn", action="store_true",
                   help="after --trunk-first, BatchNorm uses its running statistics (train = eval behaviour)")
    p.add_argument("--split", choices=["val", "test"], default="val",
                   help="images the accuracy is measured on (test: final figures only, never to choose)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--config", default=str(ROOT / "configs/finetune/easyvqa.json"))
    p.add_argument("--set", action="append", default=[], metavar="K=V")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = load_config(args.config, args.set)
    splits = read_easyvqa().splits  # the project's train / val / test rule
    x_train, y_train = load_split(splits["train"], config)
    x_eval, y_eval = load_split(splits[args.split], config)
    x_eval, y_eval = x_eval[:EVAL_IMAGES], {k: v[:EVAL_IMAGES] for k, v in y_eval.items()}
    model = build_model(config).train()
    if args.no_pixel_norm:
        model.visual.norm = torch.nn.Identity()
    kinds = args.questions
    offset = {k: sum(len(QUESTIONS[j][1]) for j in kinds[:n]) for n, k in enumerate(kinds)}
    n_classes = sum(len(QUESTIONS[k][1]) for k in kinds)
    tok = load_tokenizer(config.model)
    enc = tok([QUESTIONS[k][0] for k in kinds], return_tensors="pt", padding=True)

    if args.head == "trunk":  # creation order kept: the same initial weights as the logs in the repo
        trunk_head = torch.nn.Linear(model.backbone.out_channels, n_classes)
        head = torch.nn.Linear(model.hidden_size, n_classes)
    else:
        head = torch.nn.Linear(model.hidden_size, n_classes)
        trunk_head = torch.nn.Linear(model.backbone.out_channels, n_classes)
    groups = model.parameter_groups()
    cnn = list(groups["cnn"].values())
    if args.head == "trunk":
        rest = list(trunk_head.parameters())
    else:
        rest = [q for name, g in groups.items() if name != "cnn" for q in g.values()] + list(head.parameters())
        rest += list(trunk_head.parameters()) if args.trunk_first or args.trunk_aux else []
    fast = list(model.visual.parameters()) + list(head.parameters()) if args.lr_visual else []
    rest = [q for q in rest if all(q is not f for f in fast)]

    def logits(x: torch.Tensor, kind: torch.Tensor, trunk: bool) -> torch.Tensor:
        """(n, n_classes) for images x asked question kinds[kind[i]]."""
        if trunk:
            return trunk_head(model.backbone(x)[0].mean((2, 3)))
        n = x.shape[0]
        batch = Batch(images=x, pixel_mask=torch.ones(n, *x.shape[2:], dtype=torch.bool),
                      input_ids=enc.input_ids[kind], attention_mask=enc.attention_mask[kind])
        pixels = model.encode_images(x)
        if args.detach:
            cut = torch.tensor([kinds[int(k)] in args.detach for k in kind])[:, None, None]
            pixels = dataclasses.replace(pixels, tokens=torch.where(cut, pixels.tokens.detach(), pixels.tokens))
        out = model(batch, pixels=pixels)
        return head(out.pixel_hidden.mean(1) if args.pool == "pixels" else model.pooled(out))

    optimizers = [torch.optim.AdamW([{"params": rest, "lr": config.train.lr_transformer}]
                                    + ([{"params": fast, "lr": args.lr_visual}] if fast else [])
                                    + ([] if args.cnn_sgd else [{"params": cnn, "lr": config.train.lr_cnn}]),
                                    weight_decay=0.01)]
    if args.cnn_sgd:
        optimizers.append(torch.optim.SGD(cnn, lr=args.cnn_sgd, momentum=0.9, weight_decay=5e-4))
    base = [[g["lr"] for g in o.param_groups] for o in optimizers]
    # Rows of the batch: equal shares of each question kind (the trunk head asks no question).
    mixed = torch.arange(args.batch) * len(kinds) // args.batch
    started = time.monotonic()
    for step in range(1, args.steps + 1):
        for o, lrs in zip(optimizers, base):
            for g, lr in zip(o.param_groups, lrs):
                g["lr"] = lr * min(1.0, step / 20)  # 20 warm-up steps
        kind = torch.zeros_like(mixed) if step <= args.first_only else mixed
        idx = torch.randint(0, len(x_train), (args.batch,))
        target = torch.stack([y_train[kinds[int(k)]][i] + offset[kinds[int(k)]] for k, i in zip(kind, idx)])
        trunk = args.head == "trunk" or step <= args.trunk_first
        if args.freeze_bn and not trunk:
            model.backbone.apply(lambda m: m.eval() if isinstance(m, torch.nn.BatchNorm2d) else None)
        out = logits(x_train[idx], kind, trunk)
        if args.per_question_softmax:  # other questions' answers can never win: -inf on their logits
            own = torch.zeros_like(out, dtype=torch.bool)
            for n, k in enumerate(kinds):
                own[kind == n, offset[k]:offset[k] + len(QUESTIONS[k][1])] = True
            out = out.masked_fill(~own, float("-inf"))
        loss = F.cross_entropy(out, target)
        if args.trunk_aux and not trunk:  # the CNN alone also answers, on the same rows
            loss = loss + args.trunk_aux * F.cross_entropy(logits(x_train[idx], kind, True), target)
        for o in optimizers:
            o.zero_grad()
        loss.backward()
        for o in optimizers:
            o.step()
        if step % max(1, args.steps // 5) == 0:
            model.eval()
            head.eval()
            trunk_head.eval()
            with torch.no_grad():
                acc = {}
                for n, k in enumerate(kinds):
                    out = logits(x_eval, torch.full((len(x_eval),), n), trunk)
                    part = out[:, offset[k]:offset[k] + len(QUESTIONS[k][1])]
                    acc[k] = round((part.argmax(1) == y_eval[k]).float().mean().item(), 3)
            model.train()
            head.train()
            trunk_head.train()
            seconds = time.monotonic() - started
            print(f"step {step} ({seconds:.0f} s) loss {loss.item():.3f} {args.split} accuracy {acc}", flush=True)


if __name__ == "__main__":
    main()
