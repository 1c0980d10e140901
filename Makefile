# medfocal — one entry point for the README's commands and CI.
#   make demo   set up .venv and run the main job on generated data (no download)
#   make test   set up .venv (with dev tools) and run lint + the whole test suite:
#               test-fast (every test not marked slow/realdata; fails if one of them takes > 5 s),
#               then test-slow (the slow and real-data tests)
# TORCH_SPEC picks the torch build installed first; the default is the CPU wheel this project is
# developed on. On a CUDA machine use e.g.  make demo TORCH_SPEC=torch
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=
# a test over this many seconds (call phase) must carry @pytest.mark.slow (tests/conftest.py checks)
MAX_UNMARKED_S ?= 5

.PHONY: setup demo test test-fast test-slow lint format bench bench-accuracy clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.medfocal-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install "$(TORCH_SPEC)"
	$(BIN)/pip install -e ".[dev]"
	touch $@

setup: $(VENV)/.medfocal-installed

demo: setup
	$(BIN)/medfocal demo

test: setup
	$(MAKE) test-fast
	$(MAKE) test-slow

test-fast: setup
	$(BIN)/ruff check medfocal tests bench
	MEDFOCAL_MAX_UNMARKED_S=$(MAX_UNMARKED_S) $(BIN)/pytest -n 2 -m "not slow and not realdata" \
		--durations=15 $(PYTEST_ARGS)

test-slow: setup
	$(BIN)/pytest -n 2 -m "slow or realdata" --durations=15 $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check medfocal tests bench
	$(BIN)/ruff format --check medfocal tests bench

format: setup
	$(BIN)/ruff format medfocal tests bench
	$(BIN)/ruff check --fix medfocal tests bench

bench: setup
	$(BIN)/python bench/losses.py
	$(BIN)/python bench/train_step.py
	$(BIN)/python bench/dense_unet.py
	$(BIN)/python bench/data_loading.py
	$(BIN)/python bench/inference.py
	$(BIN)/python bench/lesion_matching.py
	$(BIN)/python bench/surface_metrics.py

bench-accuracy: setup
	$(BIN)/python bench/accuracy.py --resume

clean:
	rm -rf $(VENV) medfocal_demo .pytest_cache .ruff_cache
