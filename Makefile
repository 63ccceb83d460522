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

.PHONY: bench coverage help setup iverilog tclsh lz4 test test-slow verilog lint clean synth timing tcl-lint ip bitstream demo \
        sim sim-list

help:
	@echo "make setup      create $(VENV) with pinned tools; install Icarus Verilog if missing"
	@echo "make test       run the test suite (RTL on Icarus and Verilator, numerics, zoo)"
	@echo "make test-slow  the long RTL simulations too"
	@echo "make sim        one cocotb testbench: TB=tb_engine SIM=icarus|verilator [CONFIG=] [TEST=]"
	@echo "                [WAVES=1: FST waveform] [SEED=]; make sim-list names the testbenches"
	@echo "make verilog    write the generated Verilog to build/<config id>/ (CONFIG=$(CONFIG))"
	@echo "make lint       ruff, and verilator --lint-only on the generated Verilog"
	@echo "make bench      ResNet-18 / MobileNetV2 / YOLOv3-tiny frames/s (model) and RTL cycles"
	@echo "make coverage   architectures x quantization flows: import, compile, golden bit-exact"
	@echo "                table (ONLY=name,name FLOWS=flow,flow SIZE=n; docs/coverage.md)"
	@echo "make synth      Yosys resource estimate vs the xc7z020 budget (CONFIG=, TARGET=<module>)"
	@echo "make timing     static timing estimate on the Yosys netlist (TARGET=, NET=typical, PERIOD=7.0)"
	@echo "make tcl-lint   write build/<config id>/params.tcl and check the Vivado TCL under tclsh"
	@echo "                with stubbed Vivado commands (a lint, not a Vivado run)"
	@echo "make ip         package the top level as a Vivado IP (IP-XACT) in build/<config id>/ip/,"
	@echo "                with zynqnn_regs.h (C header), zynqnn.core (FuseSoC), params_ip.tcl"
	@echo "make bitstream  Vivado build of build/<config id>/zynqnn_<config id>.bit + .hwh (needs vivado)"
	@echo "make demo       digits CNN: PyTorch -> int8 -> compiled -> Verilator RTL, bit-exact check"
	@echo "make clean      remove build outputs"

# The stamp depends on pyproject.toml, so a second `make setup` with nothing changed is a no-op.
STAMP := $(VENV)/.zynqnn-installed

setup: $(STAMP) iverilog tclsh lz4

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24" "setuptools>=68" wheel
	$(PY) -m pip install --quiet -e ".[tools,dev]"
	@touch $@

