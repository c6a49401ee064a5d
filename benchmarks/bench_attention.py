"""Eager attention vs scaled_dot_product_attention inside a transformers BertModel, fwd+bwd.

The joint sequence is 40 text tokens + pixel tokens: 100 (pre-training with random sampling),
273 (all 13x21 pooled pixels of an 800x1333 image), 1050 (no extra pooling, 25x42). Attention is
quadratic in that length, so this is where the backend choice matters.
"""

from __future__ import annotations

import warnings

import torch
from transformers import BertConfig, BertModel

from benchmarks import harness

METHOD = (
    "BertModel (inputs_embeds, max_position_embeddings raised to the length) in train mode, one "
    "fwd+bwd of mean(out^2) per call; text part of row 0 half padded so the attention mask is real. "
    "Variants alternate after warm-up; ratio = median over rounds of t(eager)/t(sdpa). "
    "sdpa = transformers' sdpa path with torch's default kernel choice; sdpa[X] forces kernel X; *_p0 = the "
    "same with attention dropout 0 (compared with eager_p0). BERT's attention dropout 0.1 otherwise."
)
TARGETS = ["SDPA never slower than eager (all lengths)", "SDPA faster than eager from 40+273 tokens up"]
TEXT = 40


def _sizes(ctx: harness.Context) -> dict:
    if ctx.toy:
        return dict(hidden=32, heads=2, ffn=64, layers=1, batch=2, pixels=[10, 27, 105], text=8, no_dropout_variants=True)
    if ctx.on_gpu or ctx.dry_run:  # BERT-base, the full 12 layers, the paper's micro-batch
        return dict(hidden=768, heads=12, ffn=3072, layers=12, batch=32, pixels=[100, 273, 1050], text=TEXT,
                    no_dropout_variants=False)
    # CPU: torch's fused CPU kernel refuses dropout, so training-mode SDPA falls back to the math kernel;
    # the *_p0 pair (attention dropout 0) shows what the fused kernel would give.
    return dict(hidden=768, heads=12, ffn=3072, layers=1, batch=2, pixels=[100, 273, 1050], text=TEXT,
                no_dropout_variants=True)


def prepare(ctx: harness.Context) -> list[str]:
    s = _sizes(ctx)
    length = s["text"] + max(s["pixels"])
    cfg = BertConfig(hidden_size=s["hidden"], num_attention_heads=s["heads"], intermediate_size=s["ffn"],
                     num_hidden_layers=s["layers"], max_position_embeddings=length, vocab_size=128,
                     attn_implementation="sdpa")
    with torch.device("meta"):
        params = sum(p.numel() for p in BertModel(cfg, add_pooling_layer=False).parameters())
    return [f"BertModel {s['layers']}x{s['hidden']} ({params / 1e6:.1f}M parameters) builds at up to {length} tokens; "
            f"SDPA kernels to force: {', '.join(_backends(ctx)) or 'none'}"]


def _backends(ctx: harness.Context) -> list[str]:
    from torch.nn.attention import SDPBackend

    names = ["FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION", "MATH"]
    if ctx.toy:
        names = ["MATH"]  # exercises the forcing path
    elif not (ctx.on_gpu or ctx.dry_run):
        names = []  # CPU: math with dropout, the fused CPU kernel without (the *_p0 pair): nothing left to force
    return [n for n in names if hasattr(SDPBackend, n)]


def _step_fn(model: BertModel, x: torch.Tensor, mask: torch.Tensor, backend: str | None):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    def step():
        model.zero_grad(set_to_none=True)  # each call allocates fresh grads, as a training step does
        if backend is None:
            out = model(inputs_embeds=x, attention_mask=mask).last_hidden_state
        else:
            with sdpa_kernel(getattr(SDPBackend, backend)):
                out = model(inputs_embeds=x, attention_mask=mask).last_hidden_state
        out.float().pow(2).mean().backward()

    return step


