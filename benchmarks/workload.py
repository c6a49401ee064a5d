"""The model, batch and step that the throughput benchmarks time, built the same way for all.

Batches are synthetic (random pixels and token ids of the configured shapes), so the step cost
is the model's alone and every benchmark sees identical work. Shapes follow the config:
images of height ``image_size`` and width drawn up to ``max_image_size`` (padded to the largest,
as a batch of COCO-like landscape images is), captions of ``max_text_len`` with a padded tail.
No tokenizer is resolved (``model.tokenizer`` null): token ids are synthetic, and the GPU
machine has no MiniLM package (the data-load benchmark brings its own small vocabulary).
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from pixelbert.batch import IGNORE_INDEX, Batch
from pixelbert.config import Config, load_config

ROOT = Path(__file__).resolve().parents[1]

# The smallest model that still runs every path: for --toy and the schema test.
TOY_OVERRIDES = [
    "model.backbone=resnet18", "model.feature_stage=2", "model.extra_pool=true", "model.pixel_samples=6",
    "model.text_model=null",
    'model.text_config={"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128}',
    "data.image_size=32", "data.max_image_size=48", "data.max_text_len=8", "data.micro_batch_size=4",
]


def bench_config(name: str, toy: bool = False, overrides: list[str] | None = None) -> Config:
    """configs/<name>.json (tiny | r50 | x152), shrunk to the toy model with ``toy``; no tokenizer
    unless ``overrides`` name one."""
    extra = (TOY_OVERRIDES if toy else []) + ["model.tokenizer=null"] + list(overrides or [])
    return load_config(ROOT / "configs" / f"{name}.json", extra)


def image_sizes(cfg: Config, n: int, generator: torch.Generator) -> list[tuple[int, int]]:
    """n (h, w): height image_size, width uniform in [image_size, max_image_size]; one at the max."""
    d = cfg.data
    widths = torch.randint(d.image_size, d.max_image_size + 1, (n,), generator=generator).tolist()
    widths[0] = d.max_image_size
    return [(d.image_size, w) for w in widths]


def synthetic_batch(cfg: Config, batch_size: int | None = None, seed: int = 0, *, vocab: int = 30522,
                    captions_per_image: int = 1) -> Batch:
    """A pre-training Batch: batch_size images, captions_per_image rows each, MLM + ITM labels."""
    g = torch.Generator().manual_seed(seed)
    n = batch_size or cfg.data.micro_batch_size
    sizes = image_sizes(cfg, n, g)
    H, W = max(h for h, _ in sizes), max(w for _, w in sizes)
    images = torch.zeros(n, 3, H, W)
    pixel_mask = torch.zeros(n, H, W, dtype=torch.bool)
    for i, (h, w) in enumerate(sizes):
        images[i, :, :h, :w] = torch.randn(3, h, w, generator=g)
        pixel_mask[i, :h, :w] = True
    rows, length = n * captions_per_image, cfg.data.max_text_len
    input_ids = torch.zeros(rows, length, dtype=torch.long)
    attention_mask = torch.zeros(rows, length, dtype=torch.long)
    mlm_labels = torch.full((rows, length), IGNORE_INDEX, dtype=torch.long)
    for r in range(rows):
        k = int(torch.randint(max(3, length // 2), length + 1, (1,), generator=g))
        input_ids[r, :k] = torch.randint(1000, vocab, (k,), generator=g)
        input_ids[r, 0], input_ids[r, k - 1] = 101, 102
        attention_mask[r, :k] = 1
        masked = torch.rand(k - 2, generator=g) < cfg.data.mlm_probability
        masked[0] = True  # at least one target per row
        pos = torch.nonzero(masked).squeeze(1) + 1
        mlm_labels[r, pos] = input_ids[r, pos]
        input_ids[r, pos] = 103  # [MASK]
    itm = (torch.arange(rows) % 2 == 0).long()
    image_index = torch.arange(rows) // captions_per_image if captions_per_image > 1 else None
    return Batch(images=images, pixel_mask=pixel_mask, input_ids=input_ids, attention_mask=attention_mask,
                 image_index=image_index, mlm_labels=mlm_labels, itm_labels=itm)


def build(cfg: Config, device: torch.device, dtype: torch.dtype, seed: int = 0):
    """(model, task) on device in dtype, train mode."""
    from pixelbert import build_model
    from pixelbert.tasks.pretrain import PretrainTask

    torch.manual_seed(seed)
    model = build_model(cfg).to(device, dtype).train()
    return model, PretrainTask.from_config(cfg)


def clone(model: torch.nn.Module) -> torch.nn.Module:
    return copy.deepcopy(model)


def check_build(cfg: Config) -> str:
    """Build the model of ``cfg`` on the meta device (no memory, no device): what a dry run checks."""
    from pixelbert import build_model

    with torch.device("meta"):
        model = build_model(cfg)
    params = sum(p.numel() for p in model.parameters())
    return (f"{cfg.model.backbone} + BERT {model.bert.config.num_hidden_layers}x{model.hidden_size}: "
            f"{params / 1e6:.1f}M parameters, images {cfg.data.image_size}/{cfg.data.max_image_size}, "
            f"micro-batch {cfg.data.micro_batch_size}")


# ----------------------------------------------------------------------------- FLOPs
def flops_per_step(model, batch: Batch, cfg: Config) -> dict:
    """Model FLOPs of one fwd+bwd on ``batch`` (stated formula, see FLOPS_FORMULA), plus a cross-check.

    CNN: FlopCounterMode over one trunk forward on the padded image tensor, x3 for fwd+bwd.
    Transformer: 6 * P * T for every linear layer it runs (P its non-embedding parameters, T the
    tokens it sees: S = L + K per row in the encoder, K pixels in the projection, masked tokens in
    the MLM decoder), plus 12 * layers * D * S^2 per row for attention scores and mixing (fwd+bwd).
    """
    from torch.utils.flop_counter import FlopCounterMode

    bert = model.bert.config
    rows, L = batch.input_ids.shape
    n_img = batch.images.shape[0]
    with torch.no_grad():
        with FlopCounterMode(display=False) as counter:
            features, sizes = model.backbone(batch.images, None)
        cnn_fwd = counter.get_total_flops()
        h, w = features.shape[-2:]
        cells = (-(-h // 2)) * (-(-w // 2)) if model.visual.pool is not None else h * w
    k = min(model.config.pixel_samples, cells) if model.config.pixel_sampling else cells
    S = L + k
    D, layers = bert.hidden_size, bert.num_hidden_layers
    enc_params = sum(p.numel() for p in model.bert.encoder.parameters())
    proj_params = sum(p.numel() for p in model.visual.proj.parameters())
    masked = int((batch.mlm_labels != IGNORE_INDEX).sum()) if batch.mlm_labels is not None else 0
    mlm_params = 0
    if "mlm" in model.heads:
        head = model.heads["mlm"]
        mlm_params = sum(p.numel() for p in head.dense.parameters()) + head.decoder.weight.numel()
    linear = 6 * (enc_params * rows * S + proj_params * n_img * k + mlm_params * masked)
    attention = 12 * layers * D * S * S * rows
    total = 3 * cnn_fwd + linear + attention
    return {"cnn_fwd_counted": cnn_fwd, "cnn": 3 * cnn_fwd, "transformer_linear": linear, "attention": attention,
            "total": total, "rows": rows, "images": n_img, "seq_len": S, "text_len": L, "pixels_per_image": k,
            "pixel_cells": cells, "encoder_params": enc_params, "masked_tokens": masked}


FLOPS_FORMULA = (
    "FLOPs/step = 3 x CNN forward FLOPs (torch.utils.flop_counter.FlopCounterMode, one trunk forward on the "
    "padded images) + 6 x P x T over the transformer's linear layers (encoder: P = encoder params, T = rows x "
    "(L + K); pixel projection: T = images x K; MLM decoder: T = masked tokens) + 12 x layers x D x S^2 x rows "
    "for attention (S = L + K). Padding counts: the hardware computes it."
)


def counted_flops(model, task, batch: Batch) -> int:
    """Cross-check: FlopCounterMode over one full fwd+bwd (loss included)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        loss, _ = task.loss(model, batch)
        loss.backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


