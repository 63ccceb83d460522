"""The command processor: fetch, decode, dispatch and the load / store units.

:class:`CommandProcessor` runs a program of :mod:`zynqnn.hw.isa` commands (``CMD_COUNT`` commands
of :data:`~zynqnn.hw.isa.COMMAND_BITS` bits from ``CMD_BASE``):

* the **fetcher** reads the commands with the DMA (up to :data:`FETCH_BEATS` beats read ahead,
  sharing the read port with the load unit through a round-robin arbiter);
* the **dispatcher** takes them in order, checks each (see below) and puts it into one of three
  in-order queues: load, compute, store; ``END`` waits until all three units are idle;
* the **load unit** waits until its bank is empty, moves the 2-D transfer from DDR into the
  buffer bank (engine's write port) and marks the bank full;
* the **compute unit** waits until the command's ``needs`` banks are full and its output bank
  empty, hands the command to the engine, and when the engine is done clears the ``releases``
  banks and marks the output bank full;
* the **store unit** waits until its OBUF bank is full, moves it to DDR, waits for every write
  response and clears the bank.

Checks, in this order, stop the program with the error cause and the command's index (the
interrupt follows), with the same causes and indices as the command-level model
``zynqnn.machine``: an empty program (``EMPTY_PROGRAM``, index 0), a misaligned ``CMD_BASE``
(``BAD_ALIGN``, index 0); per command: the command itself outside the window (``DDR_WINDOW``;
only the commands inside are fetched), unknown opcode (``BAD_OPCODE``), ``LOAD`` into OBUF or
``STORE`` from another buffer (``BAD_BUFFER``), DDR address (or, for more than one line, stride)
not a multiple of the beat (``BAD_ALIGN``), a ``LOAD`` of zero lines or zero words
(``EMPTY_LOAD``: it would mark a bank full with nothing loaded), ``sram_addr + lines *
line_words`` beyond the buffer's depth (``SRAM_RANGE``), a transfer of one or more lines not
inside ``[WINDOW_BASE, WINDOW_LIMIT)`` (``DDR_WINDOW``; the whole beats the DMA moves count), a
compute command without an engine (``BAD_COMPUTE``); then, for every command but ``END``, its
successor: none (the last command is not ``END``: ``EMPTY_PROGRAM``, index ``CMD_COUNT - 1``) or
outside the window (``DDR_WINDOW``, the successor's index). A command refused for its successor
is never queued (nothing of it moves), like one refused for itself. Bus errors
(``AXI_SLVERR``, ``AXI_DECERR``) carry the index of the command whose transfer (or fetch) got
them; an engine error the compute command's index.

The watchdog ends the run with ``WATCHDOG`` when a bus wait (an AXI valid without ready, or data
or a response awaited) lasts longer than the bound, or when the running accelerator makes no
progress at all for that long (no handshake, no dispatch, no unit starting or finishing, no
engine answer: a program whose flags can never be satisfied, or an engine stuck busy; the
engine's ``array_busy`` is not progress). The index is the oldest command in a unit.

An error, a soft reset or the end of a program resets everything but the AXI ports (``flush``,
registered: one cycle after its cause, and the engine's ``cancel``); the ports then complete
whatever the bus accepted and report idle. ``busy`` stays high until they have.
"""

from amaranth import Cat, Module, Mux, ResetInserter, Signal, unsigned
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

from zynqnn.hw import isa, platform
from zynqnn.hw.config import HwConfig
from zynqnn.hw.geometry import (
    COMPUTE_OUTSTANDING,
    FETCH_BEATS,
    MAX_BURST,
    QUEUE_DEPTH,
    READ_OUTSTANDING,
    WRITE_OUTSTANDING,
    buffer_depth,
    buffer_word_bits,
)
from zynqnn.hw.regs import CMD_INDEX_BITS, watchdog_default_cycles

from .axi import AxiSignature, Resp
from .common import replica
from .compute import BufferReadSignature, BufferWriteSignature, ComputeSignature
from .dma import (
    AxiReadPort,
    AxiWritePort,
    BurstGen,
    Packer,
    ReadArbiter,
    Unpacker,
    burst_layout,
    burst_len,
    rbeat_layout,
    wbeat_layout,
)

__all__ = ["CommandProcessor"]


IDX = CMD_INDEX_BITS
LS_BUFFERS = (isa.Buffer.IBUF, isa.Buffer.WBUF, isa.Buffer.PBUF)


#: A LOAD / STORE after checking, as the load and store units take it.
ls_entry = data.StructLayout({
    "buffer": isa.Buffer,
    "bank": unsigned(1),
    "sram_addr": unsigned(16),
    "line_words": unsigned(16),
    "lines": unsigned(16),
    "ddr_addr": unsigned(32),
    "stride": unsigned(32),
    "line_beats": unsigned(24),
    "index": unsigned(IDX),
})

compute_entry = data.StructLayout({
    "cmd": unsigned(isa.COMMAND_BITS),
    "index": unsigned(IDX),
})


def _flag(buffer, bank):
    """Bit of (buffer, bank) in the 8 full flags; equals zynqnn.hw.isa.bank_bit() for the
    buffers that have one."""
    return buffer * isa.BANKS + bank


def _resp_cause(resp):
    return Mux(resp == Resp.DECERR, isa.ErrorCause.AXI_DECERR, isa.ErrorCause.AXI_SLVERR)


