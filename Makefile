# embedforge — all set-up happens here; a fresh clone needs only `make demo` or `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# the evaluation data (sts/, ...): $EMBEDFORGE_DATA when set, else the development path; every recipe
# (tests included) sees it as EMBEDFORGE_DATA
DATA   ?= $(or $(EMBEDFORGE_DATA),../shared/data)
export EMBEDFORGE_DATA := $(DATA)
# torch first, pinned to the CPU build that lies on disk; any other spec pulls a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0

.PHONY: install demo test test-all lint bench bench-sts bench-explore bench-serve bench-search bench-ann clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

demo: install
	$(PY) -m embedforge.demo --data-dir $(DATA)

lint: install
	$(VENV)/bin/ruff check embedforge tests bench
	$(VENV)/bin/mypy

test: lint
	$(PY) -m pytest -q

test-all: lint
	$(PY) -m pytest -q -m "slow or not slow"

# Benchmarks run one at a time (2-core machines): never beside each other or a test suite.
bench: bench-sts bench-explore bench-serve bench-search bench-ann

bench-sts: install
	$(PY) bench/sts.py --data-dir $(DATA)

bench-explore: install
	$(PY) bench/explore.py --data-dir $(DATA) --update-benchmarks

bench-serve: install
	$(PY) bench/serve.py

bench-search: install
	$(PY) bench/search_scifact.py --data-dir $(DATA) --reranker auto

bench-ann: install
	$(PY) bench/ann.py

clean:
	rm -rf $(VENV) demo-output .pytest_cache .mypy_cache .ruff_cache
