"""The SoC model's dispatcher checks (which the RTL tests hold the hardware to) agree with the
command-level model ``zynqnn.machine`` on random LOAD / STORE / NOP / END / unknown-opcode
programs and on the RTL tests' edge-biased corrupted streams: same outcome, cause and command
index; on the corrupted streams also the same DDR image and buffers after data movement."""

import random

import numpy as np
import pytest

from zynqnn.hw import isa
from zynqnn.hw.config import get_config
from zynqnn.hw.geometry import QUEUE_DEPTH, buffer_depth, buffer_word_bits
from zynqnn.machine import Machine, MachineError
from zynqnn.sim.corrupt import corrupted_program, data_movement, machine_run
from zynqnn.sim.model import Outcome, Program, SocModel, dispatch_outcome, transfer_extent

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


class _Window:
    """DDR bytes ``[base, base + len(data))``; an access outside is a test failure."""

    def __init__(self, base, data):
        self.base, self.data = base, bytearray(data)

    def _off(self, addr, n):
        assert self.base <= addr and addr + n <= self.base + len(self.data), \
            f"DDR [{addr:#x}, {addr + n:#x}) outside the window"
        return addr - self.base

    def read(self, addr, n):
        off = self._off(addr, n)
        return bytes(self.data[off:off + n])

    def write(self, addr, data):
        off = self._off(addr, len(data))
        self.data[off:off + len(data)] = data


def _sequential(cfg, prog, mem, obuf, outcome):
    """SocModel's data movement without flags: the LOADs and STOREs of ``data_movement(prog)``
    before the outcome's command (an error's, or the first END), one after the other; returns
    the model and the buffer words each LOAD wrote."""
    model = SocModel(cfg)
    wbytes = obuf.shape[2]
    for k in range(isa.BANKS):
        model.banks[(B.OBUF, k)] = [int.from_bytes(bytes(w), "little") for w in obuf[k]]
    cmds = [int.from_bytes(c, "little") for c in data_movement(prog).commands]
    loaded = []     # (buffer, bank, first word, words) of each LOAD
    if outcome.status == "done":
        stop = next(i for i, c in enumerate(cmds) if c & 0xF == isa.Opcode.END)
    else:
        # The refused command moves nothing, whatever refused it (a last command without END
        # too: EMPTY_PROGRAM at its own index). The streams' programs lie inside the window, so
        # no command is refused for a successor outside it (DDR_WINDOW at the next index).
        stop = outcome.index
    for raw in cmds[:stop]:
        if raw & 0xF in (isa.Opcode.LOAD, isa.Opcode.STORE):
            f = {n: int(getattr(isa.LoadStore.from_bits(raw), n))
                 for n, _ in isa.LoadStore if not n.startswith("_")}
            if raw & 0xF == isa.Opcode.LOAD:
                model._load(mem, f)
                loaded.append((B(f["buffer"]), f["bank"], f["sram_addr"],
                               f["lines"] * f["line_words"]))
            else:
                model._store(mem, f)
    assert wbytes == buffer_word_bits(cfg, B.OBUF) // 8
    return model, loaded


#: Streams per configuration, in pure Python (tb_soc.corrupted_programs runs 50 on the RTL,
#: 1,000 in the slow suite); the slow suite runs ten times as many, other streams.
CORRUPTED_STREAMS = {"tiny": 600, "pynq_z2": 200}


@pytest.mark.parametrize("cfg_name", list(CORRUPTED_STREAMS))
def test_corrupted_streams_agree_with_machine(cfg_name):
    _corrupted_streams(cfg_name, CORRUPTED_STREAMS[cfg_name], f"corrupted-{cfg_name}")


@pytest.mark.slow
@pytest.mark.parametrize("cfg_name", list(CORRUPTED_STREAMS))
def test_corrupted_streams_agree_with_machine_slow(cfg_name):
    _corrupted_streams(cfg_name, 10 * CORRUPTED_STREAMS[cfg_name], f"slow-{cfg_name}")


