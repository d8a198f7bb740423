# Thin aliases over the tellme CLI and pytest. `make test` and `make demo` bootstrap everything
# they need on a fresh clone: a virtualenv in .venv with the pinned packages of requirements.txt.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat requirements.txt pyproject.toml | sha256sum | cut -c1-12)
TARGET ?= kv260
PYTEST := $(PY) -m pytest

.PHONY: setup lint test test-rtl test-slow demo verilog report plan bench bitstream clean help

help:            ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/\t/'

setup: $(STAMP)  ## create .venv with the pinned toolchain (idempotent)

$(STAMP): requirements.txt pyproject.toml
	@command -v g++ >/dev/null && command -v perl >/dev/null || { \
	  echo "installing g++/perl for Verilator builds"; \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends g++ make perl; }
	@command -v tclsh >/dev/null || { \
	  echo "installing tclsh for the Vivado Tcl checks"; \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends tcl; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -e .
	rm -f $(VENV)/.installed-*; touch $@

lint: setup      ## ruff over the whole repository (rules in pyproject.toml)
	$(VENV)/bin/ruff check .

test: lint       ## lint, then the default run: unit, golden, parity, Amaranth sim, cocotb RTL
	$(PYTEST) -q --durations=15

test-rtl: setup  ## only the cocotb + Verilator tests
	$(PYTEST) -q -m rtl

test-slow: setup ## long sweeps and big configurations
	$(PYTEST) -q -m slow

demo: setup      ## generate text from the bundled demo model, with metrics
	$(VENV)/bin/tellme demo

verilog: setup   ## write the accelerator's Verilog for $(TARGET) under build/
	$(VENV)/bin/tellme hw verilog --target $(TARGET)

report: setup    ## yosys resource estimate for $(TARGET)
	$(VENV)/bin/tellme hw report --target $(TARGET)

plan: setup      ## weight-buffer sizing, tile plan and TLMM cycles per layer for $(TARGET)
	$(VENV)/bin/tellme hw plan --target $(TARGET)

bench: setup     ## RTL cycle counts of one full-size layer's linears (Verilator, minutes)
	$(VENV)/bin/tellme hw bench

bitstream: setup ## Vivado 2022.1 flow for $(TARGET) (kv260|zcu104) -> bitstreams/$(TARGET)/
	$(VENV)/bin/tellme hw bitstream --target $(TARGET)

clean:           ## remove generated files (keeps .venv)
	rm -rf build .pytest_cache
