# Recording stubs of the Vivado commands the zynqnn scripts use, for running them under plain
# tclsh. This is a lint, not a Vivado run: it executes the scripts' own TCL for real and replaces
# each Vivado command with a model that records the call and checks
#
#   - options: every option is one the command knows, options that need a value have one, the
#     options the flow relies on are present (e.g. -part, -top, -file), positional counts;
#   - files: every file added, read or referenced exists; report and checkpoint directories exist;
#   - properties: names on an allow-list of real properties of the object (processing_system7
#     5.5, proc_sys_reset 5.0, smartconnect 1.0, files, filesets, ports), with value checks for
#     the PS7 settings whose domain is small;
#   - pins and ports: a block-design pin exists on its cell as configured so far (S_AXI_HP0 only
#     once PCW_USE_S_AXI_HP0 is 1); a module reference's pins are its Verilog ports or the AXI
#     interfaces Vivado infers from them, and the top level's ports equal zynqnn.hw.platform's
#     top_ports (given by params.tcl); XDC constraints name ports the design has;
#   - connectivity: one driver per net, Master to Slave, each pin in one net, required clocks,
#     resets and interfaces connected at validation, register window reachable from M_AXI_GP0
#     and inside its address window;
#   - order: project before sources, block design before cells, cells before their pins,
#     validate_bd_design after the last change and before generate_target, synth_design after
#     generate_target (with synth_checkpoint_mode None set before it) and on a known top,
#     opt/place/route in order, write_bitstream only after route_design and never out of context;
#   - packaged IP: update_ip_catalog reads each component.xml of ip_repo_paths (VLNV, model,
#     files, which must exist; the Verilog is scanned), so a block-design cell of that VLNV has
#     the pins of its top module; the ipx:: packager commands (see the end of this file).
#
# A command the stubs do not define fails as "invalid command name": the lint knows every
# Vivado command the scripts may use. Nothing here runs Vivado or models its results beyond
# what the flow needs (timing slack is a parameter of the lint run).

namespace eval ::vstub {
    variable calls {}
    variable st
    array set st {
        project "" proj_dir "" bd "" bd_file "" validated 0 generated 0 gen_checkpoint_mode ""
        stage none design "" ooc 0 in_xdc "" checkpoint_mode ""
    }
    variable objs [dict create]      ;# handle -> kind
    variable cells [dict create]     ;# cell name -> {kind ip|module vlnv/module props}
    variable files [dict create]     ;# normalized path -> {fileset kind}
    variable modules [dict create]   ;# module -> {file ports {name {dir width}}}
    variable read_xdcs {}
    variable net_of [dict create]    ;# "cell/pin" or "/port" -> net id
    variable nets [dict create]      ;# net id -> list of members
    variable intf_peer [dict create] ;# intf pin/port handle -> peer handle
    variable ext_ports [dict create] ;# bd port name -> {kind intf|pin mode/dir vlnv}
    variable assigned [dict create]  ;# {space segment} -> {offset range}
    variable ip_repo_paths {}        ;# the project's ip_repo_paths (normalized)
    variable ip_catalog [dict create] ;# VLNV of a packaged user IP -> {module xml files}
    variable setup_slack 0.250
    variable hold_slack 0.050
    variable netcount 0
}

# -- recording and failing --------------------------------------------------------------------------

proc ::vstub::rec {call} {
    variable calls
    lappend calls $call
}

proc ::vstub::fail {cmd msg} {
    return -code error -errorcode [list VSTUB LINT $cmd] "$cmd: $msg"
}

# Split args into options and positionals by a spec: flags (no value), values (take one value),
# required options, and the allowed number of positionals.
proc ::vstub::parse {cmd arglist flags values {required {}} {min 0} {max 0}} {
    lappend flags -quiet -verbose
    set opts [dict create]
    set pos {}
    set n [llength $arglist]
    for {set i 0} {$i < $n} {incr i} {
        set a [lindex $arglist $i]
        if {[string match -* $a] && ![string is double -strict $a]} {
            if {$a in $flags} {
                dict set opts $a 1
            } elseif {$a in $values} {
                if {$i + 1 >= $n} {
                    fail $cmd "option $a needs a value"
                }
                incr i
                dict set opts $a [lindex $arglist $i]
            } else {
                fail $cmd "unknown option $a (known: [lsort [concat $flags $values]])"
            }
        } else {
            lappend pos $a
        }
    }
    foreach r $required {
        if {![dict exists $opts $r]} {
            fail $cmd "missing required option $r"
        }
    }
    if {[llength $pos] < $min || ($max >= 0 && [llength $pos] > $max)} {
        set want [expr {$max < 0 ? "at least $min" : ($min == $max ? $min : "$min..$max")}]
        fail $cmd "takes $want positional argument(s), got [llength $pos]: $pos"
    }
    return [list $opts $pos]
}

proc ::vstub::opt {opts name {default ""}} {
    if {[dict exists $opts $name]} {
        return [dict get $opts $name]
    }
    return $default
}

proc ::vstub::register {handle kind} {
    variable objs
    dict set objs $handle $kind
    return $handle
}

proc ::vstub::kind {handle} {
    variable objs
    if {[dict exists $objs $handle]} {
        return [dict get $objs $handle]
    }
    return ""
}

# Flatten positional object arguments (each may be a list of handles) into one list.
proc ::vstub::objects {pos} {
    set out {}
    foreach p $pos {
        lappend out {*}$p
    }
    return $out
}

proc ::vstub::require_project {cmd} {
    variable st
    if {$st(project) eq ""} {
        fail $cmd "no open project (create_project first)"
    }
}

proc ::vstub::require_bd {cmd} {
    variable st
    if {$st(bd) eq ""} {
        fail $cmd "no open block design (create_bd_design first)"
    }
}

proc ::vstub::require_design {cmd} {
    variable st
    if {$st(stage) eq "none" && $st(in_xdc) eq ""} {
        fail $cmd "no synthesized design (synth_design first)"
    }
}

proc ::vstub::bd_modified {} {
    variable st
    set st(validated) 0
}

proc ::vstub::touch {path {text "vivado-lint stub output\n"}} {
    set dir [file dirname $path]
    if {![file isdirectory $dir]} {
        file mkdir $dir
    }
    set f [open $path w]
    puts -nonewline $f $text
    close $f
}

proc ::vstub::require_dir_of {cmd path} {
    if {![file isdirectory [file dirname [file normalize $path]]]} {
        fail $cmd "directory of $path does not exist"
    }
}

proc ::vstub::parse_int {cmd text} {
    if {[string is wideinteger -strict $text]} {
        return [expr {wide($text)}]
    }
    fail $cmd "not an integer: $text"
}

# "4K", "64K", "1M", "1G" or a number of bytes.
proc ::vstub::parse_range {cmd text} {
    if {[regexp {^([0-9]+)([KMG])$} $text -> n unit]} {
        return [expr {wide($n) << [dict get {K 10 M 20 G 30} $unit]}]
    }
    return [parse_int $cmd $text]
}

# -- Verilog: modules and their ports ---------------------------------------------------------------

