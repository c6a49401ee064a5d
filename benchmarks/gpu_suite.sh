#!/usr/bin/env bash
# The GPU benchmark suite in one command, sized to finish within 8 minutes on one H200.
#
#   bash benchmarks/gpu_suite.sh [OUT_DIR [run.py options]]   (default benchmarks/results/gpu; dry run: runs/benchmarks/)
#   e.g. bash benchmarks/gpu_suite.sh /tmp/gpu --only trunk --budget-s 300   (the trunk with torch.compile)
#
# Runs on the machine's own python3 and torch (PIXELBERT_PYTHON overrides it) and installs nothing
# from a registry: the packages the device image lacks (DeepSpeed and the requirements of it that
# the image lacks) come as wheels from ./.whl (PIXELBERT_WHEELS), made by benchmarks/gpu_bundle.sh
# where a registry is reachable, installed into a target folder (PIXELBERT_SITE) put on PYTHONPATH.
# Nothing in it needs MiniLM or DALI: models use a BERT-base BertConfig and synthetic token ids,
# and a benchmark whose dependency is missing records its targets as "not measured" and why.
# Without CUDA it is a dry run (run.py --dry-run): every benchmark goes through its imports and
# configs, its targets recorded "not measured" (needs CUDA), so a CPU machine shows it would start.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-}
shift $(( $# > 0 ? 1 : 0 ))
PY=${PIXELBERT_PYTHON:-python3}
WHEELS=${PIXELBERT_WHEELS:-.whl}
SITE=${PIXELBERT_SITE:-/tmp/pixelbert-site}
if compgen -G "$WHEELS/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$WHEELS"/*.whl \
    || { echo "gpu suite: installing the wheels of $WHEELS into $SITE failed" >&2; exit 1; }
  export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
# DeepSpeed JIT-builds FusedAdam on first use (about a minute with nvcc + ninja; torch's fused AdamW
# runs instead when it cannot): keep the build across calls when the folder survives.
export TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-$PWD/runs/torch_extensions}
if [ "$("$PY" -c 'import torch; print(int(torch.cuda.is_available()))')" = 1 ]; then
  export DS_ACCELERATOR=cuda
  DRY=()
  OUT=${OUT:-benchmarks/results/gpu}
  mkdir -p "$OUT"
  nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm,driver_version --format=csv >"$OUT/nvidia-smi.csv" 2>&1
else
  export DS_ACCELERATOR=cpu
  DRY=(--dry-run)
  OUT=${OUT:-runs/benchmarks/gpu_dry_run}
  mkdir -p "$OUT"
  echo "gpu suite: no CUDA here: dry run (imports and configs only)"
fi
start=$(date +%s)
# 420 s of benchmark budget (run.py shares it out) + a hard stop at 7.5 minutes.
timeout --signal=INT 450 "$PY" benchmarks/run.py --suite gpu --out "$OUT" --budget-s 420 "${DRY[@]}" "$@" 2>&1 \
  | tee "$OUT/log.txt"
rc=${PIPESTATUS[0]}
echo "gpu suite: rc $rc in $(( $(date +%s) - start )) s; results in $OUT"
sed -n '1,40p' "$OUT/summary.md" 2>/dev/null
exit "$rc"
