# lact-audio: every target installs what it needs first (a fresh clone needs only python3 + make).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export PIP_DISABLE_PIP_VERSION_CHECK := 1
# Two cores here: keep torch from oversubscribing them when pytest runs.
export OMP_NUM_THREADS ?= 2
export TOKENIZERS_PARALLELISM := false
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install system-deps test lint demo bench clean

$(STAMP): requirements.txt setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt 2>&1 | grep -v "is ignored: it is neither" || true
	$(PY) -m pip install -q --no-deps -e . 2>&1 | grep -v "is ignored: it is neither" || true
	$(PY) -c "import modeling_lact_audio, modeling_lact_audio.kernels, torch, torchaudio, transformers"
	touch $(STAMP)

# torchcodec (datasets' Audio decoding, torchaudio.load) needs ffmpeg's libraries.
system-deps:
	@command -v ffmpeg >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg >/dev/null; }

install: system-deps $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

test: install lint
	$(PY) -m pytest -q tests

demo: install
	$(PY) eval/bench_lact_op.py --quick

bench: install
	$(PY) eval/bench_lact_op.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
