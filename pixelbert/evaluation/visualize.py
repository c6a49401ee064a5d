"""Word-to-pixel attention pictures: where the model looks for each word of a question or caption.

For one text row, the attention weights of the chosen layers and heads (default: the last
``DEFAULT_LAYERS`` layers, all heads; their mean) from each word's tokens to the pixel tokens are
renormalised over the image's pixels, laid back on the feature grid (token (r, c) covers input
rows [r*s, (r+1)*s), s the model's pixel stride) and drawn as a heat map over the image: one panel
per word (every word, or a chosen subset), all panels of a row on one colour scale shown by a
colour bar with its range, the text, the prediction and the layers/heads in the title. Layers,
heads and word positions are numbered from 1, as in the pictures. Drawn with PIL only.
"""

from __future__ import annotations

import string
import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from pixelbert.config import ConfigError

__all__ = ["DEFAULT_LAYERS", "word_pixel_attention", "attention_figure", "save_figures", "choose_words",
           "batch_figures", "pick_layers_heads", "source_label", "heat_colours"]

_SPECIAL = {"[CLS]", "[SEP]", "[PAD]", "[MASK]", "[UNK]"}
DEFAULT_LAYERS = 2  # the last layers: text and pixels have been mixed the longest there


def choose_words(tokens: list[str], max_words: int | None = None,
                 words: Sequence[str | int] | None = None) -> list[tuple[str, list[int]]]:
    """WordPiece tokens -> [(word, token positions)]: "##" pieces joined, special tokens and
    punctuation left out. ``words``: keep only these, in text order (a word, case-insensitive, or a
    1-based word position: an int or a string of digits); ``max_words``: at most that many (the first)."""
    found: list[tuple[str, list[int]]] = []
    for pos, tok in enumerate(tokens):
        if tok in _SPECIAL:
            continue
        if tok.startswith("##") and found and found[-1][1][-1] == pos - 1:
            found[-1] = (found[-1][0] + tok[2:], found[-1][1] + [pos])
        elif not all(c in string.punctuation for c in tok):
            found.append((tok, [pos]))
    if words is not None:
        wanted = [str(w).lower() for w in words]
        positions = {int(w) for w in wanted if w.isdigit()}
        found = [(w, p) for k, (w, p) in enumerate(found, 1) if k in positions or w.lower() in wanted]
    return found if max_words is None else found[:max_words]


def pick_layers_heads(n_layers: int, n_heads: int, layers: Sequence[int | str] | None = None,
                      heads: Sequence[int | str] | None = None) -> tuple[list[int], list[int]]:
    """1-based layer and head numbers, ints or digit strings (default: the last ``DEFAULT_LAYERS``
    layers, all heads) -> sorted 0-based indices; a number the model does not have is a ``ConfigError``."""
    def pick(numbers, total, what, default):
        numbers = list(default if numbers is None else numbers)
        bad = [n for n in numbers if not str(n).strip().isdigit() or not 1 <= int(n) <= total]
        numbers = sorted({int(n) for n in numbers if n not in bad})
        if bad or not numbers:
            raise ConfigError(f"attention {what} {', '.join(map(str, bad)) or 'none'}: the model has {what} 1..{total}")
        return [n - 1 for n in numbers]

    default_layers = range(max(1, n_layers - DEFAULT_LAYERS + 1), n_layers + 1)
    return pick(layers, n_layers, "layers", default_layers), pick(heads, n_heads, "heads", range(1, n_heads + 1))


def _numbers(indices: list[int]) -> str:
    """0-based indices -> "1-3" for a run, "1, 3" otherwise (1-based)."""
    nums = [i + 1 for i in indices]
    if len(nums) > 1 and nums == list(range(nums[0], nums[-1] + 1)):
        return f"{nums[0]}-{nums[-1]}"
    return ", ".join(map(str, nums))


def source_label(layers: list[int], heads: list[int], n_layers: int, n_heads: int) -> str:
    """Which attention a picture shows, e.g. "layers 1-2 of 2, mean of 12 heads" (0-based indices in)."""
    where = f"layer{'s' if len(layers) > 1 else ''} {_numbers(layers)} of {n_layers}"
    if len(heads) == n_heads:
        return f"{where}, mean of {n_heads} heads" if n_heads > 1 else f"{where}, 1 head"
    return f"{where}, mean of head{'s' if len(heads) > 1 else ''} {_numbers(heads)} of {n_heads}"


def word_pixel_attention(out, row: int, tokens: list[str], layers: Sequence[int | str] | None = None,
                         heads: Sequence[int | str] | None = None, words: Sequence[str | int] | None = None,
                         max_words: int | None = None) -> tuple[list[str], torch.Tensor]:
    """Heat maps of one text row of a ``PixelBertOutput`` computed with ``output_attentions=True``.

    tokens: the row's L token strings; layers, heads, words: as ``pick_layers_heads`` and
    ``choose_words``. Returns (words, maps (W, h, w)): each map sums to 1 over the row's valid
    pixels and is 0 elsewhere.
    """
    if not out.attentions:
        raise ValueError("run the model with output_attentions=True to draw attention")
    layer_ids, head_ids = pick_layers_heads(len(out.attentions), out.attentions[0].shape[1], layers, heads)
    att = torch.stack([out.attentions[i][row, head_ids] for i in layer_ids]).detach().float().mean(dim=(0, 1))
    L = out.text_length
    valid = out.attention_mask[row, L:]  # (N,)
    grid = out.pixel_grid[out.image_index[row]]  # (h, w)
    h, w = grid.shape
    cells = out.pixel_index[row] if out.pixel_index is not None else torch.arange(h * w, device=att.device)
    chosen = choose_words(tokens[:L], max_words, words)
    maps = torch.zeros(len(chosen), h * w)
    for k, (_, positions) in enumerate(chosen):
        weights = att[positions][:, L:].mean(dim=0) * valid
        weights = weights / weights.sum().clamp(min=1e-12)
        maps[k].index_add_(0, cells[valid].cpu(), weights[valid].cpu())
    return [word for word, _ in chosen], maps.view(len(chosen), h, w)


