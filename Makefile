# The README's two commands: `make demo` and `make test`. Both set up .venv from scratch when missing.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup lint test test-fast demo bench clean

setup: $(STAMP)

# torch is installed first and on its own, exactly as pinned, so that no resolver ever picks
# a CUDA build; the package and its pinned dependencies follow (pyproject.toml is the one place
# where versions live).
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "$$(grep -o '"torch==[^"]*"' pyproject.toml | tr -d '"')"
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

lint: setup
	$(BIN)/ruff check tokenweight tests benchmarks
	$(BIN)/ruff format --check tokenweight tests benchmarks

test: setup lint
	$(BIN)/python -m pytest -q tests

# every test but those marked slow (end-to-end, multi-process, over 10 s): a few minutes on 2 cores
test-fast: setup lint
	$(BIN)/python -m pytest -q -m "not slow" tests

demo: setup
	$(BIN)/tokenweight demo

bench: setup
	$(BIN)/python benchmarks/bench_scoring.py
	$(BIN)/python benchmarks/bench_loss_memory.py

clean:
	rm -rf $(VENV) build *.egg-info
