"""The command-level model executes command streams exactly like the golden ops."""

import numpy as np
import pytest

from zynqnn.hw import isa
from zynqnn.hw.config import get_config
from zynqnn.hw.geometry import pack_words
from zynqnn.hw.post import pbuf_word_layout
from zynqnn.machine import Machine, MachineError
from zynqnn.numerics import gemmlowp, ops

CFG = get_config("tiny")
R, C, B = CFG.rows, CFG.cols, CFG.operand_bits


def nhwc_blocks(x, zp):
    """(Cin, H, W) codes -> IBUF words (cb, y, x) as bytes, channels padded with zp."""
    cin, h, w = x.shape
    cb = -(-cin // R)
    xp = np.full((cb * R, h, w), zp)
    xp[:cin] = x
    return pack_words(xp.reshape(cb, R, h, w).transpose(0, 2, 3, 1), B).reshape(-1), cb


def weight_words(wt, k, cb):
    """(C, Cin, k, k) -> WBUF words in (ky, kx, cb, r) order."""
    cin = wt.shape[1]
    wp = np.zeros((C, cb * R, k, k), np.int64)
    wp[:, :cin] = wt
    w = wp.reshape(C, cb, R, k, k).transpose(3, 4, 1, 2, 0)  # ky, kx, cb, r, c
    return pack_words(w, B).reshape(-1)


def load(buf, bank, addr, data, word_bytes):
    return isa.encode(isa.LoadStore, opcode=isa.Opcode.LOAD, buffer=buf, bank=bank,
                      sram_addr=0, line_words=len(data) // word_bytes, lines=1, ddr_addr=addr,
                      ddr_stride=0)


def conv_program(rng, k, stride, pad, cin, h, w, split=False):
    m = Machine(CFG, ddr_bytes=1 << 16)
    zp_in = int(rng.integers(0, 256))
    x = rng.integers(0, 256, size=(cin, h, w))
    wt = rng.integers(-127, 128, size=(C, cin, k, k))
    bias = rng.integers(-5000, 5000, size=C)
    mq = [gemmlowp.quantize_multiplier(10 ** rng.uniform(-4, -1)) for _ in range(C)]
    zp_out = int(rng.integers(0, 256))
    acc = ops.conv2d_acc(x[None], wt, zp_x=zp_in, zp_w=0, stride=stride, padding=pad)[0]
    mult = np.array([q for q, _ in mq])[:, None, None]
    shift = np.array([s for _, s in mq])[:, None, None]
    want = gemmlowp.requantize(acc, bias[:, None, None], mult, shift, zp_out, 0, 255)
    oh, ow = want.shape[1:]
    prm = b"".join(
        pbuf_word_layout.const({"tflite": {"bias": int(b), "multiplier": q, "shift": s}})
        .as_bits().to_bytes(16, "little") for b, (q, s) in zip(bias, mq, strict=True))
    cmds = []
    addr = 0x1000
    m.write(addr, prm)
    cmds.append(load(isa.Buffer.PBUF, 0, addr, prm, 16))
    parts = [(0, 1), (1, -(-cin // R))] if split else [(0, -(-cin // R))]
    iaddr = waddr = 0
    for i, (lo, hi) in enumerate(parts):
        xi, cb = nhwc_blocks(x[lo * R:hi * R], zp_in)
        wi = weight_words(wt[:, lo * R:hi * R], k, cb)
        a1, a2 = 0x2000 + 0x4000 * i, 0x3000 + 0x4000 * i
        m.write(a1, xi)
        m.write(a2, wi)
        cmds.append(isa.encode(isa.LoadStore, opcode=isa.Opcode.LOAD, buffer=isa.Buffer.IBUF,
                               bank=0, sram_addr=iaddr, line_words=xi.size // (R * B // 8),
                               lines=1, ddr_addr=a1, ddr_stride=0))
        cmds.append(isa.encode(isa.LoadStore, opcode=isa.Opcode.LOAD, buffer=isa.Buffer.WBUF,
                               bank=0, sram_addr=waddr, line_words=wi.size // (C * B // 8),
                               lines=1, ddr_addr=a2, ddr_stride=0))
        op = dict(mode=isa.Mode.CONV, kernel=k, stride=stride, y_off=-pad, x_off=-pad,
                  cin_blocks=cb, in_h=h, in_w=w, out_h=oh, out_w=ow, ibuf_addr=iaddr,
                  wbuf_addr=waddr, zp_in=zp_in, zp_out=zp_out, clamp_min=0, clamp_max=255,
                  scheme=isa.Scheme.TFLITE, acc_cont=int(i > 0),
                  acc_keep=int(i < len(parts) - 1))
        cmds.append(isa.encode(isa.ConvCommand, opcode=isa.Opcode.CONV, op=op))
        iaddr += xi.size // (R * B // 8)
        waddr += wi.size // (C * B // 8)
    cmds.append(isa.encode(isa.LoadStore, opcode=isa.Opcode.STORE, buffer=isa.Buffer.OBUF,
                           bank=0, sram_addr=0, line_words=oh * ow, lines=1, ddr_addr=0x8000,
                           ddr_stride=0))
    cmds.append(isa.encode(isa.Header, opcode=isa.Opcode.END))
    m.write(0, b"".join(cmds))
    return m, len(cmds), want.reshape(C, -1).T


@pytest.mark.parametrize("k, stride, pad, cin, split", [
    (3, 1, 1, 2 * R + 1, False), (1, 1, 0, 2 * R + 1, False), (5, 2, 2, R, False),
    (3, 2, 1, 2 * R + 1, True), (7, 1, 3, R - 1, False)])
def test_conv_programs_match_golden_ops(k, stride, pad, cin, split):
    rng = np.random.default_rng(k * 10 + stride)
    m, n, want = conv_program(rng, k, stride, pad, cin, 9, 7, split)
    assert m.run(0, n) == n
    got = m.read(0x8000, want.size).reshape(want.shape)
    assert np.array_equal(got, want)


def test_errors_name_cause_and_command():
    rng = np.random.default_rng(0)
    m, n, _ = conv_program(rng, 3, 1, 1, R, 4, 4, False)
    with pytest.raises(MachineError, match="command 0: EMPTY_PROGRAM"):
        m.run(0, 0)
    m.write(2 * isa.COMMAND_BYTES, bytes([0x0E]) + bytes(31))
    with pytest.raises(MachineError, match=r"command 2: BAD_OPCODE: opcode 14"):
        m.run(0, n)
    bad_store = isa.encode(isa.LoadStore, opcode=isa.Opcode.STORE, buffer=isa.Buffer.IBUF,
                           line_words=1, lines=1, ddr_addr=0)
    m.write(0, bad_store)
    with pytest.raises(MachineError, match="command 0: BAD_BUFFER"):
        m.run(0, 1)
    far = isa.encode(isa.LoadStore, opcode=isa.Opcode.LOAD, buffer=isa.Buffer.IBUF,
                     line_words=1, lines=1, ddr_addr=1 << 20)
    m.write(0, far)
    with pytest.raises(MachineError, match="command 0: DDR_WINDOW"):
        m.run(0, 1)
    big = isa.encode(isa.LoadStore, opcode=isa.Opcode.LOAD, buffer=isa.Buffer.WBUF,
                     sram_addr=CFG.weight_buffer_depth - 1, line_words=2, lines=1, ddr_addr=0)
    m.write(0, big)
    with pytest.raises(MachineError, match="command 0: SRAM_RANGE"):
        m.run(0, 1)


def test_dw_mode_checks():
    """DW needs a 16x16-class array and a 3x3 kernel over one channel block; DW_PAIRS also an
    int8 build."""
    op = dict(mode=isa.Mode.DW, kernel=3, stride=1, y_off=-1, x_off=-1, cin_blocks=1, in_h=4,
              in_w=4, out_h=4, out_w=4, scheme=isa.Scheme.TFLITE, clamp_max=255)
    for cfg, over, why in [(CFG, {}, r"DW needs rows == cols >= 9 \(the array is 4x4\)"),
                           (get_config("pynq_z2"), {"kernel": 5}, "DW needs kernel 3"),
                           (get_config("pynq_z2"), {"cin_blocks": 2}, "one channel block"),
                           (get_config("pynq_z2"), {"in_w": 512, "out_w": 514, "out_h": 1,
                                                    "x_off": -2}, "line delays hold 512"),
                           (get_config("pynq_z2_int16"), {"mode": isa.Mode.DW_PAIRS},
                            r"DW_PAIRS needs an int8 build with the DW mode \(12x12, 16-bit"),
                           (get_config("pynq_z2"), {"mode": isa.Mode.DW_PAIRS, "kernel": 5},
                            "DW needs kernel 3")]:
        m = Machine(cfg, ddr_bytes=1 << 16)
        m.write(0, isa.encode(isa.ConvCommand, opcode=isa.Opcode.CONV, op={**op, **over})
                + isa.encode(isa.Header, opcode=isa.Opcode.END))
        with pytest.raises(MachineError, match=f"command 0: BAD_COMPUTE: .*{why}"):
            m.run(0, 2)


# -------------------------------------------------------------------------------------------------
# after errors, the model ends as the RTL does (rtl/cmdproc.py dispatcher, rtl/engine.py CHECK)


def _ls(op, buf, **fields):
    return isa.encode(isa.LoadStore, opcode=op, buffer=buf, **fields)


END = isa.encode(isa.Header, opcode=isa.Opcode.END)


def test_host_access_outside_the_ddr_is_refused():
    """Negative or out-of-range host reads and writes raise (numpy would wrap a negative offset
    around to the end of the DDR) and change nothing."""
    m = Machine(CFG, ddr_bytes=1 << 12)
    m.write(0, np.arange(1 << 12) % 251)
    before = m.ddr.copy()
    for call in (lambda: m.write(-64, bytes(8)), lambda: m.write((1 << 12) - 4, bytes(8)),
                 lambda: m.write(1 << 40, bytes(1)), lambda: m.read(-8, 8),
                 lambda: m.read((1 << 12) - 4, 8), lambda: m.read(0, -1)):
        with pytest.raises(ValueError, match=r"outside the model's DDR \[0x0, 0x1000\)"):
            call()
    assert np.array_equal(m.ddr, before)
    with pytest.raises(TypeError, match="must be integers"):
        m.read(1.5, 8)
    off = Machine(CFG, ddr_bytes=1 << 12, ddr_base=0x8000)
    with pytest.raises(ValueError, match=r"\[0x7ff8, 0x8000\) are outside"):
        off.write(0x7FF8, bytes(8))
    off.write(0x8000, b"\x01" * 8)
    assert off.read(0x8000, 8).tolist() == [1] * 8


def _conv_bits(**op):
    base = dict(mode=isa.Mode.CONV, kernel=1, stride=1, cin_blocks=1, in_h=1, in_w=1, out_h=1,
                out_w=1, scheme=isa.Scheme.TFLITE, clamp_max=127)
    return int.from_bytes(isa.encode(isa.ConvCommand, opcode=isa.Opcode.CONV,
                                     op={**base, **op}), "little")


@pytest.mark.parametrize("mode", [7])
def test_undefined_mode_is_bad_compute(mode):
    """An undefined mode (3 bits, 7 values) is BAD_COMPUTE at its command, as the engine's
    CHECK state refuses it, not a ValueError of the enum."""
    at = isa.ConvCommand["op"].offset + isa.ConvOp["mode"].offset
    bits = _conv_bits() & ~(7 << at) | (mode << at)
    m = Machine(CFG, ddr_bytes=1 << 12)
    m.write(0, isa.encode(isa.Header, opcode=isa.Opcode.NOP) + bits.to_bytes(32, "little")
            + END)
    with pytest.raises(MachineError, match=f"command 1: BAD_COMPUTE: undefined mode {mode}") as e:
        m.run(0, 3)
    assert e.value.cause == isa.ErrorCause.BAD_COMPUTE and e.value.index == 1


def test_pairs_with_upsample_is_bad_compute():
    """The engine refuses PAIRS with upsample (rtl/engine.py CHECK); so does the model."""
    m = Machine(CFG, ddr_bytes=1 << 12)
    m.write(0, _conv_bits(mode=isa.Mode.PAIRS, upsample=1).to_bytes(32, "little") + END)
    with pytest.raises(MachineError, match="command 0: BAD_COMPUTE: PAIRS .*upsample"):
        m.run(0, 2)


def _obuf_machine(ddr_bytes=1 << 12):
    m = Machine(CFG, ddr_bytes=ddr_bytes)
    rng = np.random.default_rng(3)
    obuf = m.buffers[isa.Buffer.OBUF].data
    obuf[:] = rng.integers(1, 256, size=obuf.shape)
    m.write(0, rng.integers(0, 256, size=ddr_bytes))
    return m


def test_store_leaving_the_window_writes_nothing():
    """A STORE of 4 lines whose last two lines leave the window is refused whole at dispatch:
    DDR_WINDOW and the whole DDR image unchanged (the RTL checks the extent before its first
    burst). The same STORE inside the window writes all 4 lines (the control)."""
    word = CFG.cols * B // 8
    store = dict(line_words=2, lines=4, ddr_stride=0x100, sram_addr=0)
    m = _obuf_machine()
    m.write(0, _ls(isa.Opcode.STORE, isa.Buffer.OBUF, ddr_addr=0xE00, **store) + END)
    before = m.ddr.copy()
    with pytest.raises(MachineError, match=r"command 0: DDR_WINDOW: bytes \[0xe00, 0x1108\)"):
        m.run(0, 2)
    assert np.array_equal(m.ddr, before)
    m.write(0, _ls(isa.Opcode.STORE, isa.Buffer.OBUF, ddr_addr=0x800, **store) + END)
    m.run(0, 2)
    obuf = m.buffers[isa.Buffer.OBUF].data[0]
    for line in range(4):
        got = m.read(0x800 + line * 0x100, 2 * word)
        assert np.array_equal(got, obuf[2 * line:2 * line + 2].reshape(-1))
    # a LOAD half outside reads nothing into its bank either
    ibuf = m.buffers[isa.Buffer.IBUF].data
    ibuf[:] = 7
    m.write(0, _ls(isa.Opcode.LOAD, isa.Buffer.IBUF, ddr_addr=0xF00, line_words=64,
                   lines=2, ddr_stride=0x80) + END)
    with pytest.raises(MachineError, match="command 0: DDR_WINDOW"):
        m.run(0, 2)
    assert (ibuf == 7).all()


def test_window_counts_whole_beats():
    """The window check counts the whole AXI beats the DMA moves (rtl/cmdproc.py EXTENT): one
    4-byte IBUF word at the last 8-byte beat of a window whose limit is 4 bytes into that beat
    is refused, though its own bytes are inside."""
    beat = CFG.axi_data_bits // 8
    assert CFG.rows * B // 8 < beat
    m = Machine(CFG, ddr_bytes=(1 << 12) + 4)
    m.write(0, _ls(isa.Opcode.LOAD, isa.Buffer.IBUF, ddr_addr=1 << 12, line_words=1, lines=1)
            + END)
    with pytest.raises(MachineError, match=r"command 0: DDR_WINDOW: bytes \[0x1000, 0x1008\)"):
        m.run(0, 2)
    m.write(0, _ls(isa.Opcode.LOAD, isa.Buffer.IBUF, ddr_addr=(1 << 12) - beat, line_words=1,
                   lines=1) + END)
    assert m.run(0, 2) == 2


def test_misaligned_command_base_is_bad_align():
    m = Machine(CFG, ddr_bytes=1 << 12)
    m.write(0x104, END)
    with pytest.raises(MachineError, match="command 0: BAD_ALIGN: command base 0x104"):
        m.run(0x104, 1)


def test_huge_zero_word_transfers_return_fast():
    """STORE of 0xFFFF lines of no words moves nothing: no per-line loop (it took seconds).
    The window is still checked over the lines, as the RTL does. A LOAD of no words is
    EMPTY_LOAD (it would mark a bank full with nothing loaded), as in the RTL."""
    import time

    m = _obuf_machine()
    prog = (_ls(isa.Opcode.STORE, isa.Buffer.OBUF, ddr_addr=0x800, lines=0xFFFF, line_words=0)
            + END)
    m.write(0, prog)
    before = m.ddr.copy()
    t = time.perf_counter()
    assert m.run(0, 2) == 2
    assert time.perf_counter() - t < 0.1
    assert np.array_equal(m.ddr, before)
    m.write(0, _ls(isa.Opcode.STORE, isa.Buffer.OBUF, ddr_addr=0x800, lines=0xFFFF,
                   line_words=0, ddr_stride=0x10000) + END)
    t = time.perf_counter()
    with pytest.raises(MachineError, match=r"command 0: DDR_WINDOW: bytes \[0x800, "
                                           r"0xfffe0800\)"):
        m.run(0, 2)
    assert time.perf_counter() - t < 0.1
    for lines, words in ((0xFFFF, 0), (0, 5)):
        m.write(0, _ls(isa.Opcode.LOAD, isa.Buffer.IBUF, ddr_addr=0x800, lines=lines,
                       line_words=words) + END)
        with pytest.raises(MachineError, match="command 0: EMPTY_LOAD") as e:
            m.run(0, 2)
        assert e.value.cause == isa.ErrorCause.EMPTY_LOAD


# -------------------------------------------------------------------------------------------------
# a command whose successor cannot be fetched is refused before it runs (rtl/cmdproc.py PUSH)


def _refused_before_running(m, count, cause, index, cmd_base=0):
    ddr = m.ddr.copy()
    bufs = {b: buf.data.copy() for b, buf in m.buffers.items()}
    with pytest.raises(MachineError, match=f"command {index}: {cause.name}") as e:
        m.run(cmd_base, count)
    assert (e.value.cause, e.value.index) == (cause, index)
    assert np.array_equal(m.ddr, ddr), "DDR changed"
    for b, data in bufs.items():
        assert np.array_equal(m.buffers[b].data, data), f"{b.name} changed"


def test_last_command_without_end_is_refused_before_it_runs():
    """The last command of a program without END is refused with EMPTY_PROGRAM at its index
    after its own checks and before it runs, as the RTL refuses it before queueing it: a STORE
    writes nothing, a LOAD fills nothing, a CONV (even one the engine would refuse) computes
    nothing, a NOP likewise. A command that is itself bad reports its own cause first."""
    E = isa.ErrorCause
    nop = isa.encode(isa.Header, opcode=isa.Opcode.NOP)
    store = _ls(isa.Opcode.STORE, isa.Buffer.OBUF, ddr_addr=0x800, line_words=4, lines=2,
                ddr_stride=0x40)
    load = _ls(isa.Opcode.LOAD, isa.Buffer.IBUF, ddr_addr=0x800, line_words=4, lines=2,
               ddr_stride=0x40)
    conv = _conv_bits().to_bytes(32, "little")
    bad_conv = _conv_bits(kernel=0).to_bytes(32, "little")
    for last in (store, load, conv, bad_conv, nop):
        m = _obuf_machine()
        m.write(0, nop + last)
        _refused_before_running(m, 2, E.EMPTY_PROGRAM, 1)
    # The command's own errors come first.
    for last, cause in ((_ls(isa.Opcode.STORE, isa.Buffer.OBUF, ddr_addr=0x804, line_words=1,
                             lines=1), E.BAD_ALIGN),
                        (_ls(isa.Opcode.LOAD, isa.Buffer.IBUF, ddr_addr=0x800, line_words=0,
                             lines=1), E.EMPTY_LOAD),
                        (_ls(isa.Opcode.STORE, isa.Buffer.OBUF, ddr_addr=0xFF0, line_words=8,
                             lines=1), E.DDR_WINDOW),
                        (bytes([0x0E]) + bytes(31), E.BAD_OPCODE)):
        m = _obuf_machine()
        m.write(0, nop + last)
        _refused_before_running(m, 2, cause, 1)
    # With END after it, the same STORE runs.
    m = _obuf_machine()
    m.write(0, store + END)
    assert m.run(0, 2) == 2
    assert np.array_equal(m.read(0x800, 4 * 4), m.buffers[isa.Buffer.OBUF].data[0, :4]
                          .reshape(-1))


def test_command_before_the_window_limit_is_refused_before_it_runs():
    """A command whose successor would be fetched from outside the window (its address at the
    window's limit) is refused with DDR_WINDOW at the successor's index, before it runs."""
    E = isa.ErrorCause
    size = 1 << 12
    store = _ls(isa.Opcode.STORE, isa.Buffer.OBUF, ddr_addr=0x800, line_words=4, lines=1)
    load = _ls(isa.Opcode.LOAD, isa.Buffer.IBUF, ddr_addr=0x800, line_words=4, lines=1)
    conv = _conv_bits().to_bytes(32, "little")
    at = size - 2 * isa.COMMAND_BYTES      # the program's second command ends at the limit
    for second in (store, load, conv):
        m = _obuf_machine(size)
        m.write(at, isa.encode(isa.Header, opcode=isa.Opcode.NOP) + second)
        # A longer program: command 2 starts at the limit.
        _refused_before_running(m, 3, E.DDR_WINDOW, 2, cmd_base=at)
        # Its own program ends with it: no END, which comes first.
        _refused_before_running(m, 2, E.EMPTY_PROGRAM, 1, cmd_base=at)
    # The first command of a program starting at the limit is not fetched at all.
    m = _obuf_machine(size)
    _refused_before_running(m, 1, E.DDR_WINDOW, 0, cmd_base=size)
