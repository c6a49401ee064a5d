"""Start tests/engine/run_synthetic.py as 1 process, 2 DeepSpeed ranks, or 2 torchrun "nodes"."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import processes  # tests/processes.py

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
DRIVER = REPO / "tests" / "engine" / "run_synthetic.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env() -> dict:
    e = dict(os.environ, DS_ACCELERATOR="cpu", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
             OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        e.pop(k, None)
    return e


def check(proc: subprocess.CompletedProcess, what: str) -> subprocess.CompletedProcess:
    if proc.returncode != 0:
        raise AssertionError(f"{what} exited {proc.returncode}:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def command(launcher: str, script_args: list[str]) -> list[str]:
    """python (1 rank) | deepspeed (2 ranks, DeepSpeed's launcher) | torchrun (2 ranks, one node)."""
    if launcher == "python":
        return [sys.executable, *script_args]
    if launcher == "deepspeed":
        return [str(BIN / "deepspeed"), "--num_gpus", "2", "--master_port", str(free_port()), *script_args]
    if launcher == "torchrun":
        return [str(BIN / "torchrun"), "--nproc_per_node", "2", "--master_port", str(free_port()), *script_args]
    raise ValueError(launcher)


def run_driver(out: Path, runs: list[dict], launcher: str = "python") -> dict[str, dict]:
    """Run the driver over ``runs``; return {name: result} read back from ``out``.

    No fixed time limit: it waits as long as the runs make progress (tests/processes.py)."""
    path = out / f"{runs[0]['name']}.spec.json"
    path.write_text(json.dumps({"out": str(out), "runs": runs}))
    args = [str(DRIVER), str(path)]
    if launcher == "torchrun2":
        run_torchrun_two_nodes(args, out)
    else:
        check(processes.run(command(launcher, args), out / f"{runs[0]['name']}.logs", cwd=REPO, env=env(),
                            watch=[out], what=f"{launcher} {runs[0]['name']}"), launcher)
    return {r["name"]: json.loads((out / f"{r['name']}.result.json").read_text()) for r in runs}


def run_torchrun_two_nodes(args: list[str], out: Path) -> None:
    """Two torchrun "nodes" of one rank each, rendezvous on 127.0.0.1 (how ssh-less clusters start)."""
    port = free_port()
    logs = [(out / f"node{node}.out", out / f"node{node}.err") for node in (0, 1)]
    procs = []
    for node, (log, err) in enumerate(logs):
        with open(log, "w") as o, open(err, "w") as e:
            procs.append(subprocess.Popen(
                [str(BIN / "torchrun"), "--nnodes", "2", "--nproc_per_node", "1", "--node_rank", str(node),
                 "--master_addr", "127.0.0.1", "--master_port", str(port), *args],
                cwd=REPO, env=env(), stdout=o, stderr=e, text=True, start_new_session=True))
    processes.wait(procs, [out], "torchrun nodes", logs=[f for pair in logs for f in pair])
    for node, (p, (log, err)) in enumerate(zip(procs, logs)):
        done = subprocess.CompletedProcess(p.args, p.returncode, log.read_text(), err.read_text())
        check(done, f"torchrun node {node}")
