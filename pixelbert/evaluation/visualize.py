"""Word-to-pixel attention pictures: where the model looks for each word of a question or caption.

For one text row, the attention weights of the last ``layers`` layers (mean over layers and
heads) from each word's tokens to the pixel tokens are renormalised over the image's pixels,
laid back on the feature grid (token (r, c) covers input rows [r*s, (r+1)*s), s the model's
pixel stride) and drawn as a heat map over the image: one panel per chosen word, the text and
the prediction in the title. Drawn with PIL only (no plotting library needed).
"""

from __future__ import annotations

import string
import textwrap
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

__all__ = ["word_pixel_attention", "attention_figure", "save_figures", "choose_words", "batch_figures"]

_SPECIAL = {"[CLS]", "[SEP]", "[PAD]", "[MASK]", "[UNK]"}


def choose_words(tokens: list[str], max_words: int = 6) -> list[tuple[str, list[int]]]:
    """WordPiece tokens -> [(word, token positions)]: "##" pieces joined, special tokens and
    punctuation left out, at most ``max_words`` (the first ones)."""
    words: list[tuple[str, list[int]]] = []
    for pos, tok in enumerate(tokens):
        if tok in _SPECIAL:
            continue
        if tok.startswith("##") and words and words[-1][1][-1] == pos - 1:
            words[-1] = (words[-1][0] + tok[2:], words[-1][1] + [pos])
        elif not all(c in string.punctuation for c in tok):
            words.append((tok, [pos]))
    return words[:max_words]


def word_pixel_attention(out, row: int, tokens: list[str], layers: int = 2,
                         max_words: int = 6) -> tuple[list[str], torch.Tensor]:
    """Heat maps of one text row of a ``PixelBertOutput`` computed with ``output_attentions=True``.

    tokens: the row's L token strings. Returns (words, maps (W, h, w)): each map sums to 1
    over the row's valid pixels and is 0 elsewhere.
    """
    if not out.attentions:
        raise ValueError("run the model with output_attentions=True to draw attention")
    att = torch.stack([a[row] for a in out.attentions[-layers:]]).detach().float().mean(dim=(0, 1))  # (S, S)
    L = out.text_length
    valid = out.attention_mask[row, L:]  # (N,)
    grid = out.pixel_grid[out.image_index[row]]  # (h, w)
    h, w = grid.shape
    cells = out.pixel_index[row] if out.pixel_index is not None else torch.arange(h * w, device=att.device)
    chosen = choose_words(tokens[:L], max_words)
    maps = torch.zeros(len(chosen), h * w)
    for k, (_, positions) in enumerate(chosen):
        weights = att[positions][:, L:].mean(dim=0) * valid
        weights = weights / weights.sum().clamp(min=1e-12)
        maps[k].index_add_(0, cells[valid].cpu(), weights[valid].cpu())
    return [word for word, _ in chosen], maps.view(len(chosen), h, w)


def _jet(x: np.ndarray) -> np.ndarray:
    """[0, 1] -> RGB uint8, the classic blue-cyan-yellow-red map."""
    r = np.clip(1.5 - np.abs(4 * x - 3), 0, 1)
    g = np.clip(1.5 - np.abs(4 * x - 2), 0, 1)
    b = np.clip(1.5 - np.abs(4 * x - 1), 0, 1)
    return (np.stack([r, g, b], axis=-1) * 255).astype(np.uint8)


def _to_rgb(image: torch.Tensor, pixel_mask: torch.Tensor, mean, std) -> Image.Image:
    """Normalised (3, H, W) + mask -> the valid part as a PIL RGB image."""
    h = int(pixel_mask.any(dim=1).sum())
    w = int(pixel_mask.any(dim=0).sum())
    x = image[:, :h, :w].float().cpu() * torch.tensor(std).view(3, 1, 1) + torch.tensor(mean).view(3, 1, 1)
    return Image.fromarray((x.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))


