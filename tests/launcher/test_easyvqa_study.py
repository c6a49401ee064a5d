"""The easy-VQA study's seeded ablation: one run per (arm, fraction, seed), the same questions in
every arm, nested across fractions, and a table of mean +- spread over seeds."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from data_pipeline.plan import EpochPlan
from pixelbert.config import ConfigError
from pixelbert.recipes import easyvqa as study

REPO = Path(__file__).resolve().parents[2]


def _fake_launchers(monkeypatch, calls):
    """Each stage as the launchers would leave it, without training (the layout is under test)."""

    def run(cmd, log, cwd, threads=None):
        calls.append(cmd)
        sets = dict(v.split("=", 1) for k, v in zip(cmd, cmd[1:]) if k == "--set")
        out = Path(json.loads(sets["train.output_dir"])) if "train.output_dir" in sets else None
        if cmd[1].endswith("finetune.py"):
            seed = int(sets.get("train.seed", 0))
            frac = float(sets["data.subset_fraction"])
            out.mkdir(parents=True)
            (out / "eval.json").write_text(json.dumps({"evals": [{"epoch": 1, "train_seconds": 60,
                                                                  "metrics": {"vqa_accuracy": 50 + seed}}]}))
            (out / "eval" / "test").mkdir(parents=True)
            (out / "eval" / "test" / "metrics.json").write_text(json.dumps(
                {"metrics": {"vqa_accuracy": 60.0 + seed + 10 * frac, "num_questions": 9673}}))
        elif out is not None:
            (out / "export").mkdir(parents=True, exist_ok=True)
        log.write_text("")
        return 30.0

    monkeypatch.setattr(study, "_run", run)


def test_the_ablation_runs_every_cell_once_and_tables_mean_and_spread_over_seeds(tmp_path, monkeypatch):
    calls = []
    _fake_launchers(monkeypatch, calls)
    options = study.StudyOptions.for_study(True, launchers=REPO / "launcher", cwd=REPO, out=tmp_path,
                                           arms=["no_pretrain", "mlm_itm"], fractions=[0.01, 0.02], seeds=[0, 1])
    summaries = study.run_study(options)
    finetunes = [c for c in calls if c[1].endswith("finetune.py")]
    pretrains = [c for c in calls if c[1].endswith("pretrain.py")]
    assert len(summaries) == len(finetunes) == 2 * 2 * 2
    assert len(pretrains) == 2  # the CNN stage, and mlm_itm's pre-training once for its four cells
    assert all("--no-eval" in c for c in finetunes)  # the table compares test end points: val is not scored
    cells = {(s["arm"], s["subset_fraction"], s["seed"]) for s in summaries}
    assert len(cells) == 8
    for arm in ("no_pretrain", "mlm_itm"):
        assert (tmp_path / arm / "frac0.01_seed1" / "summary.json").is_file()
    lines = (tmp_path / "table.md").read_text().splitlines()
    assert len(lines) == 2 + 4  # header, rule, one row per arm x fraction
    assert lines[2] == "| no_pretrain | 1% | 2 | 60.60 +- 0.71 | 60.10, 61.10 | 0.5 |"
    assert json.loads((tmp_path / "study.json").read_text())["runs"] == 8


def test_every_arm_fine_tunes_on_the_same_questions_nested_across_fractions():
    options = study.StudyOptions.for_study(True, launchers=Path("."), cwd=Path("."), out=Path("x"))
    for seed in options.seeds:
        sets = {f: study.finetune_sets(options, f, seed) for f in options.fractions}
        assert all(f"train.seed={seed}" in s for s in sets.values())  # arm-independent: no arm in the inputs
        units = [np.ones(400, dtype=np.int64) for _ in range(3)]  # 3 shards of 400 one-question samples
        kept = {}
        for f in options.fractions:
            plan = EpochPlan(units, seed=seed, shuffle=True, rank=0, world_size=1, batch_size=1, drop_last=False,
                             subset_fraction=f)
            shards, local = plan.stream(0)
            kept[f] = set(zip(shards.tolist(), local.tolist()))
        ordered = [kept[f] for f in sorted(options.fractions)]
        assert len(ordered) >= 2
        assert all(a < b for a, b in zip(ordered, ordered[1:]))  # nested: the 2% questions are among the 10%


def test_runs_at_once_give_the_same_table_and_each_cell_waits_for_its_arms_pretraining(tmp_path, monkeypatch):
    calls, threads = [], []
    _fake_launchers(monkeypatch, calls)
    fake = study._run

    def run(cmd, log, cwd, threads_=None):
        threads.append(threads_)
        if cmd[1].endswith("pretrain.py") and "mlm_itm" in str(log):
            time.sleep(0.2)  # a slow pre-training: its cells must still come after it
        return fake(cmd, log, cwd)

    monkeypatch.setattr(study, "_run", run)
    monkeypatch.setattr(study, "usable_cores", lambda: 4)
    tables = {}
    for jobs in (1, 2):
        options = study.StudyOptions.for_study(True, launchers=REPO / "launcher", cwd=REPO, out=tmp_path / str(jobs),
                                               arms=["no_pretrain", "mlm", "mlm_itm"], fractions=[0.01, 0.02],
                                               seeds=[0, 1], jobs=jobs)
        summaries = study.run_study(options)
        assert [(s["arm"], s["subset_fraction"], s["seed"]) for s in summaries] == \
            [(a, f, s) for a in options.arms for f in options.fractions for s in options.seeds]
        tables[jobs] = (tmp_path / str(jobs) / "table.md").read_text()
    assert tables[1] == tables[2]
    assert threads[0] is None  # the CNN stage takes every core, alone
    assert set(threads[1:len(threads) // 2]) == {None} and set(threads[len(threads) // 2 + 1:]) == {2}
    second = calls[len(calls) // 2:]
    pretrained_at = {a: next(i for i, c in enumerate(second) if c[1].endswith("pretrain.py") and f"/{a}/" in str(c))
                     for a in ("mlm", "mlm_itm")}
    for i, c in enumerate(second):
        if c[1].endswith("finetune.py") and "--init" in c:
            arm = Path(c[c.index("--init") + 1]).parent.parent.name
            assert i > pretrained_at[arm]


def test_jobs_below_one_are_refused():
    with pytest.raises(ConfigError, match="--jobs must be at least 1"):
        study.StudyOptions.for_study(True, launchers=Path("."), cwd=Path("."), out=Path("x"), jobs=0)


def _tiny_easyvqa(root: Path, images: dict[str, int]) -> Path:
    """The package's data/ layout with its first ``images[split]`` images of each split."""
    import shutil

    import easy_vqa

    package = Path(easy_vqa.__file__).parent / "data"
    root.mkdir(parents=True)
    shutil.copy(package / "answers.txt", root / "answers.txt")
    for split, n in images.items():
        (root / split / "images").mkdir(parents=True)
        rows = [r for r in json.loads((package / split / "questions.json").read_text()) if r[2] < n]
        (root / split / "questions.json").write_text(json.dumps(rows))
        for i in range(n):
            shutil.copy(package / split / "images" / f"{i}.png", root / split / "images" / f"{i}.png")
    return root


