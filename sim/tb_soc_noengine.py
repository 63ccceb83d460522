"""cocotb tests of the default top level, built without a compute engine."""

import cocotb

from zynqnn.hw import isa
from zynqnn.sim.model import Outcome, Program, SocModel
from zynqnn.sim.tb_soc import SocTb

B = isa.Buffer


@cocotb.test()
async def no_engine(dut):
    """LOAD, STORE and END work; CONV and ELTWISE stop with BAD_COMPUTE at their index."""
    tb = SocTb(dut)
    tb.model = SocModel(tb.cfg, has_engine=False)
    await tb.reset()
    await tb.drv.check_config()
    src = tb.drv.alloc(256)
    tb.fill(src)
    ib = isa.bank_bit(B.IBUF, 0)
    out, _, _ = await tb.run(Program().load(B.IBUF, 0, 0, 16, 2, src.address, 128).end())
    assert out.status == "done"
    for opcode in (isa.Opcode.CONV, isa.Opcode.ELTWISE):
        prog = (Program().load(B.IBUF, 0, 0, 4, 1, src.address)
                .compute(needs=ib, releases=ib, opcode=opcode, count=4).end())
        await tb.run(prog, expect=Outcome("error", isa.ErrorCause.BAD_COMPUTE, 1))
