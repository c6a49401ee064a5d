"""Processor: images and texts as a user holds them -> the Batch the model reads, as evaluation makes it.

    from pixelbert import PixelBert, Processor
    model = PixelBert.from_pretrained("runs/easyvqa_vqa")          # a run folder or its export/
    processor = Processor.from_pretrained("runs/easyvqa_vqa")      # tokenizer + image preprocessing
    batch = processor(["photo.png"], ["What color is the shape?"])  # image paths or PIL images
    answers = model.predict_vqa(batch)                             # [(answer, probability), ...]

It runs the evaluation loaders' own steps, not copies of them (``decode_image`` / ``oriented_rgb``,
``image_to_tensor``, ``pad_images``, ``tokenize``), with the values an export saves beside the
weights in ``preprocessor_config.json`` (``config.PREPROCESSING_KEYS`` of the run's data section).
The data pipeline is imported only when images are processed, so writing that file (the export,
in the engine) does not load it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import torch

from pixelbert.batch import Batch
from pixelbert.config import PREPROCESSING_KEYS, PREPROCESSOR_NAME, Config, ConfigError, DataConfig, read_json_object

__all__ = ["Processor", "preprocessing_values", "save_preprocessing"]


def preprocessing_values(data: DataConfig | dict) -> dict[str, Any]:
    """The PREPROCESSING_KEYS values of a data section (or of a dict holding them)."""
    return {k: (data[k] if isinstance(data, dict) else getattr(data, k)) for k in PREPROCESSING_KEYS}


def save_preprocessing(data: DataConfig | dict, directory: str | Path) -> Path:
    """Write ``preprocessor_config.json`` into ``directory``: the preprocessing values of ``data``."""
    path = Path(directory) / PREPROCESSOR_NAME
    path.write_text(json.dumps(preprocessing_values(data), indent=2) + "\n")
    return path


class Processor:
    """Tokenizer + image preprocessing of one model. ``preprocessing``: the PREPROCESSING_KEYS values."""

    def __init__(self, tokenizer, preprocessing: dict[str, Any]):
        missing = [k for k in PREPROCESSING_KEYS if k not in preprocessing]
        if missing:
            raise ConfigError(f"preprocessing lacks {', '.join(missing)}")
        self.tokenizer = tokenizer
        self.preprocessing = preprocessing_values(preprocessing)

    @classmethod
    def from_config(cls, config: Config) -> "Processor":
        """The processor of a run config: its model's tokenizer, its data section's preprocessing."""
        from pixelbert.modeling.tokenizer import load_tokenizer

        return cls(load_tokenizer(config.model), preprocessing_values(config.data))

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> "Processor":
        """The processor saved with an export (or a run folder's ``export/``)."""
        from pixelbert.config import ModelConfig
        from pixelbert.modeling.model import pretrained_dir
        from pixelbert.modeling.tokenizer import load_tokenizer

        directory = pretrained_dir(directory)
        path = directory / PREPROCESSOR_NAME
        if not path.is_file():
            raise ConfigError(f"{path}: not found (an export made before it was saved; export the run again with "
                              "python launcher/export.py RUN_DIR OUT_DIR, or use Processor.from_config(load_config(...)))")
        if not (directory / "tokenizer_config.json").is_file():
            raise ConfigError(f"{directory}: no tokenizer files beside the weights")
        raw = read_json_object(path, "preprocessor config")
        unknown = sorted(set(raw) - set(PREPROCESSING_KEYS))
        if unknown:
            raise ConfigError(f"{path}: unknown key '{unknown[0]}' (known: {', '.join(PREPROCESSING_KEYS)})")
        try:
            return cls(load_tokenizer(ModelConfig(tokenizer=str(directory))), raw)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write preprocessor_config.json and the tokenizer files into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_preprocessing(self.preprocessing, directory)
        self.tokenizer.save_pretrained(str(directory))
        return directory

    def image(self, image):
        """One image (a path or a PIL image) -> (3, h, w) float tensor, resized and normalised."""
        from PIL import Image

        from data_pipeline.images import decode_image, image_to_tensor, oriented_rgb
        from data_pipeline.records import BadSample

        p = self.preprocessing
        if isinstance(image, (str, Path)):
            try:
                rgb = decode_image(Path(image).read_bytes(), p["max_image_pixels"])
            except BadSample as e:
                raise ValueError(f"{image}: {e}") from None
        elif isinstance(image, Image.Image):
            rgb = oriented_rgb(image)
        else:
            raise TypeError(f"an image is a path or a PIL image, got {type(image).__name__}")
        return image_to_tensor(rgb, p["image_size"], p["max_image_size"], p["mean"], p["std"])

    def __call__(self, images, texts: str | Sequence[str]) -> Batch:
        """Images (one, or a list) and texts (one, or a list) -> Batch, text row i with image i
        (one image: every text with it). The same image given twice is encoded once."""
        from data_pipeline.collate import pad_images, tokenize

        images = list(images) if isinstance(images, (list, tuple)) else [images]
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not images or not texts:
            raise ValueError("give at least one image and one text")
        if len(images) not in (1, len(texts)):
            raise ValueError(f"{len(images)} images for {len(texts)} texts: give one image per text, or one image")
        slots: dict[Any, int] = {}
        tensors, image_index = [], []
        for row in range(len(texts)):
            image = images[row if len(images) > 1 else 0]
            key = str(Path(image)) if isinstance(image, (str, Path)) else id(image)
            if key not in slots:
                slots[key] = len(tensors)
                tensors.append(self.image(image))
            image_index.append(slots[key])
        pixels, pixel_mask = pad_images(tensors)
        enc = tokenize(self.tokenizer, texts, self.preprocessing["max_text_len"])
        return Batch(images=pixels, pixel_mask=pixel_mask, input_ids=enc["input_ids"],
                     attention_mask=enc["attention_mask"], image_index=torch.tensor(image_index, dtype=torch.long),
                     meta={"texts": texts})
