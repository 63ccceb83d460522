"""The SoC model's dispatcher checks (which the RTL tests hold the hardware to) agree with the
command-level model ``zynqnn.machine`` on random LOAD / STORE / NOP / END / unknown-opcode
programs: same outcome, cause and command index."""

import random

import pytest

from zynqnn.hw import isa
from zynqnn.hw.config import get_config
from zynqnn.hw.geometry import buffer_word_bits
from zynqnn.machine import Machine, MachineError
from zynqnn.sim.model import Outcome, Program, dispatch_outcome, transfer_extent

B = isa.Buffer
E = isa.ErrorCause
BASE, SIZE = 0x10_0000, 0x1_0000


def _random_command(rng, prog, cfg):
    kind = rng.random()
    if kind < 0.08:
        return prog.nop()
    if kind < 0.12:
        return prog.raw(rng.choice([5, 6, 7, 9, 14]))
    load = rng.random() < 0.6
    buffer = rng.choice(list(B)) if rng.random() < 0.15 else (
        rng.choice([B.IBUF, B.WBUF, B.PBUF]) if load else B.OBUF)
    bb = cfg.axi_data_bits // 8
    lines = rng.choice([0, 1, 1, 2, 3, 7])
    line_words = rng.choice([0, 1, 3, 8, 33, 200])
    align = 1 if rng.random() < 0.1 else bb
    addr = BASE + align * rng.randrange(-64, (SIZE + 2048) // align)
    stride = align * rng.randrange(0, 600 // align + 1) if rng.random() < 0.9 else \
        rng.randrange(0, 600)
    sram = rng.choice([0, 5, 250, 1000, 1023, 4000])
    f = dict(buffer=buffer, bank=rng.randrange(2), sram_addr=sram, line_words=line_words,
             lines=lines, ddr_addr=max(0, addr), stride=stride)
    return prog.load(**f) if load else prog.store(**{k: v for k, v in f.items()})


def _beat_rounding_differs(cfg, raw, window):
    """The one known difference: a line's last partial beat past the window's end."""
    f = isa.LoadStore.from_bits(raw)
    if (raw & 0xF) not in (isa.Opcode.LOAD, isa.Opcode.STORE) or not f.lines or not f.line_words:
        return False
    fd = {"ddr_addr": int(f.ddr_addr), "ddr_stride": int(f.ddr_stride), "lines": int(f.lines),
          "line_words": int(f.line_words)}
    buf = B(int(f.buffer))
    _, beat_end = transfer_extent(cfg, buf, fd)
    exact_end = (fd["ddr_addr"] + (fd["lines"] - 1) * fd["ddr_stride"]
                 + fd["line_words"] * buffer_word_bits(cfg, buf) // 8)
    return exact_end <= window[1] < beat_end


@pytest.mark.parametrize("cfg_name", ["tiny", "pynq_z2", "pynq_z2_int16"])
def test_dispatch_checks_agree_with_machine(cfg_name):
    cfg = get_config(cfg_name)
    rng = random.Random(cfg_name)
    window = (BASE, BASE + SIZE)
    compared = 0
    for _ in range(300):
        prog = Program()
        for _ in range(rng.randint(1, 5)):
            _random_command(rng, prog, cfg)
        if rng.random() < 0.9:
            prog.end()
        data = prog.to_bytes()
        m = Machine(cfg, ddr_bytes=SIZE, ddr_base=BASE)
        m.write(BASE, data)
        try:
            m.run(BASE, len(prog))
            want = Outcome("done")
        except MachineError as e:
            want = Outcome("error", e.cause, e.index)
        got = dispatch_outcome(cfg, m, BASE, len(prog), window, has_engine=False)
        if got != want and got.status == "error" and got.cause == E.DDR_WINDOW:
            raw = int.from_bytes(data[got.index * 32:(got.index + 1) * 32], "little")
            if _beat_rounding_differs(cfg, raw, window):
                continue
        assert got == want, f"{prog.commands}: model {got}, machine {want}"
        compared += 1
    assert compared > 250
