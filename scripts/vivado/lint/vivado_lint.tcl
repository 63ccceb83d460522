# Lint a zynqnn Vivado script without Vivado: run it under tclsh with the recording stubs of
# vivado_stubs.tcl in place of Vivado's commands. This is a lint, not a Vivado run.
#
#   tclsh scripts/vivado/lint/vivado_lint.tcl ?-log FILE? ?-setup-slack NS? ?-hold-slack NS? \
#       SCRIPT ?TCLARGS...?
#
# TCLARGS reach the script as $argv, as `vivado -mode batch -source SCRIPT -tclargs ...` passes
# them. -setup-slack/-hold-slack set what get_timing_paths reports (defaults 0.250/0.050 ns), so
# the scripts' timing gate can be exercised. -log writes every Vivado command the script issued,
# one TCL list per line. Exit status 0 when the script ran to its end with no lint finding,
# 1 otherwise (a lint finding, or an error the script raised itself, e.g. its timing gate).

set here [file dirname [file normalize [info script]]]
set before [info procs ::*]
source [file join $here vivado_stubs.tcl]
set stub_procs {}
foreach p [info procs ::*] {
    if {$p ni $before} {
        lappend stub_procs [string trimleft $p :]
    }
}

set log ""
set script ""
set tclargs {}
for {set i 0} {$i < [llength $argv]} {incr i} {
    set a [lindex $argv $i]
    if {$script ne ""} {
        lappend tclargs $a
        continue
    }
    switch -- $a {
        -log { set log [lindex $argv [incr i]] }
        -setup-slack { set ::vstub::setup_slack [lindex $argv [incr i]] }
        -hold-slack { set ::vstub::hold_slack [lindex $argv [incr i]] }
        default { set script $a }
    }
}
if {$script eq ""} {
    puts stderr "usage: tclsh vivado_lint.tcl ?-log FILE? ?-setup-slack NS? ?-hold-slack NS?\
                 SCRIPT ?TCLARGS...?"
    exit 2
}

# The script sees Vivado's batch-mode globals; `exit` ends the script, not the lint.
set ::argv $tclargs
set ::argc [llength $tclargs]
set ::argv0 vivado
rename exit ::vstub::real_exit
proc exit {{code 0}} {
    ::vstub::rec [info level 0]
    return -code error -errorcode [list VSTUB EXIT $code] "script called exit $code"
}

set rc [catch {uplevel #0 [list source $script]} msg opts]
set status 0
if {$rc == 1} {
    set code [dict get $opts -errorcode]
    if {[lindex $code 0] eq "VSTUB" && [lindex $code 1] eq "EXIT"} {
        set status [lindex $code 2]
        if {$status != 0} {
            puts "vivado-lint: FAIL: [file tail $script] exited with status $status"
        }
    } else {
        set status 1
        if {[lindex $code 0] eq "VSTUB"} {
            puts "vivado-lint: FAIL: $msg"
        } else {
            puts "vivado-lint: FAIL: [file tail $script] raised an error: $msg"
        }
        # Where in the scripts: the script's command that failed, then the frames of the
        # scripts' own files and procedures (the stubs' internals left out).
        set trace [dict get $opts -errorinfo]
        foreach {- cmd} [regexp -all -inline {\n"([^\n]*)} $trace] {
            set cmd [string trimright $cmd \"]
            set word [string trimleft [lindex [split $cmd] 0] :]
            if {$word ni {fail error return} && ![string match vstub::* $word]} {
                puts "    in: $cmd"
                break
            }
        }
        foreach line [split $trace \n] {
            if {[regexp {\((file|procedure) "([^"]+)" line ([0-9]+)\)} $line -> what f n]} {
                set name [string trimleft $f :]
                if {$what eq "procedure" && ($name in $stub_procs
                        || [string match vstub::* $name])} {
                    continue
                }
                puts "    at [file tail $f]:$n"
            }
        }
    }
} elseif {$rc != 0} {
    set status 1
    puts "vivado-lint: FAIL: unexpected [dict get {2 return 3 break 4 continue} $rc] at top level"
}

if {$log ne ""} {
    set f [open $log w]
    foreach call $::vstub::calls {
        puts $f $call
    }
    close $f
}
if {$status == 0} {
    puts "vivado-lint: ok: [file tail $script] ([llength $::vstub::calls] Vivado commands\
          checked; a lint under tclsh, not a Vivado run)"
}
::vstub::real_exit $status
