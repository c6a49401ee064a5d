"""Task heads on the joint hidden states: MLM (tied decoder), ITM, VQA, NLVR2; and one on the
CNN alone, WORDS (the caption words an image shows: the CNN pre-training stage).

Heads take hidden-state tensors, not batches; PixelBert's ``*_logits`` methods pick the
positions ([CLS], text tokens) so tasks need not know the sequence layout.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import BertConfig
from transformers.activations import ACT2FN

from pixelbert.config import HEAD_NAMES

__all__ = ["MLMHead", "ITMHead", "VQAHead", "NLVR2Head", "WordsHead", "build_heads", "init_bert_weights"]


def init_bert_weights(module: nn.Module, std: float) -> None:
    """BERT's initialisation: N(0, std) weights, zero biases, LayerNorm (1, 0)."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=std)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class MLMHead(nn.Module):
    """hidden (..., D) -> vocabulary logits (..., V); the decoder shares the word embeddings."""

    def __init__(self, config: BertConfig, word_embeddings: nn.Embedding):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.act = ACT2FN[config.hidden_act]
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))
        init_bert_weights(self, config.initializer_range)
        self.decoder.weight = word_embeddings.weight  # tied: one Parameter, one storage

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.norm(self.act(self.dense(hidden)))) + self.bias


class ITMHead(nn.Module):
    """[CLS] (B, D) -> (B, 2) logits (0: no match, 1: match), after a BERT-pooler dense+tanh."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.pooler = nn.Sequential(nn.Linear(config.hidden_size, config.hidden_size), nn.Tanh())
        self.classifier = nn.Linear(config.hidden_size, 2)
        init_bert_weights(self, config.initializer_range)

    def forward(self, cls: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pooler(cls))


def _mlp(d_in: int, d_hidden: int, d_out: int, eps: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(d_in, d_hidden), nn.GELU(), nn.LayerNorm(d_hidden, eps=eps), nn.Linear(d_hidden, d_out)
    )


class VQAHead(nn.Module):
    """[CLS] (B, D) -> (B, A) answer logits (trained with BCE on soft scores): D -> 2D -> A."""

    def __init__(self, config: BertConfig, num_answers: int):
        super().__init__()
        d = config.hidden_size
        self.mlp = _mlp(d, 2 * d, num_answers, config.layer_norm_eps)
        init_bert_weights(self, config.initializer_range)

    def forward(self, cls: torch.Tensor) -> torch.Tensor:
        return self.mlp(cls)


class NLVR2Head(nn.Module):
    """[CLS] of rows (2i, 2i+1) (B, D) -> (B/2, 2): the two images of one sentence, concatenated."""

    def __init__(self, config: BertConfig):
        super().__init__()
        d = config.hidden_size
        self.mlp = _mlp(2 * d, 2 * d, 2, config.layer_norm_eps)
        init_bert_weights(self, config.initializer_range)

    def forward(self, cls: torch.Tensor) -> torch.Tensor:
        if cls.shape[0] % 2:
            raise ValueError(f"NLVR2 needs pairs of rows (sentence with image0, image1); got {cls.shape[0]} rows")
        return self.mlp(cls.reshape(cls.shape[0] // 2, 2 * cls.shape[1]))


class WordsHead(nn.Module):
    """CNN feature map averaged over the image (I, C) -> (I, V) vocabulary logits: which words
    a caption of this image uses. A linear classifier, so what it reads must be in the CNN."""

    def __init__(self, channels: int, vocab_size: int, std: float):
        super().__init__()
        self.classifier = nn.Linear(channels, vocab_size)
        init_bert_weights(self, std)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.classifier(pooled)


def build_heads(
    names: list[str], config: BertConfig, word_embeddings: nn.Embedding, num_answers: int, cnn_channels: int
) -> nn.ModuleDict:
    """The heads named in ``model.heads`` (any of config.HEAD_NAMES)."""
    makers = {
        "mlm": lambda: MLMHead(config, word_embeddings),
        "itm": lambda: ITMHead(config),
        "vqa": lambda: VQAHead(config, num_answers),
        "nlvr2": lambda: NLVR2Head(config),
        "words": lambda: WordsHead(cnn_channels, config.vocab_size, config.initializer_range),
    }
    unknown = [n for n in names if n not in HEAD_NAMES]
    if unknown:
        raise ValueError(f"unknown heads {unknown} (known: {', '.join(HEAD_NAMES)})")
    return nn.ModuleDict({name: makers[name]() for name in names})
