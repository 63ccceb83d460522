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

The MAC stage is built from stage components, each with its own ``wiring`` signature (and each a
component of ``zynqnn.rtl.gen`` of its own, for per-unit timing): :class:`CommandDecode` (the
command register, mode, walk geometry and checks, :mod:`.decode`), :class:`WeightFeeder`
(:mod:`.feeder`), :class:`WindowWalker` (the activation feeder over IBUF, :mod:`.im2col`), the
PE array or, in DW mode, the :class:`DepthwiseFIR` behind it, and :class:`Accumulator` (the two
ABUF banks, :mod:`.accumulate`). The MAC FSM, the hand-over to the post stage, the post and
ELTWISE stages and the output writer are this module's.

Answers (``done`` / ``error``) leave in command order whichever stage a command ends in: each
accepted command takes a sequence slot, stages mark their command's slot finished, and the
oldest finished slot is answered, from a register. ``cancel`` (soft reset, or an error elsewhere)
returns every register to its reset state a cycle later.
"""

from amaranth import (
    ClockDomain,
    ClockSignal,
    Const,
    DomainRenamer,
    Module,
    Mux,
    ResetSignal,
    Signal,
    signed,
    unsigned,
)
from amaranth.lib import data, wiring

from zynqnn.hw import isa
from zynqnn.hw.add import add_params_layout
from zynqnn.hw.config import PBUF_WORD_BITS, HwConfig
from zynqnn.hw.post import act_params_layout, pbuf_word_layout
from zynqnn.hw.step import step_params_layout

from .accumulate import Accumulator
from .buffers import BankedBuffer, MemoryReader
from .common import replica
from .compute import ComputeSignature
from .decode import CommandDecode
from .depthwise import DepthwiseFIR
from .eltwise import EltwiseAdd, eltwise_in_layout
from .feeder import WeightFeeder
from .im2col import WindowWalker
from .lut import EltwiseLUT
from .pe_array import PEArray
from .postproc import PostProc, postproc_in_layout
from .steprequant import StepRequant

#: Cycles from an IBUF read address to its word (the block RAM and its output register).
IBUF_READ_LATENCY = 2

__all__ = ["Engine"]


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
        # IBUF with an output register: its words feed the walker's zero-point subtraction and
        # read FIFO, which do not fit after the block RAM's 2.45 ns clock-to-out.
        m.submodules.ibuf = ibuf = BankedBuffer(cfg.act_buffer_depth, cfg.act_word_bits,
                                                latency=IBUF_READ_LATENCY)
        m.submodules.wbuf = wbuf = BankedBuffer(cfg.weight_buffer_depth, cfg.out_word_bits)
        # PBUF rows hold LANES channels so a requantizer group reads its constants at once; the
        # DMA writes one channel (one granule) at a time.
        pdepth = cfg.param_buffer_depth // LANES
        m.submodules.pbuf = pbuf = BankedBuffer(pdepth, LANES * PBUF_WORD_BITS, PBUF_WORD_BITS)
        m.submodules.obuf = obuf = BankedBuffer(cfg.acc_buffer_depth, cfg.out_word_bits)
        acc_word = data.ArrayLayout(signed(cfg.acc_bits), C)

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
        # The answers leave from registers (a cycle after the slot finishes): in the shell they
        # select the error index and enable the slot registers.
        m.d.sync += [
            self.done.eq(head & ~fin_err.bit_select(seq_out, 1)),
            self.error.eq(head & fin_err.bit_select(seq_out, 1)),
        ]
        m.d.comb += self.error_cause.eq(Mux(self.error, isa.ErrorCause.BAD_COMPUTE,
                                            isa.ErrorCause.NONE))
        fin_clr = Mux(head, Const(1, SLOTS) << seq_out, 0)
        m.d.sync += [fin.eq((fin | fin_set) & ~fin_clr), fin_err.eq(fin_err | fin_err_set)]
        with m.If(head):
            m.d.sync += [seq_out.eq(seq_out + 1),
                         fin_err.bit_select(seq_out, 1).eq(0)]
        m.d.comb += self.array_busy.eq(array.acts.valid & array.acts.ready)

        # -- MAC stage: command decode, feeders, accumulator --------------------------------------
        m.submodules.decode = decode = CommandDecode(cfg)
        cmd = decode.cmd                  # the command in the MAC stage
        op = cmd.op
        mode = decode.mode
        walk = decode.walk
        dw_mode = mode.dw
        # The bypass modes' select as a register (the mode is loaded cycles before the walk
        # starts): it reaches the array's input handshake, whose credit compare follows.
        bypass = Signal()
        m.d.sync += bypass.eq(mode.bypass)
        mac_bank = Signal()               # ABUF bank the MAC stage fills
        abuf_full = Signal(2)             # bank k waits for (or is in) the post stage
        mac_go = Signal()                 # pulse: the MAC FSM accepts a checked command
        mac_done = Signal()               # pulse: the accumulator wrote the last pass
        post_cmd = Signal(isa.ConvCommand)  # the command waiting for the post stage
        post_pending = Signal()
        post_pixels = Signal(24)
        post_src = Signal()                 # its ABUF bank

        post_run = Signal()               # the post stage drains an ABUF bank
        # ELTWISE state (the command register viewed as an EltwiseCommand).
        eop = isa.EltwiseCommand(cmd.as_value()).op
        elt_prm_read = Signal()           # the PBUF read port addresses the add constants
        elt_prm = Signal(add_params_layout(cfg))
        elt_run = Signal()                # streaming pixels; owns the read and OBUF ports
        #                                   (a register: the state ELT_RUN)
        elt_fill = Signal()               # a lookup's table words stream into the LUT lanes
        #                                   (a register: the state ELT_TABLE)
        TW = isa.lut_table_words(C)       # ... that many WBUF words
        fill_n = Signal(range(TW * ADD_GROUPS + 1))   # lane groups written so far
        elt_p = Signal(16)                # pixel being read
        elt_p1 = Signal(16, init=1)       # elt_p + 1, kept with it
        elt_end = Signal()                # every pixel (table word) read: a register
        elt_g = Signal(range(ADD_GROUPS + 1))  # lane group being read
        # Output assembly (shared by the post stage and ELTWISE, which never overlap).
        out_g = Signal(range(max(GROUPS, ADD_GROUPS) + 1))
        out_p = Signal(24)
        out_p1 = Signal(24, init=1)              # out_p + 1, kept with it: the last-pixel compares
        w_now = Signal()

        # The payload reaches the decode ungated: its checks start on the shell's register.
        m.d.comb += decode.payload.eq(self.cmd.payload)
        # The ELTWISE reader's and output counters restart in the first cycle of ELT_TABLE /
        # ELT_RUN (a register, not the FSM's transitions: they would sit behind the state decode;
        # no result is due then: the post stage is idle and table words give none).
        elt_start = Signal()
        m.d.sync += elt_start.eq(0)
        with m.If(elt_start):
            m.d.sync += [elt_p.eq(0), elt_p1.eq(1), elt_g.eq(0), out_g.eq(0), out_p.eq(0),
                         out_p1.eq(1), elt_end.eq(elt_run & (eop.pixels == 0))]
        # The add constants' row is on the PBUF read port in the cycle after ELT_PARAMS: a
        # register of its own enables their ~100 flip-flops (not the FSM's state decode).
        elt_cap = Signal()
        m.d.sync += elt_cap.eq(0)
        with m.If(elt_cap):
            m.d.sync += elt_prm.eq(pbuf.r.data[:add_params_layout(cfg).size])
        # The state IDLE as a register of its own: ``cmd.ready`` reaches the shell's compute
        # slots, and the state's decode would stand in front of it.
        mac_idle = Signal(init=1)
        mac_bank_free = Signal(init=1)    # ~abuf_full[mac_bank], kept as a register (below)
        m.d.comb += self.cmd.ready.eq(mac_idle & mac_bank_free)

        def to_idle():            # the FSM's every way back to IDLE sets the register too
            m.d.sync += mac_idle.eq(1)
            m.next = "IDLE"

        with m.FSM(name="mac"):
            with m.State("IDLE"):
                m.d.comb += decode.load.eq(self.cmd.valid & self.cmd.ready)
                with m.If(self.cmd.valid & self.cmd.ready):
                    m.d.sync += [mac_seq.eq(seq_in), seq_in.eq(seq_in + 1), mac_idle.eq(0)]
                    header = isa.ConvCommand(self.cmd.payload.as_value())
                    with m.If(header.opcode == isa.Opcode.ELTWISE):
                        m.next = "ELT_CHECK"
                    with m.Else():
                        m.next = "DECODE"
            # Sizing (two cycles) and the checks.
            with m.State("DECODE"):
                with m.If(decode.checked & decode.bad):
                    m.next = "BAD"
                with m.Elif(decode.checked):
                    m.d.comb += mac_go.eq(1)
                    m.next = "RUN"
            # A refused command is answered a cycle after its check (the check's compares do
            # not reach the answer slots in the same cycle).
            with m.State("BAD"):
                m.d.comb += [fin_mac.eq(1), fin_mac_err.eq(1)]
                to_idle()
            with m.State("RUN"):
                with m.If(mac_done):
                    # A partial command leaves its sums in the bank for the next part.
                    with m.If(~op.acc_keep):
                        m.d.sync += mac_bank.eq(~mac_bank)
                    to_idle()

            # ELTWISE: check, wait for the post stage to go idle, read the constants row, stream.
            with m.State("ELT_CHECK"):
                with m.If(decode.elt_bad):
                    m.d.comb += [fin_mac.eq(1), fin_mac_err.eq(1)]
                    to_idle()
                with m.Elif(~post_run & ~post_pending):
                    m.d.sync += fill_n.eq(0)
                    with m.If(eop.lut):
                        m.d.sync += [elt_fill.eq(1), elt_start.eq(1)]
                        m.next = "ELT_TABLE"
                    with m.Else():
                        m.next = "ELT_PARAMS"
            # A lookup: the table's WBUF words through the lane groups into the LUT lanes.
            with m.State("ELT_TABLE"):
                with m.If(fill_n == TW * ADD_GROUPS):
                    m.d.sync += [elt_run.eq(1), elt_start.eq(1), elt_fill.eq(0)]
                    m.next = "ELT_RUN"
            with m.State("ELT_PARAMS"):
                m.d.comb += elt_prm_read.eq(1)
                m.d.sync += elt_cap.eq(1)
                m.next = "ELT_CAPTURE"
            with m.State("ELT_CAPTURE"):
                m.d.sync += [elt_run.eq(1), elt_start.eq(1)]
                m.next = "ELT_RUN"
            with m.State("ELT_RUN"):
                with m.If(w_now & (out_p1 == eop.pixels)):
                    m.d.comb += fin_mac.eq(1)
                    m.d.sync += elt_run.eq(0)
                    to_idle()

        # The start pulse a cycle after the FSM's decision (which follows the decode's checks,
        # a compare behind adders), one register copy per stage: each copy drives one stage's
        # initial loads (the walker's alone reach ~160 registers).
        go_feeder, go_walker, go_fir, go_acc, go_ctl = (
            replica(m, mac_go, f"mac_go_{s}") for s in ("feeder", "walker", "fir", "acc", "ctl"))
        # Weight tiles: passes x rows WBUF words in order.
        m.submodules.weight_feeder = weight_feeder = WeightFeeder(cfg)
        m.d.comb += [
            weight_feeder.start.eq(go_feeder),
            weight_feeder.base.eq(op.wbuf_addr),
            weight_feeder.count.eq(Mux(mode.bypass, 0, decode.passes * R)),
            weight_feeder.data.eq(wbuf.r.data),
            wbuf.r.en.eq(1),
            wbuf.r.bank.eq(Mux(elt_run | elt_fill, eop.wbuf_bank, op.wbuf_bank)),
            wbuf.r.addr.eq(Mux(elt_run | elt_fill, eop.wbuf_addr + elt_p, weight_feeder.addr)),
        ]
        wiring.connect(m, weight_feeder.weights, array.weights)

        # Window vectors from IBUF: to the array, or in the bypass modes to the accumulator.
        m.submodules.walker = walker = WindowWalker(cfg, read_latency=ibuf.latency)
        m.d.comb += [
            walker.start.eq(go_walker),
            walker.op.eq(op),
            walker.mode.eq(mode),
            walker.walk.eq(walk),
            walker.data.eq(ibuf.r.data),
            ibuf.r.en.eq(1),
            ibuf.r.bank.eq(Mux(elt_run, eop.ibuf_bank, op.ibuf_bank)),
            ibuf.r.addr.eq(Mux(elt_run, eop.ibuf_addr + elt_p, walker.addr)),
            array.acts.payload.eq(walker.acts.payload),
            array.acts.valid.eq(walker.acts.valid & ~bypass),
            walker.acts.ready.eq(Mux(bypass, 1, array.acts.ready)),
        ]

        # The accumulator takes the array's sums, the FIR's window sums (DW), or in the bypass
        # modes the window vectors.
        m.submodules.accumulator = acc = Accumulator(cfg)
        m.d.comb += array.sums.ready.eq(1)
        bypass_sums = Signal(acc_word)
        if R == C:
            for c in range(C):
                m.d.comb += bypass_sums[c].eq(walker.acts.payload.data[c])
        if cfg.dw_kernel:
            m.d.comb += [
                array.dw.eq(dw_mode),
                fir.i_products.eq(array.dw_products),
                fir.i_valid.eq(array.dw_valid),
                fir.start.eq(go_fir),
                fir.width.eq(walk.out_w),
                fir.skip_top.eq(walk.skip_top),
                fir.skip_left.eq(walk.skip_left),
                fir.stride2.eq(op.stride == 2),
                fir.pairs.eq(mode.dw_pairs),
            ]
            mac_valid = Mux(dw_mode, fir.o_valid, array.sums.valid)
            mac_sums = Mux(dw_mode, fir.o_sums, array.sums.payload)
        else:
            mac_valid = array.sums.valid
            mac_sums = array.sums.payload
        m.d.comb += [
            acc.start.eq(go_acc),
            acc.op.eq(op),
            acc.mode.eq(mode),
            acc.passes.eq(decode.passes),
            acc.pixels.eq(decode.pixels),
            acc.sums.valid.eq(Mux(bypass, walker.acts.valid, mac_valid)),
            acc.sums.payload.eq(Mux(bypass, bypass_sums, mac_sums)),
            mac_done.eq(acc.done),
        ]

        post_bank = Signal()
        post_rd_addr = Signal(24)
        post_rd_en = Signal()
        m.d.comb += [
            acc.bank.eq(mac_bank),
            acc.drain.eq(post_run),
            acc.drain_bank.eq(post_bank),
            acc.drain_addr.eq(post_rd_addr),
        ]

        with m.If(mac_done & op.acc_keep):
            m.d.comb += fin_mac.eq(1)
        with m.If(mac_done & ~op.acc_keep):
            m.d.sync += abuf_full.bit_select(mac_bank, 1).eq(1)
        # ``mac_bank_free``: the next cycle's ~abuf_full[mac_bank], from the only writers of the
        # two (a full command hands its bank over and moves to the other; the post stage frees
        # its bank when it ends), so that the accept reaches the decode's loads from registers.
        bank_next = Mux(mac_done & ~op.acc_keep, ~mac_bank, mac_bank)
        m.d.sync += mac_bank_free.eq(
            ~abuf_full.bit_select(bank_next, 1) | (fin_post & (post_bank == bank_next)))

        # -- post stage ----------------------------------------------------------------------------
        m.submodules.post = rq = PostProc(cfg)
        pp = Signal(24)                   # pixel being read
        pp2 = Signal(24, init=2)                 # pp + 2, kept with pp (no adder before a compare)
        pg = Signal(range(GROUPS + 1))    # lane group being read
        STEP = bool(cfg.step_lanes)
        q_step = Signal()                 # the command uses the step lanes (one pixel a cycle)
        q_early = Signal()                # ... and was handed over at its start
        # PostProc takes an input whenever its own output buffer has room (o.ready is tied
        # high), so a short read FIFO keeps one group per cycle flowing.
        p_rd = MemoryReader(m, "p_reader", postproc_in_layout(cfg, LANES))
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
        in_run = Signal()                 # the MAC stage runs a command (go .. mac_done)
        in_run_d = Signal()
        acc_written = Signal(24)          # its accumulators written so far
        with m.If(go_ctl):
            m.d.sync += [in_run.eq(1), acc_written.eq(0)]
        with m.Else():
            with m.If(mac_done):
                m.d.sync += in_run.eq(0)
            with m.If(acc.written):
                m.d.sync += acc_written.eq(acc_written + 1)
        m.d.sync += in_run_d.eq(in_run)
        early_go = Signal()
        if STEP:
            m.d.comb += early_go.eq(go_ctl & op.step & dw_mode & ~post_pending)
        # The post stage takes a pending command in the cycle after it sees one (``post_take``, a
        # register: the take loads ~130 registers, and the accumulator's last write would stand
        # in front of them). A command handed over in the cycle of a take stays pending (the
        # hand-over below comes later and wins).
        post_take = Signal()
        pre_n = Signal(range(GROUPS + 1))
        cap_n = Signal.like(pre_n)
        pp1 = Signal(24, init=1)          # pp + 1, kept with pp: the last-pixel flag
        pp_end = Signal()                 # pp == q_pixels: every pixel read
        m.d.sync += post_take.eq(~post_run & post_pending & ~post_take)
        with m.If(post_take):
            m.d.sync += [post_run.eq(1), post_pending.eq(0), q_cmd.eq(post_cmd), q_seq.eq(post_seq),
                         q_pixels.eq(post_pixels), post_bank.eq(post_src), pp.eq(0), pp1.eq(1),
                         pp2.eq(2), pp_end.eq(post_pixels == 0), pg.eq(0),
                         out_g.eq(0), out_p.eq(0), out_p1.eq(1), pre.eq(1), pre_n.eq(0)]
            if STEP:
                m.d.sync += [q_step.eq(post_cmd.op.step), q_early.eq(post_early)]
        with m.Elif(pre):
            with m.If(~q_step | (pre_n + 1 == GROUPS)):
                m.d.sync += pre.eq(0)
            m.d.sync += pre_n.eq(pre_n + 1)
        with m.If(early_go | (mac_done & ~op.acc_keep & ~early)):
            m.d.sync += [post_pending.eq(1), post_cmd.eq(cmd), post_pixels.eq(decode.out_pixels),
                         post_src.eq(mac_bank), post_seq.eq(mac_seq), post_early.eq(early_go)]
        with m.If(early_go):
            m.d.sync += early.eq(1)
        with m.Elif(mac_done):
            m.d.sync += early.eq(0)
        # Before the first pixel, ``pre`` reads the activation row, or for the step lanes the
        # GROUPS rows of the block's channel words (pre_n counts them; see the take above).
        m.d.sync += [act_cap.eq(pre), cap_n.eq(pre_n)]
        with m.If(act_cap & ~q_step):
            m.d.sync += act_reg.eq(Mux(q_op.act, pbuf.r.data[:actw_layout.size], 0))

        more = post_run & ~pre & ~pp_end
        # The readers' mode flag, a copy (a cycle late: ``pre`` holds the reads back for at
        # least a cycle after the take).
        q_step_rd = replica(m, q_step, "q_step_rd") if STEP else Const(0, 1)
        # An early step command reads pixel pp once pp + 1 is written (so pp is in the memory),
        # and everything once its MAC stage is a cycle past done.
        readable = Signal()
        m.d.comb += readable.eq(~q_early | ~((in_run | in_run_d) & (mac_seq == q_seq))
                                | (pp2 <= acc_written))
        # The step lanes' reader: one pixel's accumulators (their low dw_acc_bits) per issue.
        if STEP:
            s_rd = MemoryReader(m, "s_reader", data.ArrayLayout(signed(cfg.dw_acc_bits), C))
            m.submodules.step = sq = StepRequant(cfg, C)
            s_issue = s_rd.issue
            m.d.comb += s_rd.issue.eq(more & q_step_rd & readable & s_rd.can_issue)
        else:
            s_issue = 0
        m.d.comb += p_rd.issue.eq(more & ~q_step_rd & p_rd.can_issue)
        with m.If(p_rd.issue):
            with m.If(pg + 1 == GROUPS):
                m.d.sync += [pg.eq(0), pp.eq(pp + 1), pp1.eq(pp1 + 1), pp2.eq(pp2 + 1),
                             pp_end.eq(pp1 == q_pixels)]
            with m.Else():
                m.d.sync += pg.eq(pg + 1)
        with m.If(s_issue):
            m.d.sync += [pp.eq(pp + 1), pp1.eq(pp1 + 1), pp2.eq(pp2 + 1),
                         pp_end.eq(pp1 == q_pixels)]
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
        acc_now = acc.drain_data
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
        # Like the post stage, every group re-reads its pixel's words and keeps its lanes. A
        # lookup (eop.lut) first streams its table words (B) into the LUT lanes, then A.
        m.submodules.eltwise = eadd = EltwiseAdd(cfg, ADD_LANES)
        # 16-bit builds have no lookup lanes (decode refuses every lookup there)
        LUT = cfg.operand_bits == 8
        if LUT:
            m.submodules.lut = elut = EltwiseLUT(cfg, ADD_LANES)
        lane_codes = eltwise_in_layout(cfg, ADD_LANES)
        # A from IBUF (its output register), B from WBUF a register later to match.
        e_rd = MemoryReader(m, "elt_reader", data.StructLayout({"a": lane_codes, "b": lane_codes}),
                            latency=ibuf.latency)
        m.d.comb += e_rd.issue.eq((elt_run | elt_fill) & ~elt_end & ~elt_start & e_rd.can_issue)
        with m.If(e_rd.issue):
            with m.If(elt_g + 1 == ADD_GROUPS):
                m.d.sync += [elt_g.eq(0), elt_p.eq(elt_p + 1), elt_p1.eq(elt_p1 + 1),
                             elt_end.eq(elt_p1 == Mux(elt_run, eop.pixels, TW))]
            with m.Else():
                m.d.sync += elt_g.eq(elt_g + 1)
        elt_rd_g = elt_g                  # group of the words on the read ports
        wbuf_word = wbuf.r.data
        for i in range(ibuf.latency):
            elt_rd_g_d = Signal.like(elt_g, name=f"elt_rd_g_d{i + 1}")
            m.d.sync += elt_rd_g_d.eq(elt_rd_g)
            elt_rd_g = elt_rd_g_d
        for _ in range(ibuf.latency - wbuf.latency):
            wbuf_word_d = Signal.like(wbuf.r.data, name="elt_wbuf_word_d", reset_less=True)
            m.d.sync += wbuf_word_d.eq(wbuf_word)
            wbuf_word = wbuf_word_d
        e_in = Signal(e_rd.buf.w_data.shape())
        for n in range(ADD_LANES):
            for word, flag, lane in ((ibuf.r.data, eop.a_signed, e_in.a[n]),
                                     (wbuf_word, eop.b_signed, e_in.b[n])):
                code = word.word_select(elt_rd_g * ADD_LANES + n, B)
                m.d.comb += lane.eq(Mux(flag, code.as_signed(), code.as_unsigned()))
        m.d.comb += [
            e_rd.buf.w_data.eq(e_in),
            eadd.a.payload.eq(e_rd.buf.r_data.a),
            eadd.b.payload.eq(e_rd.buf.r_data.b),
            eadd.a.valid.eq(e_rd.buf.r_valid & ~eop.lut),
            eadd.b.valid.eq(e_rd.buf.r_valid & ~eop.lut),
            e_rd.buf.r_ready.eq(Mux(eop.lut, 1, eadd.a.ready)),
            eadd.params.eq(elt_prm),
            eadd.zp_out.eq(eop.zp_out),
            eadd.clamp_min.eq(eop.clamp_min),
            eadd.clamp_max.eq(eop.clamp_max),
            eadd.o.ready.eq(1),
        ]

        # Assemble the output word group by group (post stage: requant_lanes codes per group,
        # ELTWISE: add_lanes); write it when complete.
        elt_o = Signal(eadd.o.payload.shape())   # the element-wise lanes' result
        if LUT:
            m.d.comb += [
                elut.i.payload.eq(e_rd.buf.r_data),
                elut.i.valid.eq(e_rd.buf.r_valid & eop.lut),
                elut.fill.eq(elt_fill),
                elut.o.ready.eq(1),
                elt_o.eq(Mux(eop.lut, elut.o.payload, eadd.o.payload)),
            ]
            with m.If(elt_fill & elut.i.valid):
                m.d.sync += fill_n.eq(fill_n + 1)
        else:
            m.d.comb += elt_o.eq(eadd.o.payload)
        res_valid = Signal()
        step_valid = sq.o.valid if STEP else 0
        lut_valid = elut.o.valid if LUT else 0
        m.d.comb += res_valid.eq(rq.o.valid | eadd.o.valid | lut_valid | step_valid)
        n_groups = Mux(elt_run, ADD_GROUPS, Mux(q_step, 1, GROUPS))
        # The output word's enables from copies of the mode flags (a cycle late: both are set
        # long before the first result), not from the flags that also steer the readers.
        elt_run_w = replica(m, elt_run, "elt_run_w")
        q_step_w = replica(m, q_step, "q_step_w") if STEP else Const(0, 1)
        with m.If(res_valid):
            for c in range(C):
                with m.If(elt_run_w & (out_g == c // ADD_LANES)):
                    m.d.sync += out_word[c].eq(elt_o[c % ADD_LANES][:B])
                with m.If(~elt_run_w & ~q_step_w & (out_g == c // LANES)):
                    m.d.sync += out_word[c].eq(rq.o.payload[c % LANES][:B])
                if STEP:
                    with m.If(~elt_run_w & q_step_w):
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
            m.d.sync += [out_p.eq(out_p + 1), out_p1.eq(out_p1 + 1)]
            with m.If(~elt_run & (out_p1 == q_pixels)):
                m.d.sync += [post_run.eq(0), abuf_full.bit_select(post_bank, 1).eq(0)]
                m.d.comb += fin_post.eq(1)

        # Soft reset / error: every register (FSMs, flags, FIFOs) back to its reset value, a
        # cycle after ``cancel``. The engine runs in a clock domain of its own on the same
        # clock, whose reset is one register (``cancel`` or the outer reset): it drives the
        # reset pins of ~35 k flip-flops directly, with no gate in front (the outer reset and
        # an inserted one would meet in a LUT ahead of that net).
        top = Module()
        top.domains.engine = cd = ClockDomain("engine", local=True)
        rst = Signal(init=1, reset_less=True, name="cancel_q")
        top.d.sync += rst.eq(self.cancel | ResetSignal("sync"))
        top.d.comb += [cd.clk.eq(ClockSignal("sync")), cd.rst.eq(rst)]
        top.submodules.core = DomainRenamer({"sync": "engine"})(m)
        return top