# ----------------------------------------------------------------------------- steps
def plain_step_fn(model, task, batch: Batch, optimizer, grad_clip: float):
    """The plain PyTorch loop: loss, backward, clip, step, zero_grad, in the model's own dtype
    (bf16 on GPU, as the DeepSpeed engine computes; fp32 on CPU)."""

    def step():
        loss, _ = task.loss(model, batch)
        loss.backward()
        if grad_clip and not getattr(optimizer, "max_grad_norm", None):
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    return step


def engine_step_fn(engine, task, batch: Batch):
    """What the trainer runs per micro-batch: task loss through the DeepSpeed engine, backward, step."""

    def step():
        loss, _ = task.loss(engine, batch)
        engine.backward(loss)
        engine.step()
        return loss

    return step


def make_engine(model, cfg: Config, zero: int):
    """DeepSpeed engine as pixelbert's trainer builds it (``build_engine``), at ZeRO stage ``zero``,
    one micro-batch per step."""
    import torch.distributed as dist

    from pixelbert.engine.hardware import detect_hardware, init_distributed
    from pixelbert.engine.trainer import build_engine, plan_batch

    cfg = copy.deepcopy(cfg)
    cfg.train.global_batch_size = None
    cfg.train.gradient_accumulation = 1
    cfg.deepspeed = {**cfg.deepspeed, "zero_optimization": {**cfg.deepspeed.get("zero_optimization", {}), "stage": zero}}
    hw = detect_hardware(cfg)
    init_distributed(hw)
    engine, _, _ = build_engine(model, cfg, hw, plan_batch(cfg, dist.get_world_size()), steps_per_epoch=1)
    return engine, hw


def plain_optimizer(model, cfg: Config, on_gpu: bool, adamw_impl: str | None = None):
    """The same SplitOptimizer the engine gets (SGD for the CNN, AdamW for the rest, the AdamW kernel
    the hardware decision picks unless ``adamw_impl`` names one), clipping itself."""
    from pixelbert.engine.hardware import adamw_impl as chosen
    from pixelbert.engine.optim import build_optimizer

    return build_optimizer(model, cfg.train, adamw_impl=adamw_impl or chosen(on_gpu), max_grad_norm=cfg.train.grad_clip)
