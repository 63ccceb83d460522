# Helpers shared by the zynqnn Vivado scripts: the generated parameter file, paths, reports and
# the timing gate. Written for Vivado 2022.2 batch mode (plain TCL plus documented Vivado
# commands only).

namespace eval zynqnn {}

# Keys every params.tcl provides (written by zynqnn.vivado.write_tcl_params).
set zynqnn::required_params {
    build_dir config_name config_id part top vlnv bd_name clock_mhz fclk0_actual_mhz
    clock_period_ns base_address reg_range axi_data_bits output_name bit_file hwh_file
    project_dir report_dir ooc_dir verilog_sources xdc_files top_ports ooc_targets
}

# Source the params file named by the first -tclargs argument into ::zynqnn.
proc zynqnn::load_params {argv usage} {
    if {[llength $argv] < 1} {
        error "missing argument: $usage"
    }
    set path [lindex $argv 0]
    if {![file isfile $path]} {
        error "params file not found: $path (write it with `make tcl-lint` or\
               `python -m zynqnn.vivado params --config <preset>`)"
    }
    uplevel #0 [list source $path]
    foreach key $zynqnn::required_params {
        if {![info exists ::zynqnn($key)]} {
            error "$path lacks zynqnn($key): regenerate it with `python -m zynqnn.vivado params`"
        }
    }
    puts "zynqnn: config $::zynqnn(config_name) ($::zynqnn(config_id)), part $::zynqnn(part)"
}

# A path inside the bundle directory (the one holding params.tcl).
proc zynqnn::path {args} {
    return [file join $::zynqnn(build_dir) {*}$args]
}

# Bundle-relative file names to paths; every file must exist.
proc zynqnn::bundle_files {names} {
    set paths {}
    foreach name $names {
        set p [zynqnn::path $name]
        if {![file isfile $p]} {
            error "bundle file missing: $p (run `make tcl-lint` or\
                   `python -m zynqnn.vivado params` on the source machine)"
        }
        lappend paths $p
    }
    return $paths
}

# Utilization (flat and hierarchical) and timing summary of the open design into dir/prefix_*.
proc zynqnn::write_reports {dir prefix} {
    file mkdir $dir
    report_utilization -file [file join $dir ${prefix}_utilization.rpt]
    report_utilization -hierarchical -file [file join $dir ${prefix}_utilization_hier.rpt]
    report_timing_summary -max_paths 10 -file [file join $dir ${prefix}_timing_summary.rpt]
}

# Worst setup and hold slack of the open design, in ns: {wns whs}.
proc zynqnn::worst_slacks {} {
    set setup [get_timing_paths -max_paths 1 -nworst 1 -setup]
    set hold [get_timing_paths -max_paths 1 -nworst 1 -hold]
    if {$setup eq "" || $hold eq ""} {
        error "no timed paths: the design has no clock constraint"
    }
    return [list [get_property SLACK $setup] [get_property SLACK $hold]]
}

# Fail (TCL error, so Vivado exits non-zero) unless setup and hold are met.
proc zynqnn::require_timing {} {
    lassign [zynqnn::worst_slacks] wns whs
    puts "zynqnn: WNS $wns ns, WHS $whs ns at [format %.3f $::zynqnn(fclk0_actual_mhz)] MHz"
    if {$wns < 0} {
        error "timing not met: WNS = $wns ns < 0 at $::zynqnn(fclk0_actual_mhz) MHz\
               (see $::zynqnn(report_dir)/impl_timing_summary.rpt)"
    }
    if {$whs < 0} {
        error "hold timing not met: WHS = $whs ns < 0\
               (see $::zynqnn(report_dir)/impl_timing_summary.rpt)"
    }
}
