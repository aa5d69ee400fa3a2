# Set-up is part of every target: a fresh clone needs nothing but python3 (3.11) and make.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
SLOW_STAMP := $(VENV)/.installed-slow

.PHONY: search test test-slow lint clean-venv gpu-check gpu-bundle gpu-check-offline

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

## The default search: 200 trials of the seed-003 1D ResNet on synthetic XRD data.
search: $(STAMP)
	$(PY) launch.py --space resnet1d --trials 200

## The default test run (CI runs this): lint, the import layering, then every test not marked slow.
test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q -m "not slow" --durations=15

## Longer end-to-end tests, kept out of the default run: they also need the team server's,
## the browser tests' and the S3 server's packages, and PostgreSQL and Chromium (apt-get,
## where it can run).
$(SLOW_STAMP): $(STAMP) deploy/system_packages.sh
	$(PY) -m pip install --quiet -e '.[test,team,browser,cloud]'
	bash deploy/system_packages.sh
	touch $(SLOW_STAMP)

test-slow: $(SLOW_STAMP)
	$(PY) -m pytest -q -m slow --durations=15

## Every GPU path proven on one CUDA GPU in <= 8 minutes (bench/gpu_check.py; results in
## bench/gpu_check_out/). Its CPU dry run (--cpu-dry-run) is part of `make test`.
gpu-check: $(STAMP)
	$(PY) bench/gpu_check.py

clean-venv:
	rm -rf $(VENV)

## The packages the offline GPU machine's image lacks (Ray, Optuna, MLflow, ...), for its
## Python 3.12: .gpu_bundle/site.tar.xz (needs PyPI and a python3.12 here; carry that file).
gpu-bundle:
	bash bench/gpu_bundle.sh

## On the GPU machine (no network): unpack the bundle, then run bench/gpu_check.py with it
## (arguments in GPU_CHECK_ARGS, e.g. GPU_CHECK_ARGS=--cpu-dry-run).
gpu-check-offline:
	bash bench/gpu_check_offline.sh $(GPU_CHECK_ARGS)