# Module names and port declarations (non-ANSI `input [7:0] a;` as Amaranth writes them, and
# ANSI `input wire [7:0] a,`), one name per declaration.
proc ::vstub::scan_verilog {path} {
    variable modules
    set f [open $path r]
    set text [read $f]
    close $f
    regsub -all {/\*.*?\*/} $text {} text
    regsub -all {//[^\n]*} $text {} text
    foreach chunk [split [string map [list endmodule \x01] $text] \x01] {
        if {![regexp {(?:^|\s)module\s+(\\\S+|[A-Za-z_][A-Za-z0-9_$]*)} $chunk -> name]} {
            continue
        }
        set name [string trimleft $name \\]
        set ports [dict create]
        set re {(?:^|[\s(,;])(input|output|inout)\s+(?:(?:wire|reg|logic|signed)\s+)*(?:\[\s*(\d+)\s*:\s*(\d+)\s*\]\s*)?([A-Za-z_][A-Za-z0-9_$]*)}
        foreach {- dir hi lo pname} [regexp -all -inline $re $chunk] {
            set width [expr {$hi eq "" ? 1 : abs($hi - $lo) + 1}]
            dict set ports $pname [list $dir $width]
        }
        dict set modules $name [dict create file $path ports $ports]
    }
}

# The AXI interfaces Vivado infers from flat <prefix>_<signal> port names: name -> {mode
# protocol}. A prefix needs every AXI4-Lite signal; awlen makes it full AXI4.
proc ::vstub::infer_interfaces {ports} {
    set need {awaddr awvalid awready wdata wvalid wready bresp bvalid bready
              araddr arvalid arready rdata rresp rvalid rready}
    set found [dict create]
    foreach pname [dict keys $ports] {
        if {![regexp {^(.+)_awaddr$} $pname -> prefix]} {
            continue
        }
        set complete 1
        foreach s $need {
            if {![dict exists $ports ${prefix}_$s]} {
                set complete 0
            }
        }
        if {!$complete} {
            continue
        }
        set mode [expr {[lindex [dict get $ports $pname] 0] eq "input" ? "Slave" : "Master"}]
        set proto [expr {[dict exists $ports ${prefix}_awlen] ? "AXI4" : "AXI4LITE"}]
        dict set found $prefix [list $mode $proto]
    }
    return $found
}

# The top level's Verilog ports must be exactly params.tcl's zynqnn(top_ports).
proc ::vstub::check_top_ports {cmd module ports} {
    if {![info exists ::zynqnn(top)] || $module ne $::zynqnn(top)} {
        return
    }
    set want [dict create]
    foreach p $::zynqnn(top_ports) {
        lassign $p name dir width
        dict set want $name [list $dir $width]
    }
    set missing {}
    set extra {}
    set differ {}
    foreach name [dict keys $want] {
        if {![dict exists $ports $name]} {
            lappend missing $name
        } elseif {[dict get $ports $name] ne [dict get $want $name]} {
            lappend differ "$name ([dict get $ports $name], platform: [dict get $want $name])"
        }
    }
    foreach name [dict keys $ports] {
        if {![dict exists $want $name]} {
            lappend extra $name
        }
    }
    if {$missing ne "" || $extra ne "" || $differ ne ""} {
        fail $cmd "$module's Verilog ports differ from zynqnn.hw.platform.top_ports:\
                   missing {$missing} extra {$extra} different {$differ}"
    }
}

# -- block-design cell models -----------------------------------------------------------------------

namespace eval ::vstub {
    variable ip_vlnvs {
        xilinx.com:ip:processing_system7:5.5
        xilinx.com:ip:proc_sys_reset:5.0
        xilinx.com:ip:smartconnect:1.0
        xilinx.com:ip:axi_interconnect:2.1
    }
    variable intf_vlnvs {
        xilinx.com:interface:ddrx_rtl:1.0
        xilinx.com:display_processing_system7:fixedio_rtl:1.0
        xilinx.com:interface:aximm_rtl:1.0
    }
    # Members of an external interface port after make_wrapper (the wrapper's port names).
    variable intf_members {
        xilinx.com:interface:ddrx_rtl:1.0 {addr ba cas_n ck_n ck_p cke cs_n dm dq dqs_n dqs_p
                                           odt ras_n reset_n we_n}
        xilinx.com:display_processing_system7:fixedio_rtl:1.0 {ddr_vrn ddr_vrp mio ps_clk
                                                               ps_porb ps_srstb}
    }

    # processing_system7 5.5 properties a script may set (CONFIG.<name>).
    variable ps7_props {
        PCW_PRESET_BANK0_VOLTAGE PCW_PRESET_BANK1_VOLTAGE PCW_CRYSTAL_PERIPHERAL_FREQMHZ
        PCW_APU_PERIPHERAL_FREQMHZ PCW_APU_CLK_RATIO_ENABLE PCW_CPU_PERIPHERAL_CLKSRC
        PCW_UIPARAM_DDR_MEMORY_TYPE PCW_UIPARAM_DDR_PARTNO PCW_UIPARAM_DDR_BUS_WIDTH
        PCW_UIPARAM_DDR_FREQ_MHZ PCW_UIPARAM_DDR_TRAIN_WRITE_LEVEL PCW_UIPARAM_DDR_TRAIN_READ_GATE
        PCW_UIPARAM_DDR_TRAIN_DATA_EYE PCW_UIPARAM_DDR_USE_INTERNAL_VREF PCW_UIPARAM_DDR_ECC
        PCW_UIPARAM_DDR_DRAM_WIDTH PCW_UIPARAM_DDR_DEVICE_CAPACITY PCW_UIPARAM_DDR_SPEED_BIN
        PCW_UIPARAM_DDR_CL PCW_UIPARAM_DDR_CWL PCW_UIPARAM_DDR_T_RCD PCW_UIPARAM_DDR_T_RP
        PCW_UIPARAM_DDR_T_RC PCW_UIPARAM_DDR_T_RAS_MIN PCW_UIPARAM_DDR_T_FAW
        PCW_UIPARAM_DDR_ROW_ADDR_COUNT PCW_UIPARAM_DDR_COL_ADDR_COUNT
        PCW_UIPARAM_DDR_BANK_ADDR_COUNT PCW_UIPARAM_DDR_HIGH_TEMP
        PCW_QSPI_PERIPHERAL_ENABLE PCW_QSPI_GRP_SINGLE_SS_ENABLE PCW_QSPI_GRP_FBCLK_ENABLE
        PCW_QSPI_GRP_FBCLK_IO PCW_QSPI_QSPI_IO PCW_QSPI_PERIPHERAL_FREQMHZ
        PCW_ENET0_PERIPHERAL_ENABLE PCW_ENET0_ENET0_IO PCW_ENET0_GRP_MDIO_ENABLE
        PCW_ENET0_GRP_MDIO_IO PCW_ENET0_PERIPHERAL_FREQMHZ PCW_ENET0_RESET_ENABLE
        PCW_ENET0_RESET_IO PCW_USB0_PERIPHERAL_ENABLE PCW_USB0_USB0_IO PCW_USB0_RESET_ENABLE
        PCW_USB0_RESET_IO PCW_SD0_PERIPHERAL_ENABLE PCW_SD0_SD0_IO PCW_SD0_GRP_CD_ENABLE
        PCW_SD0_GRP_CD_IO PCW_SD0_GRP_WP_ENABLE PCW_UART0_PERIPHERAL_ENABLE PCW_UART0_UART0_IO
        PCW_UART0_BAUD_RATE PCW_GPIO_MIO_GPIO_ENABLE PCW_GPIO_EMIO_GPIO_ENABLE
        PCW_I2C0_PERIPHERAL_ENABLE PCW_I2C0_I2C0_IO
        PCW_USE_FABRIC_INTERRUPT PCW_IRQ_F2P_INTR PCW_IRQ_F2P_MODE PCW_USE_S_AXI_ACP
        PCW_M_AXI_GP0_ID_WIDTH PCW_S_AXI_GP0_ID_WIDTH
    }
    foreach n {0 1 2 3} {
        lappend ps7_props PCW_EN_CLK${n}_PORT PCW_EN_RST${n}_PORT PCW_FPGA${n}_PERIPHERAL_FREQMHZ \
            PCW_FCLK${n}_PERIPHERAL_CLKSRC PCW_FPGA_FCLK${n}_ENABLE PCW_USE_S_AXI_HP${n} \
            PCW_S_AXI_HP${n}_DATA_WIDTH PCW_S_AXI_HP${n}_ID_WIDTH PCW_UIPARAM_DDR_BOARD_DELAY${n} \
            PCW_UIPARAM_DDR_DQS_TO_CLK_DELAY_${n} PCW_UIPARAM_DDR_CLOCK_${n}_LENGTH_MM \
            PCW_UIPARAM_DDR_DQS_${n}_LENGTH_MM PCW_UIPARAM_DDR_DQ_${n}_LENGTH_MM
    }
    foreach n {0 1} {
        lappend ps7_props PCW_USE_M_AXI_GP${n} PCW_USE_S_AXI_GP${n}
    }
    # Derived by the IP: readable, not settable.
    variable ps7_readonly {PCW_UIPARAM_ACT_DDR_FREQ_MHZ PCW_PACKAGE_NAME}
    foreach n {0 1 2 3} {
        lappend ps7_readonly PCW_ACT_FPGA${n}_PERIPHERAL_FREQMHZ PCW_CLK${n}_FREQ \
            PCW_FCLK${n}_PERIPHERAL_DIVISOR0 PCW_FCLK${n}_PERIPHERAL_DIVISOR1
    }
    # Defaults of the PS7 properties that decide which pins exist.
    variable ps7_defaults {
        PCW_USE_M_AXI_GP0 1 PCW_USE_M_AXI_GP1 0 PCW_USE_S_AXI_GP0 0 PCW_USE_S_AXI_GP1 0
        PCW_USE_S_AXI_HP0 0 PCW_USE_S_AXI_HP1 0 PCW_USE_S_AXI_HP2 0 PCW_USE_S_AXI_HP3 0
        PCW_USE_S_AXI_ACP 0 PCW_EN_CLK0_PORT 1 PCW_EN_CLK1_PORT 0 PCW_EN_CLK2_PORT 0
        PCW_EN_CLK3_PORT 0 PCW_EN_RST0_PORT 1 PCW_EN_RST1_PORT 0 PCW_EN_RST2_PORT 0
        PCW_EN_RST3_PORT 0 PCW_USE_FABRIC_INTERRUPT 0 PCW_IRQ_F2P_INTR 0
        PCW_USB0_PERIPHERAL_ENABLE 0 PCW_FPGA0_PERIPHERAL_FREQMHZ 50
        PCW_FCLK0_PERIPHERAL_CLKSRC {IO PLL}
    }
    # Value domains: name pattern -> regular expression the value must match.
    variable ps7_values {
        PCW_S_AXI_HP?_DATA_WIDTH {^(32|64)$}
        PCW_FPGA?_PERIPHERAL_FREQMHZ {^[0-9]+(\.[0-9]+)?$}
        PCW_FCLK?_PERIPHERAL_CLKSRC {^(IO PLL|ARM PLL|DDR PLL)$}
        PCW_PRESET_BANK?_VOLTAGE {^(LVCMOS 3\.3V|LVCMOS 2\.5V|LVCMOS 1\.8V|HSTL 1\.8V)$}
        PCW_UIPARAM_DDR_BUS_WIDTH {^(16 Bit|32 Bit)$}
        PCW_UIPARAM_DDR_MEMORY_TYPE {^(DDR 3|DDR 3 \(Low Voltage\)|DDR 2|LPDDR 2)$}
        PCW_IRQ_F2P_MODE {^(DIRECT|REVERSE)$}
        PCW_*_IO {^(MIO [0-9]+( \.\. [0-9]+)?|EMIO)$}
        PCW_USE_* {^[01]$}
        PCW_EN_* {^[01]$}
        PCW_*_ENABLE {^[01]$}
        PCW_IRQ_F2P_INTR {^[01]$}
        PCW_UIPARAM_DDR_TRAIN_* {^[01]$}
        PCW_UIPARAM_DDR_USE_INTERNAL_VREF {^[01]$}
        PCW_UIPARAM_DDR_*DELAY* {^-?[0-9]+(\.[0-9]+)?$}
        PCW_UIPARAM_DDR_*_LENGTH_MM {^[0-9]+(\.[0-9]+)?$}
    }
    variable ip_props {
        xilinx.com:ip:proc_sys_reset:5.0 {
            C_EXT_RST_WIDTH C_AUX_RST_WIDTH C_EXT_RESET_HIGH C_AUX_RESET_HIGH C_NUM_BUS_RST
            C_NUM_PERP_RST C_NUM_INTERCONNECT_ARESETN C_NUM_PERP_ARESETN
        }
        xilinx.com:ip:smartconnect:1.0 {NUM_SI NUM_MI NUM_CLKS HAS_ARESETN}
        xilinx.com:ip:axi_interconnect:2.1 {
            NUM_SI NUM_MI STRATEGY ENABLE_ADVANCED_OPTIONS S00_HAS_REGSLICE M00_HAS_REGSLICE
            S00_HAS_DATA_FIFO M00_HAS_DATA_FIFO
        }
    }
    variable ip_defaults {
        xilinx.com:ip:smartconnect:1.0 {NUM_SI 1 NUM_MI 1 NUM_CLKS 1 HAS_ARESETN 1}
        xilinx.com:ip:axi_interconnect:2.1 {NUM_SI 1 NUM_MI 1}
    }
}

proc ::vstub::cell_prop {cell name} {
    variable cells
    variable ps7_defaults
    variable ip_defaults
    set c [dict get $cells $cell]
    if {[dict exists $c props CONFIG.$name]} {
        return [dict get $c props CONFIG.$name]
    }
    set vlnv [dict get $c vlnv]
    if {$vlnv eq "xilinx.com:ip:processing_system7:5.5" && [dict exists $ps7_defaults $name]} {
        return [dict get $ps7_defaults $name]
    }
    if {[dict exists $ip_defaults $vlnv $name]} {
        return [dict get $ip_defaults $vlnv $name]
    }
    return ""
}

# The pins a cell has as configured now: pin name -> {kind dir mode vlnv}. kind is pin or intf;
# dir is I/O for pins; mode is Master/Slave for interfaces.
proc ::vstub::cell_pins {cell} {
    variable cells
    variable modules
    set c [dict get $cells $cell]
    set pins [dict create]
    set axi xilinx.com:interface:aximm_rtl:1.0
    if {[dict get $c kind] eq "module"} {
        set ports [dict get $modules [dict get $c module] ports]
        foreach {pname pd} $ports {
            dict set pins $pname [list pin [expr {[lindex $pd 0] eq "input" ? "I" : "O"}] "" ""]
        }
        foreach {iname info} [infer_interfaces $ports] {
            dict set pins $iname [list intf "" [lindex $info 0] $axi]
        }
        return $pins
    }
    switch -- [dict get $c vlnv] {
        xilinx.com:ip:processing_system7:5.5 {
            dict set pins DDR [list intf "" Master xilinx.com:interface:ddrx_rtl:1.0]
            dict set pins FIXED_IO [list intf "" Master \
                xilinx.com:display_processing_system7:fixedio_rtl:1.0]
            foreach n {0 1 2 3} {
                if {[cell_prop $cell PCW_EN_CLK${n}_PORT] == 1} {
                    dict set pins FCLK_CLK$n {pin O "" ""}
                }
                if {[cell_prop $cell PCW_EN_RST${n}_PORT] == 1} {
                    dict set pins FCLK_RESET${n}_N {pin O "" ""}
                }
                if {[cell_prop $cell PCW_USE_S_AXI_HP$n] == 1} {
                    dict set pins S_AXI_HP$n [list intf "" Slave $axi]
                    dict set pins S_AXI_HP${n}_ACLK {pin I "" ""}
                }
            }
            foreach n {0 1} {
                if {[cell_prop $cell PCW_USE_M_AXI_GP$n] == 1} {
                    dict set pins M_AXI_GP$n [list intf "" Master $axi]
                    dict set pins M_AXI_GP${n}_ACLK {pin I "" ""}
                }
                if {[cell_prop $cell PCW_USE_S_AXI_GP$n] == 1} {
                    dict set pins S_AXI_GP$n [list intf "" Slave $axi]
                    dict set pins S_AXI_GP${n}_ACLK {pin I "" ""}
                }
            }
            if {[cell_prop $cell PCW_USE_S_AXI_ACP] == 1} {
                dict set pins S_AXI_ACP [list intf "" Slave $axi]
                dict set pins S_AXI_ACP_ACLK {pin I "" ""}
            }
            if {[cell_prop $cell PCW_USE_FABRIC_INTERRUPT] == 1
                    && [cell_prop $cell PCW_IRQ_F2P_INTR] == 1} {
                dict set pins IRQ_F2P {pin I "" ""}
            }
            if {[cell_prop $cell PCW_USB0_PERIPHERAL_ENABLE] == 1} {
                dict set pins USB0_PORT_INDCTL {pin O "" ""}
                dict set pins USB0_VBUS_PWRSELECT {pin O "" ""}
                dict set pins USB0_VBUS_PWRFAULT {pin I "" ""}
            }
        }
        xilinx.com:ip:proc_sys_reset:5.0 {
            foreach p {slowest_sync_clk ext_reset_in aux_reset_in mb_debug_sys_rst dcm_locked} {
                dict set pins $p {pin I "" ""}
            }
            foreach p {mb_reset bus_struct_reset peripheral_reset interconnect_aresetn
                       peripheral_aresetn} {
                dict set pins $p {pin O "" ""}
            }
        }
        xilinx.com:ip:smartconnect:1.0 {
            for {set i 0} {$i < [cell_prop $cell NUM_SI]} {incr i} {
                dict set pins [format S%02d_AXI $i] [list intf "" Slave $axi]
            }
            for {set i 0} {$i < [cell_prop $cell NUM_MI]} {incr i} {
                dict set pins [format M%02d_AXI $i] [list intf "" Master $axi]
            }
            dict set pins aclk {pin I "" ""}
            for {set i 1} {$i < [cell_prop $cell NUM_CLKS]} {incr i} {
                dict set pins aclk$i {pin I "" ""}
            }
            if {[cell_prop $cell HAS_ARESETN] == 1} {
                dict set pins aresetn {pin I "" ""}
            }
        }
        xilinx.com:ip:axi_interconnect:2.1 {
            dict set pins ACLK {pin I "" ""}
            dict set pins ARESETN {pin I "" ""}
            for {set i 0} {$i < [cell_prop $cell NUM_SI]} {incr i} {
                set s [format S%02d $i]
                dict set pins ${s}_AXI [list intf "" Slave $axi]
                dict set pins ${s}_ACLK {pin I "" ""}
                dict set pins ${s}_ARESETN {pin I "" ""}
            }
            for {set i 0} {$i < [cell_prop $cell NUM_MI]} {incr i} {
                set m [format M%02d $i]
                dict set pins ${m}_AXI [list intf "" Master $axi]
                dict set pins ${m}_ACLK {pin I "" ""}
                dict set pins ${m}_ARESETN {pin I "" ""}
            }
        }
    }
    return $pins
}

# Pins that must be connected when the design is validated.
proc ::vstub::required_pins {cell} {
    variable cells
    variable modules
    set c [dict get $cells $cell]
    set pins [cell_pins $cell]
    set req {}
    if {[dict get $c kind] eq "module"} {
        set ports [dict get $modules [dict get $c module] ports]
        set intfs [infer_interfaces $ports]
        foreach iname [dict keys $intfs] {
            lappend req $iname
        }
        foreach {pname pd} $ports {
            set member 0
            foreach iname [dict keys $intfs] {
                if {[string match ${iname}_* $pname]} {
                    set member 1
                }
            }
            if {!$member && [lindex $pd 0] eq "input"} {
                lappend req $pname
            }
        }
        return $req
    }
    switch -- [dict get $c vlnv] {
        xilinx.com:ip:processing_system7:5.5 {
            lappend req DDR FIXED_IO
            foreach p [dict keys $pins] {
                if {[string match *_ACLK $p]} {
                    lappend req $p
                }
            }
        }
        xilinx.com:ip:proc_sys_reset:5.0 {
            lappend req slowest_sync_clk ext_reset_in
        }
        default {
            foreach {p info} $pins {
                if {[lindex $info 0] eq "intf" || [string match -nocase *aclk* $p]} {
                    lappend req $p
                }
            }
        }
    }
    return $req
}

proc ::vstub::is_interconnect {cell} {
    variable cells
    set c [dict get $cells $cell]
    return [expr {[dict get $c kind] eq "ip" && [dict get $c vlnv] in {
        xilinx.com:ip:smartconnect:1.0 xilinx.com:ip:axi_interconnect:2.1}}]
}

# Slave interface pins of end-point cells a master interface pin reaches through interconnects.
proc ::vstub::reached_slaves {master {seen {}}} {
    variable intf_peer
    if {![dict exists $intf_peer $master] || $master in $seen} {
        return {}
    }
    lappend seen $master
    set peer [dict get $intf_peer $master]
    set parts [split [string trimleft $peer /] /]
    if {[llength $parts] != 2} {
        return {}
    }
    lassign $parts cell pin
    if {![is_interconnect $cell]} {
        return [list $peer]
    }
    set out {}
    foreach {p info} [cell_pins $cell] {
        if {[lindex $info 0] eq "intf" && [lindex $info 2] eq "Master"} {
            lappend out {*}[reached_slaves /$cell/$p $seen]
        }
    }
    return $out
}

# Address spaces: handle -> {master interface pins, window {lo hi}}.
proc ::vstub::address_spaces {} {
    variable cells
    set spaces [dict create]
    foreach cell [dict keys $cells] {
        set c [dict get $cells $cell]
        set pins [cell_pins $cell]
        if {[dict get $c kind] eq "module"} {
            foreach {p info} $pins {
                if {[lindex $info 0] eq "intf" && [lindex $info 2] eq "Master"} {
                    dict set spaces /$cell/$p [list [list /$cell/$p] {0 0xFFFFFFFF}]
                }
            }
        } elseif {[dict get $c vlnv] eq "xilinx.com:ip:processing_system7:5.5"} {
            set masters {}
            set window {}
            if {[dict exists $pins M_AXI_GP0]} {
                lappend masters /$cell/M_AXI_GP0
                set window {0x40000000 0x7FFFFFFF}
            }
            if {[dict exists $pins M_AXI_GP1]} {
                lappend masters /$cell/M_AXI_GP1
                set window [list [expr {$window eq "" ? 0x80000000 : 0x40000000}] 0xBFFFFFFF]
            }
            if {$masters ne ""} {
                dict set spaces /$cell/Data [list $masters $window]
            }
        }
    }
    return $spaces
}

# Slave segments: handle -> slave interface pin.
proc ::vstub::address_segments {} {
    variable cells
    set segs [dict create]
    foreach cell [dict keys $cells] {
        set c [dict get $cells $cell]
        set pins [cell_pins $cell]
        if {[dict get $c kind] eq "module"} {
            foreach {p info} $pins {
                if {[lindex $info 0] eq "intf" && [lindex $info 2] eq "Slave"} {
                    dict set segs /$cell/$p/reg0 /$cell/$p
                }
            }
        } elseif {[dict get $c vlnv] eq "xilinx.com:ip:processing_system7:5.5"} {
            foreach n {0 1 2 3} {
                if {[dict exists $pins S_AXI_HP$n]} {
                    dict set segs /$cell/S_AXI_HP$n/HP${n}_DDR_LOWOCM /$cell/S_AXI_HP$n
                }
            }
        }
    }
    return $segs
}

# Is a slave segment reachable from an address space?
proc ::vstub::reachable {space seg} {
    set spaces [address_spaces]
    set segs [address_segments]
    set slave [dict get $segs $seg]
    foreach m [lindex [dict get $spaces $space] 0] {
        if {$slave in [reached_slaves $m]} {
            return 1
        }
    }
    return 0
}

# Resolve "cell/pin" patterns against the cells' current pins.
proc ::vstub::lookup_pins {cmd pos want_kind} {
    variable cells
    set out {}
    foreach pattern [objects $pos] {
        set pattern [string trimleft $pattern /]
        if {[llength [split $pattern /]] != 2} {
            fail $cmd "expected <cell>/<pin>, got $pattern"
        }
        lassign [split $pattern /] cell pin
        if {![dict exists $cells $cell]} {
            fail $cmd "no cell $cell in the block design (pin $pattern); cells:\
                       [dict keys $cells]"
        }
        set pins [cell_pins $cell]
        set hit 0
        foreach {p info} $pins {
            if {[string match $pin $p] && [lindex $info 0] eq $want_kind} {
                lappend out [register /$cell/$p [dict get {pin bd_pin intf bd_intf_pin} $want_kind]]
                set hit 1
            }
        }
        if {!$hit} {
            set avail {}
            foreach {p info} $pins {
                if {[lindex $info 0] eq $want_kind} {
                    lappend avail $p
                }
            }
            set what [expr {$want_kind eq "intf" ? "interface pin" : "pin"}]
            fail $cmd "cell $cell has no $what $pin as configured now; it has: [lsort $avail]"
        }
    }
    return $out
}

proc ::vstub::pin_info {handle} {
    variable ext_ports
    set parts [split [string trimleft $handle /] /]
    if {[llength $parts] == 1} {
        return [dict get $ext_ports [lindex $parts 0]]
    }
    lassign $parts cell pin
    return [dict get [cell_pins $cell] $pin]
}

# -- design ports and the XDC -----------------------------------------------------------------------

proc ::vstub::design_ports {} {
    variable st
    variable modules
    variable ext_ports
    variable intf_members
    set top $st(design)
    if {$top eq ""} {
        return {}
    }
    if {$st(bd) ne "" && $top eq "$st(bd)_wrapper"} {
        set ports {}
        foreach {name info} $ext_ports {
            if {[lindex $info 0] eq "intf"} {
                foreach m [dict get $intf_members [lindex $info 3]] {
                    lappend ports ${name}_$m
                }
            } else {
                lappend ports $name
            }
        }
        return $ports
    }
    return [dict keys [dict get $modules $top ports]]
}

proc ::vstub::lint_xdc {cmd path} {
    variable st
    set st(in_xdc) $path
    set rc [catch {uplevel #0 [list source $path]} msg]
    set st(in_xdc) ""
    if {$rc} {
        fail $cmd "in constraints [file tail $path]: $msg"
    }
}

# -- project and files ------------------------------------------------------------------------------

proc ::version {args} {
    ::vstub::rec [info level 0]
    ::vstub::parse version $args {-short} {} {} 0 0
    return "2022.2"
}

proc ::create_project {args} {
    ::vstub::rec [info level 0]
    variable ::vstub::st
    lassign [::vstub::parse create_project $args {-force -in_memory} {-part} {-part} 0 2] opts pos
    set part [dict get $opts -part]
    if {![regexp {^xc7z0[0-9]{2}[a-z]{3}[0-9]{3,4}-[123][a-z]?$} $part]} {
        ::vstub::fail create_project "-part $part is not a Zynq-7000 part"
    }
    if {[info exists ::zynqnn(part)] && $part ne $::zynqnn(part)} {
        ::vstub::fail create_project "-part $part, params.tcl says $::zynqnn(part)"
    }
    if {[::vstub::opt $opts -in_memory 0]} {
        set st(project) in_memory
        return in_memory
    }
    if {[llength $pos] != 2} {
        ::vstub::fail create_project "needs <name> <dir> (or -in_memory)"
    }
    lassign $pos name dir
    set dir [file normalize $dir]
    set xpr [file join $dir $name.xpr]
    if {[file exists $xpr] && ![::vstub::opt $opts -force 0]} {
        ::vstub::fail create_project "$xpr exists; use -force"
    }
    ::vstub::touch $xpr
    set st(project) $name
    set st(proj_dir) $dir
    return [::vstub::register $name project]
}

proc ::current_project {args} {
    ::vstub::rec [info level 0]
    ::vstub::parse current_project $args {} {} {} 0 0
    ::vstub::require_project current_project
    return [::vstub::register $::vstub::st(project) project]
}

proc ::current_fileset {args} {
    ::vstub::rec [info level 0]
    ::vstub::parse current_fileset $args {-constrset -simset} {} {} 0 0
    ::vstub::require_project current_fileset
    return [::vstub::register sources_1 fileset]
}

proc ::add_files {args} {
    ::vstub::rec [info level 0]
    variable ::vstub::files
    variable ::vstub::st
    lassign [::vstub::parse add_files $args {-norecurse -scan_for_includes} {-fileset} {} 1 -1] \
        opts pos
    ::vstub::require_project add_files
    set fs [::vstub::opt $opts -fileset sources_1]
    if {$fs ni {sources_1 constrs_1 sim_1}} {
        ::vstub::fail add_files "unknown fileset $fs"
    }
    foreach path [::vstub::objects $pos] {
        if {![file isfile $path]} {
            ::vstub::fail add_files "file not found: $path"
        }
        set path [file normalize $path]
        set ext [file extension $path]
        if {$fs eq "constrs_1" && $ext ne ".xdc"} {
            ::vstub::fail add_files "$path is not an .xdc file but goes to constrs_1"
        }
        if {$fs eq "sources_1" && $ext eq ".xdc"} {
            ::vstub::fail add_files "$path is an .xdc file; add it with -fileset constrs_1"
        }
        set k [dict get {.v verilog .sv verilog .xdc xdc .bd bd} $ext]
        if {$k eq "verilog"} {
            ::vstub::scan_verilog $path
        }
        dict set files $path [dict create fileset $fs kind $k props {}]
        ::vstub::register $path file
    }
    return
}

proc ::read_verilog {args} {
    ::vstub::rec [info level 0]
    variable ::vstub::files
    lassign [::vstub::parse read_verilog $args {-sv} {-library} {} 1 -1] opts pos
    foreach path [::vstub::objects $pos] {
        if {![file isfile $path]} {
            ::vstub::fail read_verilog "file not found: $path"
        }
        set path [file normalize $path]
        ::vstub::scan_verilog $path
        dict set files $path [dict create fileset sources_1 kind verilog props {}]
    }
    return
}

proc ::read_xdc {args} {
    ::vstub::rec [info level 0]
    variable ::vstub::read_xdcs
    lassign [::vstub::parse read_xdc $args {-unmanaged} {-ref -cells -mode} {} 1 -1] opts pos
    foreach path [::vstub::objects $pos] {
        if {![file isfile $path]} {
            ::vstub::fail read_xdc "file not found: $path"
        }
        lappend read_xdcs [file normalize $path]
    }
    return
}

proc ::update_compile_order {args} {
    ::vstub::rec [info level 0]
    ::vstub::parse update_compile_order $args {} {-fileset} {} 0 0
    ::vstub::require_project update_compile_order
    return
}

proc ::get_files {args} {
    ::vstub::rec [info level 0]
    variable ::vstub::files
    lassign [::vstub::parse get_files $args {-all -compile_order} \
        {-of_objects -filter -fileset -used_in} {} 1 -1] opts pos
    set out {}
    foreach pattern [::vstub::objects $pos] {
        set hit 0
        foreach path [dict keys $files] {
            if {[string match $pattern $path] || [string match $pattern [file tail $path]]} {
                lappend out [::vstub::register $path file]
                set hit 1
            }
        }
        if {!$hit && ![::vstub::opt $opts -quiet 0]} {
            ::vstub::fail get_files "no file matches $pattern"
        }
    }
    return $out
}

# Drop files from the project (e.g. the top level's Verilog when a packaged IP brings its own).
proc ::remove_files {args} {
    ::vstub::rec [info level 0]
    variable ::vstub::files
    lassign [::vstub::parse remove_files $args {-quiet} {-fileset} {} 1 -1] opts pos
    ::vstub::require_project remove_files
    foreach path [::vstub::objects $pos] {
        set path [file normalize $path]
        if {![dict exists $files $path]} {
            ::vstub::fail remove_files "$path is not in the project"
        }
        dict unset files $path
    }
    return
}

# The IP catalog: every component.xml in (a directory of) the project's ip_repo_paths. The lint
# reads its VLNV, top module and file sets (each file must exist; the Verilog is scanned).
proc ::update_ip_catalog {args} {
    ::vstub::rec [info level 0]
    variable ::vstub::ip_catalog
    variable ::vstub::ip_repo_paths
    ::vstub::parse update_ip_catalog $args {-rebuild -scan_changes -quiet} {-repo_path} {} 0 0
    ::vstub::require_project update_ip_catalog
    if {$ip_repo_paths eq ""} {
        ::vstub::fail update_ip_catalog "no ip_repo_paths set on the project"
    }
    foreach repo $ip_repo_paths {
        set found [glob -nocomplain -types f [file join $repo component.xml] \
                       [file join $repo * component.xml]]
        if {$found eq ""} {
            ::vstub::fail update_ip_catalog "no component.xml in IP repository $repo"
        }
        foreach xml $found {
            set f [open $xml r]
            set text [read $f]
            close $f
            set vlnv {}
            foreach tag {vendor library name version} {
                if {![regexp "<spirit:$tag>(\[^<\]+)</spirit:$tag>" $text -> v]} {
                    ::vstub::fail update_ip_catalog "$xml has no spirit:$tag"
                }
                lappend vlnv $v
            }
            if {![regexp {<spirit:modelName>([^<]+)</spirit:modelName>} $text -> module]} {
                ::vstub::fail update_ip_catalog "$xml has no spirit:modelName"
            }
            set paths {}
            foreach {- name} [regexp -all -inline \
                    {<spirit:file>\s*<spirit:name>([^<]+)</spirit:name>} $text] {
                set p [file join [file dirname $xml] $name]
                if {![file isfile $p]} {
                    ::vstub::fail update_ip_catalog "$xml names a missing file: $p"
                }
                if {[file extension $p] in {.v .sv} && $p ni $paths} {
                    lappend paths $p
                    ::vstub::scan_verilog $p
                }
            }
            if {![dict exists $::vstub::modules $module]} {
                ::vstub::fail update_ip_catalog "$xml: model $module is in none of its files"
            }
            dict set ip_catalog [join $vlnv :] [dict create module $module xml $xml files $paths]
        }
    }
    return
}

proc ::close_project {args} {
    ::vstub::rec [info level 0]
    ::vstub::parse close_project $args {-delete} {} {} 0 0
    ::vstub::require_project close_project
    set ::vstub::st(project) ""
    set ::vstub::st(bd) ""
    set ::vstub::st(stage) none
    return
}

# -- properties -------------------------------------------------------------------------------------

namespace eval ::vstub {
    variable file_props {synth_checkpoint_mode used_in_synthesis used_in_implementation
                         file_type is_enabled}
    variable fileset_props {top}
    variable project_props {target_language simulator_language default_lib ip_repo_paths}
    variable port_props {PACKAGE_PIN IOSTANDARD DRIVE SLEW PULLUP PULLDOWN IOB}
    variable design_props {BITSTREAM.GENERAL.COMPRESS BITSTREAM.CONFIG.UNUSEDPIN CFGBVS
                           CONFIG_VOLTAGE}
    # IP packager objects (ipx::).
    variable ipx_core_props {vendor library name version display_name description taxonomy
                             supported_families company_url core_revision}
    variable ipx_busif_props {display_name description}
}

proc ::vstub::check_cell_property {cmd cell name value {reading 0}} {
    variable cells
    variable ps7_props
    variable ps7_readonly
    variable ps7_values
    variable ip_props
    set c [dict get $cells $cell]
    if {![string match CONFIG.* $name]} {
        if {$reading && $name in {NAME VLNV TYPE}} {
            return
        }
        fail $cmd "$name is not a property of cell $cell (IP parameters are CONFIG.<name>)"
    }
    set pname [string range $name 7 end]
    if {[dict get $c kind] eq "module"} {
        fail $cmd "module reference $cell has no parameter $pname"
    }
    set vlnv [dict get $c vlnv]
    if {$vlnv eq "xilinx.com:ip:processing_system7:5.5"} {
        if {$pname in $ps7_readonly} {
            if {!$reading} {
                fail $cmd "CONFIG.$pname of $cell is derived by the IP and cannot be set"
            }
            return
        }
        if {$pname ni $ps7_props} {
            fail $cmd "CONFIG.$pname is not a processing_system7 property on the lint's\
                       allow-list (see vivado_stubs.tcl)"
        }
        if {!$reading} {
            foreach {pattern re} $ps7_values {
                if {[string match $pattern $pname]} {
                    if {![regexp $re $value]} {
                        fail $cmd "CONFIG.$pname = {$value} is not a valid value ($re)"
                    }
                    break
                }
            }
            if {[string match PCW_FPGA?_PERIPHERAL_FREQMHZ $pname]
                    && ($value <= 0 || $value > 250)} {
                fail $cmd "CONFIG.$pname = $value MHz is outside 0..250 MHz"
            }
        }
        return
    }
    if {![dict exists $ip_props $vlnv] || $pname ni [dict get $ip_props $vlnv]} {
        fail $cmd "CONFIG.$pname is not a property of $vlnv on the lint's allow-list"
    }
    if {[regexp {^NUM_(SI|MI|CLKS)$} $pname] && ![regexp {^[1-9][0-9]?$} $value]} {
        fail $cmd "CONFIG.$pname = {$value} is not a count"
    }
}

proc ::vstub::check_property {cmd obj name value {reading 0}} {
    variable file_props
    variable fileset_props
    variable project_props
    variable port_props
    variable design_props
    variable files
    variable st
    set k [kind $obj]
    switch -- $k {
        bd_cell {
            check_cell_property $cmd [string trimleft $obj /] $name $value $reading
        }
        file {
            if {[string tolower $name] ni $file_props} {
                fail $cmd "$name is not a file property (allow-list: $file_props)"
            }
            if {[string tolower $name] eq "synth_checkpoint_mode"} {
                if {$value ni {None Singular Hierarchical}} {
                    fail $cmd "synth_checkpoint_mode $value: one of None Singular Hierarchical"
                }
                if {[dict get $files $obj kind] ne "bd"} {
                    fail $cmd "synth_checkpoint_mode applies to block designs, not $obj"
                }
            }
        }
        fileset {
            if {[string tolower $name] ni $fileset_props} {
                fail $cmd "$name is not a fileset property (allow-list: $fileset_props)"
            }
        }
        project {
            if {[string tolower $name] ni $project_props} {
                fail $cmd "$name is not a project property (allow-list: $project_props)"
            }
            if {[string tolower $name] eq "ip_repo_paths" && !$reading} {
                foreach dir $value {
                    if {![file isdirectory $dir]} {
                        fail $cmd "ip_repo_paths: $dir is not a directory"
                    }
                }
                set ::vstub::ip_repo_paths {}
                foreach dir $value {
                    lappend ::vstub::ip_repo_paths [file normalize $dir]
                }
            }
        }
        port {
            if {[string toupper $name] ni $port_props} {
                fail $cmd "$name is not a port property (allow-list: $port_props)"
            }
            if {[string toupper $name] eq "PACKAGE_PIN" && ![regexp {^[A-Y][0-9]{1,2}$} $value]} {
                fail $cmd "PACKAGE_PIN $value is not a clg400 ball name"
            }
        }
        design {
            if {[string toupper $name] ni $design_props} {
                fail $cmd "$name is not a design property (allow-list: $design_props)"
            }
        }
        ipx_core {
            if {[string tolower $name] ni $::vstub::ipx_core_props} {
                fail $cmd "$name is not an IP core property (allow-list:\
                           $::vstub::ipx_core_props)"
            }
        }
        ipx_busif {
            if {[string tolower $name] ni $::vstub::ipx_busif_props} {
                fail $cmd "$name is not a bus interface property (allow-list:\
                           $::vstub::ipx_busif_props)"
            }
        }
        ipx_param {
            if {[string tolower $name] ne "value"} {
                fail $cmd "$name is not a bus parameter property (allow-list: value)"
            }
            if {!$reading} {
                ::vstub::ipx_check_param $cmd $obj $value
            }
        }
        timing_path {
            if {!$reading || [string toupper $name] ni {SLACK STARTPOINT_PIN ENDPOINT_PIN}} {
                fail $cmd "$name is not a readable timing path property"
            }
        }
        "" {
            fail $cmd "$obj is not an object the lint knows (use a get_* command)"
        }
        default {
            fail $cmd "properties of $k objects are not on the lint's allow-list"
        }
    }
}

proc ::set_property {args} {
    ::vstub::rec [info level 0]
    variable ::vstub::cells
    variable ::vstub::files
    variable ::vstub::st
    lassign [::vstub::parse set_property $args {} {-dict} {} 1 3] opts pos
    if {[dict exists $opts -dict]} {
        if {[llength $pos] != 1} {
            ::vstub::fail set_property "with -dict takes exactly one object argument"
        }
        set pairs [dict get $opts -dict]
        if {[llength $pairs] % 2} {
            ::vstub::fail set_property "-dict list has an odd number of elements"
        }
        set objs [lindex $pos 0]
    } else {
        if {[llength $pos] != 3} {
            ::vstub::fail set_property "needs <name> <value> <objects>"
        }
        lassign $pos name value objs
        set pairs [list $name $value]
    }
    if {[llength $objs] == 0} {
        ::vstub::fail set_property "no objects (an empty get_* result?)"
    }
    foreach obj $objs {
        foreach {name value} $pairs {
            ::vstub::check_property set_property $obj $name $value
            switch -- [::vstub::kind $obj] {
                bd_cell {
                    dict set cells [string trimleft $obj /] props $name $value
                    ::vstub::bd_modified
                }
                file {
                    dict set files $obj props [string tolower $name] $value
                }
                ipx_core {
                    dict set ::vstub::ipx props [string tolower $name] $value
                }
                ipx_param {
                    lassign [split $obj /] - busif pname
                    dict set ::vstub::ipx busifs $busif $pname $value
                }
            }
        }
    }
    return
}

# PS7: FCLK0 from its PLL by two divisors, as the IP derives PCW_ACT_FPGA0_PERIPHERAL_FREQMHZ
# (IO PLL 1000 MHz, ARM PLL 1300 MHz, DDR PLL 1050 MHz on the Pynq-Z2's settings).
proc ::vstub::ps7_actual_fclk {cell n} {
    set want [cell_prop $cell PCW_FPGA${n}_PERIPHERAL_FREQMHZ]
    set src [dict get {{IO PLL} 1000.0 {ARM PLL} 1300.0 {DDR PLL} 1050.0} \
        [cell_prop $cell PCW_FCLK${n}_PERIPHERAL_CLKSRC]]
    set best ""
    for {set d0 1} {$d0 <= 63} {incr d0} {
        for {set d1 1} {$d1 <= 63} {incr d1} {
            set err [expr {abs($src / ($d0 * $d1) - $want)}]
            if {$best eq "" || $err < [lindex $best 0] - 1e-9} {
                set best [list $err $d0 $d1]
            }
        }
    }
    return [format %.6f [expr {$src / ([lindex $best 1] * [lindex $best 2])}]]
}

proc ::get_property {args} {
    ::vstub::rec [info level 0]
    variable ::vstub::cells
    variable ::vstub::files
    lassign [::vstub::parse get_property $args {-min -max} {} {} 2 2] opts pos
    lassign $pos name obj
    if {[llength $obj] != 1} {
        ::vstub::fail get_property "needs exactly one object, got [llength $obj]"
    }
    ::vstub::check_property get_property $obj $name "" 1
    switch -- [::vstub::kind $obj] {
        timing_path {
            return [expr {[string match *hold* $obj] ? $::vstub::hold_slack
                                                      : $::vstub::setup_slack}]
        }
        bd_cell {
            set cell [string trimleft $obj /]
            if {[regexp {^CONFIG\.PCW_ACT_FPGA([0-3])_PERIPHERAL_FREQMHZ$} $name -> n]} {
                return [::vstub::ps7_actual_fclk $cell $n]
            }
            return [::vstub::cell_prop $cell [string range $name 7 end]]
        }
        file {
            return [::vstub::opt [dict get $files $obj props] [string tolower $name]]
        }
    }
    return ""
}

# -- block design -----------------------------------------------------------------------------------

proc ::create_bd_design {args} {
    ::vstub::rec [info level 0]
    variable ::vstub::st
    variable ::vstub::files
    lassign [::vstub::parse create_bd_design $args {} {-dir -bdsource} {} 1 1] opts pos
    ::vstub::require_project create_bd_design
    set name [lindex $pos 0]
    if {$st(bd) ne ""} {
        ::vstub::fail create_bd_design "block design $st(bd) is already open"
    }
    set path [file join $st(proj_dir) $st(project).srcs sources_1 bd $name $name.bd]
    ::vstub::touch $path "{}\n"
    dict set files $path [dict create fileset sources_1 kind bd props {}]
    ::vstub::register $path file
    set st(bd) $name
    set st(bd_file) $path
    return $name
}

proc ::save_bd_design {args} {
    ::vstub::rec [info level 0]
    ::vstub::parse save_bd_design $args {} {} {} 0 1
    ::vstub::require_bd save_bd_design
    return
}

proc ::create_bd_cell {args} {
    ::vstub::rec [info level 0]
    variable ::vstub::cells
    variable ::vstub::modules
    variable ::vstub::ip_vlnvs
    lassign [::vstub::parse create_bd_cell $args {} {-type -vlnv -reference} {-type} 1 1] \
        opts pos
    ::vstub::require_bd create_bd_cell
    set name [lindex $pos 0]
    if {[dict exists $cells $name]} {
        ::vstub::fail create_bd_cell "cell $name exists"
    }
    switch -- [dict get $opts -type] {
        ip {
            set vlnv [::vstub::opt $opts -vlnv]
            if {$vlnv eq ""} {
                ::vstub::fail create_bd_cell "-type ip needs -vlnv"
            }
            if {[dict exists $::vstub::ip_catalog $vlnv]} {
                # A packaged user IP (update_ip_catalog read its component.xml): its pins are
                # those of its top module, as for a module reference.
                set module [dict get $::vstub::ip_catalog $vlnv module]
                ::vstub::check_top_ports create_bd_cell $module [dict get $modules $module ports]
                dict set cells $name [dict create kind module vlnv $vlnv module $module props {}]
                ::vstub::bd_modified
                return [::vstub::register /$name bd_cell]
            }
            if {$vlnv ni $ip_vlnvs} {
                ::vstub::fail create_bd_cell "IP $vlnv is not on the lint's list ($ip_vlnvs) nor\
                                              in the IP catalog ([dict keys $::vstub::ip_catalog];\
                                              set ip_repo_paths, then update_ip_catalog)"
            }
            dict set cells $name [dict create kind ip vlnv $vlnv module "" props {}]
        }
        module {
            set module [::vstub::opt $opts -reference]
            if {$module eq ""} {
                ::vstub::fail create_bd_cell "-type module needs -reference"
            }
            if {![dict exists $modules $module]} {
                ::vstub::fail create_bd_cell "module $module is not defined in the added\
                                              sources ([dict keys $modules])"
            }
            ::vstub::check_top_ports create_bd_cell $module [dict get $modules $module ports]
            dict set cells $name [dict create kind module vlnv "" module $module props {}]
        }
        default {
            ::vstub::fail create_bd_cell "-type [dict get $opts -type]: the flow uses ip or module"
        }
    }
    ::vstub::bd_modified
    return [::vstub::register /$name bd_cell]
}

proc ::get_bd_cells {args} {
    ::vstub::rec [info level 0]
    variable ::vstub::cells
    lassign [::vstub::parse get_bd_cells $args {-hierarchical} {-filter -of_objects} {} 0 -1] \
        opts pos
    ::vstub::require_bd get_bd_cells
    set out {}
    foreach pattern [::vstub::objects $pos] {
        set hit 0
        foreach cell [dict keys $cells] {
            if {[string match [string trimleft $pattern /] $cell]} {
                lappend out [::vstub::register /$cell bd_cell]
                set hit 1
            }
        }
        if {!$hit && ![::vstub::opt $opts -quiet 0]} {
            ::vstub::fail get_bd_cells "no cell $pattern"
        }
    }
    return $out
}

proc ::get_bd_pins {args} {
    ::vstub::rec [info level 0]
    lassign [::vstub::parse get_bd_pins $args {} {-of_objects -filter} {} 1 -1] opts pos
    ::vstub::require_bd get_bd_pins
    return [::vstub::lookup_pins get_bd_pins $pos pin]
}

proc ::get_bd_intf_pins {args} {
    ::vstub::rec [info level 0]
    lassign [::vstub::parse get_bd_intf_pins $args {} {-of_objects -filter} {} 1 -1] opts pos
    ::vstub::require_bd get_bd_intf_pins
    return [::vstub::lookup_pins get_bd_intf_pins $pos intf]
}

proc ::create_bd_intf_port {args} {
    ::vstub::rec [info level 0]
    variable ::vstub::ext_ports
    variable ::vstub::intf_vlnvs
    lassign [::vstub::parse create_bd_intf_port $args {} {-mode -vlnv} {-mode -vlnv} 1 1] \
        opts pos
    ::vstub::require_bd create_bd_intf_port
    set name [lindex $pos 0]
    set mode [dict get $opts -mode]
    set vlnv [dict get $opts -vlnv]
    if {$mode ni {Master Slave MirroredMaster MirroredSlave Monitor System}} {
        ::vstub::fail create_bd_intf_port "-mode $mode is not an interface mode"
    }
    if {$vlnv ni $intf_vlnvs} {
        ::vstub::fail create_bd_intf_port "interface $vlnv is not on the lint's list: $intf_vlnvs"
    }
    if {[dict exists $ext_ports $name]} {
        ::vstub::fail create_bd_intf_port "port $name exists"
    }
    dict set ext_ports $name [list intf "" $mode $vlnv]
    ::vstub::bd_modified
    return [::vstub::register /$name bd_intf_port]
}

proc ::create_bd_port {args} {
    ::vstub::rec [info level 0]
    variable ::vstub::ext_ports
    lassign [::vstub::parse create_bd_port $args {} {-dir -type -from -to -freq_hz} {-dir} 1 1] \
        opts pos
    ::vstub::require_bd create_bd_port
    set name [lindex $pos 0]
    set dir [dict get $opts -dir]
    if {$dir ni {I O IO}} {
        ::vstub::fail create_bd_port "-dir $dir: one of I O IO"
    }
    if {[dict exists $ext_ports $name]} {
        ::vstub::fail create_bd_port "port $name exists"
    }
    dict set ext_ports $name [list pin $dir "" ""]
    ::vstub::bd_modified
    return [::vstub::register /$name bd_port]
}

proc ::vstub::lookup_ports {cmd pos want} {
    variable ext_ports
    set out {}
    foreach pattern [objects $pos] {
        set hit 0
        foreach {name info} $ext_ports {
            if {[string match [string trimleft $pattern /] $name] && [lindex $info 0] eq $want} {
                lappend out [register /$name [expr {$want eq "intf" ? "bd_intf_port" : "bd_port"}]]
                set hit 1
            }
        }
        if {!$hit} {
            fail $cmd "no block-design port $pattern"
        }
    }
    return $out
}

proc ::get_bd_intf_ports {args} {
    ::vstub::rec [info level 0]
    lassign [::vstub::parse get_bd_intf_ports $args {} {-of_objects -filter} {} 1 -1] opts pos
    ::vstub::require_bd get_bd_intf_ports
    return [::vstub::lookup_ports get_bd_intf_ports $pos intf]
}

proc ::get_bd_ports {args} {
    ::vstub::rec [info level 0]
    lassign [::vstub::parse get_bd_ports $args {} {-of_objects -filter} {} 1 -1] opts pos
    ::vstub::require_bd get_bd_ports
    return [::vstub::lookup_ports get_bd_ports $pos pin]
}

proc ::connect_bd_intf_net {args} {
    ::vstub::rec [info level 0]
    variable ::vstub::intf_peer
    lassign [::vstub::parse connect_bd_intf_net $args {-boundary_type} {-intf_net} {} 2 2] \
        opts pos
    ::vstub::require_bd connect_bd_intf_net
    set ends [::vstub::objects $pos]
    if {[llength $ends] != 2} {
        ::vstub::fail connect_bd_intf_net "needs exactly two interface objects, got $ends"
    }
    foreach e $ends {
        if {[::vstub::kind $e] ni {bd_intf_pin bd_intf_port}} {
            ::vstub::fail connect_bd_intf_net "$e is not an interface pin or port"
        }
        if {[dict exists $intf_peer $e]} {
            ::vstub::fail connect_bd_intf_net "$e is already connected to\
                                               [dict get $intf_peer $e]"
        }
    }
    lassign $ends a b
    set ia [::vstub::pin_info $a]
    set ib [::vstub::pin_info $b]
    set ports [expr {([::vstub::kind $a] eq "bd_intf_port") + ([::vstub::kind $b] eq "bd_intf_port")}]
    set modes [lsort [list [lindex $ia 2] [lindex $ib 2]]]
    if {$ports == 0 && $modes ne {Master Slave}} {
        ::vstub::fail connect_bd_intf_net "$a ([lindex $ia 2]) to $b ([lindex $ib 2]): pins\
                                           connect Master to Slave"
    }
    if {$ports == 1 && [lindex $ia 2] ne [lindex $ib 2]} {
        ::vstub::fail connect_bd_intf_net "port and pin modes differ: $a [lindex $ia 2],\
                                           $b [lindex $ib 2]"
    }
    if {$ports == 2} {
        ::vstub::fail connect_bd_intf_net "connects two ports"
    }
    if {[lindex $ia 3] ne [lindex $ib 3]} {
        ::vstub::fail connect_bd_intf_net "interface types differ: $a [lindex $ia 3],\
                                           $b [lindex $ib 3]"
    }
    dict set intf_peer $a $b
    dict set intf_peer $b $a
    ::vstub::bd_modified
    return
}

proc ::connect_bd_net {args} {
    ::vstub::rec [info level 0]
    variable ::vstub::net_of
    variable ::vstub::nets
    lassign [::vstub::parse connect_bd_net $args {} {-net} {} 2 -1] opts pos
    ::vstub::require_bd connect_bd_net
    set members [::vstub::objects $pos]
    if {[llength $members] < 2} {
        ::vstub::fail connect_bd_net "needs at least two pins, got $members"
    }
    set drivers {}
    foreach m $members {
        if {[::vstub::kind $m] ni {bd_pin bd_port}} {
            ::vstub::fail connect_bd_net "$m is not a pin or port (interface pins use\
                                          connect_bd_intf_net)"
        }
        if {[dict exists $net_of $m]} {
            ::vstub::fail connect_bd_net "$m is already in a net"
        }
        set dir [lindex [::vstub::pin_info $m] 1]
        # A block-design input port drives the net inside; an output port is driven.
        if {[::vstub::kind $m] eq "bd_port"} {
            set dir [dict get {I O O I IO IO} $dir]
        }
        if {$dir eq "O"} {
            lappend drivers $m
        }
    }
    if {[llength $drivers] != 1} {
        ::vstub::fail connect_bd_net "a net needs exactly one driver; drivers: {$drivers}"
    }
    set id net[incr ::vstub::netcount]
    dict set nets $id $members
    foreach m $members {
        dict set net_of $m $id
    }
    ::vstub::bd_modified
    return
}

proc ::get_bd_addr_spaces {args} {
    ::vstub::rec [info level 0]
    lassign [::vstub::parse get_bd_addr_spaces $args {} {-of_objects -filter} {} 1 -1] opts pos
    ::vstub::require_bd get_bd_addr_spaces
    set spaces [::vstub::address_spaces]
    set out {}
    foreach pattern [::vstub::objects $pos] {
        set hit 0
        foreach s [dict keys $spaces] {
            if {[string match /[string trimleft $pattern /] $s]} {
                lappend out [::vstub::register $s addr_space]
                set hit 1
            }
        }
        if {!$hit} {
            ::vstub::fail get_bd_addr_spaces "no address space $pattern; spaces:\
                                              [dict keys $spaces]"
        }
    }
    return $out
}

proc ::get_bd_addr_segs {args} {
    ::vstub::rec [info level 0]
    lassign [::vstub::parse get_bd_addr_segs $args {-excluded} {-of_objects -filter} {} 1 -1] \
        opts pos
    ::vstub::require_bd get_bd_addr_segs
    set segs [::vstub::address_segments]
    set out {}
    foreach pattern [::vstub::objects $pos] {
        set hit 0
        foreach s [dict keys $segs] {
            if {[string match /[string trimleft $pattern /] $s]} {
                lappend out [::vstub::register $s addr_seg]
                set hit 1
            }
        }
        if {!$hit} {
            ::vstub::fail get_bd_addr_segs "no slave segment $pattern; segments:\
                                            [dict keys $segs]"
        }
    }
    return $out
}

proc ::assign_bd_address {args} {
    ::vstub::rec [info level 0]
    variable ::vstub::assigned
    lassign [::vstub::parse assign_bd_address $args {-force -combine_segments -external} \
        {-offset -range -target_address_space} {} 0 -1] opts pos
    ::vstub::require_bd assign_bd_address
    set spaces [::vstub::address_spaces]
    set segs [::vstub::objects $pos]
    foreach s $segs {
        if {[::vstub::kind $s] ne "addr_seg"} {
            ::vstub::fail assign_bd_address "$s is not a slave segment (get_bd_addr_segs)"
        }
    }
    if {[dict exists $opts -offset] || [dict exists $opts -range]} {
        if {[llength $segs] != 1 || ![dict exists $opts -target_address_space]} {
            ::vstub::fail assign_bd_address "-offset/-range need one segment and\
                                             -target_address_space"
        }
    }
    if {[dict exists $opts -target_address_space]} {
        set space [dict get $opts -target_address_space]
        if {[::vstub::kind $space] ne "addr_space"} {
            ::vstub::fail assign_bd_address "$space is not an address space"
        }
        set targets [list $space]
    } else {
        set targets [dict keys $spaces]
    }
    if {$segs eq ""} {
        set segs [dict keys [::vstub::address_segments]]
    }
    foreach space $targets {
        lassign [dict get $spaces $space] masters window
        foreach s $segs {
            if {[dict exists $assigned [list $space $s]]} {
                continue
            }
            if {![::vstub::reachable $space $s]} {
                if {[dict exists $opts -target_address_space]} {
                    ::vstub::fail assign_bd_address "$s is not reachable from $space (is its\
                                                     interface connected?)"
                }
                continue
            }
            set offset ""
            set range ""
            if {[dict exists $opts -offset]} {
                set offset [::vstub::parse_int assign_bd_address [dict get $opts -offset]]
                set range [::vstub::parse_range assign_bd_address \
                    [::vstub::opt $opts -range 4K]]
                if {$range < 4096 || ($range & ($range - 1))} {
                    ::vstub::fail assign_bd_address "range $range is not a power of two >= 4K"
                }
                if {$offset % $range} {
                    ::vstub::fail assign_bd_address "offset [format 0x%08X $offset] is not\
                                                     aligned to its range $range"
                }
                lassign $window lo hi
                if {$offset < $lo || $offset + $range - 1 > $hi} {
                    ::vstub::fail assign_bd_address "[format 0x%08X $offset] + $range is\
                                                     outside $space's window $window"
                }
            }
            dict set assigned [list $space $s] [list $offset $range]
        }
    }
    ::vstub::bd_modified
    return
}

proc ::validate_bd_design {args} {
    ::vstub::rec [info level 0]
    variable ::vstub::st
    variable ::vstub::cells
    variable ::vstub::net_of
    variable ::vstub::intf_peer
    variable ::vstub::assigned
    variable ::vstub::modules
    ::vstub::parse validate_bd_design $args {-force} {-design} {} 0 0
    ::vstub::require_bd validate_bd_design
    foreach cell [dict keys $cells] {
        set pins [::vstub::cell_pins $cell]
        foreach p [::vstub::required_pins $cell] {
            set h /$cell/$p
            if {![dict exists $net_of $h] && ![dict exists $intf_peer $h]} {
                ::vstub::fail validate_bd_design "$h is not connected"
            }
        }
    }
    # The accelerator's register window must be assigned; its DMA must see some memory.
    set segs [::vstub::address_segments]
    set spaces [::vstub::address_spaces]
    foreach {s slave} $segs {
        set cell [lindex [split [string trimleft $s /] /] 0]
        if {[dict get $cells $cell kind] ne "module"} {
            continue
        }
        set mapped 0
        foreach key [dict keys $assigned] {
            if {[lindex $key 1] eq $s} {
                set mapped 1
            }
        }
        if {!$mapped} {
            ::vstub::fail validate_bd_design "slave segment $s is not assigned (assign_bd_address)"
        }
    }
    foreach space [dict keys $spaces] {
        set cell [lindex [split [string trimleft $space /] /] 0]
        if {[dict get $cells $cell kind] ne "module"} {
            continue
        }
        set mapped 0
        foreach key [dict keys $assigned] {
            if {[lindex $key 0] eq $space} {
                set mapped 1
            }
        }
        if {!$mapped} {
            ::vstub::fail validate_bd_design "address space $space maps no memory"
        }
    }
    set st(validated) 1
    return
}

proc ::generate_target {args} {
    ::vstub::rec [info level 0]
    variable ::vstub::st
    variable ::vstub::files
    lassign [::vstub::parse generate_target $args {-force} {} {} 2 2] opts pos
    lassign $pos targets objs
    foreach t $targets {
        if {$t ni {all synthesis implementation simulation instantiation_template}} {
            ::vstub::fail generate_target "unknown target $t"
        }
    }
    foreach obj $objs {
        if {[::vstub::kind $obj] ne "file" || [dict get $files $obj kind] ne "bd"} {
            ::vstub::fail generate_target "$obj is not a block-design file (get_files <name>.bd)"
        }
    }
    if {!$st(validated)} {
        ::vstub::fail generate_target "block design $st(bd) changed since validate_bd_design\
                                       (or was never validated)"
    }
    set st(generated) 1
    set st(gen_checkpoint_mode) [::vstub::opt [dict get $files $st(bd_file) props] \
        synth_checkpoint_mode Hierarchical]
    set bd $st(bd)
    ::vstub::touch [file join $st(proj_dir) $st(project).gen sources_1 bd $bd hw_handoff $bd.hwh] \
        "<EDKSYSTEM/>\n"
    return
}

proc ::make_wrapper {args} {
    ::vstub::rec [info level 0]
    variable ::vstub::st
    variable ::vstub::files
    variable ::vstub::modules
    lassign [::vstub::parse make_wrapper $args {-top -import -force} {-files -fileset} {-files} \
        0 0] opts pos
    set obj [dict get $opts -files]
    if {[::vstub::kind $obj] ne "file" || [dict get $files $obj kind] ne "bd"} {
        ::vstub::fail make_wrapper "-files $obj is not a block-design file"
    }
    set bd $st(bd)
    set path [file join $st(proj_dir) $st(project).gen sources_1 bd $bd hdl ${bd}_wrapper.v]
    ::vstub::touch $path "module ${bd}_wrapper();\nendmodule\n"
    dict set modules ${bd}_wrapper [dict create file $path ports {}]
    return $path
}

# -- synthesis and implementation -------------------------------------------------------------------

proc ::synth_design {args} {
    ::vstub::rec [info level 0]
    variable ::vstub::st
    variable ::vstub::files
    variable ::vstub::modules
    variable ::vstub::read_xdcs
    lassign [::vstub::parse synth_design $args \
        {-rtl -no_lc -keep_equivalent_registers -no_srlextract -assert} \
        {-top -part -mode -flatten_hierarchy -directive -include_dirs -generic -verilog_define
         -fanout_limit -max_dsp -max_bram -resource_sharing -shreg_min_size -bufg} \
        {-top -part} 0 0] opts pos
    set top [dict get $opts -top]
    set part [dict get $opts -part]
    set mode [::vstub::opt $opts -mode default]
    if {$mode ni {default out_of_context}} {
        ::vstub::fail synth_design "-mode $mode: one of default out_of_context"
    }
    if {[info exists ::zynqnn(part)] && $part ne $::zynqnn(part)} {
        ::vstub::fail synth_design "-part $part, params.tcl says $::zynqnn(part)"
    }
    if {[::vstub::opt $opts -flatten_hierarchy rebuilt] ni {none full rebuilt}} {
        ::vstub::fail synth_design "-flatten_hierarchy: one of none full rebuilt"
    }
    if {![dict exists $modules $top]} {
        ::vstub::fail synth_design "top $top is not a module of the sources ([dict keys $modules])"
    }
    set topfile [file normalize [dict get $modules $top file]]
    if {$st(project) ne "" && $st(project) ne "in_memory"} {
        if {![dict exists $files $topfile] || [dict get $files $topfile fileset] ne "sources_1"} {
            ::vstub::fail synth_design "$topfile (top $top) is not in sources_1 (add_files)"
        }
    }
    if {$st(bd) ne "" && $top eq "$st(bd)_wrapper"} {
        if {!$st(generated)} {
            ::vstub::fail synth_design "block design $st(bd) has no generated output\
                                        products (generate_target before synth_design)"
        }
        if {$st(gen_checkpoint_mode) ne "None"} {
            ::vstub::fail synth_design "block design was generated with synth_checkpoint_mode\
                $st(gen_checkpoint_mode): its IP would be black boxes in synth_design (set it to\
                None before generate_target)"
        }
    }
    set st(design) $top
    set st(stage) synth
    set st(ooc) [expr {$mode eq "out_of_context"}]
    # Constraints are applied when the design is linked.
    set xdcs $read_xdcs
    foreach {path info} $files {
        if {[dict get $info kind] eq "xdc"} {
            lappend xdcs $path
        }
    }
    foreach path $xdcs {
        ::vstub::lint_xdc synth_design $path
    }
    return
}

proc ::vstub::step {cmd want next} {
    variable st
    if {$st(stage) ni $want} {
        fail $cmd "the design is at stage $st(stage); $cmd needs one of: $want"
    }
    if {$next ne ""} {
        set st(stage) $next
    }
}

proc ::opt_design {args} {
    ::vstub::rec [info level 0]
    ::vstub::parse opt_design $args {-retarget -propconst -sweep -remap} {-directive} {} 0 0
    ::vstub::step opt_design {synth opt} opt
    return
}

proc ::place_design {args} {
    ::vstub::rec [info level 0]
    ::vstub::parse place_design $args {} {-directive} {} 0 0
    ::vstub::step place_design {synth opt} placed
    return
}

proc ::phys_opt_design {args} {
    ::vstub::rec [info level 0]
    ::vstub::parse phys_opt_design $args {} {-directive} {} 0 0
    ::vstub::step phys_opt_design {placed routed} ""
    return
}

proc ::route_design {args} {
    ::vstub::rec [info level 0]
    ::vstub::parse route_design $args {} {-directive} {} 0 0
    ::vstub::step route_design {placed} routed
    return
}

proc ::write_bitstream {args} {
    ::vstub::rec [info level 0]
    lassign [::vstub::parse write_bitstream $args {-force -bin_file} {} {} 1 1] opts pos
    ::vstub::step write_bitstream {routed} ""
    if {$::vstub::st(ooc)} {
        ::vstub::fail write_bitstream "an out-of-context design has no bitstream"
    }
    set path [lindex $pos 0]
    if {[file extension $path] ne ".bit"} {
        ::vstub::fail write_bitstream "$path does not end in .bit"
    }
    ::vstub::require_dir_of write_bitstream $path
    if {[file exists $path] && ![::vstub::opt $opts -force 0]} {
        ::vstub::fail write_bitstream "$path exists; use -force"
    }
    ::vstub::touch $path
    return
}

proc ::write_checkpoint {args} {
    ::vstub::rec [info level 0]
    lassign [::vstub::parse write_checkpoint $args {-force} {} {} 1 1] opts pos
    ::vstub::require_design write_checkpoint
    set path [lindex $pos 0]
    ::vstub::require_dir_of write_checkpoint $path
    if {[file exists $path] && ![::vstub::opt $opts -force 0]} {
        ::vstub::fail write_checkpoint "$path exists; use -force"
    }
    ::vstub::touch $path
    return
}

proc ::report_utilization {args} {
    ::vstub::rec [info level 0]
    lassign [::vstub::parse report_utilization $args {-hierarchical -append} \
        {-file -name -cells -hierarchical_depth} {-file} 0 0] opts pos
    ::vstub::require_design report_utilization
    set path [dict get $opts -file]
    ::vstub::require_dir_of report_utilization $path
    ::vstub::touch $path
    return
}

proc ::report_timing_summary {args} {
    ::vstub::rec [info level 0]
    lassign [::vstub::parse report_timing_summary $args \
        {-report_unconstrained -warn_on_violation -check_timing_verbose -no_header} \
        {-file -max_paths -nworst -delay_type -name} {-file} 0 0] opts pos
    ::vstub::require_design report_timing_summary
    set path [dict get $opts -file]
    ::vstub::require_dir_of report_timing_summary $path
    ::vstub::touch $path
    return
}

proc ::get_timing_paths {args} {
    ::vstub::rec [info level 0]
    lassign [::vstub::parse get_timing_paths $args {-setup -hold} \
        {-max_paths -nworst -delay_type -from -to -through -group} {} 0 0] opts pos
    ::vstub::require_design get_timing_paths
    if {[::vstub::opt $opts -setup 0] && [::vstub::opt $opts -hold 0]} {
        ::vstub::fail get_timing_paths "-setup and -hold together"
    }
    set which [expr {[::vstub::opt $opts -hold 0] ? "hold" : "setup"}]
    return [::vstub::register timing_path_$which timing_path]
}

# -- constraints and the linked design --------------------------------------------------------------

proc ::current_design {args} {
    ::vstub::rec [info level 0]
    ::vstub::parse current_design $args {} {} {} 0 0
    ::vstub::require_design current_design
    return [::vstub::register design design]
}

proc ::get_ports {args} {
    ::vstub::rec [info level 0]
    lassign [::vstub::parse get_ports $args {} {-filter -of_objects} {} 1 -1] opts pos
    ::vstub::require_design get_ports
    set ports [::vstub::design_ports]
    set out {}
    foreach pattern [::vstub::objects $pos] {
        regsub {\[[0-9]+\]$} $pattern {} base
        set hit 0
        foreach p $ports {
            if {[string match $base $p]} {
                lappend out [::vstub::register $p port]
                set hit 1
            }
        }
        if {!$hit} {
            ::vstub::fail get_ports "design $::vstub::st(design) has no port $pattern"
        }
    }
    return $out
}

proc ::create_clock {args} {
    ::vstub::rec [info level 0]
    lassign [::vstub::parse create_clock $args {-add} {-period -name -waveform} {-period} 0 1] \
        opts pos
    ::vstub::require_design create_clock
    set period [dict get $opts -period]
    if {![string is double -strict $period] || $period <= 0} {
        ::vstub::fail create_clock "-period $period is not a positive number of ns"
    }
    foreach obj [::vstub::objects $pos] {
        if {[::vstub::kind $obj] ne "port"} {
            ::vstub::fail create_clock "$obj is not a port (get_ports)"
        }
    }
    return [::vstub::register [::vstub::opt $opts -name clk] clock]
}

# -- the IP packager (ipx::) ------------------------------------------------------------------------
#
# package_project packages the project's top module; its bus interfaces are the AXI interfaces
# Vivado infers from the port names. Clock, reset and interrupt interfaces come from
# infer_bus_interface, bus parameters from add_bus_parameter (with value checks); save_core needs
# the core's VLNV to be params.tcl's zynqnn(ip_vlnv), a clock interface associated with both AXI
# interfaces, and check_integrity run after the last change.

namespace eval ::vstub {
    variable ipx [dict create]  ;# root_dir top props busifs {name {param value}} checked
}
namespace eval ::ipx {}

proc ::vstub::ipx_require_core {cmd core} {
    variable ipx
    if {![dict exists $ipx top]} {
        fail $cmd "no packaged core (ipx::package_project first)"
    }
    if {[kind $core] ne "ipx_core"} {
        fail $cmd "$core is not an IP core (ipx::current_core)"
    }
}

proc ::vstub::ipx_modified {} {
    dict set ::vstub::ipx checked 0
}

proc ::vstub::ipx_check_param {cmd obj value} {
    lassign [split $obj /] - busif pname
    set busifs [dict keys [dict get $::vstub::ipx busifs]]
    switch -- $pname {
        POLARITY {
            if {$value ni {ACTIVE_LOW ACTIVE_HIGH}} {
                fail $cmd "POLARITY $value: one of ACTIVE_LOW ACTIVE_HIGH"
            }
        }
        SENSITIVITY {
            if {$value ni {LEVEL_HIGH LEVEL_LOW EDGE_RISING EDGE_FALLING}} {
                fail $cmd "SENSITIVITY $value: one of LEVEL_HIGH LEVEL_LOW EDGE_RISING\
                           EDGE_FALLING"
            }
        }
        FREQ_HZ {
            if {![string is entier -strict $value] || $value <= 0} {
                fail $cmd "FREQ_HZ $value is not a positive integer"
            }
        }
        ASSOCIATED_BUSIF - ASSOCIATED_RESET {
            foreach b [split $value :] {
                if {$b ni $busifs} {
                    fail $cmd "$pname names $b, not a bus interface of the core ($busifs)"
                }
            }
        }
    }
    ipx_modified
}

proc ::ipx::package_project {args} {
    ::vstub::rec [info level 0]
    variable ::vstub::ipx
    variable ::vstub::modules
    variable ::vstub::files
    lassign [::vstub::parse ipx::package_project $args \
        {-import_files -force -generated_files -archive_source_project} \
        {-root_dir -vendor -library -taxonomy -set_current -module} {-root_dir} 0 0] opts pos
    ::vstub::require_project ipx::package_project
    set root [dict get $opts -root_dir]
    if {![file isdirectory $root]} {
        ::vstub::fail ipx::package_project "-root_dir $root does not exist"
    }
    set top ""
    foreach {path f} $files {
        if {[dict get $f kind] eq "verilog"} {
            foreach {m info} $modules {
                if {[dict get $info file] eq $path} {
                    lappend top $m
                }
            }
        }
    }
    if {![info exists ::zynqnn(top)] || $::zynqnn(top) ni $top} {
        ::vstub::fail ipx::package_project "the project's sources define no top module to\
                                            package ($top)"
    }
    set ports [dict get $modules $::zynqnn(top) ports]
    ::vstub::check_top_ports ipx::package_project $::zynqnn(top) $ports
    set busifs [dict create]
    foreach iname [dict keys [::vstub::infer_interfaces $ports]] {
        dict set busifs $iname {}
    }
    set props [dict create name $::zynqnn(top) version 1.0]
    foreach {o k} {-vendor vendor -library library -taxonomy taxonomy} {
        if {[dict exists $opts $o]} {
            dict set props $k [dict get $opts $o]
        }
    }
    set ipx [dict create root_dir [file normalize $root] top $::zynqnn(top) props $props \
        busifs $busifs ports $ports checked 0]
    return
}

proc ::ipx::current_core {args} {
    ::vstub::rec [info level 0]
    ::vstub::parse ipx::current_core $args {} {} {} 0 0
    if {![dict exists $::vstub::ipx top]} {
        ::vstub::fail ipx::current_core "no packaged core (ipx::package_project first)"
    }
    return [::vstub::register ipcore ipx_core]
}

proc ::ipx::get_bus_interfaces {args} {
    ::vstub::rec [info level 0]
    lassign [::vstub::parse ipx::get_bus_interfaces $args {} {-of_objects} {-of_objects} 0 1] \
        opts pos
    ::vstub::ipx_require_core ipx::get_bus_interfaces [dict get $opts -of_objects]
    set out {}
    foreach b [dict keys [dict get $::vstub::ipx busifs]] {
        if {$pos eq "" || [string match [lindex $pos 0] $b]} {
            lappend out [::vstub::register ipcore/$b ipx_busif]
        }
    }
    return $out
}

proc ::ipx::infer_bus_interface {args} {
    ::vstub::rec [info level 0]
    lassign [::vstub::parse ipx::infer_bus_interface $args {} {} {} 3 3] opts pos
    lassign $pos port abstraction core
    ::vstub::ipx_require_core ipx::infer_bus_interface $core
    set ports [dict get $::vstub::ipx ports]
    if {![dict exists $ports $port]} {
        ::vstub::fail ipx::infer_bus_interface "the core has no port $port"
    }
    set dir [lindex [dict get $ports $port] 0]
    set want [dict create \
        xilinx.com:signal:clock_rtl:1.0 input xilinx.com:signal:reset_rtl:1.0 input \
        xilinx.com:signal:interrupt_rtl:1.0 output]
    if {![dict exists $want $abstraction]} {
        ::vstub::fail ipx::infer_bus_interface "abstraction $abstraction is not on the lint's\
                                                list ([dict keys $want])"
    }
    if {[dict get $want $abstraction] ne $dir} {
        ::vstub::fail ipx::infer_bus_interface "$port is an $dir, not a [dict get $want \
                                                $abstraction] as $abstraction needs"
    }
    dict set ::vstub::ipx busifs $port {}
    ::vstub::ipx_modified
    return
}

proc ::ipx::get_bus_parameters {args} {
    ::vstub::rec [info level 0]
    lassign [::vstub::parse ipx::get_bus_parameters $args {} {-of_objects} {-of_objects} 1 1] \
        opts pos
    set busif [dict get $opts -of_objects]
    if {[::vstub::kind $busif] ne "ipx_busif"} {
        ::vstub::fail ipx::get_bus_parameters "$busif is not a bus interface"
    }
    set b [lindex [split $busif /] 1]
    set pname [lindex $pos 0]
    if {[dict exists $::vstub::ipx busifs $b $pname]} {
        return [::vstub::register $busif/$pname ipx_param]
    }
    return ""
}

proc ::ipx::add_bus_parameter {args} {
    ::vstub::rec [info level 0]
    lassign [::vstub::parse ipx::add_bus_parameter $args {} {} {} 2 2] opts pos
    lassign $pos pname busif
    if {[::vstub::kind $busif] ne "ipx_busif"} {
        ::vstub::fail ipx::add_bus_parameter "$busif is not a bus interface"
    }
    set b [lindex [split $busif /] 1]
    if {[dict exists $::vstub::ipx busifs $b $pname]} {
        ::vstub::fail ipx::add_bus_parameter "$b already has a parameter $pname"
    }
    dict set ::vstub::ipx busifs $b $pname ""
    ::vstub::ipx_modified
    return [::vstub::register $busif/$pname ipx_param]
}

proc ::ipx::create_xgui_files {args} {
    ::vstub::rec [info level 0]
    lassign [::vstub::parse ipx::create_xgui_files $args {} {} {} 1 1] opts pos
    ::vstub::ipx_require_core ipx::create_xgui_files [lindex $pos 0]
    return
}

proc ::ipx::update_checksums {args} {
    ::vstub::rec [info level 0]
    lassign [::vstub::parse ipx::update_checksums $args {} {} {} 1 1] opts pos
    ::vstub::ipx_require_core ipx::update_checksums [lindex $pos 0]
    return
}

proc ::ipx::check_integrity {args} {
    ::vstub::rec [info level 0]
    lassign [::vstub::parse ipx::check_integrity $args {-kernel -xrt -quiet} {} {} 1 1] opts pos
    ::vstub::ipx_require_core ipx::check_integrity [lindex $pos 0]
    dict set ::vstub::ipx checked 1
    return
}

proc ::ipx::save_core {args} {
    ::vstub::rec [info level 0]
    variable ::vstub::ipx
    lassign [::vstub::parse ipx::save_core $args {} {} {} 1 1] opts pos
    ::vstub::ipx_require_core ipx::save_core [lindex $pos 0]
    set props [dict get $ipx props]
    set vlnv {}
    foreach k {vendor library name version} {
        lappend vlnv [expr {[dict exists $props $k] ? [dict get $props $k] : "?"}]
    }
    set vlnv [join $vlnv :]
    if {[info exists ::zynqnn(ip_vlnv)] && $vlnv ne $::zynqnn(ip_vlnv)} {
        ::vstub::fail ipx::save_core "the core is $vlnv, params.tcl says $::zynqnn(ip_vlnv)"
    }
    set busifs [dict get $ipx busifs]
    foreach {b kind} {s_axi AXI m_axi AXI aclk clock aresetn reset irq interrupt} {
        if {![dict exists $busifs $b]} {
            ::vstub::fail ipx::save_core "the core has no $kind interface $b"
        }
    }
    set assoc [expr {[dict exists $busifs aclk ASSOCIATED_BUSIF]
                     ? [split [dict get $busifs aclk ASSOCIATED_BUSIF] :] : {}}]
    foreach b {s_axi m_axi} {
        if {$b ni $assoc} {
            ::vstub::fail ipx::save_core "$b is not in aclk's ASSOCIATED_BUSIF ($assoc)"
        }
    }
    foreach {b pname} {aclk FREQ_HZ aresetn POLARITY irq SENSITIVITY} {
        if {![dict exists $busifs $b $pname] || [dict get $busifs $b $pname] eq ""} {
            ::vstub::fail ipx::save_core "$b has no $pname"
        }
    }
    if {![dict get $ipx checked]} {
        ::vstub::fail ipx::save_core "ipx::check_integrity not run after the last change"
    }
    return
}
