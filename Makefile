# Two entry points: `make demo` (main job on the embedded easy-VQA data) and `make test`.
# Both create/refresh .venv first; the stamp makes the refresh a no-op when nothing changed.
PYTHON ?= python3.11
VENV := .venv
STAMP := $(VENV)/.installed
PY := $(VENV)/bin/python
export DS_ACCELERATOR ?= $(shell $(PYTHON) -c "import shutil;print('cuda' if shutil.which('nvidia-smi') else 'cpu')" 2>/dev/null)
export HF_HUB_OFFLINE = 1
# DeepSpeed JIT-builds its CPU ops once per venv; a per-venv cache keeps two checkouts from
# rebuilding each other's ops (the shared ~/.cache default thrashes between venvs).
export TORCH_EXTENSIONS_DIR ?= $(CURDIR)/$(VENV)/torch_extensions
export TRANSFORMERS_OFFLINE = 1

.PHONY: venv demo test rehearse

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

# The main job on the embedded default: 2 DeepSpeed ranks (CPU unless a GPU is found), ZeRO-2,
# MLM + ITM pre-training of configs/tiny.json on the easy-VQA captions (shards built if missing).
DEMO_SHARDS := runs/data/easyvqa_captions
demo: $(STAMP)
	test -f $(DEMO_SHARDS)/manifest.json || $(PY) -m data_pipeline.build_shards --dataset easyvqa --out $(DEMO_SHARDS) --no-progress
	$(VENV)/bin/deepspeed --num_gpus 2 launcher/pretrain.py --config configs/tiny.json

test: $(STAMP)
	$(PY) -m pytest -q

# configs/r50.json and configs/x152.json on tiny COCO + VG shards, 2 DeepSpeed CPU ranks: 2 steps,
# resume from step 1, export. Not in `make test`: it would take the suite past 15 minutes on 2 cores.
rehearse: $(STAMP)
	PIXELBERT_REHEARSAL=1 $(PY) -m pytest -q tests/launcher/test_paper_configs.py
