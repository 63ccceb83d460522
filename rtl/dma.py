"""DMA between DDR (an AXI4 manager port) and the on-chip buffers.

The port is built for a Zynq HP port behind an AXI3 converter: INCR bursts of at most
``MAX_BURST`` beats of the full bus width, never crossing a ``PAGE_BYTES`` boundary,
one transaction id (data returns in order). Pieces:

* :class:`BurstGen` splits a 2-D transfer (``lines`` lines of ``line_beats`` beats, line ``i`` at
  ``addr + i * stride``) into such bursts;
* :class:`AxiReadPort` issues read bursts (up to ``max_outstanding`` in flight) and returns the
  beats tagged with the requester; :class:`ReadArbiter` shares it between requesters;
* :class:`AxiWritePort` issues a write burst only once all of its data is queued, so the write
  data of an accepted address always follows without gaps and an abort can always complete it;
* :class:`Unpacker` and :class:`Packer` are the gearboxes between bus beats and buffer words (a
  word is a multiple or a divisor of the beat).

Addresses and strides reaching this module are already checked (beat-aligned, inside the DDR
window): the command processor validates every transfer before it starts one. Each port checks
again, burst by burst (:class:`WindowGuard`, defence in depth): a burst not inside
``[window_base, window_limit)`` is never issued, the port pulses ``refused`` (the command
processor ends the run with ``PORT_WINDOW``) and takes no request until ``abort``.

Both ports have an ``abort`` input: they stop taking requests, complete what the bus already
accepted (read data is accepted and dropped, committed write bursts are sent) and raise ``idle``
when nothing is outstanding.
"""

from amaranth import Array, Cat, Const, Module, Mux, ResetInserter, Signal, unsigned
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2, exact_log2

from zynqnn.hw.geometry import MAX_BURST, PAGE_BYTES

from .axi import AxiReadSignature, AxiWriteSignature, Burst, Resp
from .compute import BufferReadSignature, BufferWriteSignature

__all__ = [
    "LINE_BEATS_BITS",
    "xfer_layout",
    "burst_layout",
    "burst_len",
    "BurstGen",
    "WindowGuard",
    "AxiReadPort",
    "ReadArbiter",
    "AxiWritePort",
    "Unpacker",
    "Packer",
]

#: Width of a transfer's beats-per-line count.
LINE_BEATS_BITS = 24
#: AxCACHE for the HP ports: normal, non-cacheable, bufferable.
AXI_CACHE = 0b0011


def xfer_layout(addr_bits: int = 32) -> data.StructLayout:
    """A 2-D transfer: ``lines`` lines of ``line_beats`` beats, line ``i`` at
    ``addr + i * stride``."""
    return data.StructLayout({
        "addr": unsigned(addr_bits),
        "stride": unsigned(addr_bits),
        "lines": unsigned(16),
        "line_beats": unsigned(LINE_BEATS_BITS),
    })


def burst_layout(addr_bits: int = 32, tag_bits: int = 0) -> data.StructLayout:
    """One burst: ``len + 1`` beats from ``addr`` (AXI's AxLEN)."""
    members = {"addr": unsigned(addr_bits), "len": unsigned(4)}
    if tag_bits:
        members["tag"] = unsigned(tag_bits)
    return data.StructLayout(members)


def rbeat_layout(data_bits: int, tag_bits: int = 0) -> data.StructLayout:
    members = {"data": unsigned(data_bits), "resp": Resp, "last": unsigned(1)}
    if tag_bits:
        members["tag"] = unsigned(tag_bits)
    return data.StructLayout(members)


