# Two commands: `make demo` runs the main job, `make test` lints (ruff, mypy) and runs the whole suite.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint install bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# DATA=path picks a CIFAR-10 source; without it, auto-detection, then the embedded sample.
# --resume makes a second `make demo` finish or reuse the first one instead of refusing.
demo: $(STAMP)
	$(BIN)/alexbench run --preset quick --out runs/demo --resume $(if $(DATA),--data $(DATA))

# ruff (style, imports, bugbear, annotations, unused noqa) over the tree; mypy over alexbench/ and benchmarks/ (pyproject.toml)
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

# one process: two pytest-xdist workers each grew to ~12 GB (TensorFlow, torch, JAX and Ray loaded
# in one process) and the pair was OOM-killed on a 24 GB machine
test: lint
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run

clean:
	rm -rf runs build *.egg-info .pytest_cache
