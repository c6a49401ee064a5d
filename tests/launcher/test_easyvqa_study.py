"""The easy-VQA study's seeded ablation: one run per (arm, fraction, seed), the same questions in
every arm, nested across fractions, and a table of mean +- spread over seeds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from data_pipeline.plan import EpochPlan
from pixelbert.recipes import easyvqa as study

REPO = Path(__file__).resolve().parents[2]


def _fake_launchers(monkeypatch, calls):
    """Each stage as the launchers would leave it, without training (the layout is under test)."""

    def run(cmd, log, cwd):
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
        small, mid, big = (kept[f] for f in sorted(options.fractions))
        assert small < mid < big  # nested: the 1% questions are among the 2%, those among the 10%
