# One command each on a fresh clone: the virtualenv is created and the project installed first.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.stamp-install
DEMO   ?= demo
RUN     = $$(ls -d $(DEMO)/runs/*-demo | tail -n 1)

.PHONY: install test test-slow demo bench clean-demo

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

# The whole product on the built-in procedural art, no downloads: prepare -> train ->
# sample -> interpolate -> refine. Re-running resumes the finished run instead of retraining.
demo: $(STAMP)
	$(PY) -m data_prep --procedural 10000 --seed 0 --out $(DEMO)/data --resolution 32
	$(PY) train.py --data $(DEMO)/data --preset demo --outdir $(DEMO)/runs --name demo --resume auto
	$(PY) generate.py sample --model $(RUN) --seeds 0-63 --grid --out $(DEMO)/samples
	$(PY) generate.py interpolate --model $(RUN) --seeds 0,1,2,3 --frames 48 --loop --out $(DEMO)/walk.gif
	$(PY) -m data_prep.procedural --style circles --seed 3 --size 256 --out $(DEMO)/style.png
	$(PY) generate.py refine --model $(RUN) --seeds 7 --style $(DEMO)/style.png --steps 150 --optimizer adam --out $(DEMO)/refined \
	  || { echo "NOTE: VGG19 ImageNet weights are unavailable (offline, not cached): refining with RANDOM VGG weights;"; \
	       echo "      see README 'VGG weights' to supply them."; \
	       $(PY) generate.py refine --model $(RUN) --seeds 7 --style $(DEMO)/style.png --steps 150 --optimizer adam \
	         --vgg-weights random --out $(DEMO)/refined; }
	@echo
	@echo "demo done:"
	@echo "  dataset preview  $(DEMO)/data/preview.png"
	@echo "  training run     $(RUN) (samples/, tb/, checkpoints/)"
	@echo "  seed grid        $(DEMO)/samples/grid.png"
	@echo "  interpolation    $(DEMO)/walk.gif"
	@echo "  refined image    $(DEMO)/refined/seed0007_strip.png"

bench: $(STAMP)
	$(PY) bench/loader.py
	$(PY) bench/prepare.py
	$(PY) bench/train.py
	$(PY) bench/generate.py

clean-demo:
	rm -rf $(DEMO)
