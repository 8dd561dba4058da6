# Two commands do all set-up on a fresh machine:
#   make demo   - the main job on the synthetic world (superpixels -> pretraining -> linear probe -> pictures)
#   make test   - the test suite (builds the optional MinkowskiEngine backend once, cached, so its equivalence test runs)
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: demo test setup minkowski bench clean

$(BIN)/activate: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $(BIN)/activate

setup: $(BIN)/activate

minkowski: setup
	bash scripts/install_minkowski.sh $(BIN)/python

demo: setup
	$(BIN)/largead demo

test: setup minkowski
	$(BIN)/python -m pytest -n 2 $(PYTEST_ARGS)

bench: setup
	$(BIN)/python scripts/benchmark.py

clean:
	rm -rf $(VENV) outputs build *.egg-info
