"""A small, real compute engine for the SoC tests (never part of a board build).

It implements ``ComputeSignature(cfg).flip()`` (:mod:`zynqnn.rtl.compute`): it owns IBUF, WBUF,
PBUF and OBUF (two banks each, depths from the config) and runs one command at a time. Its
``op`` (:data:`TestOp`, in the command's ``op`` bits) copies ``count`` IBUF words to OBUF with a
per-command transform, so that loads, computes, stores and the bank flags are exercised end to
end and every output word says which inputs produced it::

    y = ((resize(ibuf[src_bank][src_addr + i]) + add) ^ xor)
        (+ wbuf[wbuf_bank][wbuf_addr + i]   if use_wbuf)
        (+ pbuf[pbuf_bank][pbuf_addr]       if use_pbuf)       all modulo 2**out_word_bits
    obuf[obuf_bank][dst_addr + i] = y

``resize`` zero-extends or truncates an IBUF word to the OBUF word. Each word takes three
cycles plus ``stall`` cycles (``array_busy`` is high throughout; :func:`op_cycles`). A range
beyond a buffer, or ``fail``, answers ``error`` with ``BAD_COMPUTE``. :func:`reference` is the
same computation in Python.
"""

from amaranth import Cat, Module, Signal, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory

from zynqnn.hw import isa
from zynqnn.hw.config import HwConfig
from zynqnn.hw.geometry import buffer_depth, buffer_word_bits
from zynqnn.rtl.compute import ComputeSignature

__all__ = ["TestOp", "TestCommand", "TestEngine", "encode_op", "reference", "op_error",
           "op_cycles"]

TestOp = data.StructLayout({
    "src_bank": unsigned(1),
    "wbuf_bank": unsigned(1),
    "pbuf_bank": unsigned(1),
    "use_wbuf": unsigned(1),
    "use_pbuf": unsigned(1),
    "fail": unsigned(1),
    "_pad0": unsigned(2),
    "count": unsigned(16),
    "src_addr": unsigned(16),
    "dst_addr": unsigned(16),
    "wbuf_addr": unsigned(16),
    "pbuf_addr": unsigned(16),
    "add": unsigned(32),
    "xor": unsigned(32),
    "stall": unsigned(8),
})

_HDR = 4 + 2 * 3 * isa.BANKS + 1 + 3
TestCommand = data.StructLayout({
    "opcode": isa.Opcode,
    "needs": unsigned(3 * isa.BANKS),
    "releases": unsigned(3 * isa.BANKS),
    "obuf_bank": unsigned(1),
    "_pad0": unsigned(3),
    "op": TestOp,
    "_pad1": unsigned(isa.COMMAND_BITS - _HDR - TestOp.size),
})
assert TestCommand.size == isa.COMMAND_BITS


def encode_op(needs=0, releases=0, obuf_bank=0, opcode=isa.Opcode.CONV, **op) -> bytes:
    """One compute command for the test engine."""
    return isa.encode(TestCommand, opcode=opcode, needs=needs, releases=releases,
                      obuf_bank=obuf_bank, op=op)


def _fields(cmd: int) -> dict:
    view = TestCommand.from_bits(cmd)
    op = view.op
    return {name: int(op[name]) for name, _ in TestOp if not name.startswith("_")} | {
        "obuf_bank": int(view.obuf_bank)}


def op_error(cfg: HwConfig, cmd: int) -> bool:
    """Whether the engine answers ``error`` (BAD_COMPUTE) to the 256-bit command ``cmd``."""
    f = _fields(cmd)
    B = isa.Buffer
    return bool(
        f["fail"]
        or f["src_addr"] + f["count"] > buffer_depth(cfg, B.IBUF)
        or f["dst_addr"] + f["count"] > buffer_depth(cfg, B.OBUF)
        or (f["use_wbuf"] and f["wbuf_addr"] + f["count"] > buffer_depth(cfg, B.WBUF))
        or (f["use_pbuf"] and f["pbuf_addr"] >= buffer_depth(cfg, B.PBUF)))


def op_cycles(cmd: int) -> int:
    """Cycles the engine holds the 256-bit command ``cmd`` that it does not refuse (about: the
    check, ``3 + stall`` cycles a word, the answer)."""
    f = _fields(cmd)
    return 2 + f["count"] * (3 + f["stall"])


def reference(cfg: HwConfig, cmd: int, banks: dict) -> None:
    """Apply command ``cmd`` to ``banks`` (``{(buffer, bank): list of int words}``)."""
    f = _fields(cmd)
    B = isa.Buffer
    w = buffer_word_bits(cfg, B.OBUF)
    mask = (1 << w) - 1
    src = banks[(B.IBUF, f["src_bank"])]
    wb = banks[(B.WBUF, f["wbuf_bank"])]
    pb = banks[(B.PBUF, f["pbuf_bank"])]
    dst = banks[(B.OBUF, f["obuf_bank"])]
    for i in range(f["count"]):
        y = (((src[f["src_addr"] + i] & mask) + f["add"]) & mask) ^ f["xor"]
        if f["use_wbuf"]:
            y += wb[f["wbuf_addr"] + i]
        if f["use_pbuf"]:
            y += pb[f["pbuf_addr"]]
        dst[f["dst_addr"] + i] = y & mask


