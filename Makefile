# Two commands do all set-up: `make demo` and `make test` (each creates .venv and installs on first use).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
export RAY_USAGE_STATS_ENABLED ?= 0
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install test lint demo bench clean

$(STAMP): pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "pip>=24"
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e ".[dev,eval]"
	touch $(STAMP)

install: $(STAMP)

test: install
	RAY_AUTH_MODE=disabled $(VENV)/bin/pytest -q -p no:cacheprovider -n 2 --dist loadgroup --durations=15; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing on purpose"; fi; exit $$rc

lint: install
	$(VENV)/bin/ruff check hrm_ray tests bench experiments data_jobs

demo: install
	$(PY) experiments/demo.py

clean:
	rm -rf $(VENV) runs demo_data
