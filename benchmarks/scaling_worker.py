"""One rank of the scaling benchmark; started by torchrun from bench_scaling (not run by hand).

Builds the model and DeepSpeed engine as the trainer does, takes warm-up steps, then times
``--steps`` steps between two barriers and (rank 0) writes {world_size, seconds, samples/s}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def measure(config: str, toy: bool, steps: int, warmup: int) -> dict:
    """Time ``steps`` engine steps on every rank of the current process group (world size 1 is fine)."""
    import torch
    import torch.distributed as dist

    from benchmarks import workload
    from pixelbert.engine.trainer import zero_stage

    cfg = workload.bench_config(config, toy=toy)
    model, task = workload.build(cfg, torch.device("cpu"), torch.float32)
    engine, hw = workload.make_engine(model, cfg, zero_stage(cfg))
    sync = torch.cuda.synchronize if hw.on_gpu else (lambda: None)
    world, rank = dist.get_world_size(), dist.get_rank()
    batch = workload.synthetic_batch(cfg, seed=rank).to(hw.device, hw.dtype)
    step = workload.engine_step_fn(engine, task, batch)
    for _ in range(warmup):
        step()
    sync()
    dist.barrier()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    dist.barrier()
    seconds = time.perf_counter() - t0
    samples = cfg.data.micro_batch_size * world * steps
    return {"world_size": world, "steps": steps, "seconds": seconds, "samples_per_s": samples / seconds,
            "threads_per_rank": torch.get_num_threads(), "zero_stage": zero_stage(cfg),
            "precision": hw.precision, "micro_batch": cfg.data.micro_batch_size}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="tiny")
    ap.add_argument("--toy", action="store_true")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    import torch

    torch.set_num_threads(1)  # CPU: one core per rank, as one GPU per rank
    result = measure(a.config, a.toy, a.steps, a.warmup)
    if int(os.environ.get("RANK", "0")) == 0:
        a.out.write_text(json.dumps(result))


if __name__ == "__main__":
    main()
