# One command each on a fresh clone: the virtualenv is created and the project installed first.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.stamp-install
# SYSTEM_PY=python3: use a Python that already has the dependencies, with no venv and no install
# (a GPU machine without internet: `make test-gpu bench-gpu SYSTEM_PY=python3`).
ifdef SYSTEM_PY
PY     := $(SYSTEM_PY)
STAMP  :=
endif
DEMO   ?= demo
RUN     = $$(ls -d $(DEMO)/runs/*-demo | tail -n 1)
WALK_CLASS   ?= colorfield
REFINE_CLASS ?= grid
# The demo's training budget: 250 kimg take 12.5 minutes on a 2-core AVX2-only EPYC (float32; 5 minutes
# reach about 100 kimg); a re-run of make demo trains the same run further.
DEMO_MINUTES ?= 5

.PHONY: install browser test test-slow test-gpu faults demo demo-finetune studio bench bench-gpu clean-demo

ifndef SYSTEM_PY
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --no-cache-dir --upgrade pip
	@# PYTHONWARNINGS reaches the build backend: no setuptools editable-install banner. pip byte-compiles
	@# on one core (half of a fresh install); compileall does it on all of them (a file only newer
	@# Pythons parse, which pip skips too, makes it exit 1). --no-cache-dir: torch's CUDA wheels are
	@# several GB, and a CI machine once ran out of disk during this install: no second copy in pip's cache.
	PYTHONWARNINGS=ignore $(PY) -m pip install -q --no-cache-dir --no-compile -e '.[test]'
	$(PY) -m compileall -q -j 0 $$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])') >/dev/null 2>&1 || true
	touch $(STAMP)
endif

install: $(STAMP)

# The studio's tests drive Debian's chromium (Playwright never downloads a browser here).
browser:
	@command -v chromium >/dev/null 2>&1 || test -x /usr/bin/chromium || { \
	  SUDO=$$(test "$$(id -u)" = 0 || echo sudo); \
	  echo "==> installing Debian's chromium for the studio's browser tests"; \
	  $$SUDO apt-get update -qq >/dev/null && $$SUDO apt-get install -y -qq chromium >/dev/null; }

# One pytest worker per core, one thread each (a worker's CLI subprocesses inherit it): most of a
# test is a subprocess importing torch on one core. TEST_WORKERS=0 runs them one at a time.
TEST_WORKERS ?= auto
test: $(STAMP) browser
	ARTGAN_BROWSER_TESTS=required OMP_NUM_THREADS=1 $(PY) -m pytest -q -n $(TEST_WORKERS) --dist worksteal

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

# On a CUDA machine: every precision, resume, sampling, refine and metrics on the GPU. The tests
# share the GPU, several at a time: most of a test is inductor compiling on the host (one H200
# machine, 16 cores: 191 s with 12 workers; one at a time its training tests alone take some 20 minutes).
GPU_TEST_WORKERS ?= auto
test-gpu: $(STAMP)
	$(PY) -m pytest -q -m gpu tests/gpu -n $(GPU_TEST_WORKERS) --dist worksteal

# Every fault-injection trial (kill -9, signals, full disks, damaged and hostile files, a killed
# rank, a killed data_prep), then the table: fault, trials, survived, data lost, code executed.
faults: $(STAMP)
	ARTGAN_FAULTS=full $(PY) -m pytest -q -m "not gpu" tests/faults

# The whole product on the built-in procedural art, no downloads: prepare -> train ->
# sample -> interpolate -> refine. Re-running resumes the finished run instead of retraining.
demo: $(STAMP)
	@echo "==> 1/5 preparing 10,000 built-in procedural artworks at 32 px"
	@$(PY) -m data_prep --procedural 10000 --seed 0 --out $(DEMO)/data --resolution 32
	@echo "==> 2/5 training the demo DCGAN, class-conditional on the four styles (250 kimg or $(DEMO_MINUTES) minutes, whichever comes first; a re-run carries on)"
	@$(PY) train.py --data $(DEMO)/data --preset demo --cond --outdir $(DEMO)/runs --name demo --resume auto \
	  --minutes $(DEMO_MINUTES) || { \
	  echo "(if $(DEMO)/ holds the unconditional run of an older make demo: make clean-demo, then make demo)"; exit 2; }
	@echo "==> 3/5 sampling seeds 0-63, the styles in turn"
	@$(PY) generate.py sample --model $(RUN) --seeds 0-63 --class all --grid --out $(DEMO)/samples
	@echo "==> 4/5 interpolating between seeds 0,1,2,3 (colour fields)"
	@$(PY) generate.py interpolate --model $(RUN) --seeds 0,1,2,3 --class $(WALK_CLASS) --frames 48 --loop --out $(DEMO)/walk.gif
	@echo "==> 5/5 refining seed 7 toward a style image with the VGG19 style loss"
	@$(PY) -m data_prep.procedural --style circles --seed 3 --size 256 --out $(DEMO)/style.png
	@# Offline without cached VGG19 weights, refine says so in one note and uses random weights.
	@VGG=$$($(PY) -m gan.weights vgg19 || echo "--vgg-weights random"); \
	$(PY) generate.py refine --model $(RUN) --seeds 7 --class $(REFINE_CLASS) --style $(DEMO)/style.png --steps 150 --optimizer adam \
	  $$VGG --out $(DEMO)/refined
	@echo
	@echo "demo done:"
	@echo "  dataset preview  $(DEMO)/data/preview.png"
	@echo "  training run     $(RUN) (samples/, tb/, checkpoints/)"
	@echo "  seed grid        $(DEMO)/samples/grid.png"
	@echo "  interpolation    $(DEMO)/walk.gif"
	@echo "  refined image    $(DEMO)/refined/seed0007_strip.png"

# After `make demo`: fine-tune the demo model toward the demo's style image (style-guided, on
# the original data), then before/after grids and style distance / diversity for both.
FT = $$(ls -d $(DEMO)/finetune/*-styled | tail -n 1)
demo-finetune: $(STAMP)
	@test -n "$$(ls -d $(DEMO)/runs/*-demo 2>/dev/null)" || { echo "error: run make demo first"; exit 2; }
	@echo "==> 1/3 fine-tuning $(RUN) toward $(DEMO)/style.png (10 kimg; a re-run resumes)"
	@VGG=$$($(PY) -m gan.weights vgg19 || echo "--vgg-weights random"); \
	$(PY) train.py --data $(DEMO)/data --from $(RUN) --style-image $(DEMO)/style.png --kimg 10 $$VGG \
	  --outdir $(DEMO)/finetune --name styled --resume auto
	@echo "==> 2/3 before and after: seeds 0-15"
	@$(PY) generate.py sample --model $(RUN) --seeds 0-15 --class all --grid --out $(DEMO)/finetune/before
	@$(PY) generate.py sample --model $(FT) --seeds 0-15 --class all --grid --out $(DEMO)/finetune/after
	@echo "==> 3/3 style distance to the style image and diversity (seeds 0-63), before and after"
	@VGG=$$($(PY) -m gan.weights vgg19 || echo "--vgg-weights random"); \
	for m in $(RUN) $(FT); do echo "  $$m:"; $(PY) generate.py eval --model $$m --data $(DEMO)/data --metrics swd --num 1000 \
	  --style $(DEMO)/style.png $$VGG --json $$m/style-eval.json | grep -E "^(style_distance|diversity|swd) "; done
	@echo
	@echo "demo-finetune done: $(DEMO)/finetune/before/grid.png -> $(DEMO)/finetune/after/grid.png"

# After `make demo`: the demo model in the browser (http://127.0.0.1:7860/).
studio: $(STAMP)
	@test -n "$$(ls -d $(DEMO)/runs/*-demo 2>/dev/null)" || { echo "error: run make demo first"; exit 2; }
	@VGG=$$($(PY) -m gan.weights vgg19 || echo "--vgg-weights random"); \
	$(PY) generate.py studio --model $(RUN) $$VGG

bench: $(STAMP)
	$(PY) bench/loader.py
	$(PY) bench/prepare.py
	$(PY) bench/train.py
	$(PY) bench/generate.py

# On a CUDA machine: issue 8's figures, each benchmark's output also saved under $(BENCH_OUT).
BENCH_OUT ?= bench-gpu
bench-gpu: $(STAMP)
	mkdir -p $(BENCH_OUT)
	$(PY) bench/phases.py --device cuda 2>&1 | tee $(BENCH_OUT)/phases.log
	$(PY) bench/train.py --device cuda --presets sg2ada256,stylegan256,dcgan64 --precisions no,bf16 2>&1 | tee $(BENCH_OUT)/train.log
	$(PY) bench/train.py --device cuda --presets sg2ada256 --precisions bf16 --compile off 2>&1 | tee $(BENCH_OUT)/train-eager.log
	$(PY) bench/train.py --device cuda --presets sg2ada256,stylegan256 --precisions bf16 --compile-mode reduce-overhead 2>&1 | tee $(BENCH_OUT)/train-cudagraphs.log
	$(PY) bench/loader.py --device cuda 2>&1 | tee $(BENCH_OUT)/loader.log
	@# Without cached VGG19 weights: random ones, said in the log (a machine without internet may hang on a download).
	VGG=$$($(PY) -m gan.weights vgg19 || echo "--vgg-weights random"); \
	$(PY) bench/generate.py --device cuda --presets dcgan64,stylegan256 --refine-size 512 $$VGG 2>&1 | tee $(BENCH_OUT)/generate.log

clean-demo:
	rm -rf $(DEMO)
