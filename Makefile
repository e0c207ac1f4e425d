# Two commands do all set-up on a fresh machine:  `make quickstart` (the main job) and `make test`.
# Both create .venv and install policylab into it first.
#
# torch: on a CPU machine the CPU wheel (torch==2.13.0) is installed, never the multi-GB CUDA
# build. On a GPU machine, install your CUDA torch into .venv first (or run
# `make install TORCH=torch`): a torch already present in .venv is kept as it is.

PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
EXTRAS ?= dev,minari,tensorboard
BIN := $(VENV)/bin

.PHONY: install quickstart test lint clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install "$(TORCH)"
	$(BIN)/pip install -e ".[$(EXTRAS)]"
	touch $@

quickstart: install
	$(BIN)/python benchmarks/quickstart.py

test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check policylab tests benchmarks
	$(BIN)/ruff format --check policylab tests benchmarks

clean:
	rm -rf $(VENV) build *.egg-info
