"""Word-to-pixel attention pictures: word choice, the map's layout on the feature grid, the PNG/TensorBoard output."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch
from PIL import Image

from pixelbert.evaluation.visualize import attention_figure, choose_words, save_figures, word_pixel_attention


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
