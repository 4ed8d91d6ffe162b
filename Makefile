# One command each on a fresh clone: the virtualenv is created and the project installed first.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.stamp-install
DEMO   ?= demo
RUN     = $$(ls -d $(DEMO)/runs/*-demo | tail -n 1)

.PHONY: install test test-slow test-gpu demo bench clean-demo

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@# PYTHONWARNINGS reaches the build backend: no setuptools editable-install banner
	PYTHONWARNINGS=ignore $(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

# On a CUDA machine: every precision, resume, sampling, refine and metrics on the GPU.
test-gpu: $(STAMP)
	$(PY) -m pytest -q -m gpu tests/gpu

# The whole product on the built-in procedural art, no downloads: prepare -> train ->
# sample -> interpolate -> refine. Re-running resumes the finished run instead of retraining.
demo: $(STAMP)
	@echo "==> 1/5 preparing 10,000 built-in procedural artworks at 32 px"
	@$(PY) -m data_prep --procedural 10000 --seed 0 --out $(DEMO)/data --resolution 32
	@echo "==> 2/5 training the demo DCGAN (200 kimg; a re-run resumes the finished run)"
	@$(PY) train.py --data $(DEMO)/data --preset demo --outdir $(DEMO)/runs --name demo --resume auto
	@echo "==> 3/5 sampling seeds 0-63"
	@$(PY) generate.py sample --model $(RUN) --seeds 0-63 --grid --out $(DEMO)/samples
	@echo "==> 4/5 interpolating between seeds 0,1,2,3"
	@$(PY) generate.py interpolate --model $(RUN) --seeds 0,1,2,3 --frames 48 --loop --out $(DEMO)/walk.gif
	@echo "==> 5/5 refining seed 7 toward a style image with the VGG19 style loss"
	@$(PY) -m data_prep.procedural --style circles --seed 3 --size 256 --out $(DEMO)/style.png
	@# Offline without cached VGG19 weights, refine says so in one note and uses random weights.
	@VGG=$$($(PY) -m gan.weights vgg19 || echo "--vgg-weights random"); \
	$(PY) generate.py refine --model $(RUN) --seeds 7 --style $(DEMO)/style.png --steps 150 --optimizer adam \
	  $$VGG --out $(DEMO)/refined
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
