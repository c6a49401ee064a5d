"""Word-to-pixel attention pictures: word choice, the map's layout on the feature grid, the PNG/TensorBoard output."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageFont

from pixelbert.config import ConfigError
from pixelbert.evaluation.visualize import (attention_figure, choose_words, heat_colours, pick_layers_heads,
                                            save_figures, source_label, word_pixel_attention)


def test_words_join_wordpieces_and_skip_special_tokens_and_punctuation():
    tokens = ["[CLS]", "what", "col", "##or", "is", "the", "sha", "##pe", "?", "[SEP]", "[PAD]"]
    words = choose_words(tokens, max_words=4)
    assert words == [("what", [1]), ("color", [2, 3]), ("is", [4]), ("the", [5])]


def _output(att_to_cell: dict[int, int], grid_hw=(2, 3), valid_hw=(2, 2), text_len=4):
    """A fake PixelBertOutput whose every layer sends text position t's attention to pixel token att_to_cell[t]."""
    h, w = grid_hw
    n = h * w
    S = text_len + n
    att = torch.full((1, 2, S, S), 0.0)
    for t, cell in att_to_cell.items():
        att[0, :, t, text_len + cell] = 1.0
    grid = torch.zeros(1, h, w, dtype=torch.bool)
    grid[0, : valid_hw[0], : valid_hw[1]] = True
    mask = torch.cat([torch.ones(1, text_len, dtype=torch.bool), grid.flatten(1)], dim=1)
    return SimpleNamespace(attentions=(att, att), text_length=text_len, attention_mask=mask, pixel_grid=grid,
                           pixel_index=None, image_index=torch.tensor([0]))


def test_a_word_attending_to_one_pixel_token_lights_that_feature_cell():
    out = _output({1: 4, 2: 1})  # token L+4 is cell (1, 1) of a 2 x 3 grid (row-major); L+1 is (0, 1)
    words, maps = word_pixel_attention(out, 0, ["[CLS]", "red", "circle", "[SEP]"])
    assert words == ["red", "circle"]
    assert maps.shape == (2, 2, 3)
    assert maps[0, 1, 1] == 1.0 and maps[0].sum() == 1.0
    assert maps[1, 0, 1] == 1.0


def test_maps_are_a_distribution_over_valid_pixels_only():
    out = _output({1: 2})  # cell (0, 2) is padding: its weight is dropped, the rest renormalised
    out.attentions[0][0, :, 1, 4:] = 1.0  # spread over all 6 cells, 2 of them padding
    out.attentions[1][0, :, 1, 4:] = 1.0
    _, maps = word_pixel_attention(out, 0, ["[CLS]", "shape", "[SEP]", "[PAD]"])
    assert torch.allclose(maps[0].sum(), torch.tensor(1.0))
    assert maps[0, :, 2].sum() == 0  # the padding column
    assert torch.allclose(maps[0, :, :2], torch.full((2, 2), 0.25))


def test_the_figure_has_the_image_then_one_panel_per_word():
    image = torch.zeros(3, 32, 48)
    mask = torch.ones(32, 48, dtype=torch.bool)
    maps = torch.rand(3, 2, 3)
    fig = attention_figure(image, mask, ["a", "b", "c"], maps, stride=16, title="what is it? -> circle", panel=96)
    assert isinstance(fig, Image.Image)
    assert fig.width == 8 + 4 * (96 + 8)  # image + 3 word panels, 8 px apart


def test_pictures_are_written_as_png_and_tensorboard_images(tmp_path):
    fig = Image.fromarray(np.zeros((20, 30, 3), dtype=np.uint8))
    paths = save_figures([fig, fig], tmp_path / "png", ["q1", "q2"], tensorboard_dir=tmp_path / "tb")
    assert [p.name for p in paths] == ["q1.png", "q2.png"] and all(p.is_file() for p in paths)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"images": 0}).Reload()
    assert sorted(events.Tags()["images"]) == ["attention/q1", "attention/q2"]


