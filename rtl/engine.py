"""The compute engine: on-chip buffers, window generation, PE array, accumulators, post-processing.

A ``CONV`` command runs in two stages that overlap across commands:

* **MAC stage.** The weight feeder streams the command's weight tiles (one per kernel tap and
  input-channel block, ``rows`` WBUF words each) into the PE array. The window generator walks
  the same passes: for every output pixel it reads the input word at the tapped position of the
  IBUF tile (the tile is a line buffer of ``in_h`` lines), or substitutes the zero point outside
  the tile, and subtracts the input zero point so that padding contributes exactly zero. The
  accumulator adds each pass's column sums into the ABUF bank (the first pass writes).
* **Post stage.** Once all passes are in, the ABUF bank is handed over: each pixel's ``cols``
  accumulators go through ``requant_lanes`` post-processing lanes (:class:`PostProc`: every
  requantization scheme, clamp, leaky ReLU) with their channels' PBUF constants, and the output
  word is written to OBUF. A command with ``act`` first reads its activation word (the PBUF row
  after its constants). Meanwhile the MAC stage runs the next command into the
  other ABUF bank.

An ``ELTWISE`` command (a residual add, :data:`zynqnn.hw.isa.EltwiseCommand`) runs alone: it waits
until the post stage is idle, so it owns the IBUF, WBUF and PBUF read ports and the OBUF write
port, reads the add's constants (one PBUF row) once, then streams its pixels: per pixel the IBUF
word (input A) and the WBUF word (input B) at the same offset, ``cols / add_lanes`` lane
groups through :class:`~zynqnn.rtl.eltwise.EltwiseAdd` (``add_lanes`` lanes, one group per
cycle), and the output word into OBUF. It then frees the MAC stage for the next command.

Commands are checked before they start: a geometry the buffers cannot hold ends the command with
``error`` and ``ErrorCause.BAD_COMPUTE`` instead of reading or writing out of range.

Answers (``done`` / ``error``) leave in command order whichever stage a command ends in: each
accepted command takes a sequence slot, stages mark their command's slot finished, and the
oldest finished slot is answered. ``cancel`` (soft reset, or an error elsewhere) returns every
register to its reset state.
"""

from amaranth import Const, Module, Mux, Shape, Signal, signed, unsigned
from amaranth.hdl import ResetInserter
from amaranth.lib import data, wiring

from zynqnn.hw import isa
from zynqnn.hw.add import add_params_layout
from zynqnn.hw.config import PBUF_WORD_BITS, HwConfig
from zynqnn.hw.post import act_params_layout, pbuf_word_layout
from zynqnn.hw.step import step_params_layout

from .buffers import BankedBuffer, MemoryReader
from .compute import ComputeSignature
from .depthwise import DepthwiseFIR, dw_line_depth
from .eltwise import EltwiseAdd, eltwise_in_layout
from .pe_array import PEArray, act_layout
from .postproc import PostProc, postproc_in_layout
from .steprequant import StepRequant

__all__ = ["Engine"]


def _abits(depth):
    return Shape.cast(range(depth)).width