def _corrupted_streams(cfg_name, total, seed):
    """tb_soc's edge-biased corrupted streams (``zynqnn.sim.corrupt``): on every one, the SoC
    model's dispatcher (which the RTL is held to) ends where ``zynqnn.machine`` ends on its data
    movement (compute commands as NOPs), with the same cause and index; the SoC model's whole
    run does too unless the engine or the flags decide it (BAD_COMPUTE, WATCHDOG); and the DDR
    image (every byte of the window; the models can reach nothing outside it) and the LOADed
    buffers are the same after both models' data movement, a refused command having moved
    nothing. Streams that store into their own commands are counted apart (the models fetch
    commands differently, the RTL tests keep stores away from programs)."""
    cfg = get_config(cfg_name)
    rng = random.Random(seed)
    pslot = 0x10_0000
    arena, arena_end = pslot + 1024, pslot + 1024 + 3 * 4096
    lo, hi = arena + 512, arena_end - 512
    window = (pslot, hi)
    obuf_shape = (isa.BANKS, buffer_depth(cfg, B.OBUF), buffer_word_bits(cfg, B.OBUF) // 8)
    causes, full_runs, edges = {}, 0, 0
    for n in range(total):
        bad, k = corrupted_program(cfg, rng, window, lo, hi)
        edges += k
        assert pslot + len(bad) * isa.COMMAND_BYTES <= arena   # the program inside the window
        image = bytearray(rng.randbytes(hi - pslot))
        image[:len(bad) * isa.COMMAND_BYTES] = bad.to_bytes()
        obuf = np.frombuffer(rng.randbytes(int(np.prod(obuf_shape))), np.uint8) \
            .reshape(obuf_shape)
        want, m = machine_run(cfg, bad, pslot, window, bytes(image), obuf=obuf)
        if want is None:            # it stored into its own commands: no single answer
            causes["rewrote its program"] = causes.get("rewrote its program", 0) + 1
            continue
        # The dispatcher's checks, in program order.
        got = dispatch_outcome(cfg, _Window(pslot, image), pslot, len(bad), window)
        assert got == want, f"stream {n}: SoC model's dispatcher {got}, machine {want}"
        # The whole run, with the flags and the test engine.
        full = SocModel(cfg).run(_Window(pslot, image), pslot, len(bad), *window)
        if full.cause not in (E.WATCHDOG, E.BAD_COMPUTE):
            assert full == want, f"stream {n}: SoC model {full}, machine {want}"
            full_runs += 1
        # Data movement: DDR and buffers.
        mem = _Window(pslot, image)
        mem.write(pslot, data_movement(bad).to_bytes())   # the machine's program
        seq, loaded = _sequential(cfg, bad, mem, obuf, want)
        if bytes(mem.data) != m.ddr.tobytes():
            at = next(i for i, (a, b) in enumerate(zip(mem.data, m.ddr, strict=True)) if a != b)
            raise AssertionError(f"stream {n} ({want}): DDR {pslot + at:#x} differs")
        for buf, bank, first, count in loaded:
            data = m.buffers[buf].data[bank, first:first + count]
            words = [int.from_bytes(w.tobytes(), "little") for w in data]
            assert words == seq.banks[(buf, bank)][first:first + count], \
                f"stream {n}: {buf.name}[{bank}] words {first}..{first + count - 1}"
        key = "done" if want.status == "done" else E(want.cause).name
        causes[key] = causes.get(key, 0) + 1
    print(f"{cfg_name}: {total} corrupted streams ({edges} edge corruptions), 0 disagreements; "
          f"outcomes {dict(sorted(causes.items()))}; whole SoC-model runs compared: "
          f"{full_runs}")
    # The streams reach the refusals that matter, near the edges too.
    assert causes.get("DDR_WINDOW", 0) > total // 20 and causes.get("done", 0) > total // 20


def _refused(cfg, prog, window, cause, index, dst=None, nbytes=0, at=BASE):
    """``prog`` at ``at`` (the part of it inside the window) ends with ``cause`` at ``index`` in
    the SoC model, its dispatcher and ``zynqnn.machine`` alike, and the DDR bytes ``[dst, dst +
    nbytes)`` are unchanged in both."""
    rng = random.Random(index)
    image = bytearray(rng.randbytes(window[1] - window[0]))
    code = prog.to_bytes()[:window[1] - at]
    image[at - window[0]:at - window[0] + len(code)] = code
    want = Outcome("error", cause, index)
    mem = _Window(window[0], image)
    model = SocModel(cfg)
    assert model.run(mem, at, len(prog), *window) == want
    assert dispatch_outcome(cfg, mem, at, len(prog), window) == want
    got, m = machine_run(cfg, prog, at, window, bytes(image))
    assert got == want
    if dst is not None:
        assert mem.read(dst, nbytes) == image[dst - BASE:dst - BASE + nbytes]
        assert m.read(dst, nbytes).tobytes() == image[dst - BASE:dst - BASE + nbytes]
        assert not any(lo < dst + nbytes and dst < hi for lo, hi in model.write_ranges)
    return model, m


@pytest.mark.parametrize("cfg_name", ["tiny", "pynq_z2"])
def test_command_without_a_successor_is_refused_before_it_is_queued(cfg_name):
    """A command whose successor cannot be fetched (the last of a program without END, or the
    last inside the window) is refused before it is queued, with the RTL's cause and index
    (rtl/cmdproc.py PUSH: EMPTY_PROGRAM at its index, DDR_WINDOW at the successor's): nothing
    of it moves in the SoC model or in zynqnn.machine, and the SoC model does not wait for room
    in a full queue to refuse it. A command that is itself bad reports its own cause."""
    cfg = get_config(cfg_name)
    bb = cfg.axi_data_bits // 8
    window = (BASE, BASE + SIZE)
    src, dst = BASE + 0x4000, BASE + 0x8000
    ib = isa.bank_bit(B.IBUF, 0)
    n = 8
    nbytes = n * buffer_word_bits(cfg, B.OBUF) // 8

    def tile():
        return (Program().load(B.IBUF, 0, 0, n, 1, src)
                .compute(needs=ib, releases=ib, obuf_bank=0, count=n))

    # The STORE last: its destination keeps its bytes.
    _refused(cfg, tile().store(0, 0, n, 1, dst), window, E.EMPTY_PROGRAM, 2, dst, nbytes)
    # The LOAD last: its bank is not written.
    model, m = _refused(cfg, Program().nop().load(B.IBUF, 1, 0, n, 1, src), window,
                        E.EMPTY_PROGRAM, 1)
    assert model.banks[(B.IBUF, 1)][:n] == [0] * n
    assert not m.buffers[B.IBUF].data[1, :n].any()
    # The compute command last: no output.
    model, _ = _refused(cfg, tile(), window, E.EMPTY_PROGRAM, 1)
    assert model.banks[(B.OBUF, 0)][:n] == [0] * n
    # The successor at the window's limit (the program has an END, beyond the window): the
    # STORE is refused, DDR_WINDOW at the END's index.
    prog = tile().store(0, 0, n, 1, dst).end()
    for limit in (window[1], window[1] + bb):
        _refused(cfg, prog, (BASE, limit), E.DDR_WINDOW, 3, dst, nbytes,
                 at=window[1] - 3 * isa.COMMAND_BYTES)
    # A full store queue (stores of a bank nothing fills): the last STORE is refused at once,
    # not after a wait that never ends (WATCHDOG).
    # (zynqnn.machine has no flags: it runs the first ones, into other bytes.)
    stuck = Program()
    for _ in range(QUEUE_DEPTH + 1):
        stuck.store(1, 0, n, 1, src)
    stuck.store(1, 0, n, 1, dst)
    _refused(cfg, stuck, window, E.EMPTY_PROGRAM, QUEUE_DEPTH + 1, dst, nbytes)
    assert SocModel(cfg).run(_Window(BASE, bytes(SIZE)), BASE, 0, *window) == \
        Outcome("error", E.EMPTY_PROGRAM, 0)
    # The command's own cause first.
    _refused(cfg, tile().store(0, 0, n, 1, dst + 4), window, E.BAD_ALIGN, 2)
    _refused(cfg, tile().store(0, 0, n, 1, window[1] - bb), window, E.DDR_WINDOW, 2)
    _refused(cfg, tile().raw(7), window, E.BAD_OPCODE, 2)
