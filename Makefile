# cnnlab: `make demo` runs the main job, `make test` runs the checks. Both install what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LOCK := requirements.lock
# CNNLAB_DATA names the folder with mnist/; unset, cnnlab uses its cache and downloads MNIST.
export CNNLAB_DATA

.PHONY: install lock demo test lint typecheck pytest bench clean

install: $(STAMP)

# The exact versions of requirements.lock (every extra and the test tools), then cnnlab
# itself, editable, without letting pip resolve anything else. The lock's torch is the CPU
# build (2.13.0+cpu); where no find-links folder holds it, PyTorch's index does:
# make install PIP_ARGS='--extra-index-url https://download.pytorch.org/whl/cpu'
PIP_ARGS ?=
$(STAMP): pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(PIP_ARGS) -r $(LOCK)
	$(BIN)/pip install --quiet --no-deps -e .
	$(BIN)/pip check
	$(BIN)/python -m cnnlab.engine.native  # compile the C++ kernels now (~38 s), not in the first run
	touch $(STAMP)

# make lock: regenerate requirements.lock from pyproject.toml with uv, for Python 3.11 on
# x86-64 Linux. Versions already in the lock are kept where they still fit (add
# LOCK_ARGS=--upgrade for the newest, LOCK_ARGS='--upgrade-package NAME' for one);
# lock-constraints.txt keeps torch the CPU build from FIND_LINKS.
LOCK_VENV := .venv-lock
UV_VERSION := 0.13.10
FIND_LINKS ?= /opt/wheels

lock:
	test -x $(LOCK_VENV)/bin/uv || ($(PYTHON) -m venv $(LOCK_VENV) \
		&& $(LOCK_VENV)/bin/pip install --quiet uv==$(UV_VERSION))
	$(LOCK_VENV)/bin/uv pip compile pyproject.toml --extra all --extra test \
		--python-version 3.11 --python-platform x86_64-manylinux_2_28 \
		--find-links $(FIND_LINKS) --emit-find-links --constraint lock-constraints.txt \
		--custom-compile-command 'make lock' --quiet $(LOCK_ARGS) -o $(LOCK)

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
	rm -rf $(VENV) $(LOCK_VENV) .pytest_cache .mypy_cache .ruff_cache
