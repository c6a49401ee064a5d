"""A run says what it is before DeepSpeed's quiet set-up: loader backend, precision, ranks, ZeRO stage."""

from __future__ import annotations


def test_fine_tuning_starts_with_one_line_naming_backend_precision_ranks_and_zero_stage(finetuned):
    run, out = finetuned("vqa")
    [line] = [x for x in out.splitlines() if x.startswith("training vqa:")]
    # The tiny config: one process on CPU, torch loader, ZeRO off, micro-batch 4.
    assert line.startswith("training vqa: 1 rank on cpu, precision fp32, ZeRO stage 0, loader torch, "
                           "global batch 4 (4 x 1 accumulation x 1 rank), ")
    assert line.endswith(f"-> {run}")
    assert out.index(line) < out.index("step ")  # before the first training step's line
