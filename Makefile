# DiT Accel developer commands. Both main targets build the dev runtime first (idempotent).
PY := .venv/bin/python

.PHONY: setup setup-browser demo test bench bench-methods bench-zoo bench-gpu train train-flux train-qwen train-hv clean

setup:
	bash scripts/setup.sh

# Debian chromium + playwright-core for the real-browser test (tests/browser/).
setup-browser:
	bash scripts/setup_browser.sh

# Command one: a real ComfyUI server runs the bundled workflow uncached and with Forecast Cache on the
# zoo's tune micro FLUX (out/demo/) and on a validation FLUX the presets never saw (out/demo_validate/).
demo: setup
	$(PY) scripts/demo.py --out out/demo
	$(PY) scripts/demo.py --unet dit_accel_zoo_flux_glyphs.safetensors --out out/demo_validate

# Command two: the whole test suite (CI runs exactly this).
test: setup setup-browser
	$(PY) -m pytest -q

bench: setup
	$(PY) bench/bench_forecast.py

# Every method x budget x family on the trained micro models (bench/results/methods_*), then the plot.
bench-methods: setup
	$(PY) bench/bench_methods.py --seeds 2 --prompts 2
	$(PY) bench/plot_curves.py

# The zoo tables (issue 18): every candidate on the tune models, the presets chosen by the worst tune
# model's margin over output reuse (bench/choose_presets.py reads only tune rows), the step counts checked
# on the tune models, then the validate models (recipes no tune model uses among them) with output reuse
# and EasyCache at the same budget; per-model margins printed tune and validate apart.
bench-zoo: setup
	$(PY) bench/bench_zoo.py --role tune --scenarios euler50,cfg3 --prompts 4 --seeds 1 --rows explore,reuse
	$(PY) bench/choose_presets.py
	$(PY) bench/bench_zoo.py --role tune --scenarios euler20,euler28 --prompts 4 --seeds 1 --rows presets,reuse
	$(PY) bench/bench_zoo.py --role validate --scenarios euler50,cfg3,euler20,euler28 --rows presets,reuse,easycache
	$(PY) bench/zoo_margins.py
	$(PY) bench/summarize_zoo.py --docs

# Trained micro models (weights land in tests/assets/ with a JSON sidecar); `make -j3 train` runs
# the three at once. Resume one with e.g. ARGS="--resume tests/assets/micro_qwen_image_trained.safetensors".
train: train-flux train-qwen train-hv

train-flux: setup
	$(PY) scripts/train_micro_flux.py $(ARGS)

train-qwen: setup
	$(PY) scripts/train_micro.py --family qwen_image $(ARGS)

train-hv: setup
	$(PY) scripts/train_micro.py --family hunyuan_video $(ARGS)

# GPU machine only: kernel bandwidth and real-size model timings (bench/gpu_method.md).
bench-gpu: setup
	$(PY) bench/bench_gpu.py

clean:
	rm -rf out .cache