def test_real_model_pictures_for_a_vqa_batch(tiny_model):
    """End to end on the tiny model: one picture per question, the prediction in its title."""
    from pixelbert.batch import Batch
    from pixelbert.evaluation.visualize import batch_figures

    class Tok:
        def convert_ids_to_tokens(self, ids):
            return ["[CLS]"] + [f"w{i}" for i in ids[1:-1]] + ["[SEP]"]

        def decode(self, ids, skip_special_tokens=True):
            return " ".join(self.convert_ids_to_tokens(ids)[1:-1])

    g = torch.Generator().manual_seed(0)
    b = Batch(images=torch.randn(2, 3, 64, 64, generator=g), pixel_mask=torch.ones(2, 64, 64, dtype=torch.bool),
              input_ids=torch.tensor([[101, 5, 6, 102], [101, 7, 102, 0]]),
              attention_mask=torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]]),
              meta={"question_ids": [11, 12], "answers": [["yes"], ["no"]]})
    figures = batch_figures(tiny_model, b, Tok(), "vqa", answers=[f"ans{i}" for i in range(5)], max_rows=2)
    assert [name for name, _ in figures] == ["vqa_q11", "vqa_q12"]
    assert all(isinstance(f, Image.Image) for _, f in figures)


# --- every word, a chosen subset, one colour scale per picture, which layers/heads (issue #14) ---

_QUESTION = ["[CLS]", "what", "col", "##or", "is", "the", "shape", "in", "this", "image", "?", "[SEP]"]
_PANEL, _PAD = 96, 8  # attention_figure's panel size (as passed below) and the gap between panels


def test_every_word_of_the_text_is_chosen_by_default():
    words = [w for w, _ in choose_words(_QUESTION)]
    assert words == ["what", "color", "is", "the", "shape", "in", "this", "image"]


def test_words_can_be_chosen_by_text_or_by_position():
    words = choose_words(_QUESTION, words=["COLOR", "5"])  # "color" as text, "shape" as the 5th word
    assert words == [("color", [2, 3]), ("shape", [6])]


def test_heads_and_layers_choose_which_attention_is_averaged():
    out = _output({1: 4})
    out.attentions = (out.attentions[0], out.attentions[1].clone())  # the fake shares one tensor between layers
    out.attentions[1][0, 1, 1] = 0.0
    out.attentions[1][0, 1, 1, 4 + 0] = 1.0  # layer 2, head 2 alone looks at cell (0, 0)
    _, only_that_head = word_pixel_attention(out, 0, ["[CLS]", "red", "[SEP]", "[PAD]"], layers=[2], heads=[2])
    _, both_layers = word_pixel_attention(out, 0, ["[CLS]", "red", "[SEP]", "[PAD]"])
    assert only_that_head[0, 0, 0] == 1.0
    assert both_layers[0, 1, 1] == 0.75 and both_layers[0, 0, 0] == 0.25  # 3 of the 4 (layer, head) pairs


def test_default_attention_is_the_last_two_layers_and_all_heads():
    assert pick_layers_heads(6, 12) == ([4, 5], list(range(12)))


def test_a_layer_or_head_the_model_lacks_is_a_config_error():
    with pytest.raises(ConfigError, match="layers 3: the model has layers 1..2"):
        pick_layers_heads(2, 4, layers=["3"])


def test_the_label_names_the_layers_and_heads():
    assert source_label([0, 1], list(range(12)), 2, 12) == "layers 1-2 of 2, mean of 12 heads"
    assert source_label([3], [0, 2], 4, 4) == "layer 4 of 4, mean of heads 1, 3 of 4"


def _black(h=32, w=48) -> torch.Tensor:
    """A normalised image that is black once drawn (so a panel pixel is half its heat colour)."""
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    return (-mean / std).view(3, 1, 1).expand(3, h, w).clone()


def _heat_at(fig: Image.Image, panel: int, x: int, y: int, top: int) -> float:
    """The heat value a word panel shows at (x, y): its colour matched against the (half-blended) colour map."""
    levels = np.linspace(0, 1, 1001)
    colours = heat_colours(levels).astype(float) / 2
    pixel = np.asarray(fig)[top + y, _PAD + panel * (_PANEL + _PAD) + x].astype(float)
    return float(levels[np.abs(colours - pixel).sum(axis=1).argmin()])


def test_all_panels_of_a_picture_share_one_colour_scale():
    maps = torch.zeros(2, 2, 3)
    maps[0, 0, 0] = 1.0  # "red" puts all its attention on cell (0, 0) ...
    maps[1, 0, 0] = maps[1, 1, 2] = 0.5  # ... "circle" half of it: drawn half as hot there, not as hot
    fig = attention_figure(_black(), torch.ones(32, 48, dtype=torch.bool), ["red", "circle"], maps, stride=16,
                           title="t", panel=_PANEL)
    top = _PAD + 14 + _PAD  # one title line above the panels
    red, circle = _heat_at(fig, 1, 16, 16, top), _heat_at(fig, 2, 16, 16, top)  # cell (0, 0) is 32 px wide
    assert red > 0.9 and abs(circle - 0.5) < 0.1