def run(ctx: harness.Context) -> dict:
    # torch explains every fallback to the math kernel once per call; the notes say it once.
    warnings.filterwarnings("ignore", message=".*(kernel not used because|do not support non-zero dropout).*")
    s = _sizes(ctx)
    dev, dtype = ctx.device, ctx.dtype
    torch.manual_seed(0)
    table, cases, notes = [], [], []
    ratios: dict[int, float] = {}
    ratios_p0: dict[int, float] = {}
    mratios: dict[int, float] = {}
    for n_pix in s["pixels"]:
        length = s["text"] + n_pix
        models = {}
        for impl, p_drop in (("eager", 0.1), ("sdpa", 0.1), ("eager_p0", 0.0), ("sdpa_p0", 0.0)):
            if p_drop == 0.0 and not s["no_dropout_variants"]:
                continue
            cfg = BertConfig(hidden_size=s["hidden"], num_attention_heads=s["heads"], intermediate_size=s["ffn"],
                             num_hidden_layers=s["layers"], max_position_embeddings=length, vocab_size=128,
                             attention_probs_dropout_prob=p_drop, attn_implementation=impl.split("_")[0])
            torch.manual_seed(0)
            models[impl] = BertModel(cfg, add_pooling_layer=False).to(dev, dtype).train()
        x = torch.randn(s["batch"], length, s["hidden"], device=dev, dtype=dtype)
        mask = torch.ones(s["batch"], length, dtype=torch.long, device=dev)
        mask[0, s["text"] // 2 : s["text"]] = 0  # a padded caption
        variants = {name: _step_fn(m, x, mask, None) for name, m in models.items()}
        unavailable = {}
        for b in _backends(ctx):
            fn = _step_fn(models["sdpa"], x, mask, b)
            try:
                fn()
                variants[f"sdpa[{b.lower()}]"] = fn
            except RuntimeError as e:  # kernel not built for this device/dtype/mask
                unavailable[b.lower()] = str(e).splitlines()[0][:160]
        timing = harness.compare(variants, repeats=ctx.repeats, warmup=ctx.warmup, sync=ctx.sync)
        mem = {}
        for name, fn in variants.items():
            for m in models.values():  # free old grads outside the measured call: every call allocates its own
                m.zero_grad(set_to_none=True)
            mem[name] = harness.peak_memory(fn, dev)
        ratios[n_pix] = harness.paired_ratio(timing, "eager", "sdpa")
        mratios[n_pix] = harness.median_ratio(timing, "eager", "sdpa")
        if "sdpa_p0" in variants:
            ratios_p0[n_pix] = harness.paired_ratio(timing, "eager_p0", "sdpa_p0")
        # Each variant against the eager model with the same dropout.
        ref = {name: ("eager_p0" if name.endswith("_p0") else "eager") for name in variants}
        for name in variants:
            v = timing["variants"][name]
            table.append({"tokens": f"{s['text']}+{n_pix}", "variant": name, "median_ms": v["median_s"] * 1e3,
                          "iqr_rel": harness.spread(timing, name),
                          "eager/variant time": harness.paired_ratio(timing, ref[name], name),
                          "peak_MiB": mem[name] / 2**20, "eager/variant mem": mem[ref[name]] / max(mem[name], 1)})
        cases.append({"tokens": length, "text": s["text"], "pixels": n_pix, "timing": timing, "peak_bytes": mem,
                      "unavailable_backends": unavailable})
        for b, why in unavailable.items():
            notes.append(f"{s['text']}+{n_pix}: sdpa[{b}] not available here: {why}")
        del models
    long = [p for p in s["pixels"] if p >= (27 if ctx.toy else 273)]
    worst = min(ratios.values())
    spreads = max(r["iqr_rel"] for r in table)
    worst_long = min(ratios[p] for p in long)

    def bound(cases: list[int]) -> str:
        p = min(cases, key=ratios.get)
        text = f"worst at {s['text']}+{p} tokens (eager/sdpa {ratios[p]:.2f}); "
        if not ctx.on_gpu:
            text += ("on CPU torch's fused SDPA kernel refuses attention dropout, so in training SDPA runs the math "
                     "kernel, the same arithmetic as eager")
            if ratios_p0:
                text += " (without dropout, fused kernel: eager/sdpa " + ", ".join(
                    f"{s['text']}+{k} {v:.2f}" for k, v in ratios_p0.items()) + ")"
        else:
            text += f"there the attention matrix is small next to the {s['hidden']}-wide projections and FFN"
        return text + f"; timing spread (IQR/median) up to {spreads:.0%} on this machine"

    targets = [
        harness.target(TARGETS[0], worst, 1.0, why="" if worst >= 1.0 else bound(list(ratios)),
                       cross_check=min(mratios.values())),
        harness.target(TARGETS[1], worst_long, 1.05, why="" if worst_long >= 1.05 else bound(long),
                       cross_check=min(mratios[p] for p in long)),
    ]
    notes.append(f"dims: hidden {s['hidden']}, {s['heads']} heads, {s['layers']} layer(s), batch {s['batch']}, {dtype}")
    notes.append("memory: " + harness.memory_method(dev))
    return {"method": METHOD, "cases": cases, "table": table, "targets": targets, "notes": notes,
            "config": s, "ratios_eager_over_sdpa": {f"{s['text']}+{k}": v for k, v in ratios.items()},
            "ratios_eager_over_sdpa_no_dropout": {f"{s['text']}+{k}": v for k, v in ratios_p0.items()}}
