# Every target creates and uses the project's own virtual environment in .venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install demo test bench clean-venv

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# torch is pinned first: the CPU wheel of this version is what the machines here provide.
$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev,torch,ray]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/ngram demo

test: install
	$(PY) -m pytest -q -x --timeout=900 tests || [ $$? -eq 5 ]

# Quick side-by-side run; see bench/README.md for the full-size benchmarks of each issue.
bench: install
	$(PY) bench/bench_engine.py --size smoke
	$(PY) bench/bench_grpc.py
