# Every target creates and uses the project's own virtual environment in .venv, installed with the
# exact versions in requirements.lock (the project itself goes in editable, without resolving again).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
LOCK := requirements.lock
PIP_VERSION := 26.3

.PHONY: install demo test bench lock clean-venv chromium

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet pip==$(PIP_VERSION)

$(STAMP): $(PY) pyproject.toml $(LOCK)
	$(PY) -m pip install --quiet -r $(LOCK)
	$(PY) -m pip install --quiet --no-deps -e .
	$(PY) -m pip check
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/ngram demo

# The explorer's browser test drives the system Chromium (Debian's package; Playwright never downloads
# its own): installed here when missing and running as root, otherwise the command is printed.
CHROMIUM ?= /usr/bin/chromium

chromium:
	@if [ ! -x $(CHROMIUM) ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Chromium (apt-get) for the browser test"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else \
	    echo "Chromium is missing; the browser test will fail. Install it with: sudo apt-get install -y chromium"; \
	  fi; \
	fi

# The real SmolLM2-135M is fetched (once, into ~/.cache/ngram-engine) so its tests run, not skip;
# NGRAM_REQUIRE_BROWSER=1 makes a missing browser a failure rather than a skip.
test: install chromium
	$(VENV)/bin/ngram fetch smollm2
	NGRAM_REQUIRE_SMOLLM=1 NGRAM_REQUIRE_BROWSER=1 $(PY) -m pytest -q -x --timeout=900 tests || [ $$? -eq 5 ]

# Quick side-by-side run; see bench/README.md for the full-size benchmarks of each issue.
bench: install
	$(PY) bench/bench_engine.py --size smoke
	$(PY) bench/bench_grpc.py

# Re-resolve every dependency (all extras) in a scratch venv and write the exact versions to
# requirements.lock. torch is the CPU build these machines carry; the rest resolves from pyproject.
lock:
	rm -rf .lock-venv
	$(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet pip==$(PIP_VERSION)
	.lock-venv/bin/python -m pip install --quiet torch==2.13.0
	.lock-venv/bin/python -m pip install --quiet '.[dev,torch,ray]'
	( echo "# Exact versions of every dependency (all extras). Refresh with: make lock"; \
	  .lock-venv/bin/python -m pip freeze --exclude-editable | grep -iv '^ngram-engine' ) > $(LOCK)
	rm -rf .lock-venv

clean-venv:
	rm -rf $(VENV)
