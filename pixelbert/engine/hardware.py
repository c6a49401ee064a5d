"""The one place that looks at the hardware and decides how to run on it.

Everything device-specific the engine needs (device, precision, optimiser kernels,
attention backend, collective backend) is decided here, once, so that the training loop
has no ``if cuda`` branches. DeepSpeed's accelerator abstraction is the source of truth
(``DS_ACCELERATOR=cpu`` forces the CPU path even on a GPU machine).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from pixelbert.config import Config, ConfigError

__all__ = ["Hardware", "detect_hardware", "init_distributed", "free_port"]

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


@dataclass(frozen=True)
class Hardware:
    device: torch.device
    precision: str  # "bf16" | "fp16" | "fp32"
    optimizer_impl: str  # "fused": DeepSpeed FusedAdam; "torch": torch AdamW
    attn_implementation: str  # "sdpa" (flash / memory-efficient kernels on GPU) | "eager"
    dist_backend: str  # "nccl" | "gloo" | ...

    @property
    def dtype(self) -> torch.dtype:
        """Dtype the model computes in (DeepSpeed casts the module; the engine casts images)."""
        return _DTYPES[self.precision]

    @property
    def on_gpu(self) -> bool:
        return self.device.type == "cuda"

    def precision_config(self) -> dict:
        """The ``bf16``/``fp16`` sections of the DeepSpeed config for this precision."""
        if self.precision == "bf16":
            return {"bf16": {"enabled": True}}
        if self.precision == "fp16":
            # Dynamic loss scaling (loss_scale 0): fp16 without it underflows BERT's gradients.
            return {"fp16": {"enabled": True, "loss_scale": 0, "initial_scale_power": 16}}
        return {}


def _accelerator():
    from deepspeed.accelerator import get_accelerator

    return get_accelerator()


def detect_hardware(config: Config, local_rank: int | None = None) -> Hardware:
    """Decide device, precision, optimiser kernels and attention backend for this process.

    Precision "auto" means bf16 on a GPU that supports it (fp16 with loss scaling on older
    GPUs) and fp32 on CPU, where bf16 matmuls are slow on most CPUs and gain nothing.
    An explicit train.precision is honoured; fp16 on CPU is refused (no loss-scaled CPU path).
    """
    acc = _accelerator()
    name = acc.device_name()
    if local_rank is None:
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    on_gpu = name == "cuda"
    device = torch.device(f"cuda:{local_rank}") if on_gpu else torch.device(name)

    precision = config.train.precision
    if precision == "auto":
        if on_gpu:
            precision = "bf16" if acc.is_bf16_supported() else "fp16"
        else:
            precision = "fp32"
    if precision == "fp16" and not on_gpu:
        raise ConfigError(f"{config.source}: 'train.precision' fp16 needs a GPU; use bf16 or fp32 on CPU")

    return Hardware(
        device=device,
        precision=precision,
        optimizer_impl="fused" if on_gpu else "torch",
        # SDPA dispatches to flash / memory-efficient kernels on GPU and to a fused CPU kernel
        # otherwise; "eager" stays available for attention maps (config choice, not hardware).
        attn_implementation=config.model.attn_implementation,
        dist_backend=acc.communication_backend_name(),
    )


def free_port() -> int:
    """A TCP port free on loopback right now (for a rendezvous that names none)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_distributed(hw: Hardware | None = None) -> None:
    """Join (or create) the process group, whoever started us.

    ``deepspeed`` and ``torchrun`` set RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT; a plain
    ``python`` start has none, so this fills in a group of one on loopback. Idempotent.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return
    import deepspeed

    if "RANK" not in os.environ:
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_WORLD_SIZE="1")
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(free_port()))
    backend = hw.dist_backend if hw is not None else _accelerator().communication_backend_name()
    deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=False, verbose=False)
    if hw is not None and hw.on_gpu:
        torch.cuda.set_device(hw.device)
    elif "OMP_NUM_THREADS" not in os.environ:
        # N CPU ranks on one machine would each start one thread per core: share the cores instead.
        local = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("LOCAL_SIZE", "1")))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local))
