# Build the Pynq-Z2 bitstream and hardware handoff of one hardware configuration.
#
#   vivado -mode batch -nojournal -log build/<config id>/vivado.log \
#       -source scripts/vivado/build_bitstream.tcl -tclargs build/<config id>/params.tcl
#
# params.tcl and the Verilog beside it are written by `make tcl-lint` / `python -m zynqnn.vivado
# params` (the directory can be copied to another machine together with scripts/vivado/).
# Outputs, in the params file's directory:
#   <output_name>.bit, <output_name>.hwh   (side by side, same basename: a PYNQ overlay)
#   reports/impl_utilization.rpt, reports/impl_utilization_hier.rpt,
#   reports/impl_timing_summary.rpt, reports/post_route.dcp, vivado/ (the project)
# The build fails (Vivado exits non-zero) when setup or hold slack is negative; no .bit is
# written then. Written for Vivado 2022.2.

set script_dir [file dirname [file normalize [info script]]]
source [file join $script_dir common.tcl]
source [file join $script_dir ps7_pynq_z2.tcl]
source [file join $script_dir block_design.tcl]

zynqnn::load_params $argv \
    "vivado -mode batch -source build_bitstream.tcl -tclargs build/<config id>/params.tcl"

set bit [zynqnn::path $::zynqnn(bit_file)]
set hwh [zynqnn::path $::zynqnn(hwh_file)]
set reports [zynqnn::path $::zynqnn(report_dir)]
set bd $::zynqnn(bd_name)
# A failed build must not leave an older bitstream that looks current.
file delete -force $bit $hwh

# -- project: module references need one ---------------------------------------------------------
create_project -force -part $::zynqnn(part) zynqnn [zynqnn::path $::zynqnn(project_dir)]
set_property target_language Verilog [current_project]
add_files -norecurse -fileset sources_1 [zynqnn::bundle_files $::zynqnn(verilog_sources)]
add_files -norecurse -fileset constrs_1 [zynqnn::bundle_files $::zynqnn(xdc_files)]
update_compile_order -fileset sources_1

# -- block design, hardware handoff, wrapper -------------------------------------------------------
set bd_file [zynqnn::create_block_design]
# Synthesize the block design's IP with the rest of the design (synth_design below), instead of
# as out-of-context runs that only launch_runs would start.
set_property synth_checkpoint_mode None $bd_file
generate_target all $bd_file
add_files -norecurse -fileset sources_1 [make_wrapper -files $bd_file -top]
set_property top ${bd}_wrapper [current_fileset]
update_compile_order -fileset sources_1

# -- implementation ------------------------------------------------------------------------------
synth_design -top ${bd}_wrapper -part $::zynqnn(part)
zynqnn::write_reports $reports synth
opt_design
place_design
phys_opt_design
route_design
write_checkpoint -force [file join $reports post_route.dcp]
zynqnn::write_reports $reports impl
zynqnn::require_timing

# -- outputs -------------------------------------------------------------------------------------
write_bitstream -force $bit
# generate_target wrote the .hwh under the project (<project>.gen/ since Vivado 2020.2,
# <project>.srcs/ before).
set proj_dir [zynqnn::path $::zynqnn(project_dir)]
set handoff [glob -nocomplain \
    [file join $proj_dir zynqnn.gen sources_1 bd $bd hw_handoff $bd.hwh] \
    [file join $proj_dir zynqnn.srcs sources_1 bd $bd hw_handoff $bd.hwh]]
if {[llength $handoff] == 0} {
    error "generate_target wrote no $bd.hwh under $proj_dir"
}
file copy -force [lindex $handoff 0] $hwh
puts "zynqnn: wrote $bit"
puts "zynqnn: wrote $hwh"
