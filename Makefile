# `make book` and `make test` are the two commands of the README. Both create .venv when missing and
# (re)install requirements.txt whenever it or pyproject.toml changed.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.medmae-installed
PROFILE ?= cpu
NOTEBOOKS = $(shell $(BIN)/python tools/book.py notebooks)
# apt-get as root, else through sudo without a password prompt (fails, and the browser tests skip, where neither)
APT_GET := $(if $(filter 0,$(shell id -u)),,sudo -n) env DEBIAN_FRONTEND=noninteractive apt-get

.PHONY: install book html browser test unit nbval lint clean checkpoints

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

## html: build the HTML book from the stored notebooks (no execution), warnings as errors; it loads nothing from
## the network (local MathJax and badge; check-html fails on any external script, stylesheet or image)
html: install
	$(BIN)/python tools/book.py static
	$(BIN)/jupyter-book build . --warningiserror --keep-going
	$(BIN)/python tools/book.py finish-html
	$(BIN)/python tools/book.py check-html
	@echo "The book is at $(CURDIR)/_build/html/index.html"

## browser: every page of _build/html in headless Chromium (Debian's `chromium`, installed here when missing):
## no console errors or failed/external requests, images loaded, math typeset, search works; screenshots in
## _build/screenshots. Skips with a reason where no chromium or no _build/html is found.
browser: install
	@command -v chromium >/dev/null 2>&1 || { $(APT_GET) update -q && $(APT_GET) install -y -q chromium; } \
		|| echo "chromium could not be installed (apt-get chromium): the browser tests will skip"
	$(BIN)/python -m pytest tests/test_book_browser.py -m browser -p no:cacheprovider --durations=5

## test: unit tests, then nbval re-executing every chapter in _toc.yml, then the chapters on your own folders
## (smoke profile) and the checkpoints' data checks (minutes), then the HTML build and the browser tests of it
test: install
	$(BIN)/python -m pytest tests medmae_nb --doctest-modules -m "not notebooks and not slow and not browser"
	$(BIN)/python -m pytest --nbval-lax --nbval-current-env --nbval-sanitize-with tools/nbval_sanitize.cfg -p no:cacheprovider --durations=0 $(NOTEBOOKS)
	$(BIN)/python -m pytest -m "notebooks or slow" tests -p no:cacheprovider --durations=0
	$(MAKE) html
	$(MAKE) browser

## checkpoints: train every book-scale recipe (about an hour each on 2 CPU cores) into medmae_nb/checkpoints
checkpoints: install
	$(BIN)/python -m medmae_nb.train all

unit: install
	$(BIN)/python -m pytest tests medmae_nb --doctest-modules -m "not notebooks and not slow and not browser"

nbval: install
	$(BIN)/python -m pytest --nbval-lax --nbval-current-env --nbval-sanitize-with tools/nbval_sanitize.cfg -p no:cacheprovider --durations=0 $(NOTEBOOKS)

lint: install
	$(BIN)/ruff check medmae_nb tests tools

clean:
	rm -rf _build _static/mathjax
