# Every target bootstraps its own virtual environment in .venv (Python 3.11+) with what it needs:
#   core   = pip install -e .            the simulator, the PPO trainer, the CLI (train)
#   server = pip install -e ".[server]"  + the OpenEnv server (serve, bench)
#   dev    = pip install -e ".[dev]"     + the server, the adapters, the tests and the tools (test, lint, fuzz)
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
CORE   := $(VENV)/.installed-core
SERVER := $(VENV)/.installed-server
DEV    := $(VENV)/.installed-dev

.PHONY: install install-server install-dev test test-fast train bench serve fuzz lint format clean

$(VENV)/.created:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	touch $@

$(CORE): pyproject.toml $(VENV)/.created
	$(PY) -m pip install --quiet -e .
	touch $@

$(SERVER): pyproject.toml $(VENV)/.created
	$(PY) -m pip install --quiet -e ".[server]"
	touch $@

$(DEV): pyproject.toml $(VENV)/.created
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

install: $(CORE)

install-server: $(SERVER)

install-dev: $(DEV)

test: $(DEV)
	$(PY) -m pytest -q -n auto --dist loadfile

test-fast: $(DEV)
	$(PY) -m pytest -q -n auto --dist loadfile -m "not slow"

train: $(CORE)
	$(PY) -m inferencegym train-all

bench: $(SERVER)
	timeout 3000 $(PY) -m benchmarks.run_all

serve: $(SERVER)
	$(PY) -m server.app --host 0.0.0.0 --port 8000

# the long fuzz run (>= 2,000 HTTP cases and 2,000 WebSocket frames): benchmarks/results/fuzz.json
fuzz: $(DEV)
	timeout 3000 nice -n 10 $(PY) -m benchmarks.fuzz --cases 2000 --ws-frames 2000

lint: $(DEV)
	$(VENV)/bin/ruff check gymjax ppo inferencegym server benchmarks tests

format: $(DEV)
	$(VENV)/bin/ruff format gymjax ppo inferencegym server benchmarks tests

clean:
	rm -rf $(VENV) .pytest_cache
