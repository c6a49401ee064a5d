"""A first CPU run says it is compiling DeepSpeed's communication op before the minute it takes."""

from __future__ import annotations

import pytest
import torch.distributed as dist

from pixelbert.engine import hardware

OP = "deepspeed_shm_comm"


@pytest.fixture
def fresh_extensions(monkeypatch, tmp_path):
    """An empty torch extensions folder: the op was never built here."""
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    if hardware._accelerator().device_name() != "cpu":
        pytest.skip("DeepSpeed compiles this op for CPU runs")
    return tmp_path


def test_init_distributed_announces_the_build_before_deepspeed_starts(fresh_extensions, monkeypatch, capsys):
    import deepspeed

    if hardware.comm_op_build_notice() is None:
        pytest.skip("this DeepSpeed build does not compile the op at run time")
    seen = []
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(deepspeed, "init_distributed", lambda **kw: seen.append(capsys.readouterr().out))
    for name, value in dict(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", OMP_NUM_THREADS="1",
                            MASTER_ADDR="127.0.0.1", MASTER_PORT=str(hardware.free_port())).items():
        monkeypatch.setenv(name, value)
    hardware.init_distributed()
    assert len(seen) == 1
    assert f"building DeepSpeed's CPU communication op once, ~1 min (cached in {fresh_extensions / OP})" in seen[0]


def test_an_op_built_before_is_not_announced(fresh_extensions):
    (fresh_extensions / OP).mkdir()
    (fresh_extensions / OP / f"{OP}.so").write_bytes(b"")
    assert hardware.comm_op_build_notice() is None
