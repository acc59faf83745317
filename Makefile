# Two entry points: `make repro` (the main job) and `make test` (the suite).
# `make repro` also pushes the outputs to the DVC remote when one is configured
# (README, "Sharing outputs"); `make publish` pushes and fails without one.
# Both create .venv on first use and install pinned versions from constraints.txt.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: setup repro publish test lint clean-venv

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	# data.source=kdd135 reads two CSVs from the aeon wheel and never imports aeon, whose
	# numba<0.64 pin no numpy-2.4 environment can meet (seqmodels/data/ucr_anomaly.py).
	$(BIN)/python -m pip install --quiet --no-deps -c constraints.txt aeon
	touch $(STAMP)

repro: setup
	$(BIN)/dvc repro
	$(BIN)/seqmodels push --if-configured

publish: setup
	$(BIN)/seqmodels push

test: setup
	$(BIN)/ruff check .
	$(BIN)/pytest

lint: setup
	$(BIN)/ruff check .

clean-venv:
	rm -rf $(VENV)
