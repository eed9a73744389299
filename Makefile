# `make run`: venv, install, create the tables (dropping any: --yes), load the bundled sample, show the
# analytics; always the embedded PostgreSQL and data/ (data/sample.cfg), whatever a ./dwh.cfg says.
# `make test`: the test suite against a real (embedded) PostgreSQL.
# `make check-wheels`: every requirement installs from wheels on CPython 3.10-3.14, four platforms.
# Any Python 3.10+: PYTHON=... if given, else python3 if new enough, else the newest python3.1X.
ifeq ($(origin PYTHON),undefined)
PYTHON := $(shell for p in python3 python3.14 python3.13 python3.12 python3.11 python3.10; do \
	$$p -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null && { echo $$p; break; }; done)
endif
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip install --quiet --disable-pip-version-check

.PHONY: run test check-wheels bench clean

$(VENV)/.installed: requirements.txt
	@test -n "$(PYTHON)" || { echo "Python 3.10+ is needed: none of python3, python3.14 ... python3.10 is; name one with PYTHON=..."; exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit("Python 3.10+ is needed, $(PYTHON) is " + sys.version.split()[0]) if sys.version_info < (3, 10) else print("Using $(PYTHON) (Python " + sys.version.split()[0] + ")")'
	$(PYTHON) -m venv $(VENV)
	$(PIP) -r requirements.txt
	@touch $@

$(VENV)/.installed-dev: requirements-dev.txt $(VENV)/.installed
	$(PIP) -r requirements-dev.txt
	@touch $@

run: $(VENV)/.installed
	$(PY) create_tables.py --config data/sample.cfg --yes
	$(PY) etl.py --config data/sample.cfg
	$(PY) analytics.py --config data/sample.cfg

test: $(VENV)/.installed-dev
	$(PY) -m pytest -q

check-wheels: $(VENV)/.installed
	$(PY) .ci/check_wheels.py

$(VENV)/.installed-bench: bench/requirements.txt $(VENV)/.installed
	$(PIP) -r bench/requirements.txt
	@touch $@

# BENCH_ARGS="--scales 10000,100000" for a quicker run
bench: $(VENV)/.installed-bench
	$(PY) bench/run.py --compare duckdb --incremental $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .dwh .pytest_cache bench/out
