"""Fixtures: tiny raw datasets in every real format, their shards, loader configs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from data_pipeline.build_shards import build_shards
from pixelbert.config import Config, config_from_dict

from fake_datasets import WRITERS  # tests/data_pipeline is on sys.path (rootdir conftest mode)

from data_helpers import BACKENDS, MINILM, assert_same_batch, make_config  # noqa: F401


@pytest.fixture(scope="session")
def raw_root(tmp_path_factory):
    """raw_root(name) -> a folder holding a tiny copy of dataset ``name`` as downloaded."""
    cache: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in cache:
            root = tmp_path_factory.mktemp(f"raw_{name}")
            WRITERS[name](root)
            cache[name] = root
        return cache[name]

    return get


@pytest.fixture(scope="session")
def shards(tmp_path_factory, raw_root):
    """shards(name) -> the shards folder of dataset ``name`` (3 records per shard, so several shards)."""
    cache: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in cache:
            out = tmp_path_factory.mktemp(f"shards_{name}") / "out"
            build_shards(name, raw_root(name), out, shard_size=3, workers=1, progress=False)
            cache[name] = out
        return cache[name]

    return get


@pytest.fixture(scope="session")
def tokenizer():
    from pixelbert.config import ModelConfig
    from pixelbert.modeling.tokenizer import load_tokenizer

    return load_tokenizer(ModelConfig(text_model=MINILM))
