# Two commands do all set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
RUN_HOME ?= $(CURDIR)/run-home

.PHONY: run tour test lint typecheck layers check bench clean lock

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev,torch]'
	touch $(STAMP)

# A model answering requests, a rollout promoted and one rolled back; serves until Ctrl-C.
run: $(STAMP)
	MODELPLANE_HOME=$(RUN_HOME)/first-run $(PY) examples/first_run.py

# The registry tour: package, push, alias, inspect, verify, lineage and audit.
tour: $(STAMP)
	MODELPLANE_HOME=$(RUN_HOME)/tour $(PY) examples/quickstart.py

test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadgroup

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench examples
	$(VENV)/bin/ruff format --check src tests bench examples

typecheck: $(STAMP)
	$(VENV)/bin/mypy

layers: $(STAMP)
	$(VENV)/bin/lint-imports

check: lint typecheck layers test

bench: $(STAMP)
	$(PY) bench/registry.py

# Regenerate the pins after changing dependencies: CI installs exactly these.
lock: $(STAMP)
	$(PY) -m pip freeze --exclude-editable | grep -v '^modelplane' > constraints.txt

clean:
	rm -rf $(VENV) $(RUN_HOME)