def wbeat_layout(data_bits: int) -> data.StructLayout:
    return data.StructLayout({"data": unsigned(data_bits), "strb": unsigned(data_bits // 8)})


def _table(fn, index, width):
    """``fn(index)`` for a narrow ``index``, as a constant table: LUTs, no carry chain."""
    return Array(Const(fn(i), width) for i in range(1 << len(index)))[index]


def burst_len(m: Module, addr, beats_left, beat_bytes: int):
    """The next burst from ``addr`` with ``beats_left`` beats to go: ``(n, n_minus_1,
    all_left)``, its length (at most ``MAX_BURST`` beats, up to the next ``PAGE_BYTES``
    boundary), that minus one (AxLEN) and whether it is the last (``n == beats_left``), as a
    few LUTs: a burst can reach a page boundary only from the last ``MAX_BURST``-beat block of
    a page, and the rest are tables of a few bits (no wide subtraction or compare)."""
    bb_log = exact_log2(beat_bytes)
    blk_log = exact_log2(MAX_BURST)
    page_off = exact_log2(PAGE_BYTES)
    assert bb_log + blk_log <= page_off, "a burst block must divide the page"
    off = Signal(blk_log)                      # beat within its MAX_BURST-beat block
    last_block = Signal()                      # the page's last block
    small = Signal()                           # beats_left <= MAX_BURST
    fits = Signal()                            # ... and they end at or before the page end
    all_left = Signal()
    n = Signal(range(MAX_BURST + 1))
    n_minus_1 = Signal(blk_log)
    low = Signal(blk_log + 1)                  # beats_left, when small
    m.d.comb += [
        off.eq(addr[bb_log:bb_log + blk_log]),
        last_block.eq(addr[bb_log + blk_log:page_off].all()),
        low.eq(beats_left[:blk_log + 1]),
        small.eq((beats_left[blk_log + 1:] == 0)
                 & ~(beats_left[blk_log] & (beats_left[:blk_log] != 0))),
        fits.eq(~last_block | _table(lambda i: (i >> blk_log) + (i & (MAX_BURST - 1))
                                     <= MAX_BURST, Cat(off, low), 1)),
        all_left.eq(small & fits),
        # to the page end (MAX_BURST - off) in the last block, else MAX_BURST
        n.eq(Mux(all_left, low, Mux(last_block, _table(lambda o: MAX_BURST - o, off,
                                                        blk_log + 1), MAX_BURST))),
        n_minus_1.eq(Mux(all_left, _table(lambda b: (b - 1) % MAX_BURST, low, blk_log),
                         Mux(last_block, ~off, MAX_BURST - 1))),
    ]
    return n, n_minus_1, all_left


class BurstGen(wiring.Component):
    """Splits 2-D transfers into bursts of at most ``MAX_BURST`` beats that never cross a
    ``PAGE_BYTES`` boundary, one burst every two cycles (the first a cycle after the
    transfer is accepted).

    Members
    -------
    req: In(stream.Signature(xfer_layout))
        A transfer; ``addr`` and ``stride`` are multiples of the beat. An empty transfer (no
        lines or no beats) is accepted and produces nothing.
    bursts: Out(stream.Signature(burst_layout))
    idle: Out(1)
        No transfer in progress.
    """

    def __init__(self, beat_bytes: int, addr_bits: int = 32):
        self._beat_bytes = beat_bytes
        self._addr_bits = addr_bits
        super().__init__({
            "req": In(stream.Signature(xfer_layout(addr_bits))),
            "bursts": Out(stream.Signature(burst_layout(addr_bits))),
            "idle": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        bb_log = exact_log2(self._beat_bytes)
        aw = self._addr_bits

        busy = Signal()
        addr = Signal(aw)
        line_addr = Signal(aw)
        stride = Signal(aw)
        beats_left = Signal(LINE_BEATS_BITS)
        line_beats = Signal(LINE_BEATS_BITS)
        lines_left = Signal(16)

        # Two cycles per burst: in the first (`offer` low) the burst (address, length, whether
        # it ends its line and the transfer) is computed from the counters and registered; it is
        # offered from the second, in which the counters move on to the next burst from those
        # registers (`advance`, a register: the handshake itself drives only `offer` and `busy`).
        # A burst of two or more beats takes at least two cycles on the bus anyway.
        n, n_minus_1, all_left = burst_len(m, addr, beats_left, self._beat_bytes)
        offer = Signal()
        advance = Signal()
        out_addr = Signal(aw)
        n_q = Signal(range(MAX_BURST + 1))
        len_q = Signal(4)         # n_q - 1, registered: the ports compare it
        line_done = Signal()      # this burst ends its line
        last_line = Signal()      # ... and that line is the last
        next_line = Signal(aw)    # line_addr + stride
        m.d.comb += [
            self.bursts.valid.eq(offer),
            self.bursts.payload.addr.eq(out_addr),
            self.bursts.payload.len.eq(len_q),
            self.req.ready.eq(~busy),
            self.idle.eq(~busy),
        ]
        req = self.req.payload
        # Idle, the counters follow the request (its valid only sets busy).
        with m.If(~busy):
            m.d.sync += [
                busy.eq(self.req.valid & (req.lines != 0) & (req.line_beats != 0)),
                addr.eq(req.addr),
                line_addr.eq(req.addr),
                stride.eq(req.stride),
                beats_left.eq(req.line_beats),
                line_beats.eq(req.line_beats),
                lines_left.eq(req.lines),
            ]
        m.d.sync += advance.eq(0)
        with m.If(busy & ~offer):
            m.d.sync += [
                offer.eq(1),
                advance.eq(1),
                out_addr.eq(addr),
                n_q.eq(n),
                len_q.eq(n_minus_1),
                line_done.eq(all_left),
                last_line.eq(lines_left == 1),
                next_line.eq(line_addr + stride),
            ]
        with m.If(advance):
            with m.If(line_done):
                m.d.sync += [
                    lines_left.eq(lines_left - 1),
                    line_addr.eq(next_line),
                    addr.eq(next_line),
                    beats_left.eq(line_beats),
                ]
            with m.Else():
                m.d.sync += [
                    beats_left.eq(beats_left - n_q),
                    addr.eq(addr + (n_q << bb_log)),
                ]
        with m.If(self.bursts.valid & self.bursts.ready):
            m.d.sync += offer.eq(0)
            with m.If(line_done & last_line):
                m.d.sync += busy.eq(0)
        return m


class WindowGuard(wiring.Component):
    """The DDR window, checked again for every burst in front of an AXI port.

    A request passes two registered stages (two cycles) before the port sees it: the first
    takes the burst, compares its address with ``window_base`` and computes its end (one
    comparator, one adder), the second compares the end with ``window_limit``. A burst inside
    ``[window_base, window_limit)`` is offered on ``out`` (payload and ``valid`` are registers);
    one outside is dropped with the burst behind it, ``refused`` pulses (with its tag) and no
    request is taken until ``abort``, which also drops whatever the stages hold. One burst every
    two cycles at most (``req.ready`` is a function of registers); a burst waiting on ``out``
    holds the stages.

    Members
    -------
    req: In(stream.Signature(burst_layout))
    out: Out(stream.Signature(burst_layout))
    window_base, window_limit: In(32)
        Stable during a run (the command processor latches them at START).
    abort: In(1)
    busy: Out(1)
        A burst in the stages.
    refused, refused_tag: Out
    """

    def __init__(self, addr_bits, beat_bytes, tag_bits=0):
        self._aw, self._bb, self._tag_bits = addr_bits, beat_bytes, tag_bits
        super().__init__({
            "req": In(stream.Signature(burst_layout(addr_bits, tag_bits))),
            "out": Out(stream.Signature(burst_layout(addr_bits, tag_bits))),
            "window_base": In(32),
            "window_limit": In(32),
            "abort": In(1),
            "busy": Out(1),
            "refused": Out(1),
            "refused_tag": Out(max(1, tag_bits)),
        })

    def elaborate(self, platform):
        m = Module()
        layout = burst_layout(self._aw, self._tag_bits)
        s1, s2 = Signal(layout), Signal(layout)
        v1, v2 = Signal(), Signal()
        below = Signal()                 # stage 1: addr < window_base
        end = Signal(self._aw + 1)       # stage 1: first byte past the burst
        ok = Signal()                    # stage 2: inside the window
        stopped = Signal()               # a burst was refused: no more until the abort
        m.d.comb += [
            self.out.payload.eq(s2),
            self.out.valid.eq(v2 & ok),
            self.busy.eq(v1 | v2),
        ]
        refuse = Signal()
        take2 = Signal()
        m.d.comb += [
            refuse.eq(v2 & ~ok),
            take2.eq(v1 & (~v2 | (self.out.valid & self.out.ready))),
            # Only from registers: the port's ready does not reach back through the stages
            # into the unit that offers the burst. Stage 1 takes a burst every other cycle at
            # most, the burst generators' own pace.
            self.req.ready.eq(~stopped & ~refuse & ~v1),
            self.refused.eq(refuse),
        ]
        if self._tag_bits:
            m.d.comb += self.refused_tag.eq(s2.tag)
        with m.If(self.out.valid & self.out.ready):
            m.d.sync += v2.eq(0)
        with m.If(take2):
            m.d.sync += [
                s2.eq(s1),
                v2.eq(1),
                ok.eq(~below & (end <= self.window_limit)),
            ]
        with m.If(take2 & ~(self.req.valid & self.req.ready)):
            m.d.sync += v1.eq(0)
        with m.If(self.req.valid & self.req.ready):
            p = self.req.payload
            m.d.sync += [
                s1.eq(p),
                v1.eq(1),
                below.eq(p.addr < self.window_base),
                end.eq(p.addr + ((p.len + 1) << exact_log2(self._bb))),
            ]
        with m.If(refuse):
            m.d.sync += [v1.eq(0), v2.eq(0), stopped.eq(1)]
        with m.If(self.abort):
            m.d.sync += [v1.eq(0), v2.eq(0), stopped.eq(0)]
        return m


def _guarded(m: Module, port, tag_bits: int = 0):
    """A port's burst requests through its :class:`WindowGuard` (window, abort and refusal
    wired to the port's own members); returns the guard (``out``, ``busy``)."""
    m.submodules.guard = guard = WindowGuard(port._aw, port._dw // 8, tag_bits)
    wiring.connect(m, wiring.flipped(port.req), guard.req)
    m.d.comb += [
        guard.window_base.eq(port.window_base),
        guard.window_limit.eq(port.window_limit),
        guard.abort.eq(port.abort),
        port.refused.eq(guard.refused),
    ]
    if tag_bits:
        m.d.comb += port.refused_tag.eq(guard.refused_tag)
    return guard


class AxiReadPort(wiring.Component):
    """Read half of the DDR manager port.

    Members
    -------
    req: In(stream.Signature(burst_layout with tag))
        A read burst and the requester's tag, through the :class:`WindowGuard` (two cycles);
        taken only when no address waits on AR (one every other cycle at most).
    beats: Out(stream.Signature(rbeat_layout with tag))
        Read data in request order, with the response and the tag of its burst, through a
        three-beat queue (a cycle of latency). Back-pressure stalls the R channel.
    axi: Out(AxiReadSignature)
    abort: In(1)
        Stop taking requests; accept and drop the outstanding data.
    window_base, window_limit: In(32)
    refused, refused_tag: Out
        The guard refused a burst outside the window (one cycle), and its tag.
    idle: Out(1)
        No burst requested or outstanding.
    beat, stall, waiting, progress: Out(1)
        Statistics and watchdog: an R beat transferred; a valid without ready or data awaited; a
        burst outstanding; a handshake on AR or R.
    """

    def __init__(self, addr_bits, data_bits, id_bits=1, tag_bits=1, max_outstanding=4):
        self._aw, self._dw, self._iw = addr_bits, data_bits, id_bits
        self._tag_bits = tag_bits
        self._max_outstanding = max_outstanding
        super().__init__({
            "req": In(stream.Signature(burst_layout(addr_bits, tag_bits))),
            "beats": Out(stream.Signature(rbeat_layout(data_bits, tag_bits))),
            "axi": Out(AxiReadSignature(addr_bits, data_bits, id_bits)),
            "abort": In(1),
            "window_base": In(32),
            "window_limit": In(32),
            "refused": Out(1),
            "refused_tag": Out(tag_bits),
            "idle": Out(1),
            "beat": Out(1),
            "stall": Out(1),
            "waiting": Out(1),
            "progress": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        axi = self.axi
        guard = _guarded(m, self, self._tag_bits)
        req = guard.out
        # Tags of the bursts requested and not yet completed (their last beat), in order; a
        # buffered FIFO, so the tag that routes the read data is a register (it is ready two
        # cycles after the request, no later than the burst's first beat can come).
        m.submodules.tags = tags = fifo.SyncFIFOBuffered(width=self._tag_bits,
                                                         depth=self._max_outstanding)
        draining = Signal()
        ar_valid = Signal()
        ar_addr = Signal(self._aw)
        ar_len = Signal(4)
        m.d.comb += [
            axi.arid.eq(0),
            axi.araddr.eq(ar_addr),
            axi.arlen.eq(ar_len),
            axi.arsize.eq(exact_log2(self._dw // 8)),
            axi.arburst.eq(Burst.INCR),
            axi.arlock.eq(0),
            axi.arcache.eq(AXI_CACHE),
            axi.arprot.eq(0),
            axi.arvalid.eq(ar_valid),
        ]
        ar_done = Signal()
        m.d.comb += [
            ar_done.eq(ar_valid & axi.arready),
            # Registers only (a request every other cycle at most, as the burst generators
            # make them): no path from `arready` back into the requesters.
            req.ready.eq(~ar_valid & tags.w_rdy & ~draining),
            tags.w_data.eq(req.payload.tag),
            tags.w_en.eq(req.valid & req.ready),
        ]
        with m.If(req.valid & req.ready):
            m.d.sync += [
                ar_valid.eq(1),
                ar_addr.eq(req.payload.addr),
                ar_len.eq(req.payload.len),
            ]
        with m.Elif(ar_done):
            m.d.sync += ar_valid.eq(0)

        # The R channel goes through a four-beat queue: `rready` is a register (room for two
        # beats last cycle is room for one now) or draining, and the beats leave it from
        # registers, with their tag; one cycle of latency, a beat per cycle. Only the
        # registered state gates the data: a request or beat taken in the abort cycle is
        # completed (or dropped) like the others, and no path runs from abort back to a
        # source. Draining, queued beats are dropped too.
        dw, tw = self._dw, self._tag_bits
        m.submodules.r_q = r_q = fifo.SyncFIFOBuffered(width=dw + 3 + tw, depth=4)
        dropping = Signal()
        r_room = Signal()
        m.d.sync += r_room.eq(r_q.level < r_q.depth - 1)
        m.d.comb += [
            dropping.eq(draining),
            axi.rready.eq(r_room | dropping),
            r_q.w_en.eq(axi.rvalid & r_room & ~dropping),
            r_q.w_data.eq(Cat(axi.rdata, axi.rresp, axi.rlast, tags.r_data)),
            tags.r_en.eq(axi.rvalid & axi.rready & axi.rlast),
            self.beats.valid.eq(r_q.r_rdy & ~dropping),
            self.beats.payload.data.eq(r_q.r_data[:dw]),
            self.beats.payload.resp.eq(r_q.r_data[dw:dw + 2]),
            self.beats.payload.last.eq(r_q.r_data[dw + 2]),
            self.beats.payload.tag.eq(r_q.r_data[dw + 3:]),
            r_q.r_en.eq(self.beats.ready | dropping),
        ]
        idle = Signal()
        m.d.comb += [
            idle.eq(~ar_valid & ~guard.busy & ~tags.r_rdy & (r_q.level == 0)),
            self.idle.eq(idle),
            self.beat.eq(axi.rvalid & axi.rready),
            self.stall.eq((ar_valid & ~axi.arready) | (tags.r_rdy & ~axi.rvalid)),
            self.waiting.eq(~idle),
            self.progress.eq(ar_done | (axi.rvalid & axi.rready)),
        ]
        with m.If(self.abort):
            m.d.sync += draining.eq(1)
        with m.Elif(idle):
            m.d.sync += draining.eq(0)
        return m


class ReadArbiter(wiring.Component):
    """Round-robin between ``n`` burst requesters of one :class:`AxiReadPort`; requester ``i``'s
    bursts carry tag ``i`` and its data comes back on ``beats_<i>``.

    Members
    -------
    req_<i>: In(stream.Signature(burst_layout))
    beats_<i>: Out(stream.Signature(rbeat_layout))
    port_req: Out(stream.Signature(burst_layout with tag))
    port_beats: In(stream.Signature(rbeat_layout with tag))
    """

    def __init__(self, n, addr_bits, data_bits):
        self._n = n
        self._tag_bits = max(1, ceil_log2(n))
        members = {}
        for i in range(n):
            members[f"req_{i}"] = In(stream.Signature(burst_layout(addr_bits)))
            members[f"beats_{i}"] = Out(stream.Signature(rbeat_layout(data_bits)))
        members["port_req"] = Out(stream.Signature(burst_layout(addr_bits, self._tag_bits)))
        members["port_beats"] = In(stream.Signature(rbeat_layout(data_bits, self._tag_bits)))
        super().__init__(members)

    @property
    def tag_bits(self):
        return self._tag_bits

    def elaborate(self, platform):
        m = Module()
        n = self._n
        reqs = [getattr(self, f"req_{i}") for i in range(n)]
        beats = [getattr(self, f"beats_{i}") for i in range(n)]
        # `last` is the requester served last; the search starts after it.
        last = Signal(range(n))
        grant = Signal(range(n))
        found = Signal()
        for offset in reversed(range(1, n + 1)):
            for i in range(n):
                with m.If(((last + offset) % n == i) & reqs[i].valid):
                    m.d.comb += [grant.eq(i), found.eq(1)]
        out = self.port_req
        with m.Switch(grant):
            for i in range(n):
                with m.Case(i):
                    m.d.comb += [
                        out.payload.addr.eq(reqs[i].payload.addr),
                        out.payload.len.eq(reqs[i].payload.len),
                        out.payload.tag.eq(i),
                        reqs[i].ready.eq(out.ready),
                    ]
        m.d.comb += out.valid.eq(found)
        with m.If(out.valid & out.ready):
            m.d.sync += last.eq(grant)

        pb = self.port_beats
        for i in range(n):
            sel = pb.payload.tag == i
            m.d.comb += [
                beats[i].valid.eq(pb.valid & sel),
                beats[i].payload.data.eq(pb.payload.data),
                beats[i].payload.resp.eq(pb.payload.resp),
                beats[i].payload.last.eq(pb.payload.last),
            ]
            with m.If(sel):
                m.d.comb += pb.ready.eq(beats[i].ready)
        return m


class AxiWritePort(wiring.Component):
    """Write half of the DDR manager port.

    A burst's address is issued only once all of its beats are queued, so the W channel never
    waits for data after an accepted address; write responses are checked.

    Members
    -------
    req: In(stream.Signature(burst_layout))
        Through the :class:`WindowGuard` (two cycles).
    data: In(stream.Signature(wbeat_layout))
        The beats of the requested bursts, in order.
    axi: Out(AxiWriteSignature)
    abort: In(1)
        Stop taking requests; send the data of the bursts already issued, take their responses,
        then drop any other queued data.
    window_base, window_limit: In(32)
    refused: Out(1)
        The guard refused a burst outside the window (one cycle); its beats stay queued,
        uncommitted, until the abort drops them.
    idle: Out(1)
        Nothing queued, issued or awaiting a response.
    error, error_resp: Out
        A write response other than OKAY (one cycle).
    beat, stall, waiting, progress: Out(1)
        Statistics and watchdog, as :class:`AxiReadPort`'s.
    """

    def __init__(self, addr_bits, data_bits, id_bits=1, max_outstanding=8, data_depth=32):
        self._aw, self._dw, self._iw = addr_bits, data_bits, id_bits
        self._max_outstanding = max_outstanding
        self._data_depth = data_depth
        super().__init__({
            "req": In(stream.Signature(burst_layout(addr_bits))),
            "data": In(stream.Signature(wbeat_layout(data_bits))),
            "axi": Out(AxiWriteSignature(addr_bits, data_bits, id_bits)),
            "abort": In(1),
            "window_base": In(32),
            "window_limit": In(32),
            "refused": Out(1),
            "idle": Out(1),
            "error": Out(1),
            "error_resp": Out(Resp),
            "beat": Out(1),
            "stall": Out(1),
            "waiting": Out(1),
            "progress": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        axi = self.axi
        guard = _guarded(m, self)
        req = guard.out
        dw = self._dw
        depth = self._data_depth
        clear = Signal()
        m.submodules.data_q = data_q = ResetInserter(clear)(
            fifo.SyncFIFOBuffered(width=dw + dw // 8, depth=depth))
        # AxLEN of the issued bursts whose data is not yet all sent (buffered: `wvalid` is an
        # AND of two registers).
        m.submodules.lens = lens = fifo.SyncFIFOBuffered(width=4, depth=self._max_outstanding)

        draining = Signal()
        stopping = Signal()
        m.d.comb += stopping.eq(draining)  # registered only, as in AxiReadPort

        # `data.ready` from registers: room for two more beats last cycle is room for one now.
        data_room = Signal()
        m.d.sync += data_room.eq(data_q.level < depth - 1)
        m.d.comb += [
            data_q.w_data.eq(Cat(self.data.payload.data, self.data.payload.strb)),
            data_q.w_en.eq(self.data.valid & data_room & ~stopping),
            self.data.ready.eq(data_room & ~stopping),
        ]

        # Beats queued and not yet committed to an issued burst, counted (not level - committed:
        # the compare with the burst's length feeds `req.ready`).
        avail = Signal(range(depth + 1))

        aw_valid = Signal()
        aw_addr = Signal(self._aw)
        aw_len = Signal(4)
        b_pending = Signal(range(self._max_outstanding + 1))
        m.d.comb += [
            axi.awid.eq(0),
            axi.awaddr.eq(aw_addr),
            axi.awlen.eq(aw_len),
            axi.awsize.eq(exact_log2(dw // 8)),
            axi.awburst.eq(Burst.INCR),
            axi.awlock.eq(0),
            axi.awcache.eq(AXI_CACHE),
            axi.awprot.eq(0),
            axi.awvalid.eq(aw_valid),
        ]
        issue = Signal()
        issued = Signal()        # a burst was issued last cycle (its length: aw_len)
        aw_done = Signal()
        m.d.sync += issued.eq(issue)
        m.d.comb += [
            aw_done.eq(aw_valid & axi.awready),
            # Registers and the compare with the burst's (registered) length only: no path from
            # `awready` back into the requester.
            req.ready.eq(~aw_valid & ~issued & lens.w_rdy & ~stopping
                              & (avail > req.payload.len)
                              & (b_pending < self._max_outstanding)),
            issue.eq(req.valid & req.ready),
            lens.w_en.eq(issue),
            lens.w_data.eq(req.payload.len),
        ]
        with m.If(issue):
            m.d.sync += [
                aw_valid.eq(1),
                aw_addr.eq(req.payload.addr),
                aw_len.eq(req.payload.len),
            ]
        with m.Elif(aw_done):
            m.d.sync += aw_valid.eq(0)

        # W: the beats of issued bursts, through a two-beat output stage (`wvalid`, the data,
        # `wlast` from registers). The queues are popped while the stage holds under two beats
        # (a register), so the W handshake reaches no FIFO logic; a beat per cycle.
        w_beat = Signal(4)       # beat of its burst of the next beat popped
        w_go = Signal()
        pop = Signal()
        pop_last = Signal()
        w_held = Signal(range(3))
        w_head = Signal(dw + dw // 8 + 1, reset_less=True)   # data, strobes, last: on the bus
        w_tail = Signal.like(w_head)
        popped = Signal.like(w_head)
        m.d.comb += [
            pop_last.eq(w_beat == lens.r_data),
            pop.eq(data_q.r_rdy & lens.r_rdy & ~w_held[1]),
            data_q.r_en.eq(pop),
            lens.r_en.eq(pop & pop_last),
            popped.eq(Cat(data_q.r_data, pop_last)),
            axi.wvalid.eq(w_held != 0),
            axi.wdata.eq(w_head[:dw]),
            axi.wstrb.eq(w_head[dw:dw + dw // 8]),
            axi.wlast.eq(w_head[-1]),
            w_go.eq(axi.wvalid & axi.wready),
        ]
        with m.If(pop):
            m.d.sync += w_beat.eq(Mux(pop_last, 0, w_beat + 1))
        with m.If(w_go):
            with m.If(w_held[1]):
                m.d.sync += w_head.eq(w_tail)
            with m.Elif(pop):
                m.d.sync += w_head.eq(popped)
        with m.Elif(pop):
            with m.If(w_held == 0):
                m.d.sync += w_head.eq(popped)
            with m.Else():
                m.d.sync += w_tail.eq(popped)
        m.d.sync += w_held.eq(w_held + pop - w_go)
        # The issued burst's beats leave `avail` a cycle later (`ready` waits for it), from
        # registers.
        m.d.sync += avail.eq(avail + data_q.w_en - Mux(issued, aw_len + 1, 0))

        # B: responses of issued bursts.
        b_go = Signal()
        m.d.comb += [
            axi.bready.eq(1),
            b_go.eq(axi.bvalid & axi.bready),
            self.error.eq(b_go & (axi.bresp != Resp.OKAY)),
            self.error_resp.eq(axi.bresp),
        ]
        m.d.sync += b_pending.eq(b_pending + issue - b_go)

        in_flight = Signal()
        m.d.comb += in_flight.eq(aw_valid | lens.r_rdy | (w_held != 0) | (b_pending != 0))
        with m.If(self.abort):
            m.d.sync += draining.eq(1)
        with m.Elif(draining & ~in_flight):
            m.d.sync += draining.eq(0)
        # After an abort, data not committed to an issued burst is dropped.
        m.d.comb += clear.eq(draining & ~in_flight)
        with m.If(clear):
            m.d.sync += avail.eq(0)

        m.d.comb += [
            self.idle.eq(~in_flight & ~guard.busy & (data_q.level == 0) & ~draining),
            self.beat.eq(w_go),
            self.stall.eq((aw_valid & ~axi.awready) | (axi.wvalid & ~axi.wready)),
            self.waiting.eq(in_flight),
            self.progress.eq(aw_done | w_go | b_go),
        ]
        return m


class Unpacker(wiring.Component):
    """Read gearbox: bus beats of a transfer into buffer words, written in order from
    ``sram_addr``.

    Each DDR line is ``line_words`` words; a word wider than the beat takes ``word / beat`` beats,
    a narrower one shares a beat with others, and the unused tail of a line's last beat is
    dropped. A beat with an error response is not written and raises ``error``.

    Members
    -------
    start: In(1)
        Latch ``bank``, ``sram_addr``, ``line_words``, ``lines`` and begin.
    beats: In(stream.Signature(data, resp))
    w: Out(BufferWriteSignature)
        One word per cycle at most; registered.
    busy: Out(1)
    error, error_resp: Out
    """

    def __init__(self, word_bits, beat_bits, depth):
        if word_bits % beat_bits and beat_bits % word_bits:
            raise ValueError(f"word_bits ({word_bits}) must divide or be a multiple of "
                             f"beat_bits ({beat_bits})")
        self._word_bits, self._beat_bits, self._depth = word_bits, beat_bits, depth
        super().__init__({
            "start": In(1),
            "bank": In(1),
            "sram_addr": In(16),
            "line_words": In(16),
            "lines": In(16),
            "beats": In(stream.Signature(data.StructLayout({
                "data": unsigned(beat_bits), "resp": Resp}))),
            "w": Out(BufferWriteSignature(word_bits, depth)),
            "busy": Out(1),
            "error": Out(1),
            "error_resp": Out(Resp),
        })

    def elaborate(self, platform):
        m = Module()
        wb, bb = self._word_bits, self._beat_bits
        busy = Signal()
        bank = Signal()
        addr = Signal(ceil_log2(self._depth))
        line_words = Signal(16)
        words_left = Signal(16)
        lines_left = Signal(16)
        # Registered `words_left == 1`, `lines_left == 1` and `line_words == 1`: the word
        # handshake reaches only enables and these.
        word_last = Signal()
        line_last = Signal()
        lw_one = Signal()
        final = Signal()          # word_last & line_last: the transfer's last word
        with m.If(self.start):
            m.d.sync += [
                final.eq((self.line_words == 1) & (self.lines == 1)),
                busy.eq((self.lines != 0) & (self.line_words != 0)),
                bank.eq(self.bank),
                addr.eq(self.sram_addr),
                line_words.eq(self.line_words),
                words_left.eq(self.line_words),
                lines_left.eq(self.lines),
                word_last.eq(self.line_words == 1),
                line_last.eq(self.lines == 1),
                lw_one.eq(self.line_words == 1),
            ]
        beat = self.beats.payload
        bad = Signal()
        m.d.comb += [
            self.busy.eq(busy),
            bad.eq(beat.resp != Resp.OKAY),
            self.error.eq(self.beats.valid & busy & bad),
            self.error_resp.eq(beat.resp),
        ]

        word = Signal(wb)
        emit = Signal()  # a word completes this cycle

        def next_word():
            m.d.sync += addr.eq(addr + 1)
            with m.If(final):
                m.d.sync += busy.eq(0)
            with m.If(word_last):
                m.d.sync += [
                    words_left.eq(line_words),
                    word_last.eq(lw_one),
                    lines_left.eq(lines_left - 1),
                    line_last.eq(lines_left == 2),
                    final.eq(lw_one & (lines_left == 2)),
                ]
            with m.Else():
                m.d.sync += [
                    words_left.eq(words_left - 1),
                    word_last.eq(words_left == 2),
                    final.eq(line_last & (words_left == 2)),
                ]

        if wb >= bb:
            k = wb // bb
            m.d.comb += self.beats.ready.eq(busy)
            if k == 1:
                m.d.comb += [word.eq(beat.data), emit.eq(self.beats.valid & busy)]
            else:
                lower = Signal(wb - bb)   # the word's earlier beats, beat 0 lowest
                j = Signal(range(k))
                m.d.comb += word.eq(Cat(lower, beat.data))
                with m.If(self.beats.valid & busy):
                    with m.If(j == k - 1):
                        m.d.comb += emit.eq(1)
                        m.d.sync += j.eq(0)
                    with m.Else():
                        m.d.sync += j.eq(j + 1)
                        if k == 2:
                            m.d.sync += lower.eq(beat.data)
                        else:
                            m.d.sync += lower.eq(Cat(lower[bb:], beat.data))
        else:
            k = bb // wb
            j = Signal(range(k))
            end_of_beat = Signal()
            m.d.comb += [
                end_of_beat.eq((j == k - 1) | word_last),
                self.beats.ready.eq(busy & end_of_beat),
                word.eq(beat.data.word_select(j, wb)),
                emit.eq(self.beats.valid & busy),
            ]
            with m.If(emit):
                m.d.sync += j.eq(Mux(end_of_beat, 0, j + 1))

        with m.If(emit):
            next_word()
        m.d.sync += [
            self.w.en.eq(emit & ~bad),
            self.w.bank.eq(bank),
            self.w.addr.eq(addr),
            self.w.data.eq(word),
        ]
        return m


class Packer(wiring.Component):
    """Write gearbox: buffer words read in order from ``sram_addr`` into bus beats.

    Each DDR line is ``line_words`` words; a word wider than the beat leaves as ``word / beat``
    beats, narrower words share beats, and a line's last beat carries strobes for its words only.

    Members
    -------
    start: In(1)
        Latch ``bank``, ``sram_addr``, ``line_words``, ``lines`` and begin.
    r: Out(BufferReadSignature)
    beats: Out(stream.Signature(data, strb))
    busy: Out(1)
        Words still to read or beats still to send.
    """

    #: Words read ahead of the beat builder.
    QUEUE = 4

    def __init__(self, word_bits, beat_bits, depth):
        if word_bits % beat_bits and beat_bits % word_bits:
            raise ValueError(f"word_bits ({word_bits}) must divide or be a multiple of "
                             f"beat_bits ({beat_bits})")
        self._word_bits, self._beat_bits, self._depth = word_bits, beat_bits, depth
        super().__init__({
            "start": In(1),
            "bank": In(1),
            "sram_addr": In(16),
            "line_words": In(16),
            "lines": In(16),
            "r": Out(BufferReadSignature(word_bits, depth)),
            "beats": Out(stream.Signature(wbeat_layout(beat_bits))),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        wb, bb = self._word_bits, self._beat_bits
        m.submodules.words = words = fifo.SyncFIFOBuffered(width=wb + 1, depth=self.QUEUE)

        # -- read issue ----------------------------------------------------------------------------
        reading = Signal()
        bank = Signal()
        addr = Signal(ceil_log2(self._depth))
        line_words = Signal(16)
        words_left = Signal(16)
        lines_left = Signal(16)
        # Registered `words_left == 1`, `lines_left == 1` and `line_words == 1`, as in Unpacker.
        word_last = Signal()
        line_last = Signal()
        lw_one = Signal()
        with m.If(self.start):
            m.d.sync += [
                reading.eq((self.lines != 0) & (self.line_words != 0)),
                bank.eq(self.bank),
                addr.eq(self.sram_addr),
                line_words.eq(self.line_words),
                words_left.eq(self.line_words),
                lines_left.eq(self.lines),
                word_last.eq(self.line_words == 1),
                line_last.eq(self.lines == 1),
                lw_one.eq(self.line_words == 1),
            ]
        pending = Signal()       # a read was issued last cycle; its data is on r.data now
        pending_last = Signal()  # ... and it was the last word of a line
        issue = Signal()
        line_end = Signal()
        # Room in the word queue for the reads issued and not yet taken out, counted (not the
        # queue's level, a sum, plus `pending`).
        room = Signal(range(self.QUEUE + 1), init=self.QUEUE)
        m.d.sync += room.eq(room - issue + (words.r_en & words.r_rdy))
        m.d.comb += [
            issue.eq(reading & (room != 0)),
            line_end.eq(word_last),
            self.r.en.eq(issue),
            self.r.bank.eq(bank),
            self.r.addr.eq(addr),
            words.w_en.eq(pending),
            words.w_data.eq(Cat(self.r.data, pending_last)),
        ]
        m.d.sync += [pending.eq(issue), pending_last.eq(line_end)]
        with m.If(issue):
            m.d.sync += addr.eq(addr + 1)
            with m.If(line_end):
                m.d.sync += [
                    words_left.eq(line_words),
                    word_last.eq(lw_one),
                    lines_left.eq(lines_left - 1),
                    line_last.eq(lines_left == 2),
                ]
                with m.If(line_last):
                    m.d.sync += reading.eq(0)
            with m.Else():
                m.d.sync += [words_left.eq(words_left - 1), word_last.eq(words_left == 2)]

        # -- beat builder --------------------------------------------------------------------------
        head = words.r_data[:wb]
        head_last = words.r_data[wb]
        holding = Signal()
        if wb >= bb:
            k = wb // bb
            j = Signal(range(k))
            m.d.comb += [
                self.beats.valid.eq(words.r_rdy),
                self.beats.payload.data.eq(head.word_select(j, bb) if k > 1 else head),
                self.beats.payload.strb.eq(Const(-1, bb // 8)),
            ]
            with m.If(self.beats.valid & self.beats.ready):
                if k > 1:
                    m.d.sync += j.eq(Mux(j == k - 1, 0, j + 1))
                    m.d.comb += words.r_en.eq(j == k - 1)
                else:
                    m.d.comb += words.r_en.eq(1)
            m.d.comb += holding.eq(0)
        else:
            k = bb // wb
            wbytes = wb // 8
            acc = Signal(bb)
            strb = Signal(bb // 8)
            full = Signal()
            j = Signal(range(k))
            take = Signal()
            m.d.comb += [
                self.beats.valid.eq(full),
                self.beats.payload.data.eq(acc),
                self.beats.payload.strb.eq(strb),
                take.eq(words.r_rdy & (~full | self.beats.ready)),
                words.r_en.eq(take),
                holding.eq(full | (j != 0)),
            ]
            with m.If(full & self.beats.ready):
                m.d.sync += full.eq(0)
            with m.If(take):
                for s in range(k):
                    with m.If(j == s):
                        if s == 0:
                            m.d.sync += [
                                acc.eq(head),
                                strb.eq(Const((1 << wbytes) - 1, bb // 8)),
                            ]
                        else:
                            m.d.sync += [
                                acc.word_select(s, wb).eq(head),
                                strb[s * wbytes:(s + 1) * wbytes].eq(-1),
                            ]
                with m.If((j == k - 1) | head_last):
                    m.d.sync += [full.eq(1), j.eq(0)]
                with m.Else():
                    m.d.sync += j.eq(j + 1)

        m.d.comb += self.busy.eq(reading | pending | (words.level != 0) | holding)
        return m
