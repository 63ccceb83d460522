# Out-of-context synthesis of the accelerator (or one of its components) alone: a quick
# utilization and timing estimate without the block design.
#
#   vivado -mode batch -nojournal -log build/<config id>/ooc.log \
#       -source scripts/vivado/synth_ooc.tcl -tclargs build/<config id>/params.tcl ?module?
#
# module defaults to the top level; any key of zynqnn(ooc_targets) in params.tcl works (e.g.
# zynqnn_pe_array). Outputs in <bundle>/ooc/: <module>_utilization.rpt,
# <module>_utilization_hier.rpt, <module>_timing_summary.rpt, <module>.dcp. The clock is
# constrained at the FCLK_CLK0 frequency the board build gets; I/O paths are unconstrained, so
# the estimate covers register-to-register paths. Written for Vivado 2022.2.

set script_dir [file dirname [file normalize [info script]]]
source [file join $script_dir common.tcl]

zynqnn::load_params $argv \
    "vivado -mode batch -source synth_ooc.tcl -tclargs build/<config id>/params.tcl ?module?"

set module [expr {[llength $argv] > 1 ? [lindex $argv 1] : $::zynqnn(top)}]
if {![dict exists $::zynqnn(ooc_targets) $module]} {
    error "unknown out-of-context target $module; known: [dict keys $::zynqnn(ooc_targets)]"
}
lassign [dict get $::zynqnn(ooc_targets) $module] source clock
set out [zynqnn::path $::zynqnn(ooc_dir)]

read_verilog [zynqnn::bundle_files [list $source]]
synth_design -top $module -part $::zynqnn(part) -mode out_of_context
create_clock -name $clock -period $::zynqnn(clock_period_ns) [get_ports $clock]
zynqnn::write_reports $out $module
write_checkpoint -force [file join $out $module.dcp]

lassign [zynqnn::worst_slacks] wns whs
puts "zynqnn: $module out of context: estimated WNS $wns ns, WHS $whs ns at\
      [format %.3f $::zynqnn(fclk0_actual_mhz)] MHz; reports in $out"
