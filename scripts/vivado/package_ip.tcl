# Package the accelerator's top level as a Vivado IP with Vivado's own IP packager.
#
#   vivado -mode batch -nojournal -log build/<config id>/package_ip.log \
#       -source scripts/vivado/package_ip.tcl -tclargs build/<config id>/params.tcl ?ip_dir?
#
# `make ip` already writes an IP-XACT package without Vivado (zynqnn.ipxact: component.xml in
# <bundle>/<zynqnn(ip_repo)>); this script is the same package made by ipx::package_project, for
# those who prefer Vivado's. Both have the VLNV zynqnn(ip_vlnv) and the interfaces s_axi
# (AXI4-Lite slave), m_axi (AXI4 master), aclk (ASSOCIATED_BUSIF s_axi:m_axi, FREQ_HZ of the
# config), aresetn (active low) and irq (level-high interrupt). ip_dir defaults to
# <bundle>/<zynqnn(ip_repo)> (replacing the Python-written package); the block design takes it
# with params_ip.tcl (zynqnn(accel_source) ip). Written for Vivado 2022.2.

set script_dir [file dirname [file normalize [info script]]]
source [file join $script_dir common.tcl]

zynqnn::load_params $argv \
    "vivado -mode batch -source package_ip.tcl -tclargs build/<config id>/params.tcl ?ip_dir?"
foreach key {ip_vlnv ip_repo} {
    if {![info exists ::zynqnn($key)]} {
        error "params.tcl lacks zynqnn($key): regenerate it with `make ip`"
    }
}
set ip_dir [expr {[llength $argv] > 1 ? [lindex $argv 1] : [zynqnn::path $::zynqnn(ip_repo)]}]
lassign [split $::zynqnn(ip_vlnv) :] vendor library name version
if {$name ne $::zynqnn(top)} {
    error "zynqnn(ip_vlnv) $::zynqnn(ip_vlnv) does not name the top level $::zynqnn(top)"
}

# A bus interface of the core, inferred from its port when the packager did not.
proc zynqnn::ip_busif {core port abstraction} {
    set busif [ipx::get_bus_interfaces $port -of_objects $core]
    if {$busif eq ""} {
        ipx::infer_bus_interface $port $abstraction $core
        set busif [ipx::get_bus_interfaces $port -of_objects $core]
    }
    return $busif
}

# Set a bus parameter, adding it when the packager did not.
proc zynqnn::ip_bus_param {busif pname value} {
    set p [ipx::get_bus_parameters $pname -of_objects $busif]
    if {$p eq ""} {
        set p [ipx::add_bus_parameter $pname $busif]
    }
    set_property value $value $p
}

create_project -in_memory -part $::zynqnn(part)
set_property target_language Verilog [current_project]
add_files -norecurse -fileset sources_1 [zynqnn::bundle_files $::zynqnn(verilog_sources)]
set_property top $::zynqnn(top) [current_fileset]
update_compile_order -fileset sources_1

file mkdir $ip_dir
ipx::package_project -root_dir $ip_dir -vendor $vendor -library $library \
    -taxonomy /UserIP -import_files -set_current true -force
set core [ipx::current_core]
set_property -dict [list \
    version $version \
    display_name "zynqnn accelerator ($::zynqnn(config_id))" \
    description "zynqnn CNN accelerator, hardware config $::zynqnn(config_name)\
                 ($::zynqnn(config_id))" \
    supported_families {zynq Production}] $core

# The AXI interfaces are inferred from the s_axi_* / m_axi_* port names; clock, reset and
# interrupt are made explicit, with the parameters the block design relies on.
foreach busif {s_axi m_axi} {
    if {[ipx::get_bus_interfaces $busif -of_objects $core] eq ""} {
        error "ipx::package_project inferred no $busif interface"
    }
}
set clk [zynqnn::ip_busif $core aclk xilinx.com:signal:clock_rtl:1.0]
set rst [zynqnn::ip_busif $core aresetn xilinx.com:signal:reset_rtl:1.0]
set irq [zynqnn::ip_busif $core irq xilinx.com:signal:interrupt_rtl:1.0]
zynqnn::ip_bus_param $clk ASSOCIATED_BUSIF s_axi:m_axi
zynqnn::ip_bus_param $clk ASSOCIATED_RESET aresetn
zynqnn::ip_bus_param $clk FREQ_HZ [expr {round($::zynqnn(clock_mhz) * 1e6)}]
zynqnn::ip_bus_param $rst POLARITY ACTIVE_LOW
zynqnn::ip_bus_param $irq SENSITIVITY LEVEL_HIGH

ipx::create_xgui_files $core
ipx::update_checksums $core
ipx::check_integrity $core
ipx::save_core $core
close_project
puts "zynqnn: packaged $::zynqnn(ip_vlnv) in $ip_dir"
