"""Table lookups end to end on the Verilator top (tiny build): a qnnpack-quantized net with two
activations (tanh, then hardswish: two tables loaded in turn) compiled and run on
``zynqnn_top``; every output equals the golden run, which equals torch.ao's converted model.
A lookup whose table would run past WBUF stops the accelerator with BAD_COMPUTE.

Builds in run_program's ``build/system/`` (shared with tests/test_program_runner.py)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from zynqnn.compiler.testing import check_graph_on_golden, quantized_graph
from zynqnn.hw import isa
from zynqnn.sim.program_runner import ProgramRunError, run_program


class _TwoActs(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 8, 1)
        self.c3 = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        return self.c3(nn.functional.hardswish(self.c2(torch.tanh(self.c1(x)))))


@pytest.fixture(scope="module")
def compiled():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    calib = torch.randn(4, 3, 8, 8, generator=g) * 2
    x = (torch.randn(2, 3, 8, 8, generator=g) * 3).numpy()
    graph, reference = quantized_graph(_TwoActs().eval(), calib, "qnnpack")
    assert [n.attrs["function"] for n in graph.nodes if n.op == "lut"] == ["tanh", "hardswish"]
    model, _ = check_graph_on_golden(graph, reference, x, "tiny")   # golden == torch.ao
    return model, reference, x


def _lut_commands(prog):
    at = []
    for i in range(0, len(prog.commands), isa.COMMAND_BYTES):
        c = prog.commands[i:i + isa.COMMAND_BYTES]
        if isa.decode_opcode(c) == isa.Opcode.ELTWISE and int(isa.EltwiseCommand.from_bits(
                int.from_bytes(c, "little")).op.lut):
            at.append(i // isa.COMMAND_BYTES)
    return at


def test_two_tables_on_the_top_level(compiled):
    model, reference, x = compiled
    assert len(_lut_commands(model.program)) >= 2
    got = model.run(x, backend="verilator", fast=True)
    assert len(model.last_cycles) == len(x) and all(c > 0 for c in model.last_cycles)
    assert np.array_equal(got, model.run(x)) and np.array_equal(got, reference(x)[0])


def test_table_past_wbuf_is_bad_compute(compiled):
    model, _, x = compiled
    prog = model.program
    k = _lut_commands(prog)[0]
    base = next(a for a, b in prog.image.items() if a <= prog.cmd_addr < a + len(b))
    blob = bytearray(prog.image[base])
    at = prog.cmd_addr - base + k * isa.COMMAND_BYTES
    cmd = isa.EltwiseCommand.from_bits(int.from_bytes(blob[at:at + isa.COMMAND_BYTES], "little"))
    fields = {name: int(getattr(cmd.op, name)) for name, _ in isa.EltwiseOp}
    fields["wbuf_addr"] = prog.cfg.weight_buffer_depth - 1
    raw = isa.encode(isa.EltwiseCommand, opcode=isa.Opcode.ELTWISE, needs=int(cmd.needs),
                     releases=int(cmd.releases), obuf_bank=int(cmd.obuf_bank), op=fields)
    blob[at:at + isa.COMMAND_BYTES] = raw
    bad = dataclasses.replace(prog, image={**prog.image, base: bytes(blob)})
    codes = model.boundary.to_network(model.boundary.quantize(x[:1]))
    with pytest.raises(ProgramRunError) as err:
        run_program(bad, [codes[0].reshape(prog.net.input.shape)], "verilator", fast=True)
    assert (err.value.index, err.value.kind, err.value.cause) == (0, "accelerator",
                                                                  "BAD_COMPUTE"), err.value
    assert f"command {k}" in str(err.value)
