# The two commands a user needs: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
PROTOS := $(wildcard proto/mshare/v1/*.proto)

.PHONY: run test proto lint typecheck bench clean

$(INSTALLED): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

## run: start mshared in the foreground with default settings
run: $(INSTALLED)
	$(BIN)/mshared $(ARGS)

## test: the whole suite (unit, integration, process; root-only tests skip otherwise)
test: $(INSTALLED)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## proto: regenerate client/mshare/v1 from proto/ (a test fails when it is stale)
proto: $(INSTALLED)
	$(BIN)/python tools/genproto.py client

## lint: buf lint on the API, mypy strict on both packages
lint: $(INSTALLED)
	npx --no-install buf lint proto
	$(BIN)/mypy

typecheck: $(INSTALLED)
	$(BIN)/mypy

clean:
	rm -rf $(VENV) node_modules .pytest_cache .mypy_cache
