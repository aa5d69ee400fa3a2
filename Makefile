# Set-up is part of every target: a fresh clone needs nothing but python3 (3.11) and make.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: search test test-slow lint clean-venv

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

## The default search: 200 trials of the seed-003 1D ResNet on synthetic XRD data.
search: $(STAMP)
	$(PY) launch.py --space resnet1d --trials 200

## The default test run (CI runs this): lint, then every test not marked slow.
test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q -m "not slow"

## Longer end-to-end tests, kept out of the default run.
test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

clean-venv:
	rm -rf $(VENV)
