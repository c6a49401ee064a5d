"""What a run reports: TensorBoard scalars and a progress bar, on rank 0 only.

Other ranks get a Monitor too (so the trainer has no rank checks) but it does nothing.
Scalar names are stable (tests and dashboards read them): ``train/<metric>``, ``lr/<group>``,
``train/grad_norm``, ``perf/samples_per_s``, ``perf/tokens_per_s``,
``perf/data_wait_fraction``, ``perf/peak_memory_mb``, ``data/bad_samples/<kind>``,
``train/bad_steps``, ``eval/<metric>``; the resolved config is the text item ``config``.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path
from typing import Callable, Iterable, Iterator, TypeVar

import torch
import torch.distributed as dist

__all__ = ["Monitor", "MetricWindow", "peak_memory_mb", "progress", "PROGRESS_EVERY_S"]

# The longest a pass (an evaluation) goes without a line saying how far it is.
PROGRESS_EVERY_S = 10.0

T = TypeVar("T")


def progress(items: Iterable[T], label: str, every: float | None = PROGRESS_EVERY_S, unit: str = "batches",
             stream=None, clock: Callable[[], float] = time.monotonic) -> Iterator[T]:
    """``items`` as they come, with a line "label: 3/10 batches, 21 s, eta 49 s" on rank 0 each time
    ``every`` seconds have passed since the last line (the eta when ``items`` has a length).
    ``every`` None: no lines. Short passes stay quiet; long ones are never silent for longer."""
    rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
    if every is None or rank != 0:
        yield from items
        return
    total = len(items) if hasattr(items, "__len__") else None
    start = last = clock()
    for done, item in enumerate(items, start=1):
        yield item
        now = clock()
        if now - last >= every:
            last = now
            elapsed = now - start
            count = f"{done}/{total}" if total else str(done)
            eta = f", eta {elapsed / done * (total - done):.0f} s" if total else ""
            print(f"{label}: {count} {unit}, {elapsed:.0f} s{eta}", file=stream or sys.stdout, flush=True)


def peak_memory_mb(device: torch.device) -> float:
    """Peak accelerator memory (CUDA max_memory_allocated) or, on CPU, this process's max RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10  # bytes on macOS, KiB on Linux


class Monitor:
    """TensorBoard writer under ``<output_dir>/tensorboard`` plus a tqdm bar (or log lines)."""

    def __init__(self, output_dir: str | Path, enabled: bool, total_steps: int, start_step: int = 0,
                 log_every: int = 10, stream=None):
        self.enabled = enabled
        self.log_every = max(1, log_every)
        self.stream = stream if stream is not None else sys.stdout
        self.total_steps = total_steps
        self.writer = None
        self.bar = None
        self._t0 = time.perf_counter()
        self._start_step = start_step
        if not enabled:
            return
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = Path(output_dir) / "tensorboard"
        self.writer = SummaryWriter(log_dir=str(self.log_dir))
        # A bar only makes sense on a terminal; in a job log it would be one endless line.
        if hasattr(self.stream, "isatty") and self.stream.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total_steps, initial=start_step, dynamic_ncols=True, file=self.stream,
                            unit="step")

    def config(self, config_dict: dict) -> None:
        if self.writer is not None:
            text = json.dumps(config_dict, indent=2)
            # TensorBoard renders text as markdown: indent 4 spaces to keep it a code block.
            self.writer.add_text("config", "\n".join("    " + line for line in text.splitlines()), 0)

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if self.writer is None:
            return
        for name, value in values.items():
            self.writer.add_scalar(name, value, step)

    def step(self, step: int, values: dict[str, float] | None = None) -> None:
        """Advance the bar to ``step``; on log steps show ``values`` (or print a line without a bar)."""
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(step - self.bar.n)
            if values:
                self.bar.set_postfix({k.split("/")[-1]: f"{v:.4g}" for k, v in values.items()}, refresh=False)
        elif values is not None:
            done = step - self._start_step
            elapsed = time.perf_counter() - self._t0
            eta = elapsed / done * (self.total_steps - step) if done else float("nan")
            shown = " ".join(f"{k.split('/')[-1]}={v:.4g}" for k, v in values.items())
            print(f"step {step}/{self.total_steps} {shown} eta={eta:.0f}s", file=self.stream, flush=True)

    def message(self, text: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class MetricWindow:
    """Sums over the micro-steps since the last log, kept on device (no sync until logged)."""

    def __init__(self, device: torch.device):
        self.device = device
        self._reset()

    def _reset(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.finite = torch.zeros((), device=self.device)
        self.tokens = torch.zeros((), device=self.device)
        self.micro = 0
        self.steps = 0
        self.data_time = 0.0
        self.start = time.perf_counter()

    def add(self, loss, metrics: dict, finite: torch.Tensor, rows: int, attention_mask, data_time: float) -> None:
        self.micro += 1
        self.data_time += data_time
        self.finite = self.finite + finite.float()
        metrics = dict(metrics)
        tokens = metrics.pop("tokens", None)
        self.tokens = self.tokens + (tokens if tokens is not None else attention_mask.sum()).float()
        for name, value in {"loss": loss, **metrics}.items():
            value = value.float()
            self.sums[name] = self.sums.get(name, 0.0) + torch.where(finite, value, torch.zeros_like(value))

    def reduce(self, global_batch: int) -> dict[str, float]:
        """Means over finite micro-steps of every rank, plus throughput (collective)."""
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        names = sorted(self.sums)
        packed = torch.stack([self.sums[n] for n in names] + [
            self.finite, self.tokens, torch.tensor(self.data_time / elapsed, device=self.device)])
        dist.all_reduce(packed)
        world = dist.get_world_size()
        *sums, finite, tokens, wait = packed.tolist()
        values = {f"train/{n}": (s / finite if finite else float("nan")) for n, s in zip(names, sums)}
        values["perf/samples_per_s"] = global_batch * self.steps / elapsed
        values["perf/tokens_per_s"] = tokens / elapsed
        values["perf/data_wait_fraction"] = wait / world
        self._reset()
        return values