# Icarus is not on PyPI: take Debian's package when it is missing.
iverilog:
	@command -v iverilog >/dev/null 2>&1 || { \
	  echo "installing Icarus Verilog (apt-get)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq iverilog; }
	@iverilog -V 2>/dev/null | head -n 1

# Verilator's FST writer (waveforms of `make sim WAVES=1 SIM=verilator`) compiles against lz4.
lz4:
	@test -f /usr/include/lz4.h || { \
	  echo "installing liblz4-dev (apt-get)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq liblz4-dev; }

# tclsh runs the Vivado scripts against recording stubs (the TCL lint); Debian's tcl package.
tclsh:
	@command -v tclsh >/dev/null 2>&1 || { \
	  echo "installing tclsh (apt-get)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq tcl; }

# Tests marked slow (long RTL simulations, full-size synthesis) run with `make test-slow`.
test: setup
	$(VENV)/bin/pytest -n $(JOBS) --dist worksteal -m "not slow"

test-slow: setup
	$(VENV)/bin/pytest -n $(JOBS) --dist worksteal -m slow

verilog: setup
	$(PY) -m zynqnn.rtl.gen --config $(CONFIG) --out build

lint: setup
	$(VENV)/bin/ruff check py rtl sim tests scripts
	$(PY) -m zynqnn.sim.lint --config $(CONFIG)

clean:
	rm -rf build

# The pretrained digits CNN through torch.ao FX, zynqnn.compile and the RTL (Verilator), all 450
# held-out images; fails when an RTL output differs from PyTorch or the golden model.
demo: setup
	$(PY) scripts/demo.py

# Yosys synth_xilinx estimate; fails when the component does not fit the xc7z020.
synth: setup
	$(PY) scripts/synth.py --config $(CONFIG) $(if $(TARGET),--target $(TARGET))

# Static timing estimate (cell delays from Yosys' Xilinx library, a fanout net model); fails when
# a path exceeds PERIOD ns under the NET model (cells, optimistic, typical, pessimistic or R,K).
timing: setup
	$(PY) scripts/timing.py --config $(CONFIG) $(if $(TARGET),--target $(TARGET)) \
	  $(if $(NET),--net $(NET)) $(if $(PERIOD),--period $(PERIOD))

# The Vivado scripts under tclsh with recording stubs of every Vivado command (needs tclsh).
tcl-lint: setup
	$(PY) -m zynqnn.vivado lint --config $(CONFIG)

# The top level as a Vivado IP (build/<config id>/ip/component.xml + Verilog), the register map's
# C header, a FuseSoC core and params_ip.tcl (block design with the IP), then a stubbed lint of it.
ip: setup
	$(PY) -m zynqnn.vivado ip --config $(CONFIG)

# Checks for Vivado before anything else, so a machine without it stops at once.
bitstream:
	@command -v vivado >/dev/null 2>&1 || { \
	  echo "make bitstream: Vivado is not on PATH (no 'vivado' command). The scripts target Vivado 2022.2."; \
	  echo "  Either source <Vivado install>/settings64.sh and run 'make bitstream' again, or build elsewhere:"; \
	  echo "  1. here:  make tcl-lint CONFIG=$(CONFIG)   (writes build/<config id>/: Verilog, XDC, params.tcl)"; \
	  echo "  2. copy build/<config id>/ and scripts/vivado/ to the Vivado machine, same relative layout"; \
	  echo "  3. there: vivado -mode batch -source scripts/vivado/build_bitstream.tcl -tclargs build/<config id>/params.tcl"; \
	  exit 1; }
	@$(MAKE) --no-print-directory setup
	@params=$$($(PY) -m zynqnn.vivado params --config $(CONFIG) --out build) && \
	  dir=$$(dirname "$$params") && \
	  echo "vivado: building $$dir (log: $$dir/vivado.log)" && \
	  vivado -mode batch -nojournal -log "$$dir/vivado.log" \
	    -source scripts/vivado/build_bitstream.tcl -tclargs "$$params"

# Whole networks: performance-model frames/s at full size, RTL cycles at reduced size.
bench: setup
	$(PY) scripts/bench_networks.py --config $(CONFIG)

# Model coverage: real architectures (random weights) x quantization flows (torch.ao, ONNX
# Runtime), each imported, compiled and run on the golden model against the framework; fails when
# a cell crashed. ONLY=, FLOWS= (comma-separated names) and SIZE= run a subset.
coverage: setup
	$(PY) scripts/coverage.py --config $(CONFIG) $(if $(ONLY),--only $(ONLY)) \
	  $(if $(FLOWS),--flows $(FLOWS)) $(if $(SIZE),--size $(SIZE))

# One cocotb testbench on one simulator, optionally with a waveform (FST) and chosen tests:
# make sim TB=tb_engine SIM=verilator [CONFIG=tiny] [TEST=a,b] [WAVES=1] [SEED=7]
sim: setup
	$(PY) -m zynqnn.sim.benches $(TB) --sim $(or $(SIM),icarus) \
	  $(if $(filter-out file,$(origin CONFIG)),--config $(CONFIG)) \
	  $(if $(TEST),--test $(TEST)) $(if $(filter 1,$(WAVES)),--waves) $(if $(SEED),--seed $(SEED))

sim-list: setup
	@$(PY) -m zynqnn.sim.benches --list
