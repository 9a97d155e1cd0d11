# surgcorpus — every target depends on `setup`, which is a no-op when the venv is up to date.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
MANIFEST ?=
OUT ?= build/$(basename $(notdir $(MANIFEST)))
WORKERS ?=

.PHONY: setup demo test lint corpus bench audit clean ffmpeg

setup: $(STAMP) ffmpeg

ffmpeg:
	@command -v ffprobe >/dev/null 2>&1 && command -v ffmpeg >/dev/null 2>&1 || { \
	  echo "ffmpeg/ffprobe missing: installing Debian's ffmpeg package"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; elif command -v sudo >/dev/null; then SUDO=sudo; else \
	    echo "ERROR: ffmpeg is not installed and this user cannot install it. Run: apt-get install -y ffmpeg" >&2; exit 1; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq ffmpeg >/dev/null || { \
	    echo "ERROR: could not install ffmpeg with apt-get. Install ffmpeg/ffprobe (>= 5) and re-run make." >&2; exit 1; }; }

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned: the CPU wheel on this machine's disk (an unpinned torch pulls a multi-GB CUDA build)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev,text]'
	@touch $(STAMP)

demo: setup
	$(BIN)/surgcorpus demo --out build/demo

test: setup
	$(BIN)/python -m pytest -q tests

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

corpus: setup
	@test -n "$(MANIFEST)" || { echo "usage: make corpus MANIFEST=manifests/<corpus>.yaml [OUT=build/<corpus>] [WORKERS=N]" >&2; exit 2; }
	$(BIN)/surgcorpus build $(MANIFEST) --out $(OUT) $(if $(WORKERS),--workers $(WORKERS))

bench: setup
	$(BIN)/python bench/throughput.py --out bench/results

audit: setup
	$(BIN)/surgcorpus benchmark audit all --splits ../shared/data/surgrec-splits --report build/audit/index.md

clean:
	rm -rf build
