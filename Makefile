# Set-up is `make install`; `make run` and `make test` both start with it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install hledger run test test-sqlite test-postgres bench chaos lint clean chromium demo

# Every `ledger` process (a server, its keeper, `ledger rebuild`, each server a test starts)
# imports ~1 s of Python when none of it is compiled yet, ~0.5 s when it is: where
# PYTHONDONTWRITEBYTECODE is set (as on these machines) Python never keeps what it compiles, so
# the bytecode is written here, the libraries' once, the project's whenever its files changed.
install: $(STAMP)
	$(BIN)/python -m compileall -q ledger api projections bench

# uv installs the environment in seconds instead of pip's minute; it comes from PyPI itself.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "uv>=0.4"
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python -e ".[dev]"
	touch $(STAMP)

run: install
	$(BIN)/ledger serve

test: install chromium hledger
	$(BIN)/pytest -q

# The console's browser tests (tests/browser) drive Debian's Chromium through Playwright for
# Python (never `playwright install`): installed from Debian's packages when it is missing.
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
chromium:
	test -x /usr/bin/chromium || ($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium)

# The hledger export's test checks the file with Debian's hledger (issue 10).
hledger:
	command -v hledger >/dev/null || ($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq hledger)

# Issue 9's figures (bench/run.py; needs wrk). BENCH_ARGS adds options, e.g. --rounds 1 --seconds 4.
bench: install
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(BIN)/python -m bench.run $(BENCH_ARGS)

# The long chaos run (tests/chaos/README.md) on a PostgreSQL cluster of its own (15/chaos on port
# 5433, made if missing: the run crash-restarts it). CHAOS_ARGS adds or overrides options.
# Then the model-based state machine at 5,000 examples per kind of store, in two shards each run
# side by side (pytest-xdist: one example keeps about one core busy), and contract fuzzing at 100
# examples per operation with a fresh seed.
chaos: install
	$(BIN)/python -m tests.chaos.run --operations 10000 --servers 3 --kills 3 --pg-restarts 2 \
		--terminations 2 --history var/chaos-history.json $(CHAOS_ARGS)
	LEDGER_MODEL_EXAMPLES=5000 LEDGER_MODEL_SHARDS=2 $(BIN)/pytest -q -n 2 tests/model
	LEDGER_FUZZ_EXAMPLES=100 LEDGER_FUZZ_SEED=random $(BIN)/pytest -q tests/contract

lint: install
	$(BIN)/ruff check ledger projections api tests bench
	$(BIN)/mypy

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache

# A shop's month on the embedded SQLite store (api/demo.py), built afresh, then served on
# 127.0.0.1:8080 with the demo's tokens (README.md, "A day with the demo"). Its keys and its
# checkpoint file sit beside it (var/demo.*, removed by --replace): a month built afresh is
# another log, which the checkpoints of an earlier one would name as cut.
DEMO_DB ?= var/demo.db
demo: install
	$(BIN)/python -m api.demo $(DEMO_DB) --replace
	LEDGER_DATABASE_URL=sqlite:///$(DEMO_DB) LEDGER_CHAIN_KEY_FILE=$(basename $(DEMO_DB)).chain-key \
		LEDGER_SIGNING_KEY_FILE=$(basename $(DEMO_DB)).signing-key \
		LEDGER_CHECKPOINT_FILE=$(basename $(DEMO_DB)).checkpoints \
		LEDGER_TOKENS=$$($(BIN)/python -c 'from api.demo import demo_tokens_env; print(demo_tokens_env())') \
		LEDGER_LOG_FORMAT=text $(BIN)/ledger serve