class _Queue(wiring.Component):
    """An in-order queue of ``layout`` entries (a buffered FIFO as streams)."""

    def __init__(self, layout, depth):
        self._layout, self._depth = layout, depth
        super().__init__({
            "w": In(stream.Signature(layout)),
            "r": Out(stream.Signature(layout)),
            "empty": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.fifo = f = fifo.SyncFIFOBuffered(width=self._layout.size, depth=self._depth)
        m.d.comb += [
            f.w_data.eq(self.w.payload),
            f.w_en.eq(self.w.valid),
            self.w.ready.eq(f.w_rdy),
            self.r.payload.eq(f.r_data),
            self.r.valid.eq(f.r_rdy),
            f.r_en.eq(self.r.ready),
            self.empty.eq(f.level == 0),
        ]
        return m


class Fetcher(wiring.Component):
    """Reads ``count`` commands from ``base`` and presents them in order with their index.

    Read data is always accepted: a burst is requested only when the beat queue has room for it
    and for every beat still in flight.

    Members
    -------
    start: In(1)
    base, count: In
    req: Out(stream.Signature(burst_layout))
        Read bursts for the DMA's read port.
    beats: In(stream.Signature(rbeat_layout))
        Their data, in order.
    cmd: Out(stream.Signature(compute_entry))
        One command (``cmd``, ``isa.COMMAND_BITS`` bits) with its ``index`` in the stream.
    error, error_cause, error_index: Out
        A read error (AXI response) while fetching the command at ``error_index``.
    """

    def __init__(self, cfg: HwConfig):
        self._cfg = cfg
        dw = cfg.axi_data_bits
        super().__init__({
            "start": In(1),
            "base": In(32),
            "count": In(IDX),
            "req": Out(stream.Signature(burst_layout(cfg.axi_addr_bits))),
            "beats": In(stream.Signature(rbeat_layout(dw))),
            "cmd": Out(stream.Signature(compute_entry)),
            "error": Out(1),
            "error_cause": Out(isa.ErrorCause),
            "error_index": Out(IDX),
        })

    def elaborate(self, platform):
        m = Module()
        dw = self._cfg.axi_data_bits
        bb = dw // 8
        bpc = isa.COMMAND_BITS // dw
        m.submodules.beat_q = q = fifo.SyncFIFOBuffered(width=dw, depth=FETCH_BEATS)

        addr = Signal(32)
        beats_left = Signal(IDX + exact_log2(bpc))
        with m.If(self.start):
            m.d.sync += [addr.eq(self.base), beats_left.eq(self.count * bpc)]

        # The next burst is planned a cycle after addr / beats_left change (`n_q`, `more_q`),
        # and offered a cycle after that: `req.valid` is a register, and no compare of the
        # counters reaches the arbiter or the port (two idle cycles per fetch burst, which the
        # 16-beat data of a burst hides).
        n, n_minus_1, _ = burst_len(m, addr, beats_left, bb)
        n_q = Signal(range(MAX_BURST + 1))
        len_q = Signal(4)        # n_q - 1
        more_q = Signal()
        stale = Signal(init=1)   # n_q and more_q do not yet describe addr and beats_left
        req_valid = Signal()
        # Beats the queue can still take: FETCH_BEATS - (queued + in flight).
        credits = Signal(range(FETCH_BEATS + 1), init=FETCH_BEATS)
        m.d.comb += [
            self.req.payload.addr.eq(addr),
            self.req.payload.len.eq(len_q),
            self.req.valid.eq(req_valid),
        ]
        req_go = Signal()
        beat_go = Signal()
        pop = Signal()
        m.d.comb += [
            req_go.eq(self.req.valid & self.req.ready),
            beat_go.eq(self.beats.valid & self.beats.ready),
            # Always ready: a burst is requested only with room for all of its beats (credits).
            self.beats.ready.eq(1),
        ]
        # The beats enter the queue from a register: the read data's routing (its tag) is not
        # in series with the queue's own logic.
        m.d.sync += [q.w_en.eq(beat_go), q.w_data.eq(self.beats.payload.data)]
        # A burst's beats leave the credits a cycle after its request (`n_q` still holds its
        # length then), from registers.
        took = Signal()
        m.d.sync += [
            n_q.eq(n),
            len_q.eq(n_minus_1),
            more_q.eq(beats_left != 0),
            stale.eq(self.start | req_go),
            took.eq(req_go),
            # Credits only grow while no burst is requested: last cycle's check is safe.
            req_valid.eq(~self.start & ~req_go & ~stale & ~took & more_q & (credits >= n_q)),
            credits.eq(credits - Mux(took, n_q, 0) + pop),
        ]
        with m.If(req_go):
            m.d.sync += [addr.eq(addr + (n_q << exact_log2(bb))),
                         beats_left.eq(beats_left - n_q)]

        rx_beats = Signal(IDX + exact_log2(bpc))
        with m.If(beat_go):
            m.d.sync += rx_beats.eq(rx_beats + 1)
        m.d.comb += [
            self.error.eq(beat_go & (self.beats.payload.resp != Resp.OKAY)),
            self.error_cause.eq(_resp_cause(self.beats.payload.resp)),
            self.error_index.eq(rx_beats >> exact_log2(bpc)),
        ]

        # Assemble commands from beats, beat 0 in the low bits.
        asm = Signal(isa.COMMAND_BITS)
        asm_n = Signal(range(bpc))
        asm_full = Signal()
        asm_index = Signal(IDX)
        m.d.comb += [
            pop.eq(q.r_rdy & ~asm_full),
            q.r_en.eq(pop),
            self.cmd.valid.eq(asm_full),
            self.cmd.payload.cmd.eq(asm),
            self.cmd.payload.index.eq(asm_index),
        ]
        with m.If(pop):
            m.d.sync += [
                asm.eq(Cat(asm[dw:], q.r_data)),
                asm_n.eq(Mux(asm_n == bpc - 1, 0, asm_n + 1)),
            ]
            with m.If(asm_n == bpc - 1):
                m.d.sync += asm_full.eq(1)
        with m.If(self.cmd.valid & self.cmd.ready):
            m.d.sync += [asm_full.eq(0), asm_index.eq(asm_index + 1)]
        return m


def _ls_members(cfg: HwConfig):
    return {
        "q": In(stream.Signature(ls_entry)),
        "full": In(2 * 4),
        "busy": Out(1),
        "index": Out(IDX),
        "progress": Out(1),
    }


class LoadUnit(wiring.Component):
    """Executes checked LOADs in order: wait for an empty bank, DDR -> buffer, mark it full.

    Members
    -------
    q: In(stream.Signature(ls_entry))
    full: In(8)
        The bank flags; ``set_full`` sets flags.
    rd_req, rd_beats:
        To the read arbiter.
    ibuf_w, wbuf_w, pbuf_w: Out(BufferWriteSignature)
    busy, index, progress: Out
    error, error_cause: Out
    """

    def __init__(self, cfg: HwConfig):
        self._cfg = cfg
        members = _ls_members(cfg)
        members.update({
            "set_full": Out(8),
            "rd_req": Out(stream.Signature(burst_layout(cfg.axi_addr_bits))),
            "rd_beats": In(stream.Signature(rbeat_layout(cfg.axi_data_bits))),
            "error": Out(1),
            "error_cause": Out(isa.ErrorCause),
        })
        for b in LS_BUFFERS:
            members[f"{b.name.lower()}_w"] = Out(BufferWriteSignature(
                buffer_word_bits(cfg, b), buffer_depth(cfg, b)))
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        dw = cfg.axi_data_bits
        m.submodules.bursts = bg = BurstGen(dw // 8, cfg.axi_addr_bits)
        wiring.connect(m, bg.bursts, wiring.flipped(self.rd_req))
        unps = {}
        for b in LS_BUFFERS:
            unp = Unpacker(buffer_word_bits(cfg, b), dw, buffer_depth(cfg, b))
            m.submodules[f"unpack_{b.name.lower()}"] = unps[b] = unp
            wiring.connect(m, unp.w, wiring.flipped(getattr(self, f"{b.name.lower()}_w")))

        cur = Signal(ls_entry)
        m.d.comb += self.index.eq(cur.index)
        # The buffer of `cur`, one-hot and registered with it: it routes the read beats.
        sel = {b: Signal(name=f"sel_{b.name.lower()}") for b in LS_BUFFERS}
        for b in LS_BUFFERS:
            unp = unps[b]
            m.d.comb += [
                unp.bank.eq(cur.bank),
                unp.sram_addr.eq(cur.sram_addr),
                unp.line_words.eq(cur.line_words),
                unp.lines.eq(cur.lines),
                unp.beats.payload.data.eq(self.rd_beats.payload.data),
                unp.beats.payload.resp.eq(self.rd_beats.payload.resp),
                unp.beats.valid.eq(self.rd_beats.valid & sel[b]),
            ]
            with m.If(sel[b]):
                m.d.comb += [
                    self.rd_beats.ready.eq(unp.beats.ready),
                    self.error.eq(unp.error),
                    self.error_cause.eq(_resp_cause(unp.error_resp)),
                ]
        unp_busy = Signal()
        m.d.comb += unp_busy.eq(Cat(u.busy for u in unps.values()).any())
        m.d.comb += [
            bg.req.payload.addr.eq(cur.ddr_addr),
            bg.req.payload.stride.eq(cur.stride),
            bg.req.payload.lines.eq(cur.lines),
            bg.req.payload.line_beats.eq(cur.line_beats),
        ]
        flag = Signal(3)
        m.d.comb += flag.eq(Cat(cur.bank, cur.buffer))
        # The bank's flag, registered (only this unit sets it: a free bank stays free).
        bank_free = Signal()
        m.d.sync += bank_free.eq(~self.full.bit_select(flag, 1))

        with m.FSM(name="load"):
            with m.State("IDLE"):
                m.d.comb += self.q.ready.eq(1)
                with m.If(self.q.valid):
                    m.d.sync += [sel[b].eq(self.q.payload.buffer == b) for b in LS_BUFFERS]
                    m.d.sync += [
                        cur.eq(self.q.payload),
                        bank_free.eq(~self.full.bit_select(
                            Cat(self.q.payload.bank, self.q.payload.buffer), 1)),
                    ]
                    m.d.comb += self.progress.eq(1)
                    m.next = "WAIT_BANK"
            with m.State("WAIT_BANK"):
                m.d.comb += self.busy.eq(1)
                with m.If(bank_free):
                    m.d.comb += [bg.req.valid.eq(1), self.progress.eq(1)]
                    for b in LS_BUFFERS:
                        m.d.comb += unps[b].start.eq(sel[b])
                    m.next = "RUN"
            with m.State("RUN"):
                m.d.comb += self.busy.eq(1)
                with m.If(bg.idle & ~unp_busy):
                    m.next = "SETTLE"
            with m.State("SETTLE"):
                # The last word's write (registered) lands in this cycle; the flag follows.
                m.d.comb += [
                    self.busy.eq(1),
                    self.set_full.bit_select(flag, 1).eq(1),
                    self.progress.eq(1),
                ]
                m.next = "IDLE"
        return m


class StoreUnit(wiring.Component):
    """Executes checked STOREs in order: wait for a full OBUF bank, buffer -> DDR, wait for the
    write responses, clear the bank.

    Members
    -------
    q: In(stream.Signature(ls_entry))
    full: In(8)
        The bank flags; ``clear_full`` clears flags.
    wr_req, wr_data: Out
        To the write port; ``wr_idle`` is its ``idle``.
    obuf_r: Out(BufferReadSignature)
    busy, index, progress: Out
    """

    def __init__(self, cfg: HwConfig):
        self._cfg = cfg
        members = _ls_members(cfg)
        members.update({
            "clear_full": Out(8),
            "wr_req": Out(stream.Signature(burst_layout(cfg.axi_addr_bits))),
            "wr_data": Out(stream.Signature(wbeat_layout(cfg.axi_data_bits))),
            "wr_idle": In(1),
            "obuf_r": Out(BufferReadSignature(buffer_word_bits(cfg, isa.Buffer.OBUF),
                                              buffer_depth(cfg, isa.Buffer.OBUF))),
        })
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        dw = cfg.axi_data_bits
        m.submodules.bursts = bg = BurstGen(dw // 8, cfg.axi_addr_bits)
        m.submodules.pack = pk = Packer(buffer_word_bits(cfg, isa.Buffer.OBUF), dw,
                                        buffer_depth(cfg, isa.Buffer.OBUF))
        wiring.connect(m, bg.bursts, wiring.flipped(self.wr_req))
        wiring.connect(m, pk.beats, wiring.flipped(self.wr_data))
        wiring.connect(m, pk.r, wiring.flipped(self.obuf_r))

        cur = Signal(ls_entry)
        m.d.comb += [
            self.index.eq(cur.index),
            pk.bank.eq(cur.bank),
            pk.sram_addr.eq(cur.sram_addr),
            pk.line_words.eq(cur.line_words),
            pk.lines.eq(cur.lines),
            bg.req.payload.addr.eq(cur.ddr_addr),
            bg.req.payload.stride.eq(cur.stride),
            bg.req.payload.lines.eq(cur.lines),
            bg.req.payload.line_beats.eq(cur.line_beats),
        ]
        flag = Signal(3)
        obuf_full = Signal(2)
        m.d.comb += [
            flag.eq(_flag(isa.Buffer.OBUF, 0) + cur.bank),
            obuf_full.eq(self.full[_flag(isa.Buffer.OBUF, 0):][:2]),
        ]
        # The bank's flag, registered (only this unit clears it: a full bank stays full).
        bank_full = Signal()
        m.d.sync += bank_full.eq(obuf_full.bit_select(cur.bank, 1))

        with m.FSM(name="store"):
            with m.State("IDLE"):
                m.d.comb += self.q.ready.eq(1)
                with m.If(self.q.valid):
                    m.d.sync += [
                        cur.eq(self.q.payload),
                        bank_full.eq(obuf_full.bit_select(self.q.payload.bank, 1)),
                    ]
                    m.d.comb += self.progress.eq(1)
                    m.next = "WAIT_BANK"
            with m.State("WAIT_BANK"):
                m.d.comb += self.busy.eq(1)
                with m.If(bank_full):
                    m.d.comb += [bg.req.valid.eq(1), pk.start.eq(1), self.progress.eq(1)]
                    m.next = "RUN"
            with m.State("RUN"):
                m.d.comb += self.busy.eq(1)
                with m.If(bg.idle & ~pk.busy & self.wr_idle):
                    m.d.comb += [
                        self.clear_full.bit_select(flag, 1).eq(1),
                        self.progress.eq(1),
                    ]
                    m.next = "IDLE"
        return m


class Pipeline(wiring.Component):
    """Everything of the command processor that a flush resets: fetcher, dispatcher, queues,
    units and bank flags (see :class:`CommandProcessor`)."""

    def __init__(self, cfg: HwConfig, has_engine: bool):
        self._cfg = cfg
        self._has_engine = has_engine
        dw, aw = cfg.axi_data_bits, cfg.axi_addr_bits
        super().__init__({
            "go": In(1),
            "cmd_base": In(32),
            "cmd_count": In(IDX),
            "window_base": In(32),
            "window_limit": In(32),
            "rd_req": Out(stream.Signature(burst_layout(aw, 1))),
            "rd_beats": In(stream.Signature(rbeat_layout(dw, 1))),
            "wr_req": Out(stream.Signature(burst_layout(aw))),
            "wr_data": Out(stream.Signature(wbeat_layout(dw))),
            "wr_idle": In(1),
            "compute": Out(ComputeSignature(cfg)),
            "finished": Out(1),
            "error": Out(1),
            "error_cause": Out(isa.ErrorCause),
            "error_index": Out(IDX),
            "progress": Out(1),
            "index": Out(IDX),
            "oldest": Out(IDX),
            "store_index": Out(IDX),
            "load_index": Out(IDX),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        dw = cfg.axi_data_bits
        bb = dw // 8
        bb_log = exact_log2(bb)
        E = isa.ErrorCause

        m.submodules.fetch = fetch = Fetcher(cfg)
        m.submodules.load = load = LoadUnit(cfg)
        m.submodules.store = store = StoreUnit(cfg)
        m.submodules.load_q = load_q = _Queue(ls_entry, QUEUE_DEPTH)
        m.submodules.store_q = store_q = _Queue(ls_entry, QUEUE_DEPTH)
        m.submodules.compute_q = compute_q = _Queue(compute_entry, QUEUE_DEPTH)
        m.submodules.rd_arb = arb = ReadArbiter(2, cfg.axi_addr_bits, dw)

        # -- read path: fetcher (tag 0) and load unit (tag 1) share the port -------------------
        wiring.connect(m, fetch.req, arb.req_0)
        wiring.connect(m, arb.beats_0, fetch.beats)
        wiring.connect(m, load.rd_req, arb.req_1)
        wiring.connect(m, arb.beats_1, load.rd_beats)
        wiring.connect(m, arb.port_req, wiring.flipped(self.rd_req))
        wiring.connect(m, wiring.flipped(self.rd_beats), arb.port_beats)
        # -- write path, buffers ---------------------------------------------------------------
        wiring.connect(m, store.wr_req, wiring.flipped(self.wr_req))
        wiring.connect(m, store.wr_data, wiring.flipped(self.wr_data))
        m.d.comb += [
            store.wr_idle.eq(self.wr_idle),
            fetch.base.eq(self.cmd_base),
        ]
        for b in LS_BUFFERS:
            name = f"{b.name.lower()}_w"
            wiring.connect(m, getattr(load, name), wiring.flipped(getattr(self.compute, name)))
        wiring.connect(m, store.obuf_r, wiring.flipped(self.compute.obuf_r))
        wiring.connect(m, load_q.r, load.q)
        wiring.connect(m, store_q.r, store.q)

        # -- bank flags --------------------------------------------------------------------------
        full = Signal(8)
        c_set = Signal(8)
        c_clear = Signal(8)
        m.d.sync += full.eq((full & ~store.clear_full & ~c_clear) | load.set_full | c_set)
        m.d.comb += [load.full.eq(full), store.full.eq(full)]

        # -- compute unit --------------------------------------------------------------------------
        # `c_cur` waits for its flags; `slots` are the commands the engine holds, oldest first.
        N = COMPUTE_OUTSTANDING
        c_wait = Signal()
        c_cur = Signal(compute_entry)
        c_hdr = data.View(isa.ComputeHeader, c_cur.cmd)
        slot_layout = data.StructLayout({"releases": unsigned(6), "obuf_bank": unsigned(1),
                                         "index": unsigned(IDX)})
        slots = [Signal(slot_layout, name=f"c_slot{k}") for k in range(N)]
        held = Signal(range(N + 1))
        releasing = Signal(6)   # banks a held command will release: not full for later ones
        reserved = Signal(2)    # OBUF banks a held command writes
        rel, res = 0, 0
        for k, slot in enumerate(slots):
            rel = rel | Mux(held > k, slot.releases, 0)
            res = res | Mux(held > k, 1 << slot.obuf_bank, 0)
        m.d.comb += [releasing.eq(rel), reserved.eq(res)]
        c_ready = Signal()
        needs = Signal(6)
        obuf_flag = Signal(3)
        c_progress = Signal()
        c_error = Signal()
        c_issue = Signal()
        c_answer = Signal()
        m.d.comb += [
            needs.eq(c_hdr.needs),
            obuf_flag.eq(_flag(isa.Buffer.OBUF, 0) + c_hdr.obuf_bank),
            compute_q.r.ready.eq(~c_wait),
            self.compute.cmd.payload.eq(c_cur.cmd),
            self.compute.cmd.valid.eq(c_wait & c_ready),
        ]
        # `c_ready` is registered (a flag compare over the slots; the handshake enables the
        # slot registers): the flags as of the previous cycle, for the command waiting then
        # and not issued. Safe a cycle late: until the command issues, flags only fill, and a
        # held command's answer clears its banks in the cycle its `releasing` bits drop.
        m.d.sync += c_ready.eq(((full[:6] & ~releasing & needs) == needs)
                               & ~full.bit_select(obuf_flag, 1)
                               & ~reserved.bit_select(c_hdr.obuf_bank, 1)
                               & (held < N) & c_wait & ~c_issue)
        m.d.comb += [
            c_issue.eq(self.compute.cmd.valid & self.compute.cmd.ready),
            c_answer.eq((held != 0) & (self.compute.done | self.compute.error)),
            c_error.eq((held != 0) & self.compute.error),
        ]
        with m.If(compute_q.r.valid & compute_q.r.ready):
            m.d.sync += [c_cur.eq(compute_q.r.payload), c_wait.eq(1)]
            m.d.comb += c_progress.eq(1)
        with m.If(c_issue):
            m.d.sync += c_wait.eq(0)
            m.d.comb += c_progress.eq(1)
        with m.If(c_answer):
            for k in range(N - 1):
                m.d.sync += slots[k].eq(slots[k + 1])
            m.d.comb += c_progress.eq(1)
        with m.If(c_issue):
            new = Signal(slot_layout)
            m.d.comb += [new.releases.eq(c_hdr.releases), new.obuf_bank.eq(c_hdr.obuf_bank),
                         new.index.eq(c_cur.index)]
            for k in range(N):
                # slot held - c_answer, as a select of two decodes rather than a subtraction
                with m.If(Mux(c_answer, held == k + 1, held == k)):
                    m.d.sync += slots[k].eq(new)
        m.d.sync += held.eq(held + c_issue - c_answer)
        with m.If(c_answer & self.compute.done):
            m.d.comb += [
                c_clear.eq(slots[0].releases),
                c_set.bit_select(_flag(isa.Buffer.OBUF, 0) + slots[0].obuf_bank, 1).eq(1),
            ]
        c_busy = Signal()
        c_index = Signal(IDX)
        m.d.comb += [
            c_busy.eq(c_wait | (held != 0)),
            c_index.eq(Mux(held != 0, slots[0].index, c_cur.index)),
        ]

        # -- dispatcher ----------------------------------------------------------------------------
        cur = Signal(compute_entry)
        hdr = data.View(isa.Header, cur.cmd)
        ls = data.View(isa.LoadStore, cur.cmd)
        m.d.comb += self.index.eq(cur.index)

        d_err = Signal()
        d_cause = Signal(E)
        d_index = Signal(IDX)
        d_active = Signal()

        # Beats per DDR line and buffer depth of the command's buffer.
        lbeats = Signal(24)
        depth = Signal(range(max(buffer_depth(cfg, b) for b in isa.Buffer) + 1))
        with m.Switch(ls.buffer):
            for b in isa.Buffer:
                with m.Case(b):
                    wb = buffer_word_bits(cfg, b)
                    if wb >= dw:
                        m.d.comb += lbeats.eq(ls.line_words * (wb // dw))
                    else:
                        k = dw // wb
                        m.d.comb += lbeats.eq((ls.line_words + (k - 1)) >> exact_log2(k))
                    m.d.comb += depth.eq(buffer_depth(cfg, b))
        # Registered: `cur` holds from DECODE to PUSH, the later states read these.
        lbeats_q = Signal.like(lbeats)
        depth_q = Signal.like(depth)
        m.d.sync += [lbeats_q.eq(lbeats), depth_q.eq(depth)]

        # Sequential multiplier: lines * stride and lines * line_words.
        mul_b = Signal(16)
        mul_a1 = Signal(48)
        mul_a2 = Signal(32)
        prod1 = Signal(48)   # lines * stride
        prod2 = Signal(32)   # lines * line_words
        # The extent, in two additions (EXTENT, EXTENT2) and two compares (EXTENT2, CHECK1),
        # each registered: line_end = first byte past line 0's beats, rows = (lines - 1) * stride.
        line_end = Signal(33)
        rows = Signal(50)
        span_end = Signal(50)
        sram_end = Signal(33)
        below = Signal()      # ddr_addr < WINDOW_BASE
        above = Signal()      # span_end > WINDOW_LIMIT
        bad_sram = Signal()   # sram_end > depth

        entry = Signal(ls_entry)
        m.d.comb += [
            entry.buffer.eq(ls.buffer),
            entry.bank.eq(ls.bank),
            entry.sram_addr.eq(ls.sram_addr),
            entry.line_words.eq(ls.line_words),
            entry.lines.eq(ls.lines),
            entry.ddr_addr.eq(ls.ddr_addr),
            entry.stride.eq(ls.ddr_stride),
            entry.line_beats.eq(lbeats_q),
            entry.index.eq(cur.index),
            load_q.w.payload.eq(entry),
            store_q.w.payload.eq(entry),
            compute_q.w.payload.eq(cur),
        ]

        # Commands of the program inside the window: only those are fetched; reaching the
        # first one outside is a DDR_WINDOW error at its index. The program registers are
        # latched at START (CommandProcessor) and stable while running: what the program
        # checks need is computed from them in three registered stages while the dispatcher
        # waits (PREP1-3), so no compare of them is in series with another.
        cmd_log = exact_log2(isa.COMMAND_BYTES)
        base_lt = Signal()                 # stage 1
        base_gt = Signal()
        diff = Signal(32 - cmd_log)
        count_zero = Signal()
        base_misaligned = Signal()
        last_index = Signal(IDX)
        in_window = Signal(IDX)            # stage 2
        in_window_zero = Signal()          # stage 3
        window_last = Signal(IDX)
        m.d.sync += [
            base_lt.eq(self.cmd_base < self.window_base),
            base_gt.eq(self.cmd_base > self.window_limit),
            diff.eq((self.window_limit - self.cmd_base) >> cmd_log),
            count_zero.eq(self.cmd_count == 0),
            base_misaligned.eq(self.cmd_base[:bb_log] != 0),
            last_index.eq(self.cmd_count - 1),
            in_window.eq(Mux(base_lt | base_gt, 0,
                             Mux(diff < self.cmd_count, diff, self.cmd_count))),
            in_window_zero.eq(in_window == 0),
            window_last.eq(in_window - 1),
        ]
        m.d.comb += fetch.count.eq(in_window)

        # The checks that need only the command and its position are made as the command is
        # taken from the fetcher, into registers: DECODE and the states that move on to the
        # next command only read them.
        new = fetch.cmd.payload
        new_hdr = data.View(isa.Header, new.cmd)
        new_ls = data.View(isa.LoadStore, new.cmd)
        # The fetcher's index changes only when a command is taken and the next one takes
        # more than a cycle to assemble: compared every cycle, registered.
        new_last = Signal()          # the program's last command
        new_window_last = Signal()   # the last command inside the window
        # The stride only matters (and is only checked) for more than one line.
        new_misaligned = Signal()
        m.d.sync += [
            new_last.eq(new.index == last_index),
            new_window_last.eq(new.index == window_last),
        ]
        m.d.comb += [
            new_misaligned.eq((new_ls.ddr_addr[:bb_log] != 0)
                              | ((new_ls.lines > 1) & (new_ls.ddr_stride[:bb_log] != 0))),
        ]
        finished = Signal()          # END, every unit idle (a cycle ago)
        m.d.comb += self.finished.eq(finished)
        next_fail = Signal()         # moving on from this command fails ...
        next_cause = Signal(E)       # ... with this cause and index
        next_index = Signal(IDX)
        dec_fail = Signal()          # DECODE fails ...
        dec_cause = Signal(E)
        dec_index = Signal(IDX)
        dec_ls = Signal()            # ... or goes on to the extent checks (LOAD, STORE),
        dec_compute = Signal()       # the compute queue, END
        dec_end = Signal()
        no_lines_q = Signal()

        # A failing state's cause and index, set per state whether or not it fails: the error
        # registers follow them until `d_err` is set (their enable is that one register), and
        # `fail()` only sets `d_err`. The error reaches the status a cycle after the check.
        f_cause = Signal(E)
        f_index = Signal(IDX)
        with m.If(~d_err):
            m.d.sync += [d_cause.eq(f_cause), d_index.eq(f_index)]

        def fail():
            m.d.sync += d_err.eq(1)
            m.next = "HALT"

        with m.FSM(name="dispatch"):
            with m.State("IDLE"):
                with m.If(self.go):
                    m.next = "PREP1"
            with m.State("PREP1"):
                m.d.comb += d_active.eq(1)
                m.next = "PREP2"
            with m.State("PREP2"):
                m.d.comb += d_active.eq(1)
                m.next = "PREP3"
            with m.State("PREP3"):
                m.d.comb += d_active.eq(1)
                m.next = "CHECK_PROGRAM"
            with m.State("CHECK_PROGRAM"):
                m.d.comb += [
                    d_active.eq(1),
                    f_cause.eq(Mux(count_zero, E.EMPTY_PROGRAM,
                                   Mux(base_misaligned, E.BAD_ALIGN, E.DDR_WINDOW))),
                    f_index.eq(0),
                ]
                with m.If(count_zero | base_misaligned | in_window_zero):
                    fail()
                with m.Else():
                    m.d.comb += fetch.start.eq(1)
                    m.next = "FETCH"
            with m.State("FETCH"):
                m.d.comb += fetch.cmd.ready.eq(1)
                with m.If(fetch.cmd.valid):
                    m.d.sync += [
                        cur.eq(new),
                        next_fail.eq(new_last | new_window_last),
                        next_cause.eq(Mux(new_last, E.EMPTY_PROGRAM, E.DDR_WINDOW)),
                        next_index.eq(Mux(new_last, new.index, new.index + 1)),
                        no_lines_q.eq(new_ls.lines == 0),
                        dec_fail.eq(0),
                        dec_index.eq(new.index),
                        dec_ls.eq(0),
                        dec_compute.eq(0),
                        dec_end.eq(0),
                    ]

                    def dec_failure(cause):
                        m.d.sync += [dec_fail.eq(1), dec_cause.eq(cause)]

                    with m.Switch(new_hdr.opcode):
                        with m.Case(isa.Opcode.NOP):
                            # Refused for its successor in DECODE (PUSH does it for the rest).
                            m.d.sync += [
                                dec_fail.eq(new_last | new_window_last),
                                dec_cause.eq(Mux(new_last, E.EMPTY_PROGRAM, E.DDR_WINDOW)),
                                dec_index.eq(Mux(new_last, new.index, new.index + 1)),
                            ]
                        with m.Case(isa.Opcode.LOAD, isa.Opcode.STORE):
                            to_obuf = new_ls.buffer == isa.Buffer.OBUF
                            with m.If(Mux(new_hdr.opcode == isa.Opcode.LOAD, to_obuf, ~to_obuf)):
                                dec_failure(E.BAD_BUFFER)
                            with m.Elif(new_misaligned):
                                dec_failure(E.BAD_ALIGN)
                            with m.Elif((new_hdr.opcode == isa.Opcode.LOAD)
                                        & ((new_ls.lines == 0) | (new_ls.line_words == 0))):
                                dec_failure(E.EMPTY_LOAD)
                            with m.Else():
                                m.d.sync += dec_ls.eq(1)
                        with m.Case(isa.Opcode.CONV, isa.Opcode.ELTWISE):
                            if self._has_engine:
                                m.d.sync += dec_compute.eq(1)
                            else:
                                dec_failure(E.BAD_COMPUTE)
                        with m.Case(isa.Opcode.END):
                            m.d.sync += dec_end.eq(1)
                        with m.Default():
                            dec_failure(E.BAD_OPCODE)
                    m.d.comb += d_active.eq(1)
                    m.next = "DECODE"
            with m.State("DECODE"):
                m.d.comb += [d_active.eq(1), f_cause.eq(dec_cause), f_index.eq(dec_index)]
                m.d.sync += [
                    mul_b.eq(ls.lines),
                    mul_a1.eq(ls.ddr_stride),
                    mul_a2.eq(ls.line_words),
                    prod1.eq(0),
                    prod2.eq(0),
                ]
                with m.If(dec_fail):
                    fail()
                with m.Elif(dec_ls):
                    m.next = "MULTIPLY"
                with m.Elif(dec_compute):
                    m.next = "PUSH_COMPUTE"
                with m.Elif(dec_end):
                    m.next = "END"
                with m.Else():
                    m.next = "FETCH"     # NOP
            with m.State("MULTIPLY"):
                m.d.comb += d_active.eq(1)
                with m.If(mul_b[0]):
                    m.d.sync += [prod1.eq(prod1 + mul_a1), prod2.eq(prod2 + mul_a2)]
                m.d.sync += [
                    mul_b.eq(mul_b >> 1),
                    mul_a1.eq(mul_a1 << 1),
                    mul_a2.eq(mul_a2 << 1),
                ]
                with m.If(mul_b == 0):
                    m.next = "EXTENT"
            with m.State("EXTENT"):
                m.d.comb += d_active.eq(1)
                m.d.sync += [
                    line_end.eq(ls.ddr_addr + (lbeats_q << bb_log)),
                    rows.eq(prod1 - ls.ddr_stride),
                    sram_end.eq(ls.sram_addr + prod2),
                ]
                m.next = "EXTENT2"
            with m.State("EXTENT2"):
                m.d.comb += d_active.eq(1)
                m.d.sync += [
                    span_end.eq(line_end + rows),
                    below.eq(ls.ddr_addr < self.window_base),
                    bad_sram.eq(sram_end > depth_q),
                ]
                m.next = "CHECK1"
            with m.State("CHECK1"):
                m.d.comb += d_active.eq(1)
                m.d.sync += above.eq(span_end > self.window_limit)
                m.next = "CHECK"
            with m.State("CHECK"):
                m.d.comb += [
                    d_active.eq(1),
                    f_cause.eq(Mux(bad_sram, E.SRAM_RANGE, E.DDR_WINDOW)),
                    f_index.eq(cur.index),
                ]
                with m.If(bad_sram | (~no_lines_q & (below | above))):
                    fail()
                with m.Else():
                    m.next = "PUSH"
            # A command whose successor cannot be fetched (it is the program's last, or the
            # last inside the window: `next_fail`, a register since FETCH) is refused here,
            # never queued: nothing of it moves, whatever the units are doing.
            with m.State("PUSH"):
                is_load = hdr.opcode == isa.Opcode.LOAD
                m.d.comb += [
                    f_cause.eq(next_cause),
                    f_index.eq(next_index),
                    load_q.w.valid.eq(is_load & ~next_fail),
                    store_q.w.valid.eq(~is_load & ~next_fail),
                ]
                with m.If(next_fail):
                    fail()
                with m.Elif(Mux(is_load, load_q.w.ready, store_q.w.ready)):
                    m.d.comb += d_active.eq(1)
                    m.next = "FETCH"
            with m.State("PUSH_COMPUTE"):
                m.d.comb += [
                    compute_q.w.valid.eq(~next_fail),
                    f_cause.eq(next_cause),
                    f_index.eq(next_index),
                ]
                with m.If(next_fail):
                    fail()
                with m.Elif(compute_q.w.ready):
                    m.d.comb += d_active.eq(1)
                    m.next = "FETCH"
            with m.State("END"):
                all_idle = (load_q.empty & ~load.busy & store_q.empty & ~store.busy
                            & compute_q.empty & ~c_busy)
                # A register (a cycle later): the units' state, through the queues' and the
                # compute slots' flags, would reach the run state's ~60 enables in one cycle.
                # Nothing is issued in END, so idle stays idle.
                m.d.sync += finished.eq(all_idle)
            with m.State("HALT"):
                pass

        # -- errors, progress, indices -----------------------------------------------------------
        # A read error straight from the port's beat (the fetcher's or the load unit's, by its
        # tag), not through the arbiter and the units: the same beats, fewer LUTs. Registered
        # (a cycle later): the beat's valid and tag would reach the error index's capture
        # through the units' index selects.
        rd_error = Signal()
        rd_cause = Signal(E)
        rd_index = Signal(IDX)
        m.d.sync += [
            rd_error.eq(self.rd_beats.valid & (self.rd_beats.payload.resp != Resp.OKAY)),
            rd_cause.eq(_resp_cause(self.rd_beats.payload.resp)),
            rd_index.eq(Mux(self.rd_beats.payload.tag == 0, fetch.error_index, load.index)),
        ]
        with m.If(d_err):
            m.d.comb += [self.error.eq(1), self.error_cause.eq(d_cause),
                         self.error_index.eq(d_index)]
        with m.Elif(rd_error):
            m.d.comb += [self.error.eq(1), self.error_cause.eq(rd_cause),
                         self.error_index.eq(rd_index)]
        with m.Elif(c_error):
            m.d.comb += [self.error.eq(1), self.error_cause.eq(self.compute.error_cause),
                         self.error_index.eq(slots[0].index)]

        # Registered, the dispatcher's part apart (its state decode): the watchdog needs it
        # only to within a cycle.
        units_progress = Signal()
        d_active_q = Signal()
        m.d.sync += [units_progress.eq(load.progress | store.progress | c_progress
                                       | (fetch.cmd.valid & fetch.cmd.ready)),
                     d_active_q.eq(d_active)]
        m.d.comb += self.progress.eq(units_progress | d_active_q)

        # The oldest command a unit holds, for the watchdog: two registered stages of one
        # compare each (the watchdog fires after hundreds of cycles without a change).
        # (the compute unit's inputs registered first: its index is a select over the slots)
        c_busy_q, c_index_q, cur_index_q = Signal(), Signal(IDX), Signal(IDX)
        m.d.sync += [c_busy_q.eq(c_busy), c_index_q.eq(c_index), cur_index_q.eq(cur.index)]
        ls_oldest = Signal(IDX)   # the load or store unit's, all ones if neither is busy
        cd_oldest = Signal(IDX)   # the compute unit's or the dispatcher's
        oldest = Signal(IDX)
        m.d.sync += [
            ls_oldest.eq(Mux(load.busy & (~store.busy | (load.index < store.index)), load.index,
                             Mux(store.busy, store.index, (1 << IDX) - 1))),
            cd_oldest.eq(Mux(c_busy_q & (c_index_q < cur_index_q), c_index_q, cur_index_q)),
            oldest.eq(Mux(ls_oldest < cd_oldest, ls_oldest, cd_oldest)),
        ]
        m.d.comb += [self.oldest.eq(oldest), self.store_index.eq(store.index)]
        m.d.comb += self.load_index.eq(load.index)
        return m


class CommandProcessor(wiring.Component):
    """Runs programs: the command processor, the DMA, the bank flags, status, watchdog and
    performance counters (everything of the shell but the register file and the bus bridge).

    Members
    -------
    start, soft_reset: In(1)
        Pulses from CONTROL. ``start`` is ignored while ``busy``.
    cmd_base, cmd_count, window_base, window_limit, watchdog: In
        From the registers of the same names. The first four are latched at ``start``: a run
        uses the values of its START, whatever is written while it runs; ``watchdog`` is read
        continuously (a cycle late).
    busy, done, error, cause, cmd_index: Out
        STATUS.
    done_event, error_event: Out(1)
        One cycle each, to IRQ_STATUS.
    perf_cycles_busy, perf_cycles_compute, perf_dma_rd_bytes, perf_dma_wr_bytes,
    perf_dma_stall: Out(64)
        The counters; cleared by ``start``.
    m_axi: Out(AxiSignature)
        The DDR manager port.
    compute: Out(ComputeSignature)
        To the engine; with ``has_engine=False`` compute commands fail with BAD_COMPUTE.
    """

    def __init__(self, cfg: HwConfig, has_engine: bool = True):
        self._cfg = cfg
        self._has_engine = has_engine
        super().__init__({
            "start": In(1),
            "soft_reset": In(1),
            "cmd_base": In(32),
            "cmd_count": In(IDX),
            "window_base": In(32),
            "window_limit": In(32),
            "watchdog": In(32),
            "busy": Out(1),
            "done": Out(1),
            "error": Out(1),
            "cause": Out(isa.ErrorCause),
            "cmd_index": Out(IDX),
            "done_event": Out(1),
            "error_event": Out(1),
            "perf_cycles_busy": Out(64),
            "perf_cycles_compute": Out(64),
            "perf_dma_rd_bytes": Out(64),
            "perf_dma_wr_bytes": Out(64),
            "perf_dma_stall": Out(64),
            "m_axi": Out(AxiSignature(cfg.axi_addr_bits, cfg.axi_data_bits,
                                      platform.M_AXI_ID_BITS)),
            "compute": Out(ComputeSignature(cfg)),
        })

    @property
    def cfg(self):
        return self._cfg

    def elaborate(self, platform_):
        m = Module()
        cfg = self._cfg
        aw, dw, iw = cfg.axi_addr_bits, cfg.axi_data_bits, platform.M_AXI_ID_BITS
        bb = dw // 8
        E = isa.ErrorCause

        flush = Signal()
        pipe = Pipeline(cfg, self._has_engine)
        m.submodules.pipe = ResetInserter(flush)(pipe)
        m.submodules.rd_port = rd = AxiReadPort(aw, dw, iw, tag_bits=1,
                                                max_outstanding=READ_OUTSTANDING)
        m.submodules.wr_port = wr = AxiWritePort(aw, dw, iw, max_outstanding=WRITE_OUTSTANDING)

        for name in rd.axi.signature.members:
            self._wire(m, name, rd.axi)
        for name in wr.axi.signature.members:
            self._wire(m, name, wr.axi)
        wiring.connect(m, pipe.rd_req, rd.req)
        wiring.connect(m, rd.beats, pipe.rd_beats)
        wiring.connect(m, pipe.wr_req, wr.req)
        wiring.connect(m, pipe.wr_data, wr.data)
        m.d.comb += [
            pipe.wr_idle.eq(wr.idle),
            rd.abort.eq(flush),
            wr.abort.eq(flush),
            rd.window_base.eq(pipe.window_base),
            rd.window_limit.eq(pipe.window_limit),
            wr.window_base.eq(pipe.window_base),
            wr.window_limit.eq(pipe.window_limit),
        ]
        # The compute interface: the pipeline's, except cancel (the flush).
        for name, member in self.compute.signature.members.items():
            if name == "cancel":
                continue
            outer, inner = getattr(self.compute, name), getattr(pipe.compute, name)
            if member.is_port:
                if member.flow == Out:
                    m.d.comb += outer.eq(inner)
                else:
                    m.d.comb += inner.eq(outer)
            else:
                for sub, sub_member in member.signature.members.items():
                    if sub_member.flow == Out:
                        m.d.comb += getattr(outer, sub).eq(getattr(inner, sub))
                    else:
                        m.d.comb += getattr(inner, sub).eq(getattr(outer, sub))
        m.d.comb += self.compute.cancel.eq(flush)

        # -- run state -----------------------------------------------------------------------------
        running = Signal()
        finishing = Signal()
        done = Signal()
        error = Signal()
        cause = Signal(E)
        index = Signal(IDX)
        active = Signal()
        busy = Signal()
        m.d.comb += [
            active.eq(running | finishing),
            busy.eq(active | flush | ~rd.idle | ~wr.idle),
            self.busy.eq(busy),
            self.done.eq(done),
            self.error.eq(error),
            self.cause.eq(cause),
            self.cmd_index.eq(Mux(running, pipe.index, index)),
        ]
        # START is taken a cycle after the pulse: `busy` gathers the ports' state.
        start_q = Signal()
        start = Signal()
        m.d.sync += start_q.eq(self.start & ~busy & ~self.soft_reset)
        m.d.comb += [start.eq(start_q & ~self.soft_reset), pipe.go.eq(start)]
        # The program and its window are latched at START: writes to their registers while
        # running change the next run, not this one.
        for name in ("cmd_base", "cmd_count", "window_base", "window_limit"):
            run_value = Signal.like(getattr(self, name), name=f"run_{name}")
            with m.If(start):
                m.d.sync += run_value.eq(getattr(self, name))
            m.d.comb += getattr(pipe, name).eq(run_value)

        # -- watchdog ------------------------------------------------------------------------------
        # Counters of 33 bits that stop at 2^32 (over any 32-bit bound); their clear conditions
        # and their compares with the bound are registered (a cycle or two late: a watchdog).
        bound = Signal(32)
        m.d.sync += bound.eq(Mux(self.watchdog == 0, watchdog_default_cycles(cfg),
                                 self.watchdog))
        bus_wait = Signal(33)
        no_progress = Signal(33)
        bus_waiting = Signal()
        bus_progress = Signal()
        bus_clear = Signal(init=1)
        np_clear = Signal(init=1)
        bus_over = Signal()
        np_over = Signal()
        m.d.comb += [
            bus_waiting.eq(rd.waiting | wr.waiting),
            bus_progress.eq(rd.progress | wr.progress),
        ]
        m.d.sync += [
            bus_clear.eq(~bus_waiting | bus_progress),
            # Not `array_busy`: an engine stuck busy is caught too (a command's progress is
            # its answer, so the bound must exceed the longest compute command).
            np_clear.eq(~running | pipe.progress | bus_progress),
            bus_over.eq(bus_wait >= bound),
            np_over.eq(no_progress >= bound),
        ]
        with m.If(bus_clear):
            m.d.sync += bus_wait.eq(0)
        with m.Elif(~bus_wait[32]):
            m.d.sync += bus_wait.eq(bus_wait + 1)
        with m.If(np_clear):
            m.d.sync += no_progress.eq(0)
        with m.Elif(~no_progress[32]):
            m.d.sync += no_progress.eq(no_progress + 1)
        # From registers only: ``~bus_clear`` says the bus waited (without progress) last
        # cycle; the ports' waiting state itself sits behind their queues' levels.
        wd_fire = Signal()
        m.d.comb += wd_fire.eq((~bus_clear & bus_over) | (running & ~np_clear & np_over))

        # -- errors ------------------------------------------------------------------------------
        err = Signal()
        err_cause = Signal(E)
        err_index = Signal(IDX)
        with m.If(pipe.error):
            m.d.comb += [err.eq(running), err_cause.eq(pipe.error_cause),
                         err_index.eq(pipe.error_index)]
        with m.Elif(wr.error):
            m.d.comb += [err.eq(running), err_cause.eq(_resp_cause(wr.error_resp)),
                         err_index.eq(pipe.store_index)]
        with m.Elif(rd.refused | wr.refused):
            # The ports' window guard: only reached if a dispatcher check let a transfer out.
            m.d.comb += [err.eq(running), err_cause.eq(E.PORT_WINDOW),
                         err_index.eq(Mux(wr.refused, pipe.store_index,
                                          Mux(rd.refused_tag == 1, pipe.load_index,
                                              pipe.oldest)))]
        with m.Elif(wd_fire):
            # A dead bus is reported even after an abort (the ports cannot drain).
            m.d.comb += [err.eq(1), err_cause.eq(E.WATCHDOG),
                         err_index.eq(Mux(running, pipe.oldest, index))]
        # Registered: the error sources include the AXI responses and the read data's routing;
        # the status registers and the flush take them a cycle later.
        err_q = Signal()
        err_cause_q = Signal(E)
        err_index_q = Signal(IDX)
        m.d.sync += [
            err_q.eq(err & ~self.soft_reset),
            err_cause_q.eq(err_cause),
            err_index_q.eq(err_index),
        ]
        err_fire = Signal()
        finish_fire = Signal()
        m.d.comb += [
            err_fire.eq(err_q & ~error & ~self.soft_reset),
            finish_fire.eq(running & pipe.finished & ~err_fire & ~self.soft_reset),
            self.error_event.eq(err_fire),
        ]
        # The flush is registered: it resets hundreds of registers, and its causes include the
        # AXI responses. In the cycle between, status is already final and the ports take any
        # last request the pipeline makes, to drain it with the rest.
        m.d.sync += flush.eq(self.soft_reset | err_fire | finish_fire)

        with m.If(self.soft_reset):
            m.d.sync += [running.eq(0), finishing.eq(0), done.eq(0), error.eq(0),
                         cause.eq(E.NONE), index.eq(0)]
        with m.Elif(start):
            m.d.sync += [running.eq(1), done.eq(0), error.eq(0), cause.eq(E.NONE),
                         index.eq(0)]
        with m.Elif(err_fire):
            m.d.sync += [running.eq(0), finishing.eq(0), error.eq(1), cause.eq(err_cause_q),
                         index.eq(err_index_q)]
        with m.Elif(finish_fire):
            m.d.sync += [running.eq(0), finishing.eq(1), index.eq(pipe.index)]
        with m.Elif(finishing & ~flush & rd.idle & wr.idle):
            m.d.sync += [finishing.eq(0), done.eq(1)]
            m.d.comb += self.done_event.eq(1)

        # -- performance counters ------------------------------------------------------------------
        # The increments and the clear at START are registered (the counts are those of a cycle
        # earlier, every cycle of a run included); each counter has its own copy of the clear,
        # into the flip-flops' synchronous reset, and nothing but its incrementer in front.
        counters = [
            (self.perf_cycles_busy, active),
            (self.perf_cycles_compute, self.compute.array_busy),
            (self.perf_dma_rd_bytes, Mux(rd.beat, bb, 0)),
            (self.perf_dma_wr_bytes, Mux(wr.beat, bb, 0)),
            (self.perf_dma_stall, rd.stall | wr.stall),
        ]
        for counter, inc in counters:
            q = Signal(64, name=f"{counter.name}_q")
            inc_q = Signal.like(inc, name=f"{counter.name}_inc")
            clear = replica(m, start, f"{counter.name}_clear")
            m.d.comb += counter.eq(q)
            m.d.sync += [inc_q.eq(inc), q.eq(q + inc_q)]
            with m.If(clear):
                m.d.sync += q.eq(0)
        return m

    def _wire(self, m, name, port_axi):
        outer, inner = getattr(self.m_axi, name), getattr(port_axi, name)
        if port_axi.signature.members[name].flow == Out:
            m.d.comb += outer.eq(inner)
        else:
            m.d.comb += inner.eq(outer)

