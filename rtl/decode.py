"""Command decode: the accepted command's mode, the window walk's geometry and the range checks.

The engine's MAC stage takes a command (:data:`zynqnn.hw.isa.ConvCommand`, or an
:data:`~zynqnn.hw.isa.EltwiseCommand` in the same register) with ``load``. A ``CONV`` command is
then sized in two cycles (the products the checks need are registered between) and checked in
the third: ``checked`` pulses with ``bad`` set when the buffers cannot hold its geometry. An
``ELTWISE`` command's check (``elt_bad``) is registered with the command and holds while
the command does (a lookup, ``lut``, is checked for its table's WBUF words instead of B and the
constants row, and is refused in 16-bit builds).

In DW mode the walk is the command's padded window span as a 1x1, stride-1 walk
(``isa.dw_walk``), less its first line / each line's first pixel when they are zero padding
(``skip_top``, ``skip_left``; see :mod:`zynqnn.rtl.depthwise`).
"""

from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from zynqnn.hw import isa
from zynqnn.hw.config import HwConfig

from .depthwise import dw_line_depth

__all__ = ["CommandDecode", "mode_layout", "walk_layout"]

#: The command's mode, decoded when it is accepted.
mode_layout = data.StructLayout({
    "bypass": unsigned(1),     # the command skips the PE array (MAXPOOL, SUMPOOL, COPY)
    "sumpool": unsigned(1),    # every pixel sums into one accumulator
    "pairs": unsigned(1),      # fbgemm's saturating tap pairs (isa.Mode.PAIRS)
    "dw": unsigned(1),         # one-pass depthwise (isa.Mode.DW or DW_PAIRS)
    "dw_pairs": unsigned(1),   # ... with fbgemm's saturating pairs (DW_PAIRS)
})

#: The window walk over the IBUF tile (the command's geometry, or a DW walk's span).
walk_layout = data.StructLayout({
    "kernel": unsigned(4),
    "stride": unsigned(2),
    "out_w": unsigned(13),     # 13 bits: a DW walk spans up to 2 * out_w + 1 pixels
    "out_h": unsigned(13),
    "in_hw": unsigned(24),     # in_h * in_w: one channel block of the tile
    "yoff_iw": signed(18),     # y_off * in_w (after skip_top)
    "y_off": signed(5),        # the walk's first input line / column (after the skips)
    "x_off": signed(5),
    "taps": unsigned(6),       # kernel * kernel
    "skip_top": unsigned(1),
    "skip_left": unsigned(1),
})