class Engine(wiring.Component):
    """The compute unit behind the command processor.

    Members
    -------
    cmd: In(stream)
        ``CONV`` commands (viewed as :data:`zynqnn.hw.isa.ConvCommand`) and ``ELTWISE`` commands
        (:data:`zynqnn.hw.isa.EltwiseCommand`).
    done: Out(1)
        Pulses once per command, in command order, when its outputs are in OBUF.
    error, error_cause: Out
        Pulses (instead of ``done``) for a command the hardware cannot run.
    ibuf_w, wbuf_w, pbuf_w: In(BufferWriteSignature)
        Buffer fill ports (the DMA's). PBUF is addressed by output channel.
    obuf_r: In(BufferReadSignature)
        Output drain port (the DMA's).
    array_busy: Out(1)
        The PE array accepted an activation vector this cycle (performance counter).
    """

    def __init__(self, cfg: HwConfig):
        self._cfg = cfg
        lanes = cfg.requant_lanes
        if lanes & (lanes - 1):
            raise ValueError(f"Engine: requant_lanes = {lanes} must be a power of two")
        act_bits = act_params_layout(cfg).size
        if lanes * PBUF_WORD_BITS < act_bits:
            raise ValueError(f"Engine: requant_lanes = {lanes}: the {act_bits}-bit activation "
                             f"word needs a PBUF row of at least {-(-act_bits // PBUF_WORD_BITS)}"
                             " lanes")
        add_bits = add_params_layout(cfg).size
        if lanes * PBUF_WORD_BITS < add_bits:
            raise ValueError(f"Engine: requant_lanes = {lanes}: the {add_bits}-bit add constants "
                             f"need a PBUF row of at least {-(-add_bits // PBUF_WORD_BITS)} lanes")
        # The engine is the compute unit of the SoC shell: its signature is the shell's
        # compute interface, flipped (see zynqnn.rtl.compute for the protocol).
        super().__init__(ComputeSignature(cfg).flip())

    @property
    def cfg(self):
        return self._cfg

    def elaborate(self, platform):
        cfg = self._cfg
        R, C, B = cfg.rows, cfg.cols, cfg.operand_bits
        LANES = cfg.requant_lanes
        GROUPS = C // LANES
        ADD_LANES = cfg.add_lanes
        ADD_GROUPS = C // ADD_LANES
        m = Module()

        # -- buffers -----------------------------------------------------------------------------
        m.submodules.ibuf = ibuf = BankedBuffer(cfg.act_buffer_depth, cfg.act_word_bits)
        m.submodules.wbuf = wbuf = BankedBuffer(cfg.weight_buffer_depth, cfg.out_word_bits)
        # PBUF rows hold LANES channels so a requantizer group reads its constants at once; the
        # DMA writes one channel (one granule) at a time.
        pdepth = cfg.param_buffer_depth // LANES
        m.submodules.pbuf = pbuf = BankedBuffer(pdepth, LANES * PBUF_WORD_BITS, PBUF_WORD_BITS)
        m.submodules.obuf = obuf = BankedBuffer(cfg.acc_buffer_depth, cfg.out_word_bits)
        acc_word = data.ArrayLayout(signed(cfg.acc_bits), C)
        abuf = []
        for k in range(2):
            m.submodules[f"abuf{k}"] = b = BankedBuffer(cfg.acc_buffer_depth, acc_word.size,
                                                        banks=1)
            abuf.append(b)

        lane_shift = (LANES - 1).bit_length()
        wiring.connect(m, wiring.flipped(self.ibuf_w), ibuf.w)
        wiring.connect(m, wiring.flipped(self.wbuf_w), wbuf.w)
        wiring.connect(m, wiring.flipped(self.obuf_r), obuf.r)
        m.d.comb += [
            pbuf.w.en.eq(self.pbuf_w.en),
            pbuf.w.bank.eq(self.pbuf_w.bank),
            pbuf.w.addr.eq(self.pbuf_w.addr >> lane_shift),
            pbuf.w.data.eq(self.pbuf_w.data.replicate(LANES)),
            pbuf.w.mask.eq(Const(1, LANES) << self.pbuf_w.addr[:lane_shift]
                           if LANES > 1 else 1),
        ]

        m.submodules.array = array = PEArray(cfg)
        if cfg.dw_kernel:
            m.submodules.dw_fir = fir = DepthwiseFIR(cfg)

        # -- in-order answers ------------------------------------------------------------------
        SLOTS = 4                         # > commands the engine holds (MAC + pending + post)
        seq_in = Signal(range(SLOTS))     # slot of the next accepted command
        seq_out = Signal(range(SLOTS))    # slot of the oldest unanswered command
        fin = Signal(SLOTS)               # slot finished
        fin_err = Signal(SLOTS)           # ... with an error
        mac_seq = Signal(range(SLOTS))    # slot of the command in the MAC stage
        # Finish pulses: the MAC stage's command (a bad command, an acc_keep part, an ELTWISE)
        # and the post stage's; both may come in one cycle.
        fin_mac = Signal()
        fin_mac_err = Signal()
        fin_post = Signal()
        q_seq = Signal.like(mac_seq)      # slot of the command in the post stage
        fin_set = Signal(SLOTS)
        fin_err_set = Signal(SLOTS)
        one = Const(1, SLOTS)
        m.d.comb += [
            fin_set.eq(Mux(fin_mac, one << mac_seq, 0) | Mux(fin_post, one << q_seq, 0)),
            fin_err_set.eq(Mux(fin_mac_err, one << mac_seq, 0)),
        ]
        head = fin.bit_select(seq_out, 1)
        m.d.comb += [
            self.done.eq(head & ~fin_err.bit_select(seq_out, 1)),
            self.error.eq(head & fin_err.bit_select(seq_out, 1)),
            self.error_cause.eq(Mux(self.error, isa.ErrorCause.BAD_COMPUTE,
                                    isa.ErrorCause.NONE)),
        ]
        fin_clr = Mux(head, Const(1, SLOTS) << seq_out, 0)
        m.d.sync += [fin.eq((fin | fin_set) & ~fin_clr), fin_err.eq(fin_err | fin_err_set)]
        with m.If(head):
            m.d.sync += [seq_out.eq(seq_out + 1),
                         fin_err.bit_select(seq_out, 1).eq(0)]
        m.d.comb += self.array_busy.eq(array.acts.valid & array.acts.ready)

        # -- command setup and checks ------------------------------------------------------------
        cmd = Signal(isa.ConvCommand)     # the command in the MAC stage
        op = cmd.op
        mac_bank = Signal()               # ABUF bank the MAC stage fills
        abuf_full = Signal(2)             # bank k waits for (or is in) the post stage
        kk = Signal(range(64))
        passes = Signal(16)
        pixels = Signal(24)               # pixels the window generator walks
        out_pixels = Signal(24)           # accumulators / outputs (1 when summing all pixels)
        bypass = Signal()                 # the command skips the PE array
        sumpool = Signal()
        pairs = Signal()                  # fbgemm's saturating tap pairs (isa.Mode.PAIRS)
        dwm = Signal()                    # one-pass depthwise (isa.Mode.DW or DW_PAIRS)
        dwp = Signal()                    # ... with fbgemm's saturating pairs (DW_PAIRS)
        # The window generator's walk: the command's geometry, or in DW mode its padded window
        # span as a 1x1, stride-1 walk (isa.dw_walk).
        g_k = Signal(4)
        g_s = Signal(2)
        g_ow = Signal(13)
        g_oh = Signal(13)
        ihw = Signal(24)
        yoff_iw = Signal(signed(18))
        # DW: the walk skips its first line / each line's first pixel when they are padding
        # (rtl.depthwise); the walk then starts at g_yoff, g_xoff.
        skip_top = Signal()
        skip_left = Signal()
        g_yoff = Signal(signed(5))
        g_xoff = Signal(signed(5))
        ispan = Signal(32)
        bad = Signal()
        mac_go = Signal()                 # pulse: start the feeders
        mac_done = Signal()               # pulse: the accumulator wrote the last pass
        post_cmd = Signal(isa.ConvCommand)  # the command waiting for the post stage
        post_pending = Signal()
        post_pixels = Signal(24)
        post_src = Signal()                 # its ABUF bank

        def depth_ok(end, depth):
            return end <= depth

        post_run = Signal()               # the post stage drains an ABUF bank
        # ELTWISE state (the command register viewed as an EltwiseCommand).
        eop = isa.EltwiseCommand(cmd.as_value()).op
        elt_bad = Signal()
        elt_prm_read = Signal()           # the PBUF read port addresses the add constants
        elt_prm = Signal(add_params_layout(cfg))
        elt_run = Signal()                # streaming pixels; owns the read and OBUF ports
        elt_p = Signal(16)                # pixel being read
        elt_g = Signal(range(ADD_GROUPS + 1))  # lane group being read
        # Output assembly (shared by the post stage and ELTWISE, which never overlap).
        out_g = Signal(range(max(GROUPS, ADD_GROUPS) + 1))
        out_p = Signal(24)
        w_now = Signal()

        with m.FSM(name="mac"):
            with m.State("IDLE"):
                m.d.comb += self.cmd.ready.eq(~abuf_full.bit_select(mac_bank, 1))
                with m.If(self.cmd.valid & self.cmd.ready):
                    m.d.sync += [cmd.eq(self.cmd.payload), mac_seq.eq(seq_in),
                                 seq_in.eq(seq_in + 1)]
                    new = isa.ConvCommand(self.cmd.payload.as_value())
                    m.d.sync += [bypass.eq((new.op.mode != isa.Mode.CONV)
                                           & (new.op.mode != isa.Mode.PAIRS)
                                           & (new.op.mode != isa.Mode.DW)
                                           & (new.op.mode != isa.Mode.DW_PAIRS)),
                                 sumpool.eq(new.op.mode == isa.Mode.SUMPOOL),
                                 pairs.eq(new.op.mode == isa.Mode.PAIRS),
                                 dwm.eq((new.op.mode == isa.Mode.DW)
                                        | (new.op.mode == isa.Mode.DW_PAIRS)),
                                 dwp.eq(new.op.mode == isa.Mode.DW_PAIRS)]
                    with m.If(new.opcode == isa.Opcode.ELTWISE):
                        m.next = "ELT_CHECK"
                    with m.Else():
                        m.next = "SIZE1"
            with m.State("SIZE1"):
                m.d.sync += [
                    kk.eq(op.kernel * op.kernel),
                    pixels.eq(op.out_h * op.out_w),
                    ihw.eq(op.in_h * op.in_w),
                    g_k.eq(Mux(dwm, 1, op.kernel)),
                    g_s.eq(Mux(dwm, 1, op.stride)),
                    g_ow.eq(Mux(dwm, Mux(op.stride == 2, (op.out_w - 1) << 1, op.out_w - 1) + 3,
                                op.out_w)),
                    g_oh.eq(Mux(dwm, Mux(op.stride == 2, (op.out_h - 1) << 1, op.out_h - 1) + 3,
                                op.out_h)),
                    # One output column leaves a 3-pixel line: its line delay needs all three.
                    # Not DW_PAIRS: its zero-point pairs can saturate, padding is not zero.
                    skip_top.eq(dwm & ~dwp & (op.y_off < 0)),
                    skip_left.eq(dwm & ~dwp & (op.x_off < 0) & (op.out_w > 1)),
                ]
                m.next = "SIZE2"
            with m.State("SIZE2"):
                m.d.sync += [
                    g_yoff.eq(op.y_off + skip_top),
                    g_xoff.eq(op.x_off + skip_left),
                    yoff_iw.eq((op.y_off + skip_top) * op.in_w),
                    g_ow.eq(g_ow - skip_left),
                    g_oh.eq(g_oh - skip_top),
                    # PAIRS: isa.pairs_passes(kernel) = kk rounded up to even.
                    passes.eq(Mux(pairs, (kk + 1) & ~1, Mux(dwm, 1, kk * op.cin_blocks))),
                    ispan.eq(op.cin_blocks * ihw),
                    out_pixels.eq(Mux(sumpool, 1, pixels)),
                ]
                m.next = "CHECK"
            with m.State("CHECK"):
                k = op.kernel
                m.d.comb += bad.eq(
                    (k == 0) | ((k > cfg.max_kernel) if cfg.max_kernel < 7 else 0)
                    | ~((op.stride == 1) | (op.stride == 2))
                    | (op.cin_blocks == 0) | (op.in_h == 0) | (op.in_w == 0)
                    | (op.in_w > cfg.max_width) | (op.out_h == 0) | (op.out_w == 0)
                    | ~depth_ok(op.ibuf_addr + ispan, cfg.act_buffer_depth)
                    | (~bypass & ~depth_ok(op.wbuf_addr + passes * R, cfg.weight_buffer_depth))
                    | ~depth_ok(op.pbuf_addr + C + Mux(op.act, LANES, 0), cfg.param_buffer_depth)
                    | (op.pbuf_addr[:lane_shift] != 0 if LANES > 1 else 0)
                    | ~depth_ok(out_pixels, cfg.acc_buffer_depth)
                    | ~depth_ok(op.obuf_addr + out_pixels, cfg.acc_buffer_depth)
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
                    # DW holds a channel's 3x3 taps in a PE row; its line delays hold
                    # dw_line_depth pixels.
                    | (dwm & ((op.kernel != 3) | (op.cin_blocks != 1) | op.acc_cont | op.acc_keep
                              | op.upsample | (g_ow + skip_left - 2 > dw_line_depth(cfg))
                              if cfg.dw_kernel else dwm))
                    | (dwp if not cfg.dw_pairs else 0)
                    # The step lanes take a DW walk's pixels whole, with no activation word.
                    | (op.step & (~dwm | op.act) if cfg.step_lanes else op.step)
                )
                with m.If(bad):
                    m.d.comb += [fin_mac.eq(1), fin_mac_err.eq(1)]
                    m.next = "IDLE"
                with m.Else():
                    m.d.comb += mac_go.eq(1)
                    m.next = "RUN"
            with m.State("RUN"):
                with m.If(mac_done):
                    # A partial command leaves its sums in the bank for the next part.
                    with m.If(~op.acc_keep):
                        m.d.sync += mac_bank.eq(~mac_bank)
                    m.next = "IDLE"

            # ELTWISE: check, wait for the post stage to go idle, read the constants row, stream.
            with m.State("ELT_CHECK"):
                m.d.comb += elt_bad.eq(
                    (R != C) | (eop.pixels == 0)
                    | ~depth_ok(eop.ibuf_addr + eop.pixels, cfg.act_buffer_depth)
                    | ~depth_ok(eop.wbuf_addr + eop.pixels, cfg.weight_buffer_depth)
                    | ~depth_ok(eop.obuf_addr + eop.pixels, cfg.acc_buffer_depth)
                    | ~depth_ok(eop.pbuf_addr + LANES, cfg.param_buffer_depth)
                    | (eop.pbuf_addr[:lane_shift] != 0 if LANES > 1 else 0)
                )
                with m.If(elt_bad):
                    m.d.comb += [fin_mac.eq(1), fin_mac_err.eq(1)]
                    m.next = "IDLE"
                with m.Elif(~post_run & ~post_pending):
                    m.next = "ELT_PARAMS"
            with m.State("ELT_PARAMS"):
                m.d.comb += elt_prm_read.eq(1)
                m.next = "ELT_CAPTURE"
            with m.State("ELT_CAPTURE"):
                m.d.sync += [elt_prm.eq(pbuf.r.data[:add_params_layout(cfg).size]),
                             elt_p.eq(0), elt_g.eq(0), out_g.eq(0), out_p.eq(0)]
                m.next = "ELT_RUN"
            with m.State("ELT_RUN"):
                m.d.comb += elt_run.eq(1)
                with m.If(w_now & (out_p + 1 == eop.pixels)):
                    m.d.comb += fin_mac.eq(1)
                    m.next = "IDLE"

        # -- weight feeder: passes x rows WBUF words in order ----------------------------------
        w_rd = MemoryReader(m, "w_reader", array.weights.payload.shape(), depth=4)
        w_addr = Signal(_abits(cfg.weight_buffer_depth) + 1)
        w_left = Signal(24)
        with m.If(mac_go):
            m.d.sync += [w_addr.eq(op.wbuf_addr), w_left.eq(Mux(bypass, 0, passes * R))]
        with m.Elif(w_rd.issue):
            m.d.sync += [w_addr.eq(w_addr + 1), w_left.eq(w_left - 1)]
        m.d.comb += [
            w_rd.issue.eq((w_left != 0) & w_rd.can_issue),
            wbuf.r.en.eq(1),
            wbuf.r.bank.eq(Mux(elt_run, eop.wbuf_bank, op.wbuf_bank)),
            wbuf.r.addr.eq(Mux(elt_run, eop.wbuf_addr + elt_p, w_addr)),
            w_rd.buf.w_data.eq(wbuf.r.data),
            array.weights.payload.eq(w_rd.buf.r_data),
            array.weights.valid.eq(w_rd.buf.r_valid),
            w_rd.buf.r_ready.eq(array.weights.ready),
        ]

        # -- window generator ----------------------------------------------------------------------
        # Pass order ky, kx, cin block; pixel order oy, ox. Addresses are kept incrementally.
        ky = Signal(3)
        kx = Signal(3)
        cb = Signal(8)
        oy = Signal(13)                   # 13 bits: a DW walk spans up to 2 * out_h + 1 rows
        ox = Signal(13)
        iy = Signal(signed(16))
        ix = Signal(signed(16))
        row_addr = Signal(signed(24))     # IBUF address of (cb, iy, 0)
        cb_base = Signal(24)              # cb * in_h * in_w
        ky_iw = Signal(24)                # ky * in_w
        first = Signal()                  # next pixel is the first of its pass
        a_running = Signal()
        s_iw = Signal(16)

        a_layout = act_layout(cfg)
        a_rd = MemoryReader(m, "a_reader", a_layout, depth=4)
        # PAIRS (isa.pairs_passes): every pass starts with the zero-point vector (phase K, whose
        # column sums are the raw codes' part zp_in x colsum(W)); each output pixel then takes
        # two reads, tap t = ky*k + kx (P0, held) and tap t + 1 (P1), one vector per pixel.
        PH_K, PH_0, PH_1 = 0, 1, 2
        ph = Signal(2)
        half = Signal()                   # channel half of the pass
        step = Signal()                   # the generator moves this cycle
        # Tap t + 1: the next column, or the first of the next row.
        wrap2 = Signal()
        iy2 = Signal(signed(16))
        ix2 = Signal(signed(16))
        m.d.comb += [
            wrap2.eq(kx + 1 == g_k),
            iy2.eq(iy + wrap2),
            ix2.eq(Mux(wrap2, ix - (g_k - 1), ix + 1)),
        ]
        second = Signal()                 # this cycle reads tap t + 1
        rd_iy = Signal(signed(16))
        rd_ix = Signal(signed(16))
        rd_row = Signal(signed(24))
        m.d.comb += [
            second.eq(pairs & (ph == PH_1)),
            rd_iy.eq(Mux(second, iy2, iy)),
            rd_ix.eq(Mux(second, ix2, ix)),
            rd_row.eq(Mux(second & wrap2, row_addr + op.in_w, row_addr)),
        ]
        a_pad = Signal()                  # the issued pixel lies outside the tile
        a_first = Signal()
        a_ph = Signal(2)                  # phase of the word on the read port
        a_half = Signal()
        m.d.sync += [a_pad.eq(
            (rd_iy < 0) | (rd_iy >= op.in_h) | (rd_ix < 0) | (rd_ix >= op.in_w)),
            a_first.eq(first)]
        a_step = Signal()                 # a read was issued last cycle
        m.d.sync += a_step.eq(step)
        with m.If(step):
            m.d.sync += [a_ph.eq(Mux(pairs | dwp, ph, PH_1)), a_half.eq(half)]

        def start_pass(n_ky, n_kx, n_cb_base, n_ky_iw):
            return [
                oy.eq(0), ox.eq(0),
                iy.eq(n_ky + g_yoff), ix.eq(n_kx + g_xoff),
                row_addr.eq(op.ibuf_addr + n_cb_base + n_ky_iw + yoff_iw),
                first.eq(1),
            ]

        with m.If(mac_go):
            m.d.sync += [ky.eq(0), kx.eq(0), cb.eq(0), cb_base.eq(0), ky_iw.eq(0), half.eq(0),
                         ph.eq(PH_K), a_running.eq(1),
                         s_iw.eq(Mux(g_s == 2, op.in_w << 1, op.in_w))]
            m.d.sync += start_pass(0, 0, 0, 0)
        with m.Elif(step & pairs & (ph != PH_1)):
            m.d.sync += [ph.eq(ph + 1), first.eq(0)]
        # DW_PAIRS: the zero-point vector, then the walk.
        with m.Elif(step & dwp & (ph == PH_K)):
            m.d.sync += [ph.eq(PH_0), first.eq(0)]
        # A pixel is done after its one read, or in PAIRS after its second.
        with m.Elif(step):
            m.d.sync += [first.eq(0), ph.eq(PH_0)]
            # Upsampling repeats every input pixel and row twice.
            with m.If(ox + 1 != g_ow):
                m.d.sync += [ox.eq(ox + 1), ix.eq(ix + Mux(op.upsample, ox[0], g_s))]
            with m.Elif(oy + 1 != g_oh):
                m.d.sync += [ox.eq(0), ix.eq(kx + g_xoff), oy.eq(oy + 1)]
                with m.If(~op.upsample):
                    m.d.sync += [iy.eq(iy + g_s), row_addr.eq(row_addr + s_iw)]
                with m.Elif(oy[0]):
                    m.d.sync += [iy.eq(iy + 1), row_addr.eq(row_addr + op.in_w)]
            # PAIRS: pass (tap pair, half), half inner; the next pair is two taps on.
            with m.Elif(pairs & ~half):
                m.d.sync += [half.eq(1), ph.eq(PH_K)]
                m.d.sync += start_pass(ky, kx, 0, ky_iw)
            with m.Elif(pairs):
                m.d.sync += [half.eq(0), ph.eq(PH_K)]
                with m.If(ky * g_k + kx + 2 >= kk):
                    m.d.sync += a_running.eq(0)
                with m.Elif(kx + 2 < g_k):
                    m.d.sync += kx.eq(kx + 2)
                    m.d.sync += start_pass(ky, kx + 2, 0, ky_iw)
                with m.Else():
                    m.d.sync += [kx.eq(kx + 2 - g_k), ky.eq(ky + 1),
                                 ky_iw.eq(ky_iw + op.in_w)]
                    m.d.sync += start_pass(ky + 1, kx + 2 - g_k, 0, ky_iw + op.in_w)
            with m.Elif(cb + 1 != op.cin_blocks):
                m.d.sync += [cb.eq(cb + 1), cb_base.eq(cb_base + ihw)]
                m.d.sync += start_pass(ky, kx, cb_base + ihw, ky_iw)
            with m.Elif(kx + 1 != g_k):
                m.d.sync += [cb.eq(0), cb_base.eq(0), kx.eq(kx + 1)]
                m.d.sync += start_pass(ky, kx + 1, 0, ky_iw)
            with m.Elif(ky + 1 != g_k):
                m.d.sync += [cb.eq(0), cb_base.eq(0), kx.eq(0), ky.eq(ky + 1),
                             ky_iw.eq(ky_iw + op.in_w)]
                m.d.sync += start_pass(ky + 1, 0, 0, ky_iw + op.in_w)
            with m.Else():
                m.d.sync += a_running.eq(0)

        # Input codes are unsigned or signed B-bit; the array gets (q - zp_in), zero outside.
        act_word = data.ArrayLayout(unsigned(B), R)
        raw = act_word(ibuf.r.data)
        vec = Signal(a_layout)
        # Max pooling ignores padding (-infinity, below any q - zp); convolution pads with the
        # zero point, which is 0 after the subtraction.
        pad_value = Mux(op.pad_min, -(2 ** B), 0)
        word = Signal(data.ArrayLayout(signed(cfg.signed_operand_bits), R))
        for r in range(R):
            q = Mux(op.in_signed, raw[r].as_signed(), raw[r].as_unsigned())
            m.d.comb += word[r].eq(Mux(a_pad, pad_value, q - op.zp_in))
        m.d.comb += vec.swap.eq(a_first)
        # PAIRS and DW_PAIRS: the zero-point vector is zp_in in every row.
        zpv = Signal()
        m.d.comb += zpv.eq((pairs | dwp) & (a_ph == PH_K))
        if R % 2 == 0:
            # PAIRS: rows [0, R/2) hold the half's channels under tap t (held from P0), rows
            # [R/2, R) the same channels under tap t + 1.
            H = R // 2
            hold = Signal(data.ArrayLayout(signed(cfg.signed_operand_bits), H))
            sel = [Mux(a_half, word[H + i], word[i]) for i in range(H)]
            with m.If(a_step & (a_ph == PH_0)):
                m.d.sync += [hold[i].eq(sel[i]) for i in range(H)]
            for i in range(H):
                m.d.comb += [
                    vec.data[i].eq(Mux(zpv, op.zp_in, Mux(~pairs, word[i], hold[i]))),
                    vec.data[H + i].eq(Mux(zpv, op.zp_in, Mux(~pairs, word[H + i], sel[i]))),
                ]
        else:
            m.d.comb += [vec.data[i].eq(Mux(zpv, op.zp_in, word[i])) for i in range(R)]
        m.d.comb += [
            step.eq(a_running & a_rd.can_issue),
            # The first read of a PAIRS pixel reserves no FIFO slot: it writes none.
            a_rd.issue.eq(step & ~(pairs & (ph == PH_0))),
            ibuf.r.en.eq(1),
            ibuf.r.bank.eq(Mux(elt_run, eop.ibuf_bank, op.ibuf_bank)),
            ibuf.r.addr.eq(Mux(elt_run, eop.ibuf_addr + elt_p,
                               (rd_row + rd_ix)[:_abits(cfg.act_buffer_depth)])),
            a_rd.buf.w_data.eq(vec),
            array.acts.payload.eq(a_rd.buf.r_data),
            array.acts.valid.eq(a_rd.buf.r_valid & ~bypass),
            a_rd.buf.r_ready.eq(Mux(bypass, 1, array.acts.ready)),
        ]

        # -- accumulator ---------------------------------------------------------------------------
        acc_p = Signal(24)
        acc_n = Signal(16)
        s1_valid = Signal()
        s1_sum = Signal(data.ArrayLayout(signed(cfg.acc_bits), C))
        s1_p = Signal(24)
        s1_first = Signal()
        s1_last = Signal()
        with m.If(mac_go):
            m.d.sync += [acc_p.eq(0), acc_n.eq(0)]
        # The accumulator takes the array's sums, or in the bypass modes the window vectors.
        m.d.comb += array.sums.ready.eq(1)
        take = Signal()
        if cfg.dw_kernel:
            m.d.comb += [
                array.dw.eq(dwm),
                fir.i_products.eq(array.dw_products),
                fir.i_valid.eq(array.dw_valid),
                fir.start.eq(mac_go),
                fir.width.eq(g_ow),
                fir.skip_top.eq(skip_top),
                fir.skip_left.eq(skip_left),
                fir.stride2.eq(op.stride == 2),
                fir.pairs.eq(dwp),
            ]
            mac_valid = Mux(dwm, fir.o_valid, array.sums.valid)
        else:
            mac_valid = array.sums.valid
        m.d.comb += take.eq(Mux(bypass, a_rd.buf.r_valid, mac_valid))
        bypass_sum = Signal.like(s1_sum)
        if R == C:
            for c in range(C):
                m.d.comb += bypass_sum[c].eq(a_rd.buf.r_data.data[c])
        # PAIRS: the pass's first sums are zp_in x colsum(W) = kz; its pixels then add
        # sat16(s + kz) - kz = clamp(s, -2^15 - kz, 2^15 - 1 - kz), bounds kept per column.
        k_next = Signal()                 # the next sums are a PAIRS pass's zero-point sums
        k_take = Signal()
        m.d.comb += k_take.eq(take & k_next)
        sat_lo = Signal(data.ArrayLayout(signed(cfg.acc_bits), C))
        sat_hi = Signal(data.ArrayLayout(signed(cfg.acc_bits), C))
        mac_sum = Signal(data.ArrayLayout(signed(cfg.acc_bits), C))
        for c in range(C):
            sc = array.sums.payload[c]
            with m.If(k_take):
                m.d.sync += [sat_lo[c].eq(-(2 ** 15) - sc), sat_hi[c].eq(2 ** 15 - 1 - sc)]
            m.d.comb += mac_sum[c].eq(Mux(pairs & (sc < sat_lo[c]), sat_lo[c],
                                          Mux(pairs & (sc > sat_hi[c]), sat_hi[c], sc)))
        if cfg.dw_kernel:
            mac_sum = Mux(dwm, fir.o_sums, mac_sum)
        m.d.sync += [s1_valid.eq(take & ~k_next), s1_sum.eq(Mux(bypass, bypass_sum, mac_sum)),
                     s1_p.eq(Mux(sumpool, 0, acc_p)),
                     s1_first.eq((acc_n == 0) & (~sumpool | (acc_p == 0)) & ~op.acc_cont),
                     s1_last.eq((acc_n + 1 == passes) & (acc_p + 1 == pixels))]
        with m.If(mac_go):
            m.d.sync += k_next.eq(pairs)
        with m.Elif(k_take):
            m.d.sync += k_next.eq(0)
        with m.Elif(take):
            with m.If(acc_p + 1 == pixels):
                m.d.sync += [acc_p.eq(0), acc_n.eq(acc_n + 1), k_next.eq(pairs)]
            with m.Else():
                m.d.sync += acc_p.eq(acc_p + 1)

        post_bank = Signal()
        post_rd_addr = Signal(24)
        post_rd_en = Signal()
        old = Signal(acc_word)
        new = Signal(acc_word)
        for k in range(2):
            fill = mac_bank == k
            # The post stage owns its bank until it is done, even after the MAC stage has
            # finished the next command and moved on to this bank number.
            drain = post_run & (post_bank == k)
            m.d.comb += [
                abuf[k].r.en.eq(1),
                abuf[k].r.bank.eq(0),
                abuf[k].r.addr.eq(Mux(drain, post_rd_addr, Mux(sumpool, 0, acc_p))),
                abuf[k].w.bank.eq(0),
                abuf[k].w.addr.eq(s1_p),
                abuf[k].w.data.eq(new),
                abuf[k].w.en.eq(fill & s1_valid),
            ]
        # A read sees the memory before the previous cycle's write: forward that write when it
        # hit the same address (summing every pixel into one accumulator does that each cycle).
        fw_valid = Signal()
        fw_p = Signal.like(s1_p)
        fw_data = Signal(acc_word)
        m.d.sync += [fw_valid.eq(s1_valid), fw_p.eq(s1_p), fw_data.eq(new)]
        mem_old = Mux(mac_bank, abuf[1].r.data, abuf[0].r.data)
        m.d.comb += old.eq(Mux(fw_valid & (fw_p == s1_p), fw_data, mem_old))
        maxpool = Signal()
        m.d.comb += maxpool.eq(op.mode == isa.Mode.MAXPOOL)
        for c in range(C):
            m.d.comb += new[c].eq(Mux(s1_first, s1_sum[c],
                                      Mux(maxpool, Mux(s1_sum[c] > old[c], s1_sum[c], old[c]),
                                          old[c] + s1_sum[c])))
        m.d.comb += mac_done.eq(s1_valid & s1_last)

        keep_done = Signal()
        m.d.comb += keep_done.eq(mac_done & op.acc_keep)
        with m.If(keep_done):
            m.d.comb += fin_mac.eq(1)
        with m.If(mac_done & ~op.acc_keep):
            m.d.sync += abuf_full.bit_select(mac_bank, 1).eq(1)

        # -- post stage ----------------------------------------------------------------------------
        m.submodules.post = rq = PostProc(cfg)
        pp = Signal(24)                   # pixel being read
        pg = Signal(range(GROUPS + 1))    # lane group being read
        STEP = bool(cfg.step_lanes)
        q_step = Signal()                 # the command uses the step lanes (one pixel a cycle)
        q_early = Signal()                # ... and was handed over at its start
        # PostProc takes an input whenever its own output buffer has room (o.ready is tied
        # high), so a short read FIFO keeps one group per cycle flowing.
        p_rd = MemoryReader(m, "p_reader", postproc_in_layout(cfg, LANES), depth=4)
        # The layer's activation word is the PBUF row after its channel constants; it is read
        # once, before the first group, and held for the whole command.
        actw_layout = act_params_layout(cfg)
        pre = Signal()                    # reading the activation row
        act_cap = Signal()                # its data is on the read port
        act_reg = Signal(actw_layout)
        out_word = Signal(data.ArrayLayout(unsigned(B), C))
        q_cmd = Signal(isa.ConvCommand)   # the command in the post stage
        q_op = q_cmd.op
        q_pixels = Signal(24)

        # The MAC stage hands a full bank over; the post stage takes it when it is free. A step
        # command is handed over when its walk starts (when nothing else waits): a DW walk
        # writes each accumulator once, in raster order, so its post stage can trail the writes
        # in the same bank instead of waiting for the whole bank.
        post_seq = Signal.like(mac_seq)
        post_early = Signal()             # the pending command was handed over at its start
        early = Signal()                  # the MAC stage's command was handed over early
        in_run = Signal()                 # the MAC stage runs a command (mac_go .. mac_done)
        in_run_d = Signal()
        acc_written = Signal(24)          # its accumulators written so far
        with m.If(mac_go):
            m.d.sync += [in_run.eq(1), acc_written.eq(0)]
        with m.Else():
            with m.If(mac_done):
                m.d.sync += in_run.eq(0)
            with m.If(s1_valid):
                m.d.sync += acc_written.eq(acc_written + 1)
        m.d.sync += in_run_d.eq(in_run)
        early_go = Signal()
        if STEP:
            m.d.comb += early_go.eq(mac_go & op.step & dwm & ~post_pending)
        with m.If(early_go | (mac_done & ~op.acc_keep & ~early)):
            m.d.sync += [post_pending.eq(1), post_cmd.eq(cmd), post_pixels.eq(out_pixels),
                         post_src.eq(mac_bank), post_seq.eq(mac_seq), post_early.eq(early_go)]
        with m.If(early_go):
            m.d.sync += early.eq(1)
        with m.Elif(mac_done):
            m.d.sync += early.eq(0)
        # Before the first pixel, ``pre`` reads the activation row, or for the step lanes the
        # GROUPS rows of the block's channel words (pre_n counts them).
        pre_n = Signal(range(GROUPS + 1))
        cap_n = Signal.like(pre_n)
        with m.If(~post_run & post_pending & ~mac_done):
            m.d.sync += [post_run.eq(1), post_pending.eq(0), q_cmd.eq(post_cmd), q_seq.eq(post_seq),
                         q_pixels.eq(post_pixels), post_bank.eq(post_src), pp.eq(0), pg.eq(0),
                         out_g.eq(0), out_p.eq(0), pre.eq(1), pre_n.eq(0)]
            if STEP:
                m.d.sync += [q_step.eq(post_cmd.op.step), q_early.eq(post_early)]
        with m.Elif(pre):
            with m.If(~q_step | (pre_n + 1 == GROUPS)):
                m.d.sync += pre.eq(0)
            m.d.sync += pre_n.eq(pre_n + 1)
        m.d.sync += [act_cap.eq(pre), cap_n.eq(pre_n)]
        with m.If(act_cap & ~q_step):
            m.d.sync += act_reg.eq(Mux(q_op.act, pbuf.r.data[:actw_layout.size], 0))

        more = post_run & ~pre & (pp != q_pixels)
        # An early step command reads pixel pp once pp + 1 is written (so pp is in the memory),
        # and everything once its MAC stage is a cycle past done.
        readable = Signal()
        m.d.comb += readable.eq(~q_early | ~((in_run | in_run_d) & (mac_seq == q_seq))
                                | (pp + 2 <= acc_written))
        # The step lanes' reader: one pixel's accumulators (their low dw_acc_bits) per issue.
        if STEP:
            s_rd = MemoryReader(m, "s_reader", data.ArrayLayout(signed(cfg.dw_acc_bits), C),
                                depth=4)
            m.submodules.step = sq = StepRequant(cfg, C)
            s_issue = s_rd.issue
            m.d.comb += s_rd.issue.eq(more & q_step & readable & s_rd.can_issue)
        else:
            s_issue = 0
        m.d.comb += p_rd.issue.eq(more & ~q_step & p_rd.can_issue)
        with m.If(p_rd.issue):
            with m.If(pg + 1 == GROUPS):
                m.d.sync += [pg.eq(0), pp.eq(pp + 1)]
            with m.Else():
                m.d.sync += pg.eq(pg + 1)
        with m.If(s_issue):
            m.d.sync += pp.eq(pp + 1)
        m.d.comb += [
            post_rd_addr.eq(pp),
            post_rd_en.eq(p_rd.issue | s_issue),
            pbuf.r.en.eq(1),
            pbuf.r.bank.eq(Mux(elt_prm_read, eop.pbuf_bank, q_op.pbuf_bank)),
            pbuf.r.addr.eq(Mux(elt_prm_read, eop.pbuf_addr >> lane_shift,
                               (q_op.pbuf_addr >> lane_shift)
                               + Mux(pre, Mux(q_step, pre_n, GROUPS), pg))),
        ]
        # Words read this cycle belong to the group issued last cycle.
        rd_g = Signal.like(pg)
        m.d.sync += rd_g.eq(pg)
        acc_now = acc_word(Mux(post_bank, abuf[1].r.data, abuf[0].r.data))
        prm_now = data.ArrayLayout(pbuf_word_layout, LANES)(pbuf.r.data)
        rq_in = Signal(postproc_in_layout(cfg, LANES))
        for n in range(LANES):
            m.d.comb += [
                rq_in.acc[n].eq(acc_now.as_value().word_select(rd_g * LANES + n, cfg.acc_bits)),
                rq_in.word[n].eq(prm_now[n]),
            ]
        m.d.comb += [
            p_rd.buf.w_data.eq(rq_in),
            rq.i.payload.eq(p_rd.buf.r_data),
            rq.i.valid.eq(p_rd.buf.r_valid),
            p_rd.buf.r_ready.eq(rq.i.ready),
            rq.zp_out.eq(q_op.zp_out),
            rq.clamp_min.eq(q_op.clamp_min),
            rq.clamp_max.eq(q_op.clamp_max),
            rq.scheme.eq(q_op.scheme),
            rq.act.eq(act_reg),
            rq.o.ready.eq(1),
        ]
        if STEP:
            # The block's channel words, captured row by row; held for the command.
            step_regs = Signal(data.ArrayLayout(step_params_layout(cfg), C))
            for g in range(GROUPS):
                with m.If(act_cap & q_step & (cap_n == g)):
                    for n in range(LANES):
                        m.d.sync += step_regs[g * LANES + n].eq(
                            pbuf.r.data.word_select(n, PBUF_WORD_BITS)[
                                :step_params_layout(cfg).size])
            for c in range(C):
                m.d.comb += s_rd.buf.w_data[c].eq(acc_now[c][:cfg.dw_acc_bits])
            m.d.comb += [
                sq.i.payload.eq(s_rd.buf.r_data),
                sq.i.valid.eq(s_rd.buf.r_valid),
                s_rd.buf.r_ready.eq(sq.i.ready),
                sq.params.eq(step_regs),
                sq.clamp_min.eq(q_op.clamp_min),
                sq.clamp_max.eq(q_op.clamp_max),
                sq.o.ready.eq(1),
            ]
        # -- ELTWISE: A (IBUF) + B (WBUF), one group of add_lanes codes per cycle -----------------
        # Like the post stage, every group re-reads its pixel's words and keeps its lanes.
        m.submodules.eltwise = eadd = EltwiseAdd(cfg, ADD_LANES)
        lane_codes = eltwise_in_layout(cfg, ADD_LANES)
        e_rd = MemoryReader(m, "elt_reader", data.StructLayout({"a": lane_codes, "b": lane_codes}),
                            depth=4)
        m.d.comb += e_rd.issue.eq(elt_run & (elt_p != eop.pixels) & e_rd.can_issue)
        with m.If(e_rd.issue):
            with m.If(elt_g + 1 == ADD_GROUPS):
                m.d.sync += [elt_g.eq(0), elt_p.eq(elt_p + 1)]
            with m.Else():
                m.d.sync += elt_g.eq(elt_g + 1)
        elt_rd_g = Signal.like(elt_g)     # group of the words on the read ports
        m.d.sync += elt_rd_g.eq(elt_g)
        e_in = Signal(e_rd.buf.w_data.shape())
        for n in range(ADD_LANES):
            for word, flag, lane in ((ibuf.r.data, eop.a_signed, e_in.a[n]),
                                     (wbuf.r.data, eop.b_signed, e_in.b[n])):
                code = word.word_select(elt_rd_g * ADD_LANES + n, B)
                m.d.comb += lane.eq(Mux(flag, code.as_signed(), code.as_unsigned()))
        m.d.comb += [
            e_rd.buf.w_data.eq(e_in),
            eadd.a.payload.eq(e_rd.buf.r_data.a),
            eadd.b.payload.eq(e_rd.buf.r_data.b),
            eadd.a.valid.eq(e_rd.buf.r_valid),
            eadd.b.valid.eq(e_rd.buf.r_valid),
            e_rd.buf.r_ready.eq(eadd.a.ready),
            eadd.params.eq(elt_prm),
            eadd.zp_out.eq(eop.zp_out),
            eadd.clamp_min.eq(eop.clamp_min),
            eadd.clamp_max.eq(eop.clamp_max),
            eadd.o.ready.eq(1),
        ]

        # Assemble the output word group by group (post stage: requant_lanes codes per group,
        # ELTWISE: add_lanes); write it when complete.
        res_valid = Signal()
        step_valid = sq.o.valid if STEP else 0
        m.d.comb += res_valid.eq(rq.o.valid | eadd.o.valid | step_valid)
        n_groups = Mux(elt_run, ADD_GROUPS, Mux(q_step, 1, GROUPS))
        with m.If(res_valid):
            for c in range(C):
                with m.If(elt_run & (out_g == c // ADD_LANES)):
                    m.d.sync += out_word[c].eq(eadd.o.payload[c % ADD_LANES][:B])
                with m.If(~elt_run & ~q_step & (out_g == c // LANES)):
                    m.d.sync += out_word[c].eq(rq.o.payload[c % LANES][:B])
                if STEP:
                    with m.If(~elt_run & q_step):
                        m.d.sync += out_word[c].eq(sq.o.payload[c][:B])
            m.d.sync += out_g.eq(Mux(out_g + 1 == n_groups, 0, out_g + 1))
        m.d.sync += w_now.eq(res_valid & (out_g + 1 == n_groups))
        m.d.comb += [
            obuf.w.en.eq(w_now),
            obuf.w.bank.eq(Mux(elt_run, cmd.obuf_bank, q_cmd.obuf_bank)),
            obuf.w.addr.eq(Mux(elt_run, eop.obuf_addr, q_op.obuf_addr) + out_p),
            obuf.w.data.eq(out_word),
        ]
        with m.If(w_now):
            m.d.sync += out_p.eq(out_p + 1)
            with m.If(~elt_run & (out_p + 1 == q_pixels)):
                m.d.sync += [post_run.eq(0), abuf_full.bit_select(post_bank, 1).eq(0)]
                m.d.comb += fin_post.eq(1)

        # Soft reset / error: every register (FSMs, flags, FIFOs) back to its reset value.
        return ResetInserter({"sync": self.cancel})(m)
