# The two set-up commands: `make run` and `make test`. Everything they need is installed here.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Debian packages the captioning tests use: flite speaks the test fixtures, chromium runs the
# browser test. Installed only where missing (the machines here run as root).
DEBS := flite chromium

.PHONY: run test test-captioning lint bench clean debs

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,captioning]'
	touch $(STAMP)

debs:
	@command -v flite >/dev/null && command -v chromium >/dev/null || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      --no-install-recommends $(DEBS) >/dev/null; }

run: $(STAMP)
	$(VENV)/bin/captioning up

test: $(STAMP) debs
	$(PY) -m pytest

test-captioning: $(STAMP) debs
	$(PY) -m pytest tests/captioning

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests examples bench
	$(VENV)/bin/mypy

# Leveret against the RabbitMQ on 127.0.0.1:5672, then profiles of Leveret, then the report
# in docs/benchmarks.md (about 10 minutes). BENCH_REPS=5 for more repetitions.
BENCH_REPS ?= 3
bench: $(STAMP)
	$(PY) bench/compare.py --reps $(BENCH_REPS) --curve-reps 1 --out bench/results/compare.json
	for scenario in A B C; do \
	  $(PY) bench/profile.py $$scenario --out bench/results/profile-$$scenario.json || exit 1; \
	done
	$(PY) bench/report.py bench/results/compare.json --profiles bench/results/profile-*.json

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