def heat_colours(x: np.ndarray) -> np.ndarray:
    """[0, 1] -> RGB uint8, the classic blue-cyan-yellow-red (jet) map: 0 coldest, 1 hottest."""
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


def _percent(x: float) -> str:
    return f"{100 * x:.1f}%" if x < 0.1 else f"{100 * x:.0f}%"


def attention_figure(image: torch.Tensor, pixel_mask: torch.Tensor, words: list[str], maps: torch.Tensor,
                     stride: int, title: str, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                     panel: int = 192, source: str | None = None) -> Image.Image:
    """One picture: the image, then one heat-map panel per word (labelled with the share of the
    word's pixel attention on its busiest cell), all on one colour scale drawn as a colour bar
    under them with its range; ``title`` and ``source`` (which layers/heads) on top.

    image (3, H, W) normalised with mean/std, pixel_mask (H, W), maps (W, h, w) on the feature grid.
    """
    base = _to_rgb(image, pixel_mask, mean, std)
    w0, h0 = base.size
    scale = panel / max(w0, h0)
    size = (max(1, round(w0 * scale)), max(1, round(h0 * scale)))
    font = ImageFont.load_default()
    heats = maps.numpy().astype(np.float32)
    # One scale for the row, over the cells that cover the image (the rest is padding, cropped away):
    # panels compare between words, and a flat map stays flat instead of being stretched to full range.
    inside = heats[:, : -(-h0 // stride), : -(-w0 // stride)]
    low, high = (float(inside.min()), float(inside.max())) if inside.size else (0.0, 1.0)
    panels = [(base.resize(size, Image.BILINEAR), "image")]
    for word, heat in zip(words, heats):
        peak = float(heat.max())
        heat = ((heat - low) / max(high - low, 1e-12)).astype(np.float32)
        # Feature cell (r, c) covers input pixels [r*s, (r+1)*s): upscale by the stride, crop to the image.
        grid = Image.fromarray(heat).resize((heat.shape[1] * stride, heat.shape[0] * stride), Image.BILINEAR)
        grid = np.asarray(grid.crop((0, 0, w0, h0)).resize(size, Image.BILINEAR))
        overlay = Image.blend(panels[0][0], Image.fromarray(heat_colours(np.clip(grid, 0, 1))), 0.5)
        panels.append((overlay, f"{word} (max {100 * peak:.0f}%)"))
    width = 8 + len(panels) * (size[0] + 8)
    lines = textwrap.wrap(title, width=max(30, width // 7)) or [""]
    lines += textwrap.wrap(source, width=max(30, width // 7)) if source else []
    line_h, label_h, pad, bar_h = 14, 16, 8, 10
    top = pad + line_h * len(lines)
    bar_y = top + pad + size[1] + label_h + pad
    canvas = Image.new("RGB", (width, bar_y + bar_h + 2 + line_h + pad), "white")
    draw = ImageDraw.Draw(canvas)
    for i, line in enumerate(lines):
        draw.text((pad, pad + i * line_h), line, fill="black", font=font)
    for k, (img, label) in enumerate(panels):
        x = pad + k * (size[0] + pad)
        canvas.paste(img, (x, top + pad))
        draw.text((x, top + pad + size[1] + 2), label, fill="black", font=font)
    bar_w = min(width - 2 * pad, 256)
    bar = heat_colours(np.linspace(0, 1, bar_w, dtype=np.float32))[None].repeat(bar_h, axis=0)
    canvas.paste(Image.fromarray(bar), (pad, bar_y))
    draw.text((pad, bar_y + bar_h + 2), _percent(low), fill="black", font=font)
    right = _percent(high)
    draw.text((pad + bar_w - draw.textlength(right, font=font), bar_y + bar_h + 2), right, fill="black", font=font)
    if bar_w + 3 * pad < width - 150:
        draw.text((2 * pad + bar_w, bar_y), "share of the word's pixel attention per cell", fill="black", font=font)
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
                  layers: Sequence[int] | None = None, heads: Sequence[int] | None = None,
                  words: Sequence[str | int] | None = None, mean=(0.485, 0.456, 0.406),
                  std=(0.229, 0.224, 0.225)) -> list[tuple[str, Image.Image]]:
    """[(name, figure)] for up to ``max_rows`` text rows of one evaluation batch (already on the
    model's device), the model's prediction in each title. VQA: one row per question; NLVR2: both
    rows (left, right image) of each example; retrieval: each image with its first caption.
    layers, heads, words: as ``word_pixel_attention``; a row with none of ``words`` is left out."""
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
    n_layers, n_heads = len(out.attentions), out.attentions[0].shape[1]
    source = source_label(*pick_layers_heads(n_layers, n_heads, layers, heads), n_layers, n_heads)
    figures = []
    for r in rows:
        if len(figures) >= max_rows:
            break
        ids = batch.input_ids[r][batch.attention_mask[r].bool()].tolist()
        tokens = tokenizer.convert_ids_to_tokens(ids)
        tokens += ["[PAD]"] * (batch.input_ids.shape[1] - len(tokens))
        shown, maps = word_pixel_attention(out, r, tokens, layers, heads, words)
        if not shown:
            continue
        text = tokenizer.decode(ids, skip_special_tokens=True)
        img = int(batch.row_images()[r])
        fig = attention_figure(batch.images[img], batch.pixel_mask[img], shown, maps, stride,
                               f"{text} {say[r]}", mean, std, source=source)
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
