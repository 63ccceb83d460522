"""``zynqnn run PROG --backend verilator|icarus --waves [FST] [--layers A:B]`` (issue 26, item 5):
a whole network's RTL run as an FST waveform of ``zynqnn_top``, or only the cycles of some of its
layers, read back with pywellen.

The window starts when the command processor dispatches the first command of layer A
(``zynqnn_top.cmd_index``) and ends after the last of layer B plus the performance model's cycles
of B (its commands still in the pipeline), or when the accelerator goes idle.

Slow: the first run builds a traced ``zynqnn_top`` (tiny) of its own, 1-3 minutes on Verilator.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import zynqnn
from zynqnn.compiler.window import layer_window

ZYNQNN = Path(sys.executable).parent / "zynqnn"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from test_program import tiny_graph

    d = tmp_path_factory.mktemp("waves")
    zynqnn.compile(tiny_graph(), "tiny").save(d / "tiny.zqp")
    np.save(d / "x.npy", np.random.default_rng(0).normal(size=(1, 4, 8, 8)).astype(np.float32))
    return d


def _zynqnn(cwd: Path, *args) -> subprocess.CompletedProcess:
    env = {**os.environ, "AMARANTH_USE_YOSYS": "builtin"}
    p = subprocess.run([str(ZYNQNN), *map(str, args)], cwd=cwd, env=env, capture_output=True,
                       text=True, timeout=1800)
    assert p.returncode == 0, p.stdout + p.stderr
    return p


def _read(fst: Path):
    """(time steps, {full name: signal}) of an FST file."""
    import pywellen

    wave = pywellen.Waveform(str(fst))
    steps = []
    wave.stream_time_steps(lambda t, *_: steps.append(t), None)
    return steps, {v.full_name: v.signal for v in wave.all_vars()}


def test_layer_window_reads_names_and_numbers(tiny):
    prog = zynqnn.load(tiny / "tiny.zqp").program
    assert [la for la in dict.fromkeys(prog.labels)] == ["conv0", "barrier", "pool", "conv1",
                                                         "end"]
    w = layer_window(prog, "pool")
    assert w.layers == ("pool",) and prog.labels[w.first] == prog.labels[w.last] == "pool"
    assert w == layer_window(prog, "1:1") == layer_window(prog, "pool:pool")
    assert layer_window(prog, ":").layers == ("conv0", "pool", "conv1")
    assert layer_window(prog, "pool:").layers == ("pool", "conv1")
    assert w.tail == int(prog.perf(check=False).layers["pool"]["end"]
                         - prog.perf(check=False).layers["pool"]["start"])
    for bad, why in (("3", "layers 0..2"), ("nope", "no layer 'nope'"),
                     ("conv1:conv0", "comes after")):
        with pytest.raises(ValueError, match=why):
            layer_window(prog, bad)


def test_run_layers_needs_waves_and_a_simulator(tiny, capsys):
    from zynqnn import cli

    base = ["run", str(tiny / "tiny.zqp"), "-i", str(tiny / "x.npy"), "-o",
            str(tiny / "y.npy")]
    assert cli.main([*base, "--layers", "pool"]) == 1
    assert "--layers selects the cycles of --waves" in capsys.readouterr().err
    assert cli.main([*base, "--waves"]) == 1
    assert "--waves applies to the verilator and icarus backends" in capsys.readouterr().err
    assert cli.main([*base, "--backend", "verilator", "--waves", "--layers", "x"]) == 1
    assert "--layers x: no layer 'x'" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("sim", ["verilator", "icarus"])
def test_run_waves_of_a_network_and_of_its_layers(tiny, tmp_path, sim):
    model = zynqnn.load(tiny / "tiny.zqp")
    x = np.load(tiny / "x.npy")
    # one layer: the file starts at its first command's dispatch, ends soon after its last
    p = _zynqnn(tmp_path, "run", tiny / "tiny.zqp", "-i", tiny / "x.npy", "-o", "y.npy",
                "--backend", sim, "--waves", "--layers", "pool")
    w = layer_window(model.program, "pool")
    fst = tmp_path / "y.fst"
    assert f"waveform: y.fst (the cycles of layer(s) pool (commands {w.first}..{w.last}" in \
        p.stdout and "gtkwave y.fst" in p.stdout, p.stdout
    assert np.array_equal(np.load(tmp_path / "y.npy"), model.run(x))
    steps, sig = _read(fst)
    index, busy = sig["zynqnn_top.cmd_index"], sig["zynqnn_top.busy"]
    assert "zynqnn_top.aclk" in sig and any(".core" in n for n in sig)   # the whole hierarchy
    # (Icarus' $dumpoff writes every signal as x at the window's end)
    inside = [t for t in steps if isinstance(index.value_at(t), int)]
    assert index.value_at(inside[0]) == w.first and busy.value_at(inside[0]) == 1
    seen = {index.value_at(t) for t in inside}
    assert set(range(w.first, w.last + 1)) <= seen and min(seen) == w.first
    last_pool = max(t for t in inside if index.value_at(t) <= w.last)
    half_ns = (inside[1] - inside[0]) / 1000
    assert (inside[-1] - last_pool) / 1000 <= 2 * half_ns * (w.tail + 2)
    # the whole run: from the reset on, many more cycles, every command
    p = _zynqnn(tmp_path, "run", tiny / "tiny.zqp", "-i", tiny / "x.npy", "-o", "z.npy",
                "--backend", sim, "--waves", "all.fst")
    assert "waveform: all.fst (every cycle of the run)" in p.stdout
    all_steps, all_sig = _read(tmp_path / "all.fst")
    assert all_steps[0] == 0 and len(all_steps) > 2 * len(inside)
    assert {all_sig["zynqnn_top.cmd_index"].value_at(t) for t in all_steps} >= \
        set(range(model.program.command_count))
