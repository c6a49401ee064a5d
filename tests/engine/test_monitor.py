"""Monitor: quiet off rank 0; without a terminal, a log line per logged step instead of a bar."""

from __future__ import annotations

import io

from pixelbert.engine.monitor import Monitor


def test_without_a_terminal_it_prints_log_lines_with_eta(tmp_path):
    out = io.StringIO()
    m = Monitor(tmp_path, enabled=True, total_steps=10, log_every=5, stream=out)
    m.step(3)  # not a log step: silent
    m.step(5, {"train/loss": 1.25})
    m.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("step 5/10 loss=1.25 eta=")
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


def test_other_ranks_write_nothing(tmp_path):
    out = io.StringIO()
    m = Monitor(tmp_path, enabled=False, total_steps=10, stream=out)
    m.scalars(1, {"train/loss": 1.0})
    m.step(1, {"train/loss": 1.0})
    m.close()
    assert out.getvalue() == "" and not (tmp_path / "tensorboard").exists()
