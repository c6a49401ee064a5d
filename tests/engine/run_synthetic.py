"""Train the tiny model on the synthetic loader; started by tests under python, deepspeed or torchrun.

    python tests/engine/run_synthetic.py SPEC.json [--local_rank=N]

SPEC: {"runs": [RUN, ...]} run one after the other in the same process group (saves start-up
time). RUN: {"name", "config": <config dict>, "resume": null | "auto" | path,
"init_seed": int, "global_batches_per_epoch": int}; train.eval_every adds a held-out eval hook. Rank 0 writes <name>.result.json
(history, final step, checkpoint) and <name>.probe.safetensors: the trained model's eval-mode
MLM and ITM logits on a fixed batch (for export tests) into SPEC's "out" folder.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from synthetic import SyntheticLoader, make_sample_batch  # noqa: E402

from pixelbert import build_model  # noqa: E402
from pixelbert.config import config_from_dict  # noqa: E402
from pixelbert.engine.hardware import detect_hardware, init_distributed  # noqa: E402
from pixelbert.engine.trainer import Trainer, task_metrics_eval  # noqa: E402
from pixelbert.tasks.pretrain import PretrainTask  # noqa: E402

PROBE_IDS = list(range(10**9, 10**9 + 4))


def probe(engine) -> dict[str, torch.Tensor]:
    """Eval-mode logits on a fixed batch; collective under ZeRO-3 (parameters are gathered)."""
    engine.eval()
    with torch.no_grad():
        out = engine(make_sample_batch(PROBE_IDS))
        return {"itm": engine.module.itm_logits(out).float(), "mlm": engine.module.mlm_logits(out).float()}


def run(spec: dict, run_spec: dict) -> None:
    cfg = config_from_dict(run_spec["config"], source="<spec>")
    hw = detect_hardware(cfg)
    init_distributed(hw)
    rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    torch.manual_seed(run_spec.get("init_seed", 0))  # same initial weights on every rank and run
    model = build_model(cfg)
    loader = SyntheticLoader(cfg.data.micro_batch_size, rank, world, run_spec.get("global_batches_per_epoch", 16) // world)
    task = PretrainTask.from_config(cfg)
    evaluation = {}
    if cfg.train.eval_every:  # held-out synthetic batches (another epoch number: other samples)
        held_out = SyntheticLoader(cfg.data.micro_batch_size, rank, world, 2)
        held_out.set_epoch(99)
        evaluation = dict(eval_loader=held_out, eval_fn=task_metrics_eval(task))
    trainer = Trainer(model, task, loader, cfg, hardware=hw, **evaluation)
    result = trainer.fit(resume=run_spec.get("resume"))
    logits = probe(trainer.engine)
    if rank == 0:
        out = Path(spec["out"])
        save_file({k: v.contiguous() for k, v in logits.items()}, str(out / f"{run_spec['name']}.probe.safetensors"))
        (out / f"{run_spec['name']}.result.json").write_text(json.dumps({
            "step": result.step, "stopped": result.stopped_by_signal, "checkpoint": str(result.checkpoint),
            "history": result.history}))
    torch.distributed.barrier()


def main() -> None:
    spec = json.loads(Path(next(a for a in sys.argv[1:] if not a.startswith("--"))).read_text())
    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
    for run_spec in spec["runs"]:
        run(spec, run_spec)


if __name__ == "__main__":
    main()
