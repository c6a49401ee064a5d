"""The paper configs rehearsed on CPU: configs/r50.json and configs/x152.json, unchanged but for
what 2 CPU ranks cannot hold, pre-train for 2 optimiser steps under ``deepspeed --num_gpus 2``.

The corpus is the README's: tiny COCO Karpathy and Visual Genome folders in their real formats,
built by the README's two commands (VG without the COCO evaluation images) into the folders the
configs name, ``runs/data/coco_karpathy`` and ``runs/data/vg``, under the run's working folder.
The real architectures run (ResNet-50 or ResNeXt-152 32x8d, BERT-base from its config with
random weights, MLM + ITM heads, ZeRO-2, DALI). A run of 2 steps saves steps 1 and 2 and
exports; a second run resumes from the step-1 checkpoint and must export the same weights.

The rehearsal runs only when asked for, as it would take the default suite past 15 minutes on
2 cores (four launches, each building a BERT-base model with its CNN twice, and gigabytes of
checkpoints written with fsync; they are removed once a config has passed or failed)::

    make rehearse       # = PIXELBERT_REHEARSAL=1 .venv/bin/python -m pytest -q tests/launcher/test_paper_configs.py
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

TESTS = Path(__file__).resolve().parents[1]
for sub in ("engine", "data_pipeline"):  # launch.py, fake_datasets.py
    if str(TESTS / sub) not in sys.path:
        sys.path.insert(0, str(TESTS / sub))

import launch  # noqa: E402
from fake_datasets import write_coco_karpathy, write_vg  # noqa: E402

# What a CPU cannot hold, and nothing else: small images (the CNN's cost grows with the pixels),
# 2 images per rank and no accumulation (the paper's global batch is 4096), 2 steps, a checkpoint
# every step and a log line every step (so both steps are seen).
CPU_SETTINGS = ["data.image_size=64", "data.max_image_size=96", "data.micro_batch_size=2",
                "train.global_batch_size=4", "train.max_steps=2", "train.checkpoint_every=1", "train.log_every=1"]
# A launch builds the model twice (training, then the export) and writes every checkpoint with
# fsync; on a busy 2-core machine that is minutes, so each launch gets a quarter of an hour.
LAUNCH_TIMEOUT_S = 900


def build_corpus(workdir: Path) -> None:
    """The README's COCO and VG commands on tiny copies of the downloads, into workdir/runs/data."""
    from data_pipeline.build_shards import main as build_shards

    coco, vg = workdir / "raw" / "coco", workdir / "raw" / "vg"
    write_coco_karpathy(coco)
    write_vg(vg)
    meta = json.loads((vg / "image_data.json").read_text())
    meta[0]["coco_id"] = 13  # a COCO Karpathy test image: left out of VG
    (vg / "image_data.json").write_text(json.dumps(meta))
    resize = ["--resize-shorter", "800", "--resize-longer", "1333", "--no-progress"]
    assert build_shards(["--dataset", "coco_karpathy", "--root", str(coco), "--out",
                         str(workdir / "runs/data/coco_karpathy"), *resize]) == 0
    assert build_shards(["--dataset", "vg", "--root", str(vg), "--out", str(workdir / "runs/data/vg"), *resize,
                         "--exclude-coco-karpathy", str(coco / "dataset_coco.json")]) == 0


def pretrain(workdir: Path, name: str, *args: str) -> str:
    """launcher/pretrain.py on 2 DeepSpeed CPU ranks from ``workdir``; returns its stdout."""
    script = [str(launch.REPO / "launcher" / "pretrain.py"), "--config", str(launch.REPO / "configs" / f"{name}.json")]
    for item in CPU_SETTINGS:
        script += ["--set", item]
    proc = subprocess.run(launch.command("deepspeed", script + list(args)), cwd=workdir, env=launch.env(),
                          capture_output=True, text=True, timeout=LAUNCH_TIMEOUT_S)
    return launch.check(proc, f"{name} rehearsal").stdout


def differing_weights(a: Path, b: Path) -> list[str]:
    """Names of the tensors that differ between two model.safetensors files (read one at a time)."""
    from safetensors import safe_open

    with safe_open(a, "pt") as x, safe_open(b, "pt") as y:
        assert set(x.keys()) == set(y.keys())
        return [k for k in x.keys() if not torch.equal(x.get_tensor(k), y.get_tensor(k))]


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("paper")
    build_corpus(workdir)
    return workdir


def test_the_corpus_is_coco_and_vg_without_the_coco_evaluation_images(corpus_dir):
    vg = json.loads((corpus_dir / "runs/data/vg/manifest.json").read_text())
    coco = json.loads((corpus_dir / "runs/data/coco_karpathy/manifest.json").read_text())
    assert vg["rejected"] == {"coco_overlap": 1} and vg["splits"]["train"]["samples"] == 9
    assert coco["splits"]["train"]["samples"] == 9  # Karpathy train + restval


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("PIXELBERT_REHEARSAL") != "1", reason="paper-config rehearsal: make rehearse")
@pytest.mark.parametrize("name, backbone", [("r50", "resnet50"), ("x152", "resnext152_32x8d")])
def test_paper_config_trains_resumes_from_step_1_and_exports_on_cpu(name, backbone, corpus_dir):
    run, resumed = corpus_dir / f"runs/{name}_pretrain", corpus_dir / f"runs/{name}_resumed"
    try:
        check_rehearsal(corpus_dir, name, backbone, run, resumed)
    finally:
        for folder in (run, resumed):
            shutil.rmtree(folder, ignore_errors=True)


def check_rehearsal(corpus_dir: Path, name: str, backbone: str, run: Path, resumed: Path) -> None:
    out = pretrain(corpus_dir, name)
    assert "step 2/2" in out and "done: step 2" in out
    step1 = run / "checkpoints" / "step_00000001"
    assert step1.is_dir() and (run / "checkpoints" / "step_00000002").is_dir()
    saved = json.loads((run / "config.json").read_text())
    assert saved["model"]["backbone"] == backbone and saved["model"]["text_config"]["num_hidden_layers"] == 12
    loader = torch.load(step1 / "rank_00000.pt", weights_only=True)["loader"]
    assert loader["sources"] == [["coco_karpathy", 1.0], ["vg", 1.0]]  # the configs' corpus, as read

    out = pretrain(corpus_dir, name, "--resume", str(step1), "--set", f"train.output_dir={resumed}")
    assert f"resumed from {step1} at step 1" in out and "done: step 2" in out
    exported = json.loads((resumed / "export" / "pixelbert_config.json").read_text())
    assert exported["model"]["backbone"] == backbone
    assert differing_weights(run / "export" / "model.safetensors", resumed / "export" / "model.safetensors") == []
