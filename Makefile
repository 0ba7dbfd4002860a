# Two commands on a fresh machine: `make train` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The PyTorch builds this project is tested with; override e.g. TORCH="torch torchvision".
TORCH ?= torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.installed

.PHONY: setup train test test-all lint bench bench-formats bench-lightning claims clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

train: $(STAMP)
	$(BIN)/dlx train

# One pytest worker per core (pytest-xdist); a module's tests stay on one worker, so its fixtures run once.
PYTEST := $(BIN)/python -m pytest -q -n auto --dist loadscope

test: $(STAMP)
	$(PYTEST)

test-all: $(STAMP)
	$(PYTEST) -m ""

lint: $(STAMP)
	$(BIN)/ruff check dlx tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_train.py

bench-formats: $(STAMP)
	$(BIN)/python benchmarks/bench_formats.py

# Lightning is only the yardstick here: installed for this benchmark, never a dependency of dlx.
bench-lightning: $(STAMP)
	$(BIN)/python -m pip install -q lightning torchmetrics $(TORCH)
	$(BIN)/python benchmarks/bench_lightning.py

# Reruns every lecture-claim preset (conf/experiment/*.yaml with a claim: block) with 3 seeds and rewrites
# docs/claims.md, docs/claims.json and README's claims table from the measurements. A benchmark, not a test.
claims: $(STAMP)
	$(BIN)/dlx claims

clean:
	rm -rf $(VENV) build *.egg-info
