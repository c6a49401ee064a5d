"""Session fixtures built on tests/model_helpers.py (import helpers from there, not from conftest:
several conftest modules exist and ``from conftest import`` picks whichever loaded first)."""

from __future__ import annotations

import pytest
import torch

from model_helpers import MINILM, TINY_BERT, make_batch, tiny_model_config  # noqa: F401
from pixelbert.config import ModelConfig


@pytest.fixture
def tiny_config() -> ModelConfig:
    return tiny_model_config()


@pytest.fixture(scope="session")
def tiny_model():
    """One eval-mode tiny PixelBert per session; tests that train or mutate it must build their own."""
    from pixelbert import build_model

    torch.manual_seed(0)
    return build_model(tiny_model_config()).eval()
