# One command each on a fresh clone: the virtualenv is created and the project installed first.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.stamp-install
DEMO   ?= demo

.PHONY: install test demo bench clean-demo

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

# The whole product on the built-in procedural art: no downloads.
demo: $(STAMP)
	$(PY) -m data_prep --procedural 2000 --seed 0 --out $(DEMO)/data --resolution 32
	@echo "demo: prepared store in $(DEMO)/data, preview at $(DEMO)/data/preview.png"

bench: $(STAMP)
	$(PY) bench/loader.py
	$(PY) bench/prepare.py

clean-demo:
	rm -rf $(DEMO)
