# Two entry points for a fresh machine: `make demo` and `make test`.
# Each creates the virtual environment when it is missing or out of date.
PYTHON ?= python3
VENV ?= .venv
STAMP := $(VENV)/.installed

.PHONY: demo test lint format bench-codiesp clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/medcoder demo --output runs/demo

# system-deps: Debian's chromium (the browser test) and PostgreSQL (the audit store's server test), where missing;
# the suite runs beside a throw-away PostgreSQL server on loopback.
test: $(STAMP)
	scripts/system-deps.sh
	scripts/with-postgres.sh $(VENV)/bin/python -m pytest -q

bench-codiesp: $(STAMP)
	$(VENV)/bin/python bench/codiesp_tfidf.py

clean:
	rm -rf $(VENV) runs .pytest_cache

lint: $(STAMP)  # CI: lint and formatting are both checked
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

format: $(STAMP)
	$(VENV)/bin/ruff format src tests bench
	$(VENV)/bin/ruff check --fix src tests bench
