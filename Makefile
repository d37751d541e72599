# DiT Accel developer commands. Both main targets build the dev runtime first (idempotent).
PY := .venv/bin/python

.PHONY: setup setup-browser demo test bench train clean

setup:
	bash scripts/setup.sh

# Debian chromium + playwright-core for the real-browser test (tests/browser/).
setup-browser:
	bash scripts/setup_browser.sh

# Command one: a real ComfyUI server runs the bundled workflow on the trained micro FLUX,
# uncached and with Forecast Cache; images and report land in out/demo/.
demo: setup
	$(PY) scripts/demo.py --out out/demo

# Command two: the whole test suite (CI runs exactly this).
test: setup setup-browser
	$(PY) -m pytest -q

bench: setup
	$(PY) bench/bench_forecast.py

train: setup
	$(PY) scripts/train_micro_flux.py

clean:
	rm -rf out .cache
