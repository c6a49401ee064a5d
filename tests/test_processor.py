"""pixelbert.Processor: images (paths or PIL) and texts -> the Batch evaluation would make of them.

That it matches the evaluation loader tensor for tensor is tested on real shards in
tests/launcher/test_predict.py; here, what a caller can hand it."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from model_helpers import MINILM
from pixelbert.config import PREPROCESSOR_NAME, ConfigError, ModelConfig
from pixelbert.modeling.tokenizer import load_tokenizer
from pixelbert.processor import Processor

PREPROCESSING = {"image_size": 32, "max_image_size": 48, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25],
                 "max_text_len": 8, "max_image_pixels": 10_000}


@pytest.fixture(scope="module")
def processor() -> Processor:
    return Processor(load_tokenizer(ModelConfig(tokenizer=MINILM)), PREPROCESSING)


def _picture(path, size=(60, 40), orientation: int | None = None) -> Image.Image:
    """A gradient JPEG at ``path`` (EXIF orientation tag when given), opened again as PIL."""
    x = torch.linspace(0, 255, size[0]).repeat(size[1], 1)
    rgb = torch.stack([x, x.flip(1), torch.full_like(x, 90)], dim=-1).to(torch.uint8).numpy()
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    Image.fromarray(rgb, "RGB").save(path, "JPEG", exif=exif.tobytes())
    return Image.open(path)


def test_a_pil_image_and_its_file_give_the_same_tensor_rotated_by_its_exif_tag(processor, tmp_path):
    path = tmp_path / "rotated.jpg"
    pil = _picture(path, orientation=6)  # stored 60 x 40, shown 40 x 60: rotated a quarter turn
    from_file, from_pil = processor.image(path), processor.image(pil)
    assert from_file.shape == (3, 48, 32)  # shorter side 32, longer 48 (not 60 * 32 / 40)
    assert torch.equal(from_file, from_pil)


def test_one_image_serves_every_text(processor, tmp_path):
    batch = processor(_picture(tmp_path / "a.jpg"), ["what shape is it?", "what colour is it?", "is it red?"])
    assert batch.images.shape[0] == 1 and batch.row_images().tolist() == [0, 0, 0]
    assert batch.input_ids.shape[0] == 3 and batch.input_ids.shape[1] <= PREPROCESSING["max_text_len"]


def test_the_same_image_given_twice_is_encoded_once(processor, tmp_path):
    path = tmp_path / "a.jpg"
    _picture(path)
    other = _picture(tmp_path / "b.jpg", size=(40, 60))
    batch = processor([str(path), other, path], ["one", "two", "three"])
    assert batch.images.shape[0] == 2 and batch.row_images().tolist() == [0, 1, 0]
    assert batch.pixel_mask[1].sum() < batch.pixel_mask[0].numel()  # each image keeps its size under padding


def test_images_and_texts_of_different_counts_are_refused(processor, tmp_path):
    a = _picture(tmp_path / "a.jpg")
    with pytest.raises(ValueError, match="2 images for 3 texts"):
        processor([a, a], ["one", "two", "three"])


def test_an_unreadable_image_file_is_named(processor, tmp_path):
    path = tmp_path / "broken.jpg"
    path.write_bytes(b"not an image")
    with pytest.raises(ValueError, match="broken.jpg: corrupt"):
        processor(path, "what is it?")


def test_an_image_over_the_pixel_limit_is_refused_as_the_loaders_refuse_it(processor, tmp_path):
    path = tmp_path / "big.jpg"
    _picture(path, size=(200, 100))  # 20,000 pixels > max_image_pixels
    with pytest.raises(ValueError, match="too_large"):
        processor(path, "what is it?")


def test_save_pretrained_then_from_pretrained_gives_the_same_batches(processor, tmp_path):
    image = _picture(tmp_path / "a.jpg")
    processor.save_pretrained(tmp_path / "export")
    (tmp_path / "export" / "pixelbert_config.json").write_text("{}")  # what marks a saved model folder
    again = Processor.from_pretrained(tmp_path / "export")
    assert again.preprocessing == PREPROCESSING
    first, second = processor(image, "what shape?"), again(image, "what shape?")
    assert torch.equal(first.images, second.images) and torch.equal(first.input_ids, second.input_ids)


def test_an_export_without_preprocessing_says_how_to_make_one(tmp_path):
    (tmp_path / "pixelbert_config.json").write_text("{}")
    with pytest.raises(ConfigError) as err:
        Processor.from_pretrained(tmp_path)
    message = str(err.value)
    assert str(tmp_path / PREPROCESSOR_NAME) in message and "launcher/export.py" in message and "\n" not in message


def test_preprocessing_without_a_key_is_refused():
    with pytest.raises(ConfigError, match="max_text_len"):
        Processor(None, {k: v for k, v in PREPROCESSING.items() if k != "max_text_len"})
