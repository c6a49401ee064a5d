"""The one training engine: pre-training and every fine-tuning task run through :class:`Trainer`.

    trainer = Trainer(model, PretrainTask.from_config(cfg), train_loader, cfg)
    result = trainer.fit(resume="auto")

A task (``pixelbert.tasks.base.Task``) turns (model, batch) into a loss and detached metric
tensors; an optional metric ``tokens`` (tokens the encoder attended to) feeds tokens/s instead
of being logged. The loader is any iterable of Batch; it may also offer ``__len__``
(micro-batches per epoch on this rank), ``set_epoch(e)``, ``state_dict()`` /
``load_state_dict()`` (exact data position) and ``bad_samples`` ({kind: count} on this rank).
Everything the hardware decides comes from ``hardware.detect_hardware``.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
import torch.distributed as dist

from pixelbert.batch import Batch
from pixelbert.config import DEEPSPEED_CONFIG_NAME, Config, ConfigError, check_deepspeed_section, config_from_dict
from pixelbert.engine.checkpoint import (
    CheckpointManager, GracefulStop, find_resume, read_meta, rng_state, seed_everything, set_rng_state,
)
from pixelbert.engine.hardware import Hardware, detect_hardware, init_distributed
from pixelbert.engine.monitor import MetricWindow, Monitor, peak_memory_mb
from pixelbert.engine.optim import build_optimizer, build_schedule
from pixelbert.tasks.base import Task

__all__ = ["Trainer", "FitResult", "TrainingError", "BatchPlan", "plan_batch", "check_resume_batch", "deepspeed_config",
           "build_engine", "zero_stage", "task_metrics_eval"]


class TrainingError(RuntimeError):
    """The run cannot go on (e.g. too many consecutive non-finite steps); one-line message."""


@dataclass(frozen=True)
class BatchPlan:
    micro_batch: int
    accumulation: int
    world_size: int

    @property
    def global_batch(self) -> int:
        return self.micro_batch * self.accumulation * self.world_size

    def __str__(self) -> str:
        ranks = f"{self.world_size} rank{'s' if self.world_size != 1 else ''}"
        return f"{ranks} x micro-batch {self.micro_batch} x accumulation {self.accumulation}"


def plan_batch(config: Config, world_size: int) -> BatchPlan:
    """micro-batch x accumulation x ranks; with train.global_batch_size set, accumulation is derived.

    Cheap and collective-free, so launchers call it before any heavy work.
    """
    t, micro = config.train, config.data.micro_batch_size
    if t.global_batch_size is None:
        return BatchPlan(micro, t.gradient_accumulation, world_size)
    per_step = micro * world_size
    accum, rest = divmod(t.global_batch_size, per_step)
    explicit = t.gradient_accumulation != 1
    if rest or accum == 0 or (explicit and accum != t.gradient_accumulation):
        raise ConfigError(
            f"{config.source}: 'train.global_batch_size' {t.global_batch_size} cannot be made from "
            f"data.micro_batch_size {micro} x {world_size} ranks x train.gradient_accumulation "
            f"{t.gradient_accumulation if explicit else '(any)'}")
    return BatchPlan(micro, accum, world_size)


def check_resume_batch(saved: BatchPlan, plan: BatchPlan, where: str) -> None:
    """A run resumes with the global batch it was saved with; ranks, micro-batch and accumulation may change.

    The schedule counts optimiser steps and the optimiser state was built on that batch, so only
    its split is free. The same rule for every size: train.global_batch_size keeps the global
    batch and derives the accumulation; any other global batch is refused in one line.
    """
    if saved.global_batch != plan.global_batch:
        raise ConfigError(
            f"{where}: saved with global batch {saved.global_batch} ({saved}), this run has {plan.global_batch} "
            f"({plan}); resume with the same global batch (train.global_batch_size {saved.global_batch} "
            "derives the accumulation)")


def zero_stage(config: Config) -> int:
    return int(config.deepspeed.get("zero_optimization", {}).get("stage", 0))


def deepspeed_config(config: Config, hw: Hardware, plan: BatchPlan) -> dict:
    """The config's ``deepspeed`` section, completed with what pixelbert decides itself.

    A section that sets one of those (``DEEPSPEED_PROJECT_KEYS``) is refused, not overridden;
    its bf16/fp16 tuning keys win over pixelbert's defaults for that precision.
    """
    check_deepspeed_section(config.deepspeed, config.train.precision, config.source)
    ds = copy.deepcopy(config.deepspeed)
    for key, ours in hw.precision_config().items():
        ds[key] = {**ours, **ds.get(key, {})}
    ds.update(
        train_micro_batch_size_per_gpu=plan.micro_batch,
        gradient_accumulation_steps=plan.accumulation,
        train_batch_size=plan.global_batch,
        # Explicit: DeepSpeed's default changed to 1.0. With ZeRO off in fp32 the
        # SplitOptimizer clips instead (DeepSpeed would not report the norm there).
        gradient_clipping=0.0 if _optimizer_clips(config, hw) else config.train.grad_clip,
        zero_allow_untested_optimizer=True,  # SplitOptimizer is not on ZeRO's list
    )
    ds.setdefault("steps_per_print", 10**9)
    ds.setdefault("wall_clock_breakdown", False)
    return ds


def _optimizer_clips(config: Config, hw: Hardware) -> bool:
    return zero_stage(config) == 0 and hw.precision == "fp32"


def build_engine(model: torch.nn.Module, config: Config, hw: Hardware, plan: BatchPlan, steps_per_epoch: int):
    """(engine, optimizer, schedule): ``model`` in a DeepSpeed engine with the SplitOptimizer (CNN vs
    transformer as ``model.parameter_groups()`` splits them) and its warm-up/step-decay schedule.

    The one way a run builds them (the Trainer, the benchmarks), so clipping and ZeRO settings
    cannot differ between what is trained and what is timed. ``train.freeze_cnn``: the CNN's
    parameters stop taking gradients first, so the optimiser leaves them out.
    """
    import deepspeed

    t = config.train
    if t.freeze_cnn:
        for p in model.parameter_groups()["cnn"].values():
            p.requires_grad_(False)
    clip = t.grad_clip if _optimizer_clips(config, hw) else None
    optimizer = build_optimizer(model, t, adamw_impl=hw.optimizer_impl, max_grad_norm=clip)
    schedule = build_schedule(optimizer, t, steps_per_epoch)
    engine, optimizer, _, schedule = deepspeed.initialize(
        model=model, optimizer=optimizer, lr_scheduler=schedule, config=deepspeed_config(config, hw, plan))
    if engine.zero_optimization_stage() == 0 and engine.dp_world_size == 1:
        # Alone, the all-reduce is the identity, yet DeepSpeed would still flatten every gradient into
        # buckets and copy them back each step. ZeRO 1-3 keep it: their optimiser reads the reduction.
        engine.enable_backward_allreduce = False
    return engine, optimizer, schedule


@dataclass
class TrainState:
    """Counters saved with every checkpoint (per rank)."""

    step: int = 0  # optimiser steps taken (applied or skipped)
    epoch: int = 0
    micro_in_epoch: int = 0  # micro-batches consumed in this epoch on this rank
    bad_steps: int = 0
    consecutive_bad: int = 0
    train_seconds: float = 0.0  # wall time inside training steps (data wait included; evals, saves not)


@dataclass
class FitResult:
    step: int
    stopped_by_signal: bool
    checkpoint: Path | None
    metrics: dict[str, float] = field(default_factory=dict)  # last logged window
    history: list[tuple[int, dict[str, float]]] = field(default_factory=list)  # every logged window
    evaluation: dict[str, float] = field(default_factory=dict)  # the last eval hook result


class Trainer:
    """DeepSpeed-wrapped training of ``model`` on ``task`` with checkpoints, logs and eval hooks.

    ``eval_fn(model, batches) -> {name: float}`` runs every train.eval_every steps and at the
    end, on every rank (it does its own cross-rank reduction; ``task_metrics_eval`` is one);
    ``batches`` iterates the eval loader already on the device.
    """

    def __init__(self, model: torch.nn.Module, task: Task, train_loader: Iterable[Batch], config: Config, *,
                 eval_loader: Iterable[Batch] | None = None,
                 eval_fn: Callable[[torch.nn.Module, Iterable[Batch]], dict[str, float]] | None = None,
                 steps_per_epoch: int | None = None,
                 hardware: Hardware | None = None):
        self.config, self.task, self.loader = config, task, train_loader
        self.eval_loader, self.eval_fn = eval_loader, eval_fn
        self.hw = hardware or detect_hardware(config)
        init_distributed(self.hw)
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        self.plan = plan_batch(config, self.world_size)
        t = config.train
        self.steps_per_epoch = self._steps_per_epoch(steps_per_epoch)
        self.total_steps = t.max_steps or t.epochs * self.steps_per_epoch
        self._message(self.start_line())  # before DeepSpeed's set-up, the first quiet stretch
        self.engine, self.optimizer, self.schedule = build_engine(model, config, self.hw, self.plan, self.steps_per_epoch)
        self.output_dir = Path(t.output_dir)
        self.checkpoints = CheckpointManager(self.output_dir / "checkpoints", t.keep_last, self.rank, self.world_size)
        self.state = TrainState()
        self._iter = None
        self.finish_now = False  # set by an eval hook: end the run after this evaluation, as a finished one

    def _steps_per_epoch(self, given: int | None) -> int:
        """Optimiser steps per epoch: from the loader's length, else given, else max_steps / epochs."""
        t = self.config.train
        if given is None and hasattr(self.loader, "__len__"):
            given = len(self.loader) // self.plan.accumulation
        if given is None and t.max_steps:
            given = math.ceil(t.max_steps / t.epochs)
        if not given or given < 1:
            raise ConfigError(f"{self.config.source}: cannot tell the steps per epoch (loader has no length, "
                              "or fewer micro-batches than train.gradient_accumulation)")
        return given

    # ------------------------------------------------------------------ data
    def _next_batch(self) -> Batch:
        for _ in range(2):
            if self._iter is None:
                if hasattr(self.loader, "set_epoch"):
                    self.loader.set_epoch(self.state.epoch)
                self._iter = iter(self.loader)
            try:
                batch = next(self._iter)
                self.state.micro_in_epoch += 1
                return batch
            except StopIteration:
                self._iter = None
                self.state.epoch += 1
                self.state.micro_in_epoch = 0
        raise TrainingError(f"the training loader yielded no batch in epoch {self.state.epoch - 1}")

    def _to_device(self, batch: Batch) -> Batch:
        return batch.to(self.hw.device, self.hw.dtype)

    def _rank_state(self) -> dict[str, Any]:
        loader_state = self.loader.state_dict() if hasattr(self.loader, "state_dict") else None
        return {"trainer": dataclasses.asdict(self.state), "loader": loader_state, "rng": rng_state()}

    def _restore(self, ckpt: Path) -> None:
        meta = read_meta(ckpt)
        saved_plan = plan_batch(config_from_dict(meta["config"], source=str(ckpt)), meta["world_size"])
        check_resume_batch(saved_plan, self.plan, str(ckpt))
        saved = self.checkpoints.load(self.engine, ckpt)  # rank 0's state when the number of ranks changed
        if saved is None or saved_plan != self.plan:
            self._restore_resplit(ckpt, saved_plan, saved)
            return
        self.state = TrainState(**saved["trainer"])
        if saved["loader"] is not None:
            self.loader.load_state_dict(saved["loader"])
        else:  # no loader state: replay the epoch up to the saved position (deterministic loaders)
            done, self.state.micro_in_epoch = self.state.micro_in_epoch, 0
            for _ in range(done):
                self._next_batch()
        set_rng_state(saved["rng"])
        self._message(f"resumed from {ckpt} at step {self.state.step}")

    def _restore_resplit(self, ckpt: Path, saved_plan: BatchPlan, saved: dict[str, Any] | None) -> None:
        """The same global batch split another way: weights, optimiser state, schedule and counters
        resume, the data order cannot. Each rank skips (by reading: loaders cannot seek) its share of
        the samples the saved run read in this epoch: exact for loaders that deal an epoch's batches
        to the ranks in turn, an approximation for others (some samples of the epoch seen twice, some
        not at all). Loader counters (bad samples) restart."""
        counters = dict(saved["trainer"]) if saved else {"step": self.engine.global_steps}
        samples_read = counters.pop("micro_in_epoch", 0) * saved_plan.micro_batch * saved_plan.world_size
        self.state = TrainState(**counters)
        seed_everything(self.config.train.seed + self.rank + 7919 * self.state.step)
        skip = samples_read // (self.plan.micro_batch * self.plan.world_size)
        if hasattr(self.loader, "__len__") and skip >= len(self.loader):  # that epoch was finished
            self.state.epoch, skip = self.state.epoch + 1, 0
        for _ in range(skip):
            self._next_batch()
        self._message(
            f"resumed from {ckpt} at step {self.state.step} on {self.plan} (saved on {saved_plan}; same global "
            f"batch {self.plan.global_batch}): weights, optimiser state, schedule and step counters restored; the data "
            f"order is no longer exact (each rank skipped {skip} micro-batches of epoch {self.state.epoch}, RNG "
            "reseeded)")

    def _message(self, text: str) -> None:
        if self.rank == 0:
            print(text, flush=True)

    def start_line(self) -> str:
        """What this run is, in one line: task, ranks, precision, ZeRO stage, loader backend, batch, steps,
        AdamW kernel."""
        t, plan = self.config.train, self.plan
        loader = getattr(self.loader, "backend", type(self.loader).__name__)
        ranks = f"{plan.world_size} rank{'s' if plan.world_size > 1 else ''}"
        return (f"training {t.task}: {ranks} on {self.hw.device.type}, precision {self.hw.precision}, "
                f"ZeRO stage {zero_stage(self.config)}, loader {loader}, global batch {plan.global_batch} "
                f"({plan.micro_batch} x {plan.accumulation} accumulation x {ranks}), {self.total_steps} steps "
                f"({self.steps_per_epoch} per epoch), AdamW {self.hw.describe()['adamw']} -> {t.output_dir}")

    def save(self) -> Path:
        """Checkpoint; refused (TrainingError) when the weights are non-finite: the export is made
        from the last checkpoint, and ``--resume auto`` must land on good weights."""
        bad = _first_nonfinite(self.engine.module)
        flag = torch.tensor(float(bad is not None), device=self.hw.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)  # ZeRO-3: each rank holds a part of the weights
        if flag.item():
            raise TrainingError(f"non-finite weights at step {self.state.step} ({bad or 'on another rank'}), not "
                                f"saved; last good checkpoint: {find_resume(self.checkpoints.root)}")
        meta = {"epoch": self.state.epoch, "config": self.config.to_dict()}
        return self.checkpoints.save(self.engine, self.state.step, self._rank_state(), meta)

    # ------------------------------------------------------------------ loop
    def fit(self, resume: str | Path | None = None) -> FitResult:
        """Train to train.max_steps (or epochs); ``resume``: None, "auto" or a checkpoint path."""
        t = self.config.train
        if self.rank == 0:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            self.config.save(self.output_dir / "config.json")
            resolved = deepspeed_config(self.config, self.hw, self.plan)
            (self.output_dir / DEEPSPEED_CONFIG_NAME).write_text(json.dumps(resolved, indent=2) + "\n")
        ckpt = None
        if resume is not None:
            root = self.checkpoints.root if str(resume) == "auto" else Path(resume)
            ckpt = find_resume(root)
            if ckpt is None and str(resume) != "auto":
                raise ConfigError(f"--resume {resume}: no complete checkpoint there")
        if ckpt is not None:
            self._restore(ckpt)
        else:
            seed_everything(t.seed + self.rank)  # distinct dropout / pixel draws per rank
        monitor = Monitor(self.output_dir, self.rank == 0, self.total_steps, self.state.step, t.log_every)
        monitor.config({**self.config.to_dict(), "hardware": self.hw.describe()})
        result = FitResult(step=self.state.step, stopped_by_signal=False, checkpoint=ckpt)
        window = MetricWindow(self.hw.device)
        self.engine.train()
        try:
            with GracefulStop() as stop:
                while self.state.step < self.total_steps:
                    started = time.perf_counter()
                    stop_now = self._train_step(window, stop.requested)
                    self.state.train_seconds += time.perf_counter() - started
                    step = self.state.step
                    if step % t.log_every == 0 or step == self.total_steps:
                        result.metrics = self._log(window, monitor, step)
                        result.history.append((step, result.metrics))
                    else:
                        monitor.step(step)
                    if t.eval_every and self.eval_fn is not None and step % t.eval_every == 0:
                        result.evaluation = self._evaluate(monitor, step)
                        if self.finish_now:  # the eval hook says the run is done (e.g. a target reached)
                            result.checkpoint = self.save()
                            monitor.message(f"finished early at step {step} (target reached)")
                            break
                    if stop_now:
                        result.checkpoint, result.stopped_by_signal = self.save(), True
                        monitor.message(f"stop requested: saved {result.checkpoint} at step {step}")
                        break
                    if step % t.checkpoint_every == 0:
                        result.checkpoint = self.save()
                else:
                    if self.eval_fn is not None and not (t.eval_every and self.state.step % t.eval_every == 0):
                        result.evaluation = self._evaluate(monitor, self.state.step)
                    result.checkpoint = self.save()
        finally:
            monitor.close()
        result.step = self.state.step
        return result

    def _train_step(self, window: MetricWindow, stop_requested: bool) -> bool:
        """One optimiser step over ``accumulation`` micro-batches. Returns: stop agreed by all ranks."""
        engine, hw = self.engine, self.hw
        skipped_before = engine.skipped_steps
        nonfinite = torch.zeros((), device=hw.device)
        # The lr each group uses in this step (the schedule moves on inside the last engine.step()).
        self._step_lrs = {f"lr/{g.get('name', i)}": g["lr"] for i, g in enumerate(self.optimizer.param_groups)}
        norm_stats = _norm_statistics(engine.module)
        for micro in range(self.plan.accumulation):
            t0 = time.perf_counter()
            batch = self._next_batch()
            t1 = time.perf_counter()
            batch = self._to_device(batch)
            loss, metrics = self.task.loss(engine, batch)
            finite = torch.isfinite(loss.detach())
            nonfinite = torch.maximum(nonfinite, (~finite).float())
            if micro == self.plan.accumulation - 1:
                # One small collective per step: every rank must agree on stopping and on bad steps.
                # Started before the last backward, it reaches the host while the GPU still runs that
                # backward and the optimiser step: reading it below does not stall the step.
                flags = torch.stack([torch.tensor(float(stop_requested), device=hw.device), nonfinite])
                dist.all_reduce(flags, op=dist.ReduceOp.MAX)
                read_flags = hw.read_later(flags)
            engine.backward(loss)
            engine.step()
            window.add(loss.detach(), metrics, finite, len(batch), batch.attention_mask, t1 - t0)
        stop, nonfinite_any = (bool(x) for x in read_flags())
        skipped = engine.skipped_steps > skipped_before
        # fp16 skips overflowing steps routinely while the loss scale settles; those are not faults.
        bad = nonfinite_any or (skipped and hw.precision != "fp16")
        self.state.step += 1
        window.steps += 1
        if bad:
            # The forward passes of a skipped step moved BatchNorm's running statistics: undo that too.
            for buffer, saved in norm_stats:
                buffer.copy_(saved)
            self.state.bad_steps += 1
            self.state.consecutive_bad += 1
            if self.state.consecutive_bad > self.config.train.max_bad_steps:
                raise TrainingError(
                    f"{self.state.consecutive_bad} consecutive non-finite steps (step {self.state.step}, "
                    f"train.max_bad_steps={self.config.train.max_bad_steps}); last good checkpoint: "
                    f"{find_resume(self.checkpoints.root)}")
        else:
            self.state.consecutive_bad = 0
        return stop

    def _log(self, window: MetricWindow, monitor: Monitor, step: int) -> dict[str, float]:
        values = window.reduce(self.plan.global_batch)
        values.update(self._step_lrs)
        norm = self.engine.get_global_grad_norm()
        if norm is not None:
            values["train/grad_norm"] = float(norm)
        values["perf/peak_memory_mb"] = peak_memory_mb(self.hw.device)
        values["train/bad_steps"] = float(self.state.bad_steps)
        for kind, n in self._bad_samples().items():
            values[f"data/bad_samples/{kind}"] = float(n)
        monitor.scalars(step, values)
        monitor.step(step, {k: v for k, v in values.items() if k in _SHOWN})
        return values

    def _bad_samples(self) -> dict[str, float]:
        """Skipped-sample counts by kind, summed over ranks (collective: every rank logs)."""
        counts = getattr(self.loader, "bad_samples", None)
        counts = counts() if callable(counts) else dict(counts or {})
        if not counts:
            return {}
        kinds = sorted(counts)
        total = torch.tensor([float(counts[k]) for k in kinds], device=self.hw.device)
        dist.all_reduce(total)
        return dict(zip(kinds, total.tolist()))

    def _evaluate(self, monitor: Monitor, step: int) -> dict[str, float]:
        self.engine.eval()
        with torch.no_grad():
            scores = self.eval_fn(self.engine, _OnDevice(self.eval_loader, self._to_device))
        self.engine.train()
        monitor.scalars(step, {f"eval/{k}": float(v) for k, v in scores.items()})
        monitor.message(f"eval at step {step}: " + " ".join(f"{k}={v:.4g}" for k, v in scores.items()))
        return {k: float(v) for k, v in scores.items()}


