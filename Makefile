# zynqnn — the commands people use. `make setup` once, then `make test`.
#
# CONFIG selects the hardware config preset (see py/zynqnn/config.py) for the build targets.

PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
CONFIG ?= pynq_z2
JOBS   ?= 2

# An old Yosys on PATH must never be picked over Amaranth's bundled, pinned one.
export AMARANTH_USE_YOSYS := builtin

.PHONY: help setup iverilog test test-slow verilog lint clean

help:
	@echo "make setup      create $(VENV) with pinned tools; install Icarus Verilog if missing"
	@echo "make test       run the test suite (RTL on Icarus and Verilator, numerics, zoo)"
	@echo "make test-slow  the long RTL simulations too"
	@echo "make verilog    write the generated Verilog to build/<config id>/ (CONFIG=$(CONFIG))"
	@echo "make lint       ruff, and verilator --lint-only on the generated Verilog"
	@echo "make clean      remove build outputs"

# The stamp depends on pyproject.toml, so a second `make setup` with nothing changed is a no-op.
STAMP := $(VENV)/.zynqnn-installed

setup: $(STAMP) iverilog

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24" "setuptools>=68" wheel
	$(PY) -m pip install --quiet -e ".[dev]"
	@touch $@

# Icarus is not on PyPI: take Debian's package when it is missing.
iverilog:
	@command -v iverilog >/dev/null 2>&1 || { \
	  echo "installing Icarus Verilog (apt-get)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq iverilog; }
	@iverilog -V 2>/dev/null | head -n 1

test: setup
	$(VENV)/bin/pytest -n $(JOBS)

test-slow: setup
	$(VENV)/bin/pytest -n $(JOBS) -m slow

verilog: setup
	$(PY) -m zynqnn.rtl.gen --config $(CONFIG) --out build

lint: setup
	$(VENV)/bin/ruff check py rtl sim tests scripts
	$(PY) -m zynqnn.sim.lint --config $(CONFIG)

clean:
	rm -rf build
