# Set-up and entry points. `make demo` and `make test` are the README's two commands:
# both create .venv if missing, install Debian and Python dependencies (idempotent,
# skipped when nothing changed), then run the demo or the whole test suite.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.decomp-installed
DEBIAN_PACKAGES := fluidsynth fluid-soundfont-gm timgm6mb-soundfont musescore-general-soundfont-small \
	espeak-ng sox
export MPLBACKEND := Agg
export NO_MKDOCS_2_WARNING := 1

.PHONY: demo test setup system-packages lint docs results bench clean

demo: setup
	$(VENV)/bin/decomp demo

test: setup
	$(VENV)/bin/ruff check decomp tests benchmarks
	$(PY) -m pytest
	$(VENV)/bin/mkdocs build --strict --quiet --site-dir $(VENV)/site

setup: system-packages $(STAMP)

system-packages:
	@missing=""; for p in $(DEBIAN_PACKAGES); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing; \
	fi

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e '.[dev,notebooks,docs]'
	touch $(STAMP)

lint: setup
	$(VENV)/bin/ruff check decomp tests benchmarks

# The site alone. Notebook pages reuse the executions stored by tests/test_notebooks.py
# (build/executed-notebooks/) when notebook and package are unchanged, else execute them.
docs: setup
	$(VENV)/bin/mkdocs build --strict --quiet --site-dir $(VENV)/site

# Rewrite the Results pages and figures from docs/results/*.json (seconds; no training).
results: setup
	$(PY) benchmarks/docs_results.py

bench: setup
	$(PY) benchmarks/nmf_speed.py
	$(PY) benchmarks/transcription.py

clean:
	rm -rf $(VENV) site .pytest_cache build/executed-notebooks