def _first_nonfinite(model: torch.nn.Module) -> str | None:
    """Name of the first parameter or floating buffer holding a NaN or Inf (this rank's ZeRO-3
    partition of it, where partitioned); None when all are finite."""
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if tensor.is_floating_point() and not bool(torch.isfinite(getattr(tensor, "ds_tensor", tensor)).all()):
            return name
    return None


def _norm_statistics(model: torch.nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(buffer, copy) of the running statistics that training-mode BatchNorm layers update in forward."""
    out = []
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.training and m.track_running_stats:
            out += [(b, b.detach().clone()) for b in (m.running_mean, m.running_var, m.num_batches_tracked)
                    if b is not None]
    return out


def task_metrics_eval(task, max_batches: int | None = None):
    """An eval hook for any task: its loss metrics averaged over the eval loader and all ranks.

    Tasks with their own metrics (VQA accuracy, recall@K) pass their own hook instead.
    """

    def evaluate(model, loader) -> dict[str, float]:
        device = next(model.parameters()).device
        sums: dict[str, torch.Tensor] = {}
        count = 0
        for i, batch in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            _, metrics = task.loss(model, batch)
            metrics.pop("tokens", None)
            for k, v in metrics.items():
                sums[k] = sums.get(k, 0.0) + v.float()
            count += 1
        names = [sorted(sums)]
        dist.broadcast_object_list(names, src=0)  # same tensor layout on every rank, even one without batches
        zero = torch.zeros((), device=device)
        packed = torch.stack([sums.get(n, zero) for n in names[0]] + [torch.tensor(float(count), device=device)])
        dist.all_reduce(packed)
        *totals, n = packed.tolist()
        return {k: t / max(n, 1.0) for k, t in zip(names[0], totals)}

    return evaluate


class _OnDevice:
    """The eval loader's batches moved (and cast) the way training batches are."""

    def __init__(self, loader, move):
        self.loader, self.move = loader, move

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        return (self.move(b) for b in self.loader)


_SHOWN = ("train/loss", "train/mlm_acc", "train/itm_acc", "train/vqa_score", "perf/samples_per_s")
