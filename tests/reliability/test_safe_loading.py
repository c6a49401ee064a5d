"""Loading a file never runs code; nothing listens beyond localhost by default.

Every weight and checkpoint load goes through safetensors or ``torch.load(weights_only=True)``
(DeepSpeed's own loaders included, via ``safe_loading``). A pickle whose ``__reduce__`` writes
a marker file is the attack: each loader must refuse it and the marker must never appear.
"""

from __future__ import annotations

import pickle
import re
import shutil
from pathlib import Path

import pytest
import torch

from pixelbert.engine.checkpoint import CheckpointManager, consolidated_state_dict, safe_loading

REPO = Path(__file__).resolve().parents[2]
SOURCES = [p for d in ("pixelbert", "data_pipeline", "launcher", "benchmarks") for p in (REPO / d).rglob("*.py")]


class WritesMarker:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('code ran')",)


def evil_file(path: Path, marker: Path) -> Path:
    torch.save({"module": {"w": torch.zeros(2)}, "payload": WritesMarker(marker)}, path)
    return path


def refused(load, marker: Path) -> None:
    with pytest.raises((pickle.UnpicklingError, RuntimeError, ValueError)):
        load()
    assert not marker.exists(), "loading ran code from the file"


def calls(name: str) -> list[tuple[Path, str]]:
    """Every ``name(...)`` call in the sources, with its argument text (balanced parentheses)."""
    found = []
    for path in SOURCES:
        text = path.read_text()
        for m in re.finditer(re.escape(name) + r"\(", text):
            depth, i = 1, m.end()
            while depth and i < len(text):
                depth += {"(": 1, ")": -1}.get(text[i], 0)
                i += 1
            found.append((path.relative_to(REPO), text[m.end():i - 1]))
    return found


def test_the_attack_file_does_run_code_when_loaded_unsafely(tmp_path):
    """Control: the file used below is live."""
    marker = tmp_path / "ran"
    torch.load(evil_file(tmp_path / "evil.pt", marker), weights_only=False)
    assert marker.exists()


def test_every_torch_load_in_the_sources_is_weights_only():
    loads = calls("torch.load")
    assert loads, "the scan found no torch.load at all: the pattern is broken"
    unsafe = [(str(p), args) for p, args in loads if not re.search(r"weights_only\s*=\s*True", args)]
    assert not unsafe


def test_no_remote_code_and_no_pickle_loads_in_the_sources():
    for path in SOURCES:
        text = path.read_text()
        assert "trust_remote_code" not in text, path
        assert not re.search(r"\bpickle\.loads?\(|allow_pickle\s*=\s*True|\bdill\b|joblib\.load", text), path


def test_deepspeed_loaders_inside_safe_loading_refuse_the_attack(tmp_path):
    marker = tmp_path / "ran"
    path = evil_file(tmp_path / "evil.pt", marker)
    with safe_loading():  # DeepSpeed calls torch.load(..., weights_only=False) itself
        refused(lambda: torch.load(path, map_location="cpu", weights_only=False), marker)


class _DeepSpeedLikeEngine:
    """load_checkpoint as DeepSpeed's does it: torch.load with weights_only=False."""

    def load_checkpoint(self, root, tag):
        torch.load(Path(root) / tag / "mp_rank_00_model_states.pt", weights_only=False)
        return str(Path(root) / tag), {}


def test_resuming_from_a_poisoned_checkpoint_is_refused(tmp_path):
    marker = tmp_path / "ran"
    ckpt = tmp_path / "checkpoints" / "step_00000001"
    ckpt.mkdir(parents=True)
    evil_file(ckpt / "mp_rank_00_model_states.pt", marker)
    (ckpt / "meta.json").write_text('{"complete": true, "world_size": 1}')
    manager = CheckpointManager(ckpt.parent, keep_last=1, rank=0, world_size=1)
    refused(lambda: manager.load(_DeepSpeedLikeEngine(), ckpt), marker)

    torch.save({"trainer": {}}, ckpt / "mp_rank_00_model_states.pt")  # model file fine, rank file poisoned
    evil_file(ckpt / "rank_00000.pt", marker)
    refused(lambda: manager.load(_DeepSpeedLikeEngine(), ckpt), marker)


@pytest.mark.slow
@pytest.mark.parametrize("poisoned", ["mp_rank_00_model_states.pt", "zero_pp_rank_1_mp_rank_00_optim_states.pt"])
def test_exporting_a_poisoned_real_checkpoint_is_refused(series_dir, series, tmp_path, poisoned):
    marker = tmp_path / "ran"
    ckpt = tmp_path / "checkpoints" / "step_00000002"
    shutil.copytree(series_dir / "reference" / "checkpoints" / "step_00000002", ckpt)
    consolidated_state_dict(ckpt)  # loads while intact
    evil_file(ckpt / poisoned, marker)
    refused(lambda: consolidated_state_dict(ckpt), marker)


@pytest.mark.parametrize("suffix", [".pth", ".pt", ".bin"])
def test_backbone_weights_refuse_the_attack(tmp_path, suffix):
    from pixelbert.modeling.backbone import load_backbone_weights

    marker = tmp_path / "ran"
    path = evil_file(tmp_path / f"resnet18{suffix}", marker)
    refused(lambda: load_backbone_weights(None, str(path)), marker)


def test_ray_starts_without_a_dashboard_and_only_on_this_machine(tmp_path, monkeypatch):
    import ray

    from pixelbert.tune import load_sweep, run_sweep

    seen = {}

    class Stop(Exception):
        pass

    def fake_init(**kwargs):
        seen.update(kwargs)
        raise Stop

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", fake_init)
    sweep_file = tmp_path / "sweep.json"
    sweep_file.write_text('{"name": "t", "base_config": "%s", "storage_path": "%s", '
                          '"search_space": {"train.lr_transformer": {"loguniform": [1e-5, 1e-3]}}}'
                          % (REPO / "configs" / "finetune" / "easyvqa.json", tmp_path / "sweeps"))
    with pytest.raises(Stop):
        run_sweep(load_sweep(sweep_file), lambda config: None, {}, "eval/accuracy")
    assert seen.get("include_dashboard") is False or seen.get("dashboard_host") in ("127.0.0.1", "localhost")
    assert seen.get("address") in (None, "local") and "0.0.0.0" not in repr(seen)


def test_nothing_binds_beyond_localhost():
    for path in SOURCES:
        text = path.read_text()
        assert not re.search(r"0\.0\.0\.0|bind_all|dashboard_host\s*=\s*['\"](?!127|localhost)", text), path