def attention_figure(image: torch.Tensor, pixel_mask: torch.Tensor, words: list[str], maps: torch.Tensor,
                     stride: int, title: str, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                     panel: int = 192) -> Image.Image:
    """One picture: the image, then one heat-map panel per word (labelled with the share of the
    word's pixel attention on its busiest cell); ``title`` on top.

    image (3, H, W) normalised with mean/std, pixel_mask (H, W), maps (W, h, w) on the feature grid.
    """
    base = _to_rgb(image, pixel_mask, mean, std)
    w0, h0 = base.size
    scale = panel / max(w0, h0)
    size = (max(1, round(w0 * scale)), max(1, round(h0 * scale)))
    font = ImageFont.load_default()
    panels = [(base.resize(size, Image.BILINEAR), "image")]
    for word, heat in zip(words, maps):
        heat = heat.numpy().astype(np.float32)
        peak = float(heat.max())
        # Min-max over the valid cells (padding cells are exactly 0): the picture shows where the
        # word looks most and least; the label keeps the absolute share of its busiest cell.
        low = float(heat[heat > 0].min()) if (heat > 0).any() else 0.0
        heat = np.where(heat > 0, (heat - low) / max(peak - low, 1e-12), 0.0).astype(np.float32)
        # Feature cell (r, c) covers input pixels [r*s, (r+1)*s): upscale by the stride, crop to the image.
        grid = Image.fromarray(heat).resize((heat.shape[1] * stride, heat.shape[0] * stride), Image.BILINEAR)
        grid = np.asarray(grid.crop((0, 0, w0, h0)).resize(size, Image.BILINEAR))
        overlay = Image.blend(panels[0][0], Image.fromarray(_jet(np.clip(grid, 0, 1))), 0.5)
        panels.append((overlay, f"{word} (max {100 * peak:.0f}%)"))
    lines = textwrap.wrap(title, width=max(30, (len(panels) * (size[0] + 8)) // 7)) or [""]
    line_h, label_h, pad = 14, 16, 8
    top = pad + line_h * len(lines)
    canvas = Image.new("RGB", (pad + len(panels) * (size[0] + pad), top + pad + size[1] + label_h + pad), "white")
    draw = ImageDraw.Draw(canvas)
    for i, line in enumerate(lines):
        draw.text((pad, pad + i * line_h), line, fill="black", font=font)
    for k, (img, label) in enumerate(panels):
        x = pad + k * (size[0] + pad)
        canvas.paste(img, (x, top + pad))
        draw.text((x, top + pad + size[1] + 2), label, fill="black", font=font)
    return canvas


def save_figures(figures: list[Image.Image], out_dir: str | Path, names: list[str],
                 tensorboard_dir: str | Path | None = None, tag: str = "attention") -> list[Path]:
    """Write each figure as ``out_dir/<name>.png``; with ``tensorboard_dir``, also as TensorBoard images."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for fig, name in zip(figures, names):
        path = out_dir / f"{name}.png"
        fig.save(path)
        paths.append(path)
    if tensorboard_dir is not None and figures:
        from torch.utils.tensorboard import SummaryWriter

        with SummaryWriter(log_dir=str(tensorboard_dir)) as writer:
            for fig, name in zip(figures, names):
                writer.add_image(f"{tag}/{name}", np.asarray(fig), 0, dataformats="HWC")
    return paths


@torch.no_grad()
def batch_figures(module, batch, tokenizer, task: str, *, answers: list[str] | None = None, max_rows: int = 4,
                  layers: int = 2, max_words: int = 6, mean=(0.485, 0.456, 0.406),
                  std=(0.229, 0.224, 0.225)) -> list[tuple[str, Image.Image]]:
    """[(name, figure)] for up to ``max_rows`` text rows of one evaluation batch (already on the
    model's device), the model's prediction in each title. VQA: one row per question; NLVR2: both
    rows (left, right image) of each example; retrieval: each image with its first caption."""
    out = module(batch, output_attentions=True)
    rows = list(range(len(batch)))
    if task == "vqa":
        picked = module.vqa_logits(out).argmax(dim=1).tolist()
        gold = batch.meta.get("answers") or [None] * len(rows)
        say = [f"-> {answers[p] if answers else p}" + (f" (humans: {', '.join(sorted(set(g)))})" if g else "")
               for p, g in zip(picked, gold)]
    elif task == "nlvr2":
        pred = module.nlvr2_logits(out).argmax(dim=1).bool().tolist()
        labels = batch.labels.bool().tolist() if batch.labels is not None else [None] * len(pred)
        say = [f"[{'left' if r % 2 == 0 else 'right'} image] -> {pred[r // 2]} (gold {labels[r // 2]})" for r in rows]
    elif task == "retrieval":
        scores = module.retrieval_scores(out).float().tolist()
        first = {}
        for r, img in enumerate(batch.row_images().tolist()):
            first.setdefault(img, r)
        rows = sorted(first.values())
        say = {r: f"-> match score {scores[r]:.2f} (P(match) {torch.sigmoid(torch.tensor(scores[r])).item():.2f})"
               for r in rows}
    else:
        raise ValueError(f"no attention pictures for task {task!r}")
    stride = module.pixel_stride
    figures = []
    for r in rows[:max_rows]:
        ids = batch.input_ids[r][batch.attention_mask[r].bool()].tolist()
        tokens = tokenizer.convert_ids_to_tokens(ids)
        tokens += ["[PAD]"] * (batch.input_ids.shape[1] - len(tokens))
        words, maps = word_pixel_attention(out, r, tokens, layers, max_words)
        text = tokenizer.decode(ids, skip_special_tokens=True)
        img = int(batch.row_images()[r])
        fig = attention_figure(batch.images[img], batch.pixel_mask[img], words, maps, stride,
                               f"{text} {say[r]}", mean, std)
        figures.append((_row_name(batch, task, r, img), fig))
    return figures


def _row_name(batch, task: str, row: int, image: int) -> str:
    """A file name saying which example a picture shows (question id, NLVR2 identifier + side, image id)."""
    meta = batch.meta
    if task == "vqa" and meta.get("question_ids"):
        name = f"q{meta['question_ids'][row]}"
    elif task == "nlvr2" and meta.get("identifiers"):
        name = f"{meta['identifiers'][row // 2]}_{'left' if row % 2 == 0 else 'right'}"
    elif meta.get("image_ids"):
        name = f"img{meta['image_ids'][image]}"
    else:
        name = f"row{row}"
    return f"{task}_{name}".replace("/", "_").replace(" ", "_")