def _shows_text(fig: Image.Image, text: str) -> bool:
    """Whether ``text``, drawn as attention_figure draws it (black on white), appears in the figure."""
    font = ImageFont.load_default()
    patch = Image.new("L", (int(ImageDraw.Draw(fig).textlength(text, font=font)) + 4, 24), 255)
    ImageDraw.Draw(patch).text((0, 0), text, fill=0, font=font)
    p = np.asarray(patch)
    ys, xs = np.nonzero(p < 255)
    p = p[ys.min(): ys.max() + 1, xs.min(): xs.max() + 1]
    f = np.asarray(fig.convert("L"))
    windows = np.lib.stride_tricks.sliding_window_view(f, p.shape)
    first = int(np.argmax(p[0] < 255))
    candidates = np.argwhere(windows[:, :, 0, first] == p[0, first])
    return any((windows[y, x] == p).all() for y, x in candidates)


def test_the_picture_shows_the_layers_and_heads_and_the_scale_range():
    maps = torch.zeros(2, 2, 3)
    maps[0, 0, 0], maps[1, 1, 1] = 0.6, 0.3
    fig = attention_figure(_black(), torch.ones(32, 48, dtype=torch.bool), ["red", "circle"], maps, stride=16,
                           title="t", panel=_PANEL, source="layers 1-2 of 2, mean of 4 heads")
    assert _shows_text(fig, "layers 1-2 of 2, mean of 4 heads")
    assert _shows_text(fig, "0.0%") and _shows_text(fig, "60%")  # the colour bar's two ends
    assert not _shows_text(fig, "layers 1-2 of 2, mean of 3 heads")


def test_the_picture_has_a_colour_bar_from_coldest_to_hottest():
    fig = attention_figure(_black(), torch.ones(32, 48, dtype=torch.bool), ["red"], torch.rand(1, 2, 3),
                           stride=16, title="t", panel=_PANEL)
    levels = np.linspace(0, 1, 256)
    colours = heat_colours(levels).astype(int)
    pixels = np.asarray(fig).astype(int)
    distance = np.abs(pixels[:, :, None, :] - colours[None, None]).sum(axis=-1)  # (H, W, 256)
    exact, level = distance.min(axis=-1) <= 6, levels[distance.argmin(axis=-1)]
    bars = [y for y in range(pixels.shape[0])
            if exact[y].sum() >= 150 and level[y][exact[y]].min() < 0.05 and level[y][exact[y]].max() > 0.95
            and (np.diff(level[y][exact[y]]) >= -0.01).all()]
    assert bars  # a row of pure colour-map colours running from cold to hot, left to right


class _Tok:
    def convert_ids_to_tokens(self, ids):
        return ["[CLS]"] + [f"w{i}" for i in ids[1:-1]] + ["[SEP]"]

    def decode(self, ids, skip_special_tokens=True):
        return " ".join(self.convert_ids_to_tokens(ids)[1:-1])


def _vqa_batch():
    from pixelbert.batch import Batch

    g = torch.Generator().manual_seed(0)
    return Batch(images=torch.randn(2, 3, 64, 64, generator=g), pixel_mask=torch.ones(2, 64, 64, dtype=torch.bool),
                 input_ids=torch.tensor([[101, 5, 6, 7, 8, 9, 10, 11, 12, 102], [101, 7, 102, 0, 0, 0, 0, 0, 0, 0]]),
                 attention_mask=torch.tensor([[1] * 10, [1, 1, 1] + [0] * 7]),
                 meta={"question_ids": [11, 12], "answers": [["yes"], ["no"]]})


def test_a_real_model_picture_draws_every_word_and_names_its_attention(tiny_model):
    from pixelbert.evaluation.visualize import batch_figures

    (_, fig), = batch_figures(tiny_model, _vqa_batch(), _Tok(), "vqa", max_rows=1)
    assert fig.width == _PAD + 9 * (192 + _PAD)  # the image + all 8 words
    assert _shows_text(fig, "layers 1-2 of 2, mean of 4 heads")


def test_rows_without_a_chosen_word_are_left_out(tiny_model):
    from pixelbert.evaluation.visualize import batch_figures

    figures = batch_figures(tiny_model, _vqa_batch(), _Tok(), "vqa", words=["w9", "w10"], heads=["1"])
    assert [name for name, _ in figures] == ["vqa_q11"]
    assert figures[0][1].width == _PAD + 3 * (192 + _PAD)
