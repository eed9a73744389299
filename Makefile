# `make run`: venv, install, create the tables, load the bundled sample, show the analytics.
# `make test`: the test suite against a real (embedded) PostgreSQL.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip install --quiet --disable-pip-version-check

.PHONY: run test bench clean

$(VENV)/.installed: requirements.txt
	@$(PYTHON) -c 'import sys; sys.exit("Python 3.10+ is needed, found " + sys.version.split()[0]) if sys.version_info < (3, 10) else None'
	$(PYTHON) -m venv $(VENV)
	$(PIP) -r requirements.txt
	@touch $@

$(VENV)/.installed-dev: requirements-dev.txt $(VENV)/.installed
	$(PIP) -r requirements-dev.txt
	@touch $@

run: $(VENV)/.installed
	$(PY) create_tables.py
	$(PY) etl.py
	$(PY) analytics.py

test: $(VENV)/.installed-dev
	$(PY) -m pytest -q

$(VENV)/.installed-bench: bench/requirements.txt $(VENV)/.installed
	$(PIP) -r bench/requirements.txt
	@touch $@

# BENCH_ARGS="--scales 10000,100000" for a quicker run
bench: $(VENV)/.installed-bench
	$(PY) bench/run.py --compare duckdb $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .dwh .pytest_cache bench/out
