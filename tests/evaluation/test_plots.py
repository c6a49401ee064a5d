"""The PNG line chart used for accuracy-versus-time curves."""

from __future__ import annotations

import numpy as np
from PIL import Image

from pixelbert.evaluation.plots import line_chart


def test_line_chart_draws_each_series_in_its_own_colour(tmp_path):
    path = line_chart({"a": [(0, 50.0), (10, 90.0)], "b": [(5, 70.0)]}, tmp_path / "sub" / "c.png",
                      xlabel="minutes", ylabel="acc", hline=(93.8, "baseline"), size=(400, 300))
    img = np.asarray(Image.open(path).convert("RGB"))
    assert img.shape == (300, 400, 3)
    colours = {tuple(c) for c in img.reshape(-1, 3)}
    assert (31, 119, 180) in colours and (255, 127, 14) in colours  # series a (line), series b (marker)
    # Series a rises left to right: its colour sits lower (larger row) on the left than on the right.
    rows, cols = np.nonzero((img == (31, 119, 180)).all(-1))
    plot_area = cols < 400 - 16 - 250  # away from the legend swatch
    left, right = rows[plot_area & (cols < 120)], rows[plot_area & (cols > 120)]
    assert left.mean() > right.mean()
