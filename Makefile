# The two commands of the README:
#   make serve   set up and run `molt serve` on the embedded defaults
#   make test    set up and run the test suite (starts a local PostgreSQL and installs
#                headless Chromium for the dashboard's tests when it can)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
# A corpus of real tool schemas for the TAFC tests (its data only: the wheel is not installed).
BFCL_VERSION := 2026.3.23

export LITELLM_LOCAL_MODEL_COST_MAP := True
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup serve test lock bench-proxy lint clean

setup: $(STAMP)

# The venv gets exactly requirements.lock (every dependency, transitive ones
# included, at an exact version), then molt itself without dependencies.
# torch is installed first and pinned by constraints.txt: otherwise pip pulls a
# multi-GB CUDA build.
$(STAMP): pyproject.toml requirements.lock constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade 'pip==25.3'
	$(PIP) install -q -c constraints.txt torch==2.13.0
	$(PIP) install -q -c constraints.txt -r requirements.lock
	$(PIP) install -q --no-deps -e .
	$(PIP) download -q --no-deps -d $(VENV)/corpus 'bfcl-eval==$(BFCL_VERSION)'
	touch $(STAMP)

# Refresh the lock from pyproject.toml (pip-tools; run after changing a dependency).
lock: setup
	$(VENV)/bin/pip-compile -q --extra dev --strip-extras --no-emit-find-links \
	  --no-emit-index-url -c constraints.txt -o requirements.lock pyproject.toml

serve: setup
	$(VENV)/bin/molt serve

test: setup
	@bash scripts/install_browser.sh
	@if [ -z "$$MOLT_TEST_PG_URL" ]; then \
	  url=$$(bash scripts/start_postgres.sh | tail -n 1); \
	  case "$$url" in postgresql*) export MOLT_TEST_PG_URL="$$url";; esac; \
	  echo "PostgreSQL for tests: $${MOLT_TEST_PG_URL:-none (PostgreSQL cases will skip)}"; \
	  $(PY) -m pytest -q -p no:cacheprovider -rs; \
	else \
	  $(PY) -m pytest -q -p no:cacheprovider -rs; \
	fi

bench-proxy: setup
	$(PY) -m bench.proxy_overhead

lint: setup
	$(PY) -m ruff check store proxy evolver trainer molt modeling bench tests
	$(PY) -m mypy store proxy evolver

clean:
	rm -rf $(VENV) .molt
