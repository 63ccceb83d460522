"""A command-level model of the accelerator: executes a command stream on DDR bytes, in numpy.

This is the ``"golden"`` backend of a compiled program: it runs the *compiled command stream*
(not the graph) with the same buffers, word layouts and arithmetic as the RTL, so a compiler
bug shows up here without a simulator, and an RTL run can be compared against it word for word.

Word layouts (shared with the DMA and the engine): a buffer word holds its operands
little-endian, operand ``i`` in bits ``[i*B, (i+1)*B)``; word ``i`` of a transfer line is DDR
bytes ``[i*word_bytes, (i+1)*word_bytes)``. PBUF words hold one output channel's constants.

After an error the model ends as the RTL does (``rtl/cmdproc.py``, ``rtl/engine.py``): every
LOAD / STORE is checked whole at dispatch, in the RTL's order and with its causes (buffer,
alignment, SRAM range, then the DDR window counted in the whole beats the DMA moves) before a
byte moves, so a refused STORE writes nothing; a compute command with an undefined ``mode`` is
``BAD_COMPUTE``; a LOAD of zero lines or zero words is ``EMPTY_LOAD``, as in the RTL. A command
whose successor cannot be fetched (the last command not ``END``: ``EMPTY_PROGRAM`` at its index;
the next command outside the window: ``DDR_WINDOW`` at the next one's) is refused after its own
dispatcher checks and before it runs, as the RTL refuses it before queueing it: nothing of it
moves. (The engine checks a compute command after dispatch, so this comes before them.) Not
modelled: the bank flags (commands run one after the other).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from zynqnn.addmodel import apply_add
from zynqnn.hw import geometry, isa
from zynqnn.hw.config import PBUF_WORD_BITS, HwConfig
from zynqnn.hw.geometry import pack_words, unpack_words
from zynqnn.numerics import gemmlowp
from zynqnn.postmodel import apply_post, apply_step

__all__ = ["Machine", "MachineError", "transfer_extent"]


class MachineError(RuntimeError):
    """The program stopped with an error, as the hardware would (cause and command index)."""

    def __init__(self, cause: isa.ErrorCause, index: int, detail: str):
        self.cause, self.index = isa.ErrorCause(cause), index
        super().__init__(f"command {index}: {self.cause.name}: {detail}")


def transfer_extent(cfg: HwConfig, c) -> tuple[int, int] | None:
    """DDR bytes ``[first, end)`` a LOAD / STORE ``c`` (an ``isa.LoadStore`` constant) covers,
    as the command processor's window check counts them (``rtl/cmdproc.py``, dispatcher states
    MULTIPLY / EXTENT: ``ddr_addr + lines * stride - stride + line_beats * beat``, in whole AXI
    beats); ``None`` for zero lines (the RTL checks no window for them)."""
    if int(c.lines) == 0:
        return None
    return geometry.transfer_extent(cfg, isa.Buffer(int(c.buffer)), int(c.ddr_addr),
                                    int(c.lines), int(c.ddr_stride), int(c.line_words))


@dataclass
class _Buffer:
    word_bytes: int
    depth: int
    data: np.ndarray  # (banks, depth, word_bytes) uint8


class Machine:
    """The accelerator of ``cfg`` with ``ddr_bytes`` of DDR at address ``ddr_base``.

    ``run(cmd_base, count)`` executes ``count`` commands from DDR; performance is not modelled
    (see the performance model for cycles). Errors raise :class:`MachineError` with the cause the
    hardware reports.
    """

    def __init__(self, cfg: HwConfig, ddr_bytes: int = 1 << 24, ddr_base: int = 0):
        self.cfg = cfg
        self.ddr_base = ddr_base
        self.ddr = np.zeros(ddr_bytes, dtype=np.uint8)
        self.window = (ddr_base, ddr_base + ddr_bytes)
        B = cfg.operand_bits
        self.buffers = {
            isa.Buffer.IBUF: self._buffer(cfg.rows * B // 8, cfg.act_buffer_depth),
            isa.Buffer.WBUF: self._buffer(cfg.cols * B // 8, cfg.weight_buffer_depth),
            isa.Buffer.PBUF: self._buffer(PBUF_WORD_BITS // 8, cfg.param_buffer_depth),
            isa.Buffer.OBUF: self._buffer(cfg.cols * B // 8, cfg.acc_buffer_depth),
        }
        self.acc = None  # accumulators kept by an acc_keep command

    @staticmethod
    def _buffer(word_bytes, depth):
        return _Buffer(word_bytes, depth, np.zeros((isa.BANKS, depth, word_bytes), np.uint8))

    # -- DDR -----------------------------------------------------------------------------------

    def write(self, addr: int, data: bytes | np.ndarray):
        data = np.frombuffer(bytes(data), dtype=np.uint8) if not isinstance(
            data, np.ndarray) else data.astype(np.uint8).reshape(-1)
        off = self._host_offset("write", addr, data.size)
        self.ddr[off:off + data.size] = data

    def read(self, addr: int, n: int) -> np.ndarray:
        off = self._host_offset("read", addr, n)
        return self.ddr[off:off + n].copy()

    def _host_offset(self, what: str, addr, n) -> int:
        """Offset in ``ddr`` of the host's access to ``[addr, addr + n)``; a negative or
        out-of-range access is a ValueError (numpy would wrap a negative offset around)."""
        if (not isinstance(addr, (int, np.integer)) or isinstance(addr, bool)
                or not isinstance(n, (int, np.integer)) or isinstance(n, bool)):
            raise TypeError(f"Machine.{what}: address and size must be integers, not "
                            f"{type(addr).__name__} and {type(n).__name__}")
        addr, n = int(addr), int(n)
        lo, hi = self.ddr_base, self.ddr_base + self.ddr.size
        if n < 0 or addr < lo or addr + n > hi:
            raise ValueError(f"Machine.{what}: DDR bytes [{addr:#x}, {addr + n:#x}) are outside "
                             f"the model's DDR [{lo:#x}, {hi:#x})")
        return addr - lo

    # -- execution -----------------------------------------------------------------------------

    def run(self, cmd_base: int, count: int):
        if count == 0:
            raise MachineError(isa.ErrorCause.EMPTY_PROGRAM, 0, "no commands")
        if cmd_base % (self.cfg.axi_data_bits // 8):  # rtl/cmdproc.py CHECK_PROGRAM
            raise MachineError(isa.ErrorCause.BAD_ALIGN, 0, f"command base {cmd_base:#x}")
        for i in range(count):
            raw = bytes(self._ddr_slice(i, cmd_base + i * isa.COMMAND_BYTES, isa.COMMAND_BYTES))
            bits = int.from_bytes(raw, "little")
            op = bits & 0xF
            if op == isa.Opcode.END:
                return i + 1
            # The dispatcher's checks of the command itself (rtl/cmdproc.py, FETCH to CHECK) ...
            if op in (isa.Opcode.LOAD, isa.Opcode.STORE):
                ls = isa.LoadStore.from_bits(bits)
                self._check_transfer(i, ls)
            elif op not in (isa.Opcode.NOP, isa.Opcode.CONV, isa.Opcode.ELTWISE):
                raise MachineError(isa.ErrorCause.BAD_OPCODE, i, f"opcode {op}")
            # ... then its successor's (PUSH / PUSH_COMPUTE, DECODE for a NOP), before it runs.
            self._check_next(cmd_base, count, i)
            if op in (isa.Opcode.LOAD, isa.Opcode.STORE):
                self._move(i, ls)
            elif op == isa.Opcode.CONV:
                self._conv(i, isa.ConvCommand.from_bits(bits))
            elif op == isa.Opcode.ELTWISE:
                self._eltwise(i, isa.EltwiseCommand.from_bits(bits))
        raise AssertionError("unreachable: _check_next refuses a last command that is not END")

    def _check_next(self, cmd_base, count, index):
        """Refuse command ``index`` (not END) if its successor cannot be fetched: there is none
        (``EMPTY_PROGRAM`` at ``index``), or it is outside the window (``DDR_WINDOW`` at
        ``index + 1``), as the RTL's dispatcher does before queueing the command."""
        if index == count - 1:
            raise MachineError(isa.ErrorCause.EMPTY_PROGRAM, index,
                               "no END command: the last command is refused")
        addr = cmd_base + (index + 1) * isa.COMMAND_BYTES
        lo, hi = self.window
        if addr < lo or addr + isa.COMMAND_BYTES > hi:
            raise MachineError(isa.ErrorCause.DDR_WINDOW, index + 1,
                               f"command bytes [{addr:#x}, {addr + isa.COMMAND_BYTES:#x}) outside"
                               f" [{lo:#x}, {hi:#x}): command {index} is refused")

    def _ddr_slice(self, index, addr, n):
        lo, hi = self.window
        if addr < lo or addr + n > hi:
            raise MachineError(isa.ErrorCause.DDR_WINDOW, index,
                               f"bytes [{addr:#x}, {addr + n:#x}) outside [{lo:#x}, {hi:#x})")
        off = addr - self.ddr_base
        return self.ddr[off:off + n]

    def _check_transfer(self, index, c):
        """The dispatcher's checks of a LOAD / STORE ``c`` (rtl/cmdproc.py, states DECODE and
        CHECK), in its order, all before any byte moves: a refused transfer reads and writes
        nothing."""
        load = c.opcode == isa.Opcode.LOAD
        buf_id = isa.Buffer(int(c.buffer))
        if load == (buf_id == isa.Buffer.OBUF):
            raise MachineError(isa.ErrorCause.BAD_BUFFER, index,
                               f"{'LOAD into' if load else 'STORE from'} {buf_id.name}")
        buf = self.buffers[buf_id]
        beat = self.cfg.axi_data_bits // 8
        if c.ddr_addr % beat or (c.lines > 1 and c.ddr_stride % beat):
            raise MachineError(isa.ErrorCause.BAD_ALIGN, index, "DDR address or stride")
        if load and (c.lines == 0 or c.line_words == 0):
            raise MachineError(isa.ErrorCause.EMPTY_LOAD, index, "a LOAD of no words")
        if c.sram_addr + c.lines * c.line_words > buf.depth:
            raise MachineError(isa.ErrorCause.SRAM_RANGE, index,
                               f"{buf_id.name} words up to {c.sram_addr + c.lines * c.line_words}"
                               f" of {buf.depth}")
        extent = transfer_extent(self.cfg, c)
        lo, hi = self.window
        if extent is not None and (extent[0] < lo or extent[1] > hi):
            raise MachineError(isa.ErrorCause.DDR_WINDOW, index,
                               f"bytes [{extent[0]:#x}, {extent[1]:#x}) outside "
                               f"[{lo:#x}, {hi:#x})")

    def _move(self, index, c):
        """The data movement of a checked LOAD / STORE ``c``."""
        load = c.opcode == isa.Opcode.LOAD
        buf = self.buffers[isa.Buffer(int(c.buffer))]
        lines, lw = int(c.lines), int(c.line_words)
        if lines == 0 or lw == 0:
            return  # nothing moves (0xFFFF lines of no words must not loop)
        n = lw * buf.word_bytes
        ddr_addr, stride, sram, bank = int(c.ddr_addr), int(c.ddr_stride), int(c.sram_addr), int(
            c.bank)
        for line in range(lines):  # lines * line_words <= depth (checked above)
            addr = ddr_addr + line * stride
            first = sram + line * lw
            words = buf.data[bank, first:first + lw]
            if load:
                words[:] = self._ddr_slice(index, addr, n).reshape(lw, buf.word_bytes)
            else:
                self._ddr_slice(index, addr, n)[:] = words.reshape(-1)

    # -- the engine ----------------------------------------------------------------------------

    def _conv(self, index, c):
        cfg = self.cfg
        R, C, B = cfg.rows, cfg.cols, cfg.operand_bits
        op = c.op
        mode_field = isa.ConvOp["mode"]
        raw_mode = (op.as_bits() >> mode_field.offset) & ((1 << mode_field.width) - 1)
        if raw_mode not in {m.value for m in isa.Mode}:  # the engine's CHECK (rtl/engine.py)
            raise MachineError(isa.ErrorCause.BAD_COMPUTE, index, f"undefined mode {raw_mode}")
        mode = isa.Mode(raw_mode)
        k, s = int(op.kernel), int(op.stride)
        cb_n, ih, iw = int(op.cin_blocks), int(op.in_h), int(op.in_w)
        oh, ow = int(op.out_h), int(op.out_w)
        pixels = oh * ow
        out_pixels = 1 if mode == isa.Mode.SUMPOOL else pixels
        pairs = mode == isa.Mode.PAIRS
        dw_pairs = mode == isa.Mode.DW_PAIRS
        dw = mode == isa.Mode.DW or dw_pairs
        bypass = mode not in (isa.Mode.CONV, isa.Mode.PAIRS, isa.Mode.DW, isa.Mode.DW_PAIRS)
        passes = isa.pairs_passes(k) if pairs else 1 if dw else k * k * cb_n

        def bad(why):
            raise MachineError(isa.ErrorCause.BAD_COMPUTE, index, why)

        if not 1 <= k <= cfg.max_kernel:
            bad(f"kernel {k} not in 1..{cfg.max_kernel}")
        if s not in (1, 2):
            bad(f"stride {s}")
        if min(cb_n, ih, iw, oh, ow) == 0 or iw > cfg.max_width:
            bad("empty geometry or input wider than max_width")
        if op.ibuf_addr + cb_n * ih * iw > cfg.act_buffer_depth:
            bad("input tile beyond IBUF")
        if not bypass and op.wbuf_addr + passes * R > cfg.weight_buffer_depth:
            bad("weights beyond WBUF")
        lanes = cfg.requant_lanes
        n_words = C + (lanes if op.act else 0)
        if op.pbuf_addr + n_words > cfg.param_buffer_depth or op.pbuf_addr % lanes:
            bad("constants beyond PBUF or not lane-aligned")
        if out_pixels > cfg.acc_buffer_depth or op.obuf_addr + out_pixels > cfg.acc_buffer_depth:
            bad("outputs beyond the accumulator/output buffer")
        if int(op.pool) != isa.Pool.NONE:
            bad("fused pooling")
        if bypass and (R != C or cb_n != 1):
            bad("bypass modes need rows == cols and one channel block")
        if op.upsample and (k != 1 or s != 1):
            bad("upsampling needs kernel 1, stride 1")
        if pairs and (R != C or R % 2 or cb_n != 1 or op.acc_cont or op.acc_keep
                      or op.upsample):
            bad("PAIRS needs rows == cols (even), one channel block and no "
                "acc_cont/acc_keep/upsample")
        if dw and not cfg.dw_kernel:
            bad(f"DW needs rows == cols >= 9 (the array is {R}x{C})")
        if dw_pairs and not cfg.dw_pairs:
            bad(f"DW_PAIRS needs an int8 build with the DW mode ({R}x{C}, "
                f"{B}-bit operands)")
        if dw and (k != 3 or cb_n != 1 or op.acc_cont or op.acc_keep or op.upsample):
            bad("DW needs kernel 3, one channel block and no acc_cont/acc_keep/upsample")
        if op.step and not (cfg.step_lanes and dw and not op.act):
            bad("step lanes need a DW/DW_PAIRS command without an activation word on a build "
                f"with them ({cfg.step_lanes} step lanes)")
        if dw and isa.dw_walk(ow, s) - 2 > cfg.max_width:
            bad(f"DW walk of {isa.dw_walk(ow, s)} pixels per line: its line delays hold "
                f"{cfg.max_width} + 2")

        # Input tile (cb, y, x, r) as q - zp_in, padded outside the tile.
        ibuf = self.buffers[isa.Buffer.IBUF].data[op.ibuf_bank]
        words = ibuf[op.ibuf_addr:op.ibuf_addr + cb_n * ih * iw]
        x = unpack_words(words, B, bool(op.in_signed)).reshape(cb_n, ih, iw, R) - int(op.zp_in)
        pad_value = -(2 ** B) if op.pad_min else 0
        oy = np.arange(oh)[:, None]
        ox = np.arange(ow)[None, :]
        if op.upsample:
            base_y, base_x = oy // 2, ox // 2
        else:
            base_y, base_x = oy * s, ox * s
        taps = []
        # PAIRS reads up to tap k*k, (k, 0): below the kernel (its weights are 0).
        for t in range(passes if pairs else k * k):
            ky, kx = divmod(t, k)
            iy = base_y + ky + int(op.y_off)
            ix = base_x + kx + int(op.x_off)
            inside = (iy >= 0) & (iy < ih) & (ix >= 0) & (ix < iw)
            v = x[:, np.clip(iy, 0, ih - 1), np.clip(ix, 0, iw - 1), :]  # (cb, oh, ow, R)
            taps.append(np.where(inside[None, :, :, None], v, pad_value))
        tap = np.stack(taps)  # (taps, cb, oh, ow, R)

        if not bypass:
            wbuf = self.buffers[isa.Buffer.WBUF].data[op.wbuf_bank]
            wn = passes * R
            w = unpack_words(wbuf[op.wbuf_addr:op.wbuf_addr + wn], B, True)
        if mode == isa.Mode.CONV:
            w = w.reshape(k * k, cb_n, R, C)
            acc = np.einsum("tbhwr,tbrc->hwc", tap, w, optimize=True).reshape(pixels, C)
        elif dw_pairs:  # fbgemm's tap pairs (2m, 2m + 1) saturated as raw codes, then tap 8
            wt = w.reshape(R, C)[:, :k * k]
            p = tap[:, 0].reshape(k * k, pixels, R) * wt.T[:, None, :]  # (taps, pixels, R)
            acc = p[k * k - 1]
            for m in range(k * k // 2):
                kz = int(op.zp_in) * (wt[:, 2 * m] + wt[:, 2 * m + 1])
                acc = acc + np.clip(p[2 * m] + p[2 * m + 1] + kz, -(2 ** 15), 2 ** 15 - 1) - kz
        elif dw:  # row r of the tile is channel r, column t its tap t
            acc = np.einsum("thwc,ct->hwc", tap[:, 0], w.reshape(R, C)[:, :k * k],
                            optimize=True).reshape(pixels, C)
        elif pairs:
            acc = self._pairs(tap[:, 0].reshape(-1, pixels, R), w.reshape(passes, R, C),
                              int(op.zp_in))
        elif mode == isa.Mode.MAXPOOL:
            acc = tap[:, 0].max(axis=0).reshape(pixels, C)
        elif mode == isa.Mode.SUMPOOL:
            acc = tap[:, 0].sum(axis=(0, 1, 2)).reshape(1, C)
        else:
            acc = tap[0, 0].reshape(pixels, C)
        if op.acc_cont and mode == isa.Mode.CONV:
            if self.acc is None or self.acc.shape != acc.shape:
                bad("acc_cont without a matching acc_keep command before it")
            acc = acc + self.acc
        acc = gemmlowp.wrap_int32(acc) if cfg.acc_bits == 32 else acc
        if op.acc_keep:
            self.acc = acc
            return
        self.acc = None

        # Post-processing per output channel, from the PBUF words (and the activation word).
        pbuf = self.buffers[isa.Buffer.PBUF].data[op.pbuf_bank]
        words = [int.from_bytes(bytes(w), "little")
                 for w in pbuf[op.pbuf_addr:op.pbuf_addr + n_words]]
        if op.step:
            q = apply_step(cfg, int(op.clamp_min), int(op.clamp_max), words[:C], acc)
        else:
            act = 0
            if op.act:
                from zynqnn.hw.post import act_params_layout

                act = sum(w << (PBUF_WORD_BITS * i) for i, w in enumerate(words[C:]))
                act &= (1 << act_params_layout(cfg).size) - 1
            q = apply_post(cfg, op.scheme, int(op.zp_out), int(op.clamp_min),
                           int(op.clamp_max), act, words[:C], acc)
        obuf = self.buffers[isa.Buffer.OBUF].data[c.obuf_bank]
        obuf[op.obuf_addr:op.obuf_addr + out_pixels] = pack_words(q, B)

    @staticmethod
    def _pairs(tap, w, zp_in):
        """``PAIRS`` accumulators (``isa.pairs_passes``): ``tap`` (taps, pixels, R) as
        ``q - zp_in``, ``w`` (passes, R, C)."""
        R = tap.shape[2]
        half = R // 2
        acc = 0
        for n in range(w.shape[0]):
            m, h = divmod(n, 2)
            ch = slice(h * half, (h + 1) * half)
            v = np.concatenate([tap[2 * m][:, ch], tap[2 * m + 1][:, ch]], axis=1)
            s = v @ w[n]
            kv = zp_in * w[n].sum(axis=0)     # the raw codes' part: zp_in under every row
            acc = acc + np.clip(s + kv, -(2 ** 15), 2 ** 15 - 1) - kv
        return acc

    def _eltwise(self, index, c):
        """``ELTWISE``: A (IBUF words) + B (WBUF words) with the add constants of the PBUF row."""
        cfg = self.cfg
        R, C, B = cfg.rows, cfg.cols, cfg.operand_bits
        op = c.op
        n = int(op.pixels)
        lanes = cfg.requant_lanes

        def bad(why):
            raise MachineError(isa.ErrorCause.BAD_COMPUTE, index, why)

        if R != C:
            bad("element-wise adds need rows == cols")
        if n == 0:
            bad("no pixels")
        if op.ibuf_addr + n > cfg.act_buffer_depth:
            bad("input A beyond IBUF")
        if op.lut:
            return self._lookup(index, c, bad)
        if op.wbuf_addr + n > cfg.weight_buffer_depth:
            bad("input B beyond WBUF")
        if op.pbuf_addr + lanes > cfg.param_buffer_depth or op.pbuf_addr % lanes:
            bad("add constants beyond PBUF or not lane-aligned")
        if op.obuf_addr + n > cfg.acc_buffer_depth:
            bad("outputs beyond OBUF")
        ibuf = self.buffers[isa.Buffer.IBUF].data[op.ibuf_bank]
        wbuf = self.buffers[isa.Buffer.WBUF].data[op.wbuf_bank]
        a = unpack_words(ibuf[op.ibuf_addr:op.ibuf_addr + n], B, bool(op.a_signed))
        b = unpack_words(wbuf[op.wbuf_addr:op.wbuf_addr + n], B, bool(op.b_signed))
        pbuf = self.buffers[isa.Buffer.PBUF].data[op.pbuf_bank]
        row = pbuf[op.pbuf_addr:op.pbuf_addr + lanes]
        params = sum(int.from_bytes(bytes(w), "little") << (PBUF_WORD_BITS * i)
                     for i, w in enumerate(row))
        q = apply_add(cfg, params, int(op.zp_out), int(op.clamp_min), int(op.clamp_max), a, b)
        obuf = self.buffers[isa.Buffer.OBUF].data[c.obuf_bank]
        obuf[op.obuf_addr:op.obuf_addr + n] = pack_words(q, B)

    def _lookup(self, index, c, bad):
        """``ELTWISE`` with ``lut``: every code of A (IBUF words) replaced by ``table[code &
        0xFF]``, the table being the first 256 codes of the WBUF words at ``wbuf_addr``."""
        cfg = self.cfg
        C, B = cfg.cols, cfg.operand_bits
        op = c.op
        n = int(op.pixels)
        tw = isa.lut_table_words(C)
        if B != 8:
            bad("table lookups need 8-bit codes")
        if op.wbuf_addr + tw > cfg.weight_buffer_depth:
            bad("lookup table beyond WBUF")
        if op.obuf_addr + n > cfg.acc_buffer_depth:
            bad("outputs beyond OBUF")
        ibuf = self.buffers[isa.Buffer.IBUF].data[op.ibuf_bank]
        wbuf = self.buffers[isa.Buffer.WBUF].data[op.wbuf_bank]
        a = unpack_words(ibuf[op.ibuf_addr:op.ibuf_addr + n], B, False)
        table = unpack_words(wbuf[op.wbuf_addr:op.wbuf_addr + tw], B, False).reshape(-1)[:256]
        obuf = self.buffers[isa.Buffer.OBUF].data[c.obuf_bank]
        obuf[op.obuf_addr:op.obuf_addr + n] = pack_words(table[a], B)