class CommandDecode(wiring.Component):
    """The MAC stage's command register and its decode.

    Members
    -------
    payload, load: In
        The accepted command and its acceptance pulse.
    cmd: Out(ConvCommand)
        The command register.
    mode: Out(mode_layout), walk: Out(walk_layout)
        Valid from ``checked`` on (``mode`` from the cycle after ``load``).
    passes, pixels, out_pixels: Out
        Weight tiles (passes over the walk), walked pixels, accumulators / outputs (1 when
        summing all pixels).
    checked, bad: Out(1)
        ``checked`` pulses three cycles after a ``CONV`` command's ``load``; ``bad`` (valid with
        it) rejects the command.
    elt_bad: Out(1)
        An ``ELTWISE`` command in the register cannot run (from the cycle after ``load``).
    """

    def __init__(self, cfg: HwConfig):
        self._cfg = cfg
        super().__init__({
            "payload": In(isa.ConvCommand),
            "load": In(1),
            "cmd": Out(isa.ConvCommand),
            "mode": Out(mode_layout),
            "walk": Out(walk_layout),
            "passes": Out(16),
            "pixels": Out(24),
            "out_pixels": Out(24),
            "checked": Out(1),
            "bad": Out(1),
            "elt_bad": Out(1),
        })

    def elaborate(self, platform):
        cfg = self._cfg
        R, C = cfg.rows, cfg.cols
        lanes = cfg.requant_lanes
        lane_shift = (lanes - 1).bit_length()
        m = Module()
        op = self.cmd.op
        mode = self.mode
        walk = self.walk
        new = isa.ConvCommand(self.payload.as_value())

        with m.If(self.load):
            m.d.sync += [
                self.cmd.eq(self.payload),
                mode.bypass.eq((new.op.mode != isa.Mode.CONV) & (new.op.mode != isa.Mode.PAIRS)
                               & (new.op.mode != isa.Mode.DW)
                               & (new.op.mode != isa.Mode.DW_PAIRS)),
                mode.sumpool.eq(new.op.mode == isa.Mode.SUMPOOL),
                mode.pairs.eq(new.op.mode == isa.Mode.PAIRS),
                mode.dw.eq((new.op.mode == isa.Mode.DW) | (new.op.mode == isa.Mode.DW_PAIRS)),
                mode.dw_pairs.eq(new.op.mode == isa.Mode.DW_PAIRS),
            ]
        # The sizing steps of a CONV command: one register stage each, then the check.
        size1 = Signal()
        size2 = Signal()
        m.d.sync += [size1.eq(self.load & (new.opcode != isa.Opcode.ELTWISE)),
                     size2.eq(size1), self.checked.eq(size2)]

        dw = mode.dw
        ispan = Signal(32)                # IBUF words of the tile (all channel blocks)
        with m.If(size1):
            m.d.sync += [
                walk.taps.eq(op.kernel * op.kernel),
                self.pixels.eq(op.out_h * op.out_w),
                walk.in_hw.eq(op.in_h * op.in_w),
                walk.kernel.eq(Mux(dw, 1, op.kernel)),
                walk.stride.eq(Mux(dw, 1, op.stride)),
                walk.out_w.eq(Mux(dw, Mux(op.stride == 2, (op.out_w - 1) << 1, op.out_w - 1) + 3,
                                  op.out_w)),
                walk.out_h.eq(Mux(dw, Mux(op.stride == 2, (op.out_h - 1) << 1, op.out_h - 1) + 3,
                                  op.out_h)),
                # One output column leaves a 3-pixel line: its line delay needs all three.
                # Not DW_PAIRS: its zero-point pairs can saturate, padding is not zero.
                walk.skip_top.eq(dw & ~mode.dw_pairs & (op.y_off < 0)),
                walk.skip_left.eq(dw & ~mode.dw_pairs & (op.x_off < 0) & (op.out_w > 1)),
            ]
        with m.If(size2):
            m.d.sync += [
                walk.y_off.eq(op.y_off + walk.skip_top),
                walk.x_off.eq(op.x_off + walk.skip_left),
                walk.yoff_iw.eq((op.y_off + walk.skip_top) * op.in_w),
                walk.out_w.eq(walk.out_w - walk.skip_left),
                walk.out_h.eq(walk.out_h - walk.skip_top),
                # PAIRS: isa.pairs_passes(kernel) = taps rounded up to even.
                self.passes.eq(Mux(mode.pairs, (walk.taps + 1) & ~1,
                                   Mux(dw, 1, walk.taps * op.cin_blocks))),
                ispan.eq(op.cin_blocks * walk.in_hw),
                self.out_pixels.eq(Mux(mode.sumpool, 1, self.pixels)),
            ]

        def fits(end, depth):
            return end <= depth

        # The checks are registered along the sizing steps, so that ``bad`` (which drives the
        # MAC FSM and the stages' start copies) is an OR of flags and of one compare each
        # between registers: size1 registers what the fields alone decide and each buffer's
        # room past the command's address, size2 the DW line check and the weight span.
        k = op.kernel
        bypass, pairs, dwp = mode.bypass, mode.pairs, mode.dw_pairs
        bad_fields = Signal()
        assert max(cfg.act_buffer_depth, cfg.weight_buffer_depth, cfg.acc_buffer_depth) < 2 ** 17
        ibuf_room = Signal(signed(18))    # buffer words from the command's address to the end
        wbuf_room = Signal(signed(18))
        obuf_room = Signal(signed(18))
        with m.If(size1):
            m.d.sync += [
                ibuf_room.eq(cfg.act_buffer_depth - op.ibuf_addr),
                wbuf_room.eq(cfg.weight_buffer_depth - op.wbuf_addr),
                obuf_room.eq(cfg.acc_buffer_depth - op.obuf_addr),
                bad_fields.eq(
                    (k == 0) | ((k > cfg.max_kernel) if cfg.max_kernel < 7 else 0)
                    | ~((op.stride == 1) | (op.stride == 2))
                    | (op.cin_blocks == 0) | (op.in_h == 0) | (op.in_w == 0)
                    | (op.in_w > cfg.max_width) | (op.out_h == 0) | (op.out_w == 0)
                    | ~fits(op.pbuf_addr + C + Mux(op.act, lanes, 0), cfg.param_buffer_depth)
                    | (op.pbuf_addr[:lane_shift] != 0 if lanes > 1 else 0)
                    | (op.pool != isa.Pool.NONE)
                    | ~((op.mode == isa.Mode.CONV) | (op.mode == isa.Mode.MAXPOOL)
                        | (op.mode == isa.Mode.PAIRS) | (op.mode == isa.Mode.DW)
                        | (op.mode == isa.Mode.DW_PAIRS)
                        | (op.mode == isa.Mode.SUMPOOL) | (op.mode == isa.Mode.COPY))
                    # The bypass modes feed input channels straight to output channels.
                    | (bypass & ((op.cin_blocks != 1) if R == C else 1))
                    | (op.upsample & ((op.kernel != 1) | (op.stride != 1)))
                    # PAIRS splits the channel block into halves across the array's rows.
                    | (pairs & ((op.cin_blocks != 1) | op.acc_cont | op.acc_keep | op.upsample
                                if R == C and R % 2 == 0 else pairs))
                    # DW holds a channel's 3x3 taps in a PE row.
                    | (dw & ((op.kernel != 3) | (op.cin_blocks != 1) | op.acc_cont | op.acc_keep
                             | op.upsample if cfg.dw_kernel else dw))
                    | (dwp if not cfg.dw_pairs else 0)
                    # The step lanes take a DW walk's pixels whole, with no activation word.
                    | (op.step & (~dw | op.act) if cfg.step_lanes else op.step)),
            ]
        # DW: its line delays hold dw_line_depth pixels of a line of walk.out_w (the size1 value:
        # the walked line, before skip_left).
        dw_wide = Signal()
        wspan = Signal(24)                # WBUF words of the weight tiles: passes x rows
        with m.If(size2):
            m.d.sync += [
                dw_wide.eq(dw & (walk.out_w > dw_line_depth(cfg) + 2) if cfg.dw_kernel else 0),
                wspan.eq(Mux(mode.pairs, ((walk.taps + 1) & ~1) * R,
                             Mux(dw, R, walk.taps * op.cin_blocks * R))),
            ]
        m.d.comb += self.bad.eq(
            bad_fields | dw_wide
            # (ispan's bits above the room's width in a flag: a shorter carry chain after the
            # DSP48E1 that computes it)
            | (ispan[17:] != 0) | (ispan[:17] > ibuf_room)
            | (~bypass & (wspan > wbuf_room))
            | ~fits(self.out_pixels, cfg.acc_buffer_depth)
            | (self.out_pixels > obuf_room)
        )

        # Registered when the command is accepted: it ends the ELTWISE command in the MAC FSM.
        eop = isa.EltwiseCommand(self.payload.as_value()).op
        # A lookup (lut) reads its table (lut_table_words WBUF words), no B and no constants;
        # it needs 8-bit codes.
        lut = eop.lut
        with m.If(self.load):
            m.d.sync += self.elt_bad.eq(
                (R != C) | (eop.pixels == 0)
                | ~fits(eop.ibuf_addr + eop.pixels, cfg.act_buffer_depth)
                | ~fits(eop.wbuf_addr + Mux(lut, isa.lut_table_words(C), eop.pixels),
                        cfg.weight_buffer_depth)
                | ~fits(eop.obuf_addr + eop.pixels, cfg.acc_buffer_depth)
                | (~lut & ~fits(eop.pbuf_addr + lanes, cfg.param_buffer_depth))
                | (~lut & (eop.pbuf_addr[:lane_shift] != 0) if lanes > 1 else 0)
                | (lut if cfg.operand_bits != 8 else 0)
            )
        return m
