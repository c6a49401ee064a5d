"""Pixel-BERT: image pixels and text in one BERT encoder.

    from pixelbert import load_config, build_model
    cfg = load_config("configs/tiny.json", ["model.pixel_samples=50"])
    model = build_model(cfg)                  # PixelBert
    out = model(batch, sample_pixels=True)    # PixelBertOutput
    model.save_pretrained("runs/export"); PixelBert.from_pretrained("runs/export")
    batch = Processor.from_pretrained(run_dir)(images, texts)   # a run's export: its preprocessing
    model.predict_vqa(batch), model.predict_itm(batch)          # (answer, probability), P(match)

Model names load lazily, so ``import pixelbert.config`` stays light (no transformers import).
"""

from pixelbert.batch import Batch
from pixelbert.config import Config, ConfigError, load_config

__all__ = [
    "load_config",
    "Config",
    "ConfigError",
    "build_model",
    "PixelBert",
    "PixelBertOutput",
    "Batch",
    "load_tokenizer",
    "Processor",
]

_LAZY = {
    "build_model": "pixelbert.modeling.model",
    "PixelBert": "pixelbert.modeling.model",
    "PixelBertOutput": "pixelbert.modeling.model",
    "load_tokenizer": "pixelbert.modeling.tokenizer",
    "Processor": "pixelbert.processor",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'pixelbert' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
