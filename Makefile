# Every target bootstraps its own virtual environment in .venv (Python 3.11+).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install test test-fast train bench serve fuzz lint format clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[server,dev]"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q -n auto --dist loadfile

test-fast: $(STAMP)
	$(PY) -m pytest -q -n auto --dist loadfile -m "not slow"

train: $(STAMP)
	$(PY) -m inferencegym train-all

bench: $(STAMP)
	timeout 3000 $(PY) -m benchmarks.run_all

serve: $(STAMP)
	$(PY) -m server.app --host 0.0.0.0 --port 8000

# the long fuzz run (>= 2,000 HTTP cases and 2,000 WebSocket frames): benchmarks/results/fuzz.json
fuzz: $(STAMP)
	timeout 3000 nice -n 10 $(PY) -m benchmarks.fuzz --cases 2000 --ws-frames 2000

lint: $(STAMP)
	$(VENV)/bin/ruff check gymjax ppo inferencegym server benchmarks tests

format: $(STAMP)
	$(VENV)/bin/ruff format gymjax ppo inferencegym server benchmarks tests

clean:
	rm -rf $(VENV) .pytest_cache
