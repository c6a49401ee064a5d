"""The one place that looks at the hardware and decides how to run on it.

Everything device-specific the engine needs (device, precision, optimiser kernels,
attention backend, collective backend) is decided here, once, so that the training loop
has no ``if cuda`` branches. DeepSpeed's accelerator abstraction is the source of truth
(``DS_ACCELERATOR=cpu`` forces the CPU path even on a GPU machine).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Callable

import torch

from pixelbert.config import Config, ConfigError

__all__ = ["Hardware", "detect_hardware", "adamw_impl", "init_distributed", "free_port", "check_rendezvous_port",
           "comm_op_build_notice", "usable_cores"]

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


@dataclass(frozen=True)
class Hardware:
    device: torch.device
    precision: str  # "bf16" | "fp16" | "fp32"
    optimizer_impl: str  # the AdamW kernel: a key of engine.optim.ADAMW_IMPLS (see adamw_impl)
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

    def read_later(self, tensor: torch.Tensor) -> Callable[[], list]:
        """Start copying a small tensor to the host; the returned call waits for that copy alone.

        On CUDA the copy goes to pinned memory behind an event, so the GPU work queued after it
        (a backward, an optimiser step) runs on while the host reads the values: no stall.
        """
        if not self.on_gpu:
            return tensor.tolist
        host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
        host.copy_(tensor, non_blocking=True)
        copied = torch.cuda.Event()
        copied.record()

        def read() -> list:
            copied.synchronize()
            return host.tolist()

        return read

    def describe(self) -> dict[str, str]:
        """The decisions in words (TensorBoard's config text, the start-up line)."""
        from pixelbert.engine.optim import ADAMW_IMPLS

        return {"device": str(self.device), "precision": self.precision, "adamw": ADAMW_IMPLS[self.optimizer_impl],
                "attention": self.attn_implementation, "collectives": self.dist_backend}


def usable_cores() -> int:
    """CPU cores this process may run on: its affinity mask (a container or ``taskset`` limit), not
    the machine's count, which would start threads on cores the process can never use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def adamw_impl(on_gpu: bool) -> str:
    """The AdamW kernel for this process: on CUDA, DeepSpeed's FusedAdam when it loads (prebuilt,
    or JIT-built once with nvcc and ninja into TORCH_EXTENSIONS_DIR), else torch's own fused
    AdamW, which needs no build; on CPU torch's fused AdamW too, one pass over each parameter
    where the default runs one per arithmetic op (benchmarks/bench_engine.py times the three)."""
    if not on_gpu:
        return "torch_fused"
    return "deepspeed_fused" if _deepspeed_fused_adam_loads() else "torch_fused"


@functools.lru_cache(maxsize=None)
def _deepspeed_fused_adam_loads() -> bool:
    try:
        from deepspeed.ops.op_builder import FusedAdamBuilder

        FusedAdamBuilder().load(verbose=False)
        return True
    except Exception as e:  # noqa: BLE001 - no compiler, no ninja, a failed build: the fallback runs
        print(f"DeepSpeed FusedAdam cannot be built here ({type(e).__name__}: {str(e).strip()[:200]}); "
              "using torch.optim.AdamW(fused=True)", flush=True)
        return False


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
        optimizer_impl=adamw_impl(on_gpu),
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


def check_rendezvous_port() -> None:
    """On rank 0, which serves the rendezvous on MASTER_PORT: a port another program holds is one
    ConfigError line saying how to pick another, instead of a traceback (while the other ranks wait
    for minutes). Under torchrun its agent already serves that port: nothing to check."""
    port = os.environ.get("MASTER_PORT", "")
    if os.environ.get("RANK", "0") != "0" or os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True" or not port.isdigit():
        return
    import socket

    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the store's server does: TIME_WAIT is no obstacle
        try:
            s.bind(("", int(port)))
        except OSError:
            other = free_port()
            raise ConfigError(f"rendezvous port {port} (MASTER_PORT) is in use by another program or run; pick a free "
                              f"one, e.g. deepspeed --master_port {other} ... (torchrun: --master_port {other}; "
                              f"plain python: MASTER_PORT={other})") from None


def comm_op_build_notice() -> str | None:
    """The line to show before DeepSpeed compiles its CPU communication op (once per machine, on the
    first CPU run; silent for about a minute otherwise). None when it is built already or not used."""
    try:
        import deepspeed.ops
        from deepspeed.git_version_info import installed_ops
        from torch.utils.cpp_extension import _get_build_directory

        builder = _accelerator().create_op_builder("ShareMemCommBuilder")
        if (builder is None or not deepspeed.ops.__compatible_ops__.get(builder.NAME, False)
                or installed_ops.get(builder.NAME, False)):
            return None
        folder = _get_build_directory(builder.NAME, verbose=False)
    except Exception:  # a notice must never stop a run: whatever DeepSpeed does next decides
        return None
    if os.path.isfile(os.path.join(folder, f"{builder.NAME}.so")):
        return None
    return f"building DeepSpeed's CPU communication op once, ~1 min (cached in {folder})"


def init_distributed(hw: Hardware | None = None) -> None:
    """Join (or create) the process group, whoever started us.

    ``deepspeed`` and ``torchrun`` set RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT; a plain
    ``python`` start has none, so this fills in a group of one on loopback. Idempotent. A busy
    rendezvous port is a ConfigError; a first CPU run says so before DeepSpeed compiles its op.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return
    import deepspeed

    if "RANK" not in os.environ:
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_WORLD_SIZE="1")
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(free_port()))
    check_rendezvous_port()
    notice = comm_op_build_notice()
    if notice and os.environ.get("LOCAL_RANK", "0") == "0":
        print(notice, flush=True)
    backend = hw.dist_backend if hw is not None else _accelerator().communication_backend_name()
    deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=False, verbose=False)
    if hw is not None and hw.on_gpu:
        torch.cuda.set_device(hw.device)
    elif "OMP_NUM_THREADS" not in os.environ:
        # N CPU ranks on one machine would each start one thread per core: share the cores instead.
        local = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("LOCAL_SIZE", "1")))
        torch.set_num_threads(max(1, usable_cores() // local))