class TestEngine(wiring.Component):
    """The test engine for ``cfg`` (see the module documentation)."""

    __test__ = False   # not a pytest test class

    def __init__(self, cfg: HwConfig):
        self._cfg = cfg
        super().__init__(ComputeSignature(cfg).flip())

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        B = isa.Buffer
        wo = buffer_word_bits(cfg, B.OBUF)

        mems = {}
        for b in B:
            mems[b] = Memory(shape=unsigned(buffer_word_bits(cfg, b)),
                             depth=isa.BANKS * buffer_depth(cfg, b), init=[])
            m.submodules[f"{b.name.lower()}_mem"] = mems[b]
        # The shell's ports.
        for b in (B.IBUF, B.WBUF, B.PBUF):
            port = getattr(self, f"{b.name.lower()}_w")
            wp = mems[b].write_port()
            m.d.comb += [wp.addr.eq(Cat(port.addr, port.bank)), wp.data.eq(port.data),
                         wp.en.eq(port.en)]
        orp = mems[B.OBUF].read_port()
        m.d.comb += [orp.addr.eq(Cat(self.obuf_r.addr, self.obuf_r.bank)),
                     orp.en.eq(self.obuf_r.en), self.obuf_r.data.eq(orp.data)]
        # The engine's own ports.
        irp = mems[B.IBUF].read_port()
        wrp = mems[B.WBUF].read_port()
        prp = mems[B.PBUF].read_port()
        owp = mems[B.OBUF].write_port()

        cmd = Signal(TestCommand)
        op = cmd.op
        i = Signal(16)
        stall = Signal(8)
        bad = Signal()
        depth = {b: buffer_depth(cfg, b) for b in B}
        m.d.comb += bad.eq(op.fail
                           | (op.src_addr + op.count > depth[B.IBUF])
                           | (op.dst_addr + op.count > depth[B.OBUF])
                           | (op.use_wbuf & (op.wbuf_addr + op.count > depth[B.WBUF]))
                           | (op.use_pbuf & (op.pbuf_addr >= depth[B.PBUF])))
        m.d.comb += [
            irp.addr.eq(Cat((op.src_addr + i)[:irp.addr.shape().width - 1], op.src_bank)),
            wrp.addr.eq(Cat((op.wbuf_addr + i)[:wrp.addr.shape().width - 1], op.wbuf_bank)),
            prp.addr.eq(Cat(op.pbuf_addr[:prp.addr.shape().width - 1], op.pbuf_bank)),
        ]
        y = Signal(wo)
        a = Signal(wo)
        m.d.comb += [
            a.eq(irp.data),
            y.eq(((a + op.add)[:wo] ^ op.xor)
                 + (wrp.data & op.use_wbuf.replicate(wo))
                 + (prp.data[:wo] & op.use_pbuf.replicate(wo))),
            owp.addr.eq(Cat((op.dst_addr + i)[:owp.addr.shape().width - 1], cmd.obuf_bank)),
            owp.data.eq(y),
        ]

        def on_cancel():
            with m.If(self.cancel):
                m.next = "IDLE"

        with m.FSM(name="engine"):
            with m.State("IDLE"):
                m.d.comb += self.cmd.ready.eq(1)
                with m.If(self.cmd.valid):
                    m.d.sync += [cmd.eq(self.cmd.payload), i.eq(0)]
                    m.next = "CHECK"
            with m.State("CHECK"):
                with m.If(bad):
                    m.d.comb += [self.error.eq(1), self.error_cause.eq(isa.ErrorCause.BAD_COMPUTE)]
                    m.next = "IDLE"
                with m.Elif(op.count == 0):
                    m.next = "DONE"
                with m.Else():
                    m.next = "READ"
                on_cancel()
            with m.State("READ"):
                m.d.comb += self.array_busy.eq(1)
                m.next = "WRITE"
                on_cancel()
            with m.State("WRITE"):
                m.d.comb += [self.array_busy.eq(1), owp.en.eq(1)]
                m.d.sync += [i.eq(i + 1), stall.eq(op.stall)]
                m.next = "STALL"
                on_cancel()
            with m.State("STALL"):
                m.d.comb += self.array_busy.eq(1)
                with m.If(stall != 0):
                    m.d.sync += stall.eq(stall - 1)
                with m.Elif(i == op.count):
                    m.next = "DONE"
                with m.Else():
                    m.next = "READ"
                on_cancel()
            with m.State("DONE"):
                m.d.comb += self.done.eq(1)
                m.next = "IDLE"
        return m
