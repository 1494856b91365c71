# Two entry points, both doing their own set-up on a fresh machine:
#   make demo   -- the whole pipeline on the built-in synthetic study
#   make test   -- the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO_STUDY ?= studies/demo

.PHONY: venv demo test test-fast lint bench container image clean-demo help

help:
	@echo "make demo   run the pipeline on the synthetic demo study ($(DEMO_STUDY))"
	@echo "make test   run the test suite"
	@echo "make lint   ruff (lint + import order) and mypy over the package"
	@echo "make bench  run the benchmarks (prints figures)"

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,lint]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/avalanche-hpc run jobs/demo.toml

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow and not slurm and not container" $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check avalanche_hpc tests benchmarks containers
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run_all

# Apptainer image (SNAP + the Python stack); needs apptainer >= 1.2 and internet. docs/containers.md
APPTAINER ?= apptainer
APPTAINER_BUILD_FLAGS ?= --fakeroot
container:
	$(APPTAINER) build $(APPTAINER_BUILD_FLAGS) containers/avalanche.sif containers/avalanche.def

# The same definition without Apptainer: debootstrap + Charliecloud (root; a directory image, cached)
image:
	python3 containers/build_rootfs.py

clean-demo:
	rm -rf $(DEMO_STUDY)