@pytest.mark.slow
def test_the_ablation_command_at_toy_size_tables_every_cell_on_nested_subsets_shared_by_the_arms(tmp_path):
    """launcher/easyvqa.py --ablation for real, a few steps: two arms, two fractions, two seeds."""
    import subprocess
    import sys

    from data_pipeline.build_shards import build_shards

    build_shards("easyvqa", _tiny_easyvqa(tmp_path / "raw", {"train": 30, "test": 4}), tmp_path / "shards",
                 workers=1, progress=False)
    shards = f"data.shards={json.dumps(str(tmp_path / 'shards'))}"
    small = [shards, "model.text_config.num_hidden_layers=1", "data.micro_batch_size=8", "train.warmup_steps=1"]
    out = tmp_path / "study"
    cmd = [sys.executable, str(REPO / "launcher" / "easyvqa.py"), "--ablation", "--arms", "no_pretrain", "mlm_itm",
           "--subset", "0.25", "0.5", "--seeds", "0", "1", "--cnn-steps", "2", "--pretrain-steps", "2",
           "--finetune-steps", "2", "--jobs", "2", "--out", str(out)]
    for stage in ("cnn", "pretrain", "finetune"):
        cmd += [a for v in small for a in (f"--{stage}-set", v)]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    units = {}
    for arm in ("no_pretrain", "mlm_itm"):
        for f in ("0.25", "0.5"):
            for seed in (0, 1):
                cell = out / arm / f"frac{f}_seed{seed}"
                summary = json.loads((cell / "summary.json").read_text())
                assert summary["test_questions"] > 0 and 0 <= summary["test_accuracy"] <= 100
                units[arm, f, seed] = set(json.loads((cell / "finetune" / "train_subset.json").read_text())["units"])
                assert summary["train_questions"] == len(units[arm, f, seed])
    for seed in (0, 1):
        for f in ("0.25", "0.5"):
            assert units["no_pretrain", f, seed] == units["mlm_itm", f, seed]  # every arm, the same questions
        assert units["no_pretrain", "0.25", seed] < units["no_pretrain", "0.5", seed]  # nested
    assert units["no_pretrain", "0.5", 0] != units["no_pretrain", "0.5", 1]  # the seed draws the subset
    train = sum(1 for r in json.loads((tmp_path / "raw" / "train" / "questions.json").read_text()) if r[2] < 27)
    assert abs(len(units["no_pretrain", "0.5", 0]) - train / 2) <= 1  # 27 train images: the last 3 are val
    rows = (out / "table.md").read_text().splitlines()[2:]
    assert [r.split(" | ")[:3] for r in rows] == [[f"| {arm}", f"{f:.0%} ({len(units[arm, str(f), 0])})", "2"]
                                                  for arm in ("no_pretrain", "mlm_itm") for f in (0.25, 0.5)]
    assert json.loads((out / "study.json").read_text())["runs"] == 8


def test_each_run_is_its_own_single_process_job_with_its_own_threads(monkeypatch):
    """A caller inside a process group (or with MASTER_PORT set) must not hand its port to the runs:
    two runs at once would meet on it, and the caller still holds it."""
    for k, v in dict(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", LOCAL_WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
                     MASTER_PORT="29500", PIXELBERT_KEEP="yes").items():
        monkeypatch.setenv(k, v)
    env = study.child_env(3)
    assert env["OMP_NUM_THREADS"] == "3" and env["PIXELBERT_KEEP"] == "yes"
    assert not {"RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"} & set(env)
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    assert study.child_env(None)["OMP_NUM_THREADS"] == "7"  # one run at a time: the caller's choice stands
