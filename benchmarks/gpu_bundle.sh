#!/usr/bin/env bash
# The wheels the GPU machine lacks for the GPU suite, into .whl/ (git-ignored; carried to the machine).
#
#   bash benchmarks/gpu_bundle.sh [DIR]        (default .whl)
#
# PYTHON: the interpreter whose package versions to match (default .venv/bin/python);
# PYTHON_VERSION: the target's python (default 3.12, the device's; 3.11 makes the bundle for a dry
# run of benchmarks/gpu_suite.sh here, see tests/benchmarks/test_gpu_suite_dry_run.py).
#
# Run it here, where the package registries are reachable; benchmarks/gpu_suite.sh installs the
# result there. The device image (python 3.12, manylinux x86-64) has torch, transformers,
# tensorboard, numpy, pillow, ninja, msgpack, psutil, py-cpuinfo, packaging, tqdm and einops, and
# no DeepSpeed: this builds DeepSpeed's sdist into a pure-python wheel (ops are JIT-built there, or
# the torch fallback runs) and fetches the requirements of it that the image lacks, each at the
# version installed here, so the GPU runs what the tests here ran. Nothing else in the GPU suite
# comes from outside the image: no MiniLM (88 MB), no DALI (~0.8 GB), no ray, no webdataset.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-.whl}
PY=${PYTHON:-.venv/bin/python}
TARGET=${PYTHON_VERSION:-3.12}
LIMIT_MIB=55  # the device takes 64 MiB of carried files, the repository included
# DeepSpeed's requirements missing from the device image: hjson, and pydantic with its own.
MISSING="hjson pydantic pydantic-core annotated-types typing-inspection typing-extensions"

version() { "$PY" -c "import importlib.metadata as m; print(m.version('$1'))"; }

mkdir -p "$DIR"
rm -f "$DIR"/*.whl
"$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$DIR" "deepspeed==$(version deepspeed)"
for name in $MISSING; do
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$TARGET" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$DIR" "$name==$(version "$name")"
done
ls -l "$DIR"/*.whl
total=$(cat "$DIR"/*.whl | wc -c)
echo "bundle for python $TARGET: $(ls "$DIR"/*.whl | wc -l) wheels, $((total / 1024)) KiB in $DIR (limit $LIMIT_MIB MiB)"
if [ "$total" -gt $((LIMIT_MIB * 1024 * 1024)) ]; then
  echo "bundle over $LIMIT_MIB MiB: it would not travel with the repository" >&2
  exit 1
fi
