"""The WordPiece tokenizer that goes with the text model (same directory, never downloaded)."""

from __future__ import annotations

from functools import lru_cache

from transformers import AutoTokenizer, PreTrainedTokenizerFast

from pixelbert.config import ModelConfig, resolve_package_path


@lru_cache(maxsize=8)
def _load(path: str) -> PreTrainedTokenizerFast:
    # split_special_tokens: "[SEP]" or "[MASK]" typed in a caption or question is text, tokenized
    # as the words "[", "sep", "]"; only the tokenizer itself adds real special tokens.
    return AutoTokenizer.from_pretrained(path, use_fast=True, local_files_only=True, split_special_tokens=True)


def tokenizer_path(cfg: ModelConfig) -> str:
    """The tokenizer directory: model.tokenizer when set, else model.text_model."""
    path = cfg.tokenizer or cfg.text_model
    if path is None:
        raise ValueError("model.tokenizer or model.text_model must name a local tokenizer directory")
    return resolve_package_path(path)


def load_tokenizer(cfg: ModelConfig) -> PreTrainedTokenizerFast:
    return _load(tokenizer_path(cfg))
