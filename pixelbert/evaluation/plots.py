"""A small line chart as PNG with Pillow (already a torchvision dependency; matplotlib is not in the stack).

Used for accuracy-versus-time curves in result folders and the README.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

__all__ = ["line_chart"]

_COLORS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189)]


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    step = (hi - lo) / n
    return [lo + i * step for i in range(n + 1)]


def line_chart(series: dict[str, list[tuple[float, float]]], path: str | Path, *, xlabel: str, ylabel: str,
               title: str = "", hline: tuple[float, str] | None = None, size: tuple[int, int] = (720, 440)) -> Path:
    """Draw ``{label: [(x, y), ...]}`` as lines with markers; ``hline``: (y, label) reference line."""
    W, H = size
    left, right, top, bottom = 64, 16, 36, 64
    font = ImageFont.load_default()
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    points = [p for pts in series.values() for p in pts]
    ys = [y for _, y in points] + ([hline[0]] if hline else [])
    x0, x1 = 0.0, max([x for x, _ in points] + [1e-9]) * 1.05
    y0, y1 = min(ys), max(ys)
    pad = max(1.0, (y1 - y0) * 0.08)
    y0, y1 = y0 - pad, y1 + pad

    def xy(x: float, y: float) -> tuple[float, float]:
        return (left + (x - x0) / (x1 - x0) * (W - left - right), top + (y1 - y) / (y1 - y0) * (H - top - bottom))

    for t in _ticks(y0, y1):
        px, py = xy(x0, t)
        d.line([(left, py), (W - right, py)], fill=(230, 230, 230))
        d.text((4, py - 6), f"{t:.1f}", fill="black", font=font)
    for t in _ticks(x0, x1):
        px, py = xy(t, y0)
        d.line([(px, top), (px, H - bottom)], fill=(230, 230, 230))
        d.text((px - 10, H - bottom + 6), f"{t:.0f}", fill="black", font=font)
    d.rectangle([left, top, W - right, H - bottom], outline="black")
    if hline:
        _, py = xy(x0, hline[0])
        d.line([(left, py), (W - right, py)], fill=(120, 120, 120), width=1)
        d.text((left + 4, py - 12), hline[1], fill=(90, 90, 90), font=font)
    legend_y = top + 6
    for i, (label, pts) in enumerate(series.items()):
        color = _COLORS[i % len(_COLORS)]
        coords = [xy(x, y) for x, y in pts]
        if len(coords) > 1:
            d.line(coords, fill=color, width=2)
        for cx, cy in coords:
            d.ellipse([cx - 3, cy - 3, cx + 3, cy + 3], fill=color)
        d.rectangle([W - right - 250, legend_y + 2, W - right - 242, legend_y + 10], fill=color)
        d.text((W - right - 236, legend_y), label, fill="black", font=font)
        legend_y += 14
    d.text((left, 10), title, fill="black", font=font)
    d.text((left + (W - left - right) // 2 - 3 * len(xlabel), H - 24), xlabel, fill="black", font=font)
    d.text((4, 10 if not title else 22), ylabel, fill="black", font=font)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path
