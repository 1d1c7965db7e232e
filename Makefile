# cnnlab: `make demo` runs the main job, `make test` runs the checks. Both install what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# CNNLAB_DATA names the folder with mnist/; unset, cnnlab uses its cache and downloads MNIST.
export CNNLAB_DATA

.PHONY: install demo test lint typecheck pytest bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	$(BIN)/python -m cnnlab.engine.native  # compile the C++ kernels now (~60 s), not in the first run
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/cnnlab train --case 1

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks docs
	$(BIN)/ruff format --check src tests benchmarks docs

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest

test: lint typecheck pytest

# make bench: the chapter's Keras/TensorFlow code against cnnlab, ratios in one run
# (benchmarks/README.md). BENCH_ARGS=--full trains to early stopping instead of 3 epochs.
KERAS_VENV := benchmarks/.venv-keras
KERAS_STAMP := $(KERAS_VENV)/.installed

$(KERAS_STAMP): benchmarks/requirements-keras.txt
	$(PYTHON) -m venv $(KERAS_VENV)
	$(KERAS_VENV)/bin/pip install --quiet -r benchmarks/requirements-keras.txt
	touch $(KERAS_STAMP)

bench: $(STAMP) $(KERAS_STAMP)
	$(BIN)/python benchmarks/run_bench.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
