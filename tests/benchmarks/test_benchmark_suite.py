"""Every benchmark runs at toy size and writes the documented output (no timing is asserted)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import processes  # tests/processes.py

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from benchmarks import harness  # noqa: E402
from benchmarks.run import BENCHMARKS  # noqa: E402


def test_toy_suite_writes_a_valid_result_for_every_benchmark(tmp_path):
    # One subprocess for the whole suite: imports are paid once, and the DeepSpeed process
    # group it creates cannot leak into other tests.
    env = dict(os.environ, DS_ACCELERATOR="cpu", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONPATH=str(REPO))
    for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    proc = processes.run([sys.executable, str(REPO / "benchmarks" / "run.py"), "--suite", "cpu", "--toy",
                          "--out", str(tmp_path)], tmp_path / "logs", cwd=REPO, env=env, watch=[tmp_path])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    machine = json.loads((tmp_path / "machine.json").read_text())
    assert {"logical_cpus", "memory_gib", "versions"} <= set(machine)
    for name in BENCHMARKS:
        result = json.loads((tmp_path / f"{name}.json").read_text())
        assert harness.check_schema(result) == [], (name, harness.check_schema(result))
        assert result["benchmark"] == name and result["toy"] is True and "error" not in result
        assert result["table"], f"{name}: empty table"
    summary = (tmp_path / "summary.md").read_text()
    assert all(f"## {name}" in summary for name in BENCHMARKS)
