# The Pynq-Z2 block design around the accelerator.
#
#   ps7 (processing_system7)                              zynqnn (module reference, top level)
#     M_AXI_GP0 ----> ctrl_ic (SmartConnect) ----> s_axi  (AXI4-Lite registers at base_address)
#     S_AXI_HP0 <---- mem_ic (SmartConnect, AXI4->AXI3) <---- m_axi (AXI4, 64-bit DDR master)
#     IRQ_F2P[0] <------------------------------------------- irq
#     FCLK_CLK0 ----> every aclk; FCLK_RESET0_N -> rst_fclk0 (proc_sys_reset) -> aresetn
#
# Vivado infers the accelerator's interfaces from its port names (s_axi_*, m_axi_*, aclk,
# aresetn, irq; see zynqnn.hw.platform). Sizes, clock and address come from params.tcl.
#
# zynqnn(accel_source) in params.tcl picks how the accelerator enters the design: module_ref
# (the default) references the top level's Verilog of the project; ip instantiates the packaged
# IP that `make ip` writes (IP-XACT component.xml under zynqnn(ip_repo), VLNV zynqnn(ip_vlnv)),
# whose interfaces, clock, reset and interrupt are declared rather than inferred. An older
# params.tcl without the key means module_ref.

namespace eval zynqnn {}

# module_ref or ip (see above).
proc zynqnn::accel_source {} {
    if {![info exists ::zynqnn(accel_source)]} {
        return module_ref
    }
    set source $::zynqnn(accel_source)
    if {$source ni {module_ref ip}} {
        error "zynqnn(accel_source) is $source: one of module_ref ip"
    }
    return $source
}

# With accel_source ip: the packaged IP into the project's catalog, and the top level's own
# Verilog out of the project (the IP brings its copy; one definition of the module).
proc zynqnn::use_packaged_ip {} {
    set repo [zynqnn::path $::zynqnn(ip_repo)]
    if {![file isfile [file join $repo component.xml]]} {
        error "no packaged IP at $repo/component.xml: run `make ip` on the source machine"
    }
    set_property ip_repo_paths [list $repo] [current_project]
    update_ip_catalog -rebuild
    remove_files -fileset sources_1 [zynqnn::bundle_files $::zynqnn(verilog_sources)]
}

proc zynqnn::create_block_design {} {
    if {[zynqnn::accel_source] eq "ip"} {
        zynqnn::use_packaged_ip
    }
    set bd $::zynqnn(bd_name)
    create_bd_design $bd

    # -- cells -------------------------------------------------------------------------------
    set ps7 [create_bd_cell -type ip -vlnv xilinx.com:ip:processing_system7:5.5 ps7]
    set_property -dict [zynqnn::ps7_pynq_z2_properties \
        $::zynqnn(clock_mhz) $::zynqnn(axi_data_bits)] $ps7

    set rst [create_bd_cell -type ip -vlnv xilinx.com:ip:proc_sys_reset:5.0 rst_fclk0]

    # SmartConnect converts protocols and widths on both paths: GP0's AXI3 to AXI4-Lite for the
    # registers, the accelerator's AXI4 bursts to HP0's AXI3 (at most 16 beats per burst).
    set ctrl_ic [create_bd_cell -type ip -vlnv xilinx.com:ip:smartconnect:1.0 ctrl_ic]
    set_property -dict [list CONFIG.NUM_SI {1} CONFIG.NUM_MI {1}] $ctrl_ic
    set mem_ic [create_bd_cell -type ip -vlnv xilinx.com:ip:smartconnect:1.0 mem_ic]
    set_property -dict [list CONFIG.NUM_SI {1} CONFIG.NUM_MI {1}] $mem_ic

    if {[zynqnn::accel_source] eq "ip"} {
        set acc [create_bd_cell -type ip -vlnv $::zynqnn(ip_vlnv) zynqnn]
    } else {
        set acc [create_bd_cell -type module -reference $::zynqnn(top) zynqnn]
    }

    # -- PS fixed I/O and DDR to the package pins ----------------------------------------------
    create_bd_intf_port -mode Master -vlnv xilinx.com:interface:ddrx_rtl:1.0 DDR
    create_bd_intf_port -mode Master \
        -vlnv xilinx.com:display_processing_system7:fixedio_rtl:1.0 FIXED_IO
    connect_bd_intf_net [get_bd_intf_ports DDR] [get_bd_intf_pins ps7/DDR]
    connect_bd_intf_net [get_bd_intf_ports FIXED_IO] [get_bd_intf_pins ps7/FIXED_IO]

    # -- buses ---------------------------------------------------------------------------------
    connect_bd_intf_net [get_bd_intf_pins ps7/M_AXI_GP0] [get_bd_intf_pins ctrl_ic/S00_AXI]
    connect_bd_intf_net [get_bd_intf_pins ctrl_ic/M00_AXI] [get_bd_intf_pins zynqnn/s_axi]
    connect_bd_intf_net [get_bd_intf_pins zynqnn/m_axi] [get_bd_intf_pins mem_ic/S00_AXI]
    connect_bd_intf_net [get_bd_intf_pins mem_ic/M00_AXI] [get_bd_intf_pins ps7/S_AXI_HP0]

    # -- clock, reset, interrupt ---------------------------------------------------------------
    connect_bd_net [get_bd_pins ps7/FCLK_CLK0] \
        [get_bd_pins ps7/M_AXI_GP0_ACLK] [get_bd_pins ps7/S_AXI_HP0_ACLK] \
        [get_bd_pins rst_fclk0/slowest_sync_clk] \
        [get_bd_pins ctrl_ic/aclk] [get_bd_pins mem_ic/aclk] [get_bd_pins zynqnn/aclk]
    connect_bd_net [get_bd_pins ps7/FCLK_RESET0_N] [get_bd_pins rst_fclk0/ext_reset_in]
    connect_bd_net [get_bd_pins rst_fclk0/interconnect_aresetn] \
        [get_bd_pins ctrl_ic/aresetn] [get_bd_pins mem_ic/aresetn]
    connect_bd_net [get_bd_pins rst_fclk0/peripheral_aresetn] [get_bd_pins zynqnn/aresetn]
    connect_bd_net [get_bd_pins zynqnn/irq] [get_bd_pins ps7/IRQ_F2P]

    # -- addresses -----------------------------------------------------------------------------
    # The register window at the PYNQ user-IP address; then everything else (the accelerator's
    # DMA sees the DDR through HP0).
    assign_bd_address -offset $::zynqnn(base_address) -range $::zynqnn(reg_range) \
        -target_address_space [get_bd_addr_spaces ps7/Data] [get_bd_addr_segs zynqnn/s_axi/*]
    assign_bd_address

    # The FCLK the PS can make from its IO PLL (PYNQ keeps that source): timing is closed at it.
    set actual [get_property CONFIG.PCW_ACT_FPGA0_PERIPHERAL_FREQMHZ $ps7]
    if {abs($actual - $::zynqnn(fclk0_actual_mhz)) > 0.01} {
        puts "zynqnn: WARNING: FCLK_CLK0 is $actual MHz, zynqnn.vivado expected\
              $::zynqnn(fclk0_actual_mhz) MHz (config asks for $::zynqnn(clock_mhz) MHz)"
    } else {
        puts "zynqnn: FCLK_CLK0 $actual MHz (config asks for $::zynqnn(clock_mhz) MHz)"
    }

    validate_bd_design
    save_bd_design
    return [get_files $bd.bd]
}
