# Set-up is `make install`; `make run` and `make test` both start with it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test test-sqlite test-postgres bench lint clean

install: $(STAMP)

# uv installs the environment in seconds instead of pip's minute; it comes from PyPI itself.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "uv>=0.4"
	$(BIN)/uv pip install --quiet --python $(BIN)/python -e ".[dev]"
	touch $(STAMP)

run: install
	$(BIN)/ledger serve

test: install
	$(BIN)/pytest -q

bench: install
	$(BIN)/python -m bench.run

lint: install
	$(BIN)/ruff check ledger projections api tests bench
	$(BIN)/mypy

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
