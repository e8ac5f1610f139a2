# `make book` and `make test` are the two commands of the README. Both create .venv when missing and
# (re)install requirements.txt whenever it or pyproject.toml changed.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.medmae-installed
PROFILE ?= cpu
NOTEBOOKS = $(shell $(BIN)/python tools/book.py notebooks)

.PHONY: install book html test unit nbval lint clean checkpoints

install: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check --progress-bar on -r requirements.txt
	$(BIN)/python -m pip install --disable-pip-version-check -q --no-deps -e .
	@touch $@

## book: execute every chapter (papermill, profile $(PROFILE)) and build the HTML book
book: install
	$(BIN)/python tools/book.py execute --profile $(PROFILE)
	$(MAKE) html

## html: build the HTML book from the stored notebooks (no execution), warnings as errors
html: install
	$(BIN)/python tools/book.py mathjax
	$(BIN)/jupyter-book build . --warningiserror --keep-going
	$(BIN)/python tools/book.py check-html
	@echo "The book is at $(CURDIR)/_build/html/index.html"

## test: unit tests, then nbval re-executing every chapter in _toc.yml, then the chapters on your own folders
## (smoke profile) and the checkpoints' data checks (minutes), then the HTML build
test: install
	$(BIN)/python -m pytest tests medmae_nb --doctest-modules -m "not notebooks and not slow"
	$(BIN)/python -m pytest --nbval-lax --nbval-current-env --nbval-sanitize-with tools/nbval_sanitize.cfg -p no:cacheprovider --durations=0 $(NOTEBOOKS)
	$(BIN)/python -m pytest -m "notebooks or slow" tests -p no:cacheprovider --durations=0
	$(MAKE) html

## checkpoints: train every book-scale recipe (about an hour each on 2 CPU cores) into medmae_nb/checkpoints
checkpoints: install
	$(BIN)/python -m medmae_nb.train all

unit: install
	$(BIN)/python -m pytest tests medmae_nb --doctest-modules -m "not notebooks and not slow"

nbval: install
	$(BIN)/python -m pytest --nbval-lax --nbval-current-env --nbval-sanitize-with tools/nbval_sanitize.cfg -p no:cacheprovider --durations=0 $(NOTEBOOKS)

lint: install
	$(BIN)/ruff check medmae_nb tests tools

clean:
	rm -rf _build _static/mathjax
