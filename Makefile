# The commands of the README: `make demo`, `make lab` and `make test`. Each runs `make setup` first.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.setup-stamp

.PHONY: setup demo lab test lint typecheck unit bench clean

setup: $(STAMP)

# Idempotent: rebuilt only when the dependency pins change.
$(STAMP): pyproject.toml constraints.txt tools/install_pyradiomics.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade -c constraints.txt pip setuptools wheel
	# pyradiomics builds against the installed numpy, without build isolation.
	$(BIN)/python -m pip install --quiet -c constraints.txt numpy versioneer
	$(BIN)/python tools/install_pyradiomics.py
	# torch first and exactly pinned: the CPU build on disk, never a CUDA build pulled by a dependant.
	$(BIN)/python -m pip install --quiet -c constraints.txt torch==2.13.0
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

demo: setup
	$(BIN)/pacs-workbench demo

# JupyterLab from the project's environment at the project root, opening notebooks/; the kernel
# registered into .venv runs this environment's Python. Relative parameters resolve against the
# project root (PACS_WORKBENCH_HOME) whatever folder the kernel starts in.
LAB_ARGS ?=
lab: setup
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (pacs-workbench)"
	PACS_WORKBENCH_HOME="$(CURDIR)" $(BIN)/jupyter lab --ServerApp.root_dir="$(CURDIR)" \
		--LabApp.default_url=/lab/tree/notebooks $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)

lint: setup
	$(BIN)/ruff check pacs_workbench tests benchmarks tools
	$(BIN)/mypy

unit: setup
	$(BIN)/python -m pytest -q tests

test: lint unit

bench: setup
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) data/demo reports/demo
