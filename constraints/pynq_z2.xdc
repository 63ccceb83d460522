## Pynq-Z2 (xc7z020clg400-1) constraints of the zynqnn block design.
##
## Nothing needs constraining today:
## - The programmable logic runs on FCLK_CLK0 from the processing system; the processing_system7
##   IP writes its own create_clock for it at the frequency the PS derives (params.tcl records it
##   as zynqnn(fclk0_actual_mhz)).
## - DDR and FIXED_IO are the PS's dedicated pins; the processing_system7 IP places them.
## - The accelerator's top level (zynqnn_top, ports in zynqnn.hw.platform.top_ports) has no board
##   I/O: its only interfaces are AXI to the PS and an interrupt.
##
## A constraint may name only a port the block design's wrapper has (the TCL lint,
## `make tcl-lint`, rejects any other). To bring a status signal out, first add a port to the
## top level (zynqnn.hw.platform) and make it external in scripts/vivado/block_design.tcl, then
## uncomment its lines below. Pynq-Z2 pins (all LVCMOS33):
##   LEDs LD0..LD3: R14 P14 N16 M14    buttons BTN0..BTN3: D19 D20 L20 L19
##   switches SW0, SW1: M20 M19        125 MHz system clock: H16
##
## set_property -dict {PACKAGE_PIN R14 IOSTANDARD LVCMOS33} [get_ports {led[0]}]
## set_property -dict {PACKAGE_PIN P14 IOSTANDARD LVCMOS33} [get_ports {led[1]}]
## set_property -dict {PACKAGE_PIN N16 IOSTANDARD LVCMOS33} [get_ports {led[2]}]
## set_property -dict {PACKAGE_PIN M14 IOSTANDARD LVCMOS33} [get_ports {led[3]}]
