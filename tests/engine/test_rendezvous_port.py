"""A rendezvous port another program holds: one line naming it and how to pick another, within
seconds, instead of a traceback (and the other ranks waiting for minutes)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pixelbert.config import ConfigError
from pixelbert.engine.hardware import check_rendezvous_port

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def busy_port():
    """A port some other program listens on, for the test's duration."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def test_a_busy_port_stops_the_launcher_with_one_line_naming_master_port(busy_port, tmp_path):
    env = dict(os.environ, DS_ACCELERATOR="cpu", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", RANK="0",
               LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(busy_port))
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "launcher/pretrain.py", "--config", "configs/tiny.json",
                           "--set", f'train.output_dir="{tmp_path / "run"}"'],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert time.monotonic() - started < 120  # the start-up of python, torch and DeepSpeed; no rendezvous wait
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    [line] = [x for x in proc.stderr.splitlines() if x.startswith("error: ")]
    assert f"rendezvous port {busy_port} (MASTER_PORT) is in use" in line and "--master_port" in line


def test_a_free_port_passes(monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("MASTER_PORT", str(port))
    monkeypatch.delenv("TORCHELASTIC_USE_AGENT_STORE", raising=False)
    check_rendezvous_port()


def test_rank_0_refuses_the_busy_port(busy_port, monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("MASTER_PORT", str(busy_port))
    monkeypatch.delenv("TORCHELASTIC_USE_AGENT_STORE", raising=False)
    with pytest.raises(ConfigError, match=f"port {busy_port} .*--master_port"):
        check_rendezvous_port()


def test_the_port_of_torchruns_agent_is_not_refused(busy_port, monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("MASTER_PORT", str(busy_port))
    monkeypatch.setenv("TORCHELASTIC_USE_AGENT_STORE", "True")  # torchrun's agent serves it: it is busy by design
    check_rendezvous_port()


def test_ranks_that_only_connect_do_not_check(busy_port, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("MASTER_PORT", str(busy_port))
    monkeypatch.delenv("TORCHELASTIC_USE_AGENT_STORE", raising=False)
    check_rendezvous_port()
