# The two commands of the README: `make run` serves, `make test` tests. Both set up .venv first.
# llama-cpp-python (test side: the local model server) builds from source: GGML_NATIVE=OFF keeps it portable.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CONSTRAINTS := requirements/constraints.txt
PLUGIN_DIRS := $(patsubst %/pyproject.toml,%,$(sort $(wildcard plugins/*/pyproject.toml plugins/agents/*/pyproject.toml)))
HOST ?= 127.0.0.1
PORT ?= 8000
WORKERS ?= 1
PYTEST_ARGS ?=

.PHONY: run test install lint typecheck bench clean

install: $(STAMP)

$(STAMP): $(CONSTRAINTS) requirements/dev.txt kernel/pyproject.toml $(addsuffix /pyproject.toml,$(PLUGIN_DIRS))
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c $(CONSTRAINTS) pip==26.3
	CMAKE_ARGS="-DGGML_NATIVE=OFF" $(BIN)/python -m pip install --quiet --disable-pip-version-check -c $(CONSTRAINTS) -r requirements/dev.txt \
		-e kernel $(addprefix -e ,$(PLUGIN_DIRS))
	touch $(STAMP)

run: $(STAMP)
	mkdir -p var
	$(BIN)/botcriptofy --settings settings serve --host $(HOST) --port $(PORT) --workers $(WORKERS)

test: $(STAMP)
	$(BIN)/python -m pytest -n auto $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check kernel plugins tests bench
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) var
