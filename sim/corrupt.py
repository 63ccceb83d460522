"""Corrupted command streams for the SoC tests, in pure Python (no simulator).

:func:`corrupted_program` is the generator of ``tb_soc.corrupted_programs`` (issue 21): a
small valid program of LOAD / test-engine compute / STORE tiles inside ``[lo, hi)``, then one
to three corruptions (LOAD / STORE moved to the window's edges, flipped bits, random commands,
duplicated commands) and sometimes a truncation. ``tests/test_soc_model.py`` draws thousands of
them to hold :class:`~zynqnn.sim.model.SocModel` to :class:`zynqnn.machine.Machine`.

The two models overlap on data movement: ``Machine`` runs the compiler's CONV / ELTWISE
commands, the SoC tests the test engine's, so :func:`data_movement` turns every compute command
into a NOP, and :func:`machine_run` runs the result on a ``Machine`` whose DDR is the window.
"""

from __future__ import annotations

from zynqnn.hw import isa
from zynqnn.hw.config import HwConfig
from zynqnn.hw.geometry import line_beats

from .model import Outcome, Program

__all__ = ["corrupted_program", "data_movement", "edge_corrupt", "machine_run",
           "random_program"]

B = isa.Buffer
Op = isa.Opcode


def random_program(cfg: HwConfig, rng, lo, hi) -> Program:
    """A small valid program whose transfers stay inside [lo, hi)."""
    bb = cfg.axi_data_bits // 8
    prog = Program()
    span = hi - lo
    for t in range(rng.randint(1, 3)):
        bank = t % 2
        words = rng.randint(1, 24)
        a_in = lo + bb * rng.randrange(0, (span // 2) // bb)
        a_out = lo + span // 2 + bb * rng.randrange(0, (span // 2 - 256) // bb)
        ib = isa.bank_bit(B.IBUF, bank)
        prog.load(B.IBUF, bank, 0, words, 1, a_in)
        prog.compute(needs=ib, releases=ib, obuf_bank=bank, count=words,
                     add=rng.getrandbits(32))
        prog.store(bank, 0, words, 1, a_out)
    prog.end()
    return prog


def edge_corrupt(cfg: HwConfig, rng, raw: int, window) -> int:
    """The LOAD / STORE ``raw`` moved to the window's corners (issue 21, item 2): its extent
    ending within a few beats of the limit, starting within a few beats of the base (LOADs),
    or near the top of the 4 GB space; sometimes with a stride of 2^31, 2^32 - beat or
    2^32 / lines (lines * stride = 2^32), so that the extent passes 2^32."""
    bb, top = cfg.axi_data_bits // 8, 1 << cfg.axi_addr_bits
    lo, hi = window
    f = {name: int(getattr(isa.LoadStore.from_bits(raw), name))
         for name, _ in isa.LoadStore if not name.startswith("_")}
    lines = max(1, f["lines"])
    if rng.random() < 0.3:
        f["ddr_stride"] = rng.choice([1 << 31, top - bb, (top // lines) & -bb,
                                      f["ddr_stride"] + bb])
        f["ddr_stride"] %= top
    extent = ((lines - 1) * f["ddr_stride"]
              + line_beats(cfg, B(f["buffer"]), f["line_words"]) * bb)
    k = bb * rng.randint(-3, 3)
    where = rng.random()
    if where < 0.5:
        addr = hi - extent + k                       # ends at the limit, a few beats either way
    elif where < 0.8 and f["opcode"] == Op.LOAD:
        addr = lo + k                                # starts at the base
    else:
        addr = top - extent + k                      # ends at (or wraps past) 2^32
    f["ddr_addr"] = addr % top
    return int.from_bytes(isa.encode(isa.LoadStore, **f), "little")


def corrupted_program(cfg: HwConfig, rng, window, lo, hi) -> tuple[Program, int]:
    """A :func:`random_program` inside ``[lo, hi)`` with one to three corruptions, sometimes
    truncated; returns it and the number of edge corruptions (:func:`edge_corrupt`)."""
    prog = random_program(cfg, rng, lo, hi)
    cmds = list(prog.commands)
    edges = 0
    for _ in range(rng.randint(1, 3)):
        i = rng.randrange(len(cmds))
        raw = int.from_bytes(cmds[i], "little")
        kind = rng.random()
        if kind < 0.35 and raw & 0xF in (Op.LOAD, Op.STORE):
            raw = edge_corrupt(cfg, rng, raw, window)
            edges += 1
        elif kind < 0.6:
            raw ^= 1 << rng.randrange(isa.COMMAND_BITS if rng.random() < 0.3 else 120)
        elif kind < 0.8:
            raw = rng.getrandbits(isa.COMMAND_BITS)
        else:
            cmds.insert(rng.randrange(len(cmds) + 1), cmds[i])
            continue
        cmds[i] = raw.to_bytes(isa.COMMAND_BYTES, "little")
    if rng.random() < 0.1:
        cmds = cmds[:rng.randrange(1, len(cmds) + 1)]
    bad = Program()
    for c in cmds:
        bad.raw(c)
    return bad, edges


def data_movement(prog: Program) -> Program:
    """``prog`` with every compute command (CONV, ELTWISE) replaced by a NOP."""
    out = Program()
    nop = isa.encode(isa.Header, opcode=Op.NOP)
    for c in prog.commands:
        out.raw(nop if c[0] & 0xF in (Op.CONV, Op.ELTWISE) else c)
    return out


def machine_run(cfg: HwConfig, prog: Program, cmd_base: int, window, image=None,
                obuf=None):
    """Run ``data_movement(prog)`` from ``cmd_base`` on a :class:`zynqnn.machine.Machine`
    whose DDR is exactly ``window`` (``image``: its bytes, default zeros with the program in
    place; ``obuf``: the OBUF banks' bytes, shape ``(banks, depth, word_bytes)``). Returns
    ``(outcome, machine)``, or ``(None, machine)`` for a program that rewrote its own commands
    (a STORE into them: the machine fetches one command at a time, the RTL's fetcher runs
    ahead, the SoC model reads them all first; the tests keep stores away from programs)."""
    from zynqnn.machine import Machine, MachineError

    lo, hi = window
    m = Machine(cfg, ddr_bytes=max(hi - lo, 1), ddr_base=lo)
    m.window = (lo, hi)
    if image is not None:
        m.write(lo, image)
    data = data_movement(prog).to_bytes()
    if lo <= cmd_base and cmd_base + len(data) <= hi:
        m.write(cmd_base, data)
    else:   # only the commands inside the window exist for it
        inside = max(0, min(len(data), hi - cmd_base)) if lo <= cmd_base else 0
        if inside:
            m.write(cmd_base, data[:inside])
    if obuf is not None:
        m.buffers[B.OBUF].data[...] = obuf
    try:
        m.run(cmd_base, len(prog))
        out = Outcome("done")
    except MachineError as e:
        out = Outcome("error", e.cause, e.index)
    if lo <= cmd_base and cmd_base + len(data) <= hi and \
            m.read(cmd_base, len(data)).tobytes() != data:
        return None, m
    return out, m
