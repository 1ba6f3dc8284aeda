# Every developer command. The first target that needs the virtualenv creates it and installs the
# package (editable) with its pinned dependencies; later runs reuse .venv until setup.py changes.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test bench lint validate simulate serve clean

install: $(STAMP)

$(STAMP): setup.py
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "Installing into $(VENV) (first run takes a few minutes)..."
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --progress-bar on -e '.[test]'
	@touch $(STAMP)

demo: install
	$(BIN)/convergence demo

test: install
	$(BIN)/python -m pytest

BENCH_STAMP := $(VENV)/.installed-bench

$(BENCH_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[test,bench]'
	@touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python -m bench

serve: install
	$(BIN)/convergence serve

lint: install
	$(BIN)/ruff check .

validate: install
	$(BIN)/convergence validate

simulate: install
	$(BIN)/convergence simulate

clean:
	rm -rf .convergence bench-results.json .pytest_cache
