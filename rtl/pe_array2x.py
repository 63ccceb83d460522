"""Double-pumped weight-stationary PE array (issue 25): the DSP48E1 columns on a clock at twice
the fabric clock, two pixels per fabric cycle sharing one weight tile.

Seen from the fabric (``sync``) domain it is :class:`~zynqnn.rtl.pe_array.PEArray` with two
vectors per transfer: ``acts`` carries two pixels' activation vectors (and one ``swap`` for
both), ``sums`` returns both pixels' ``cols`` column sums, one transfer per fabric cycle at full
rate; ``weights`` is the same row stream. Inside, the ``rows x cols / pack`` DSP48E1 grid runs on
the ``fast`` domain (``fast_clk``, twice the frequency of ``clk``, rising edges aligned with
``clk``'s) and takes pixel 0 in the first half of each fabric cycle and pixel 1 in the second:
the same 128 DSPs of ``pynq_z2`` give 512 int8 MACs per fabric cycle. No depthwise mode
(:attr:`HwConfig.dw_kernel`) in this array yet.

Dataflow. The pair enters a slow register; row ``r``'s operands wait ``r // 2`` fabric cycles in
a slow delay line (both pixels), then a fast register per row takes pixel 0 or pixel 1 through a
2:1 mux whose select is the phase (below); odd rows add one fast register, so row ``r`` enters
its PE chain ``r`` fast cycles after row 0 (the systolic skew). In the fast domain each PE is a
DSP48E1 with every register used: the activation register (B; it also feeds the next PE to the
right), the weight (A, loaded from the slow shadow register when the tile's ``swap`` passes),
the product (M) and the column's partial sum (P, adding the PE above over the PCIN cascade). So
the fast domain has register -> DSP, DSP -> DSP (cascade) and DSP -> register paths only, plus
the one 2:1 mux in front of the row registers.

Clock crossing. The phase is derived, not counted: a slow register ``phase_t`` toggles every
fabric cycle, a fast register samples it, and their XOR, registered in the fast domain, is 0 in
the first fast cycle after a common edge and 1 in the second. Slow -> fast paths (pair and delay
lines into the row mux, shadow weights into the DSP's A register) and fast -> slow paths (the
bottom P registers and a fast copy of them, captured every fabric cycle) are one register to one
register, timed against the fast period. The bottom of column ``j`` shows pixel 0 in fast cycle
``R + j + 3`` after the pair's edge and pixel 1 a fast cycle later: for odd ``R + j`` a fabric
edge sees pixel 1 in P and pixel 0 in its fast copy; for even ``R + j`` it sees pixel 0 in P and,
an edge later, pixel 1 in the copy. Slow registers align the columns from there.

Packing (int8, :attr:`HwConfig.dsp_packing`). Each DSP multiplies the activation by two weights
packed ``w_hi * 2^16 + w_lo`` and the column accumulates in P over the cascade, so the bottom P
is ``H * 2^16 + L`` exactly (H, L: the two columns' sums). The low field has no guard bit (the
25-bit A port), so L's carries run into H. They are recovered with a narrow side sum:
``c = floor(L / 2^16)`` lies in ``[-2^(g-1), 2^(g-1))`` (:func:`carry_bits`: g = 4 for 16 rows),
and ``P >> 16 = H + c``, so ``c = ((P >> 16) - H) mod 2^g`` needs only ``H mod 2^g``, the sum of
the ``g``-bit products of the activations' and ``w_hi``'s low bits: a few LUTs per PE and pixel
in the fabric domain, instead of two adders per PE and pixel. Then ``L = c * 2^16 + P[15:0]``
and ``H = (P >> 16) - c``, exact.

Weights are double-buffered as in :class:`PEArray` (a ``swap`` vector waits for a whole tile in
the shadow registers, a new tile waits until every PE has read the previous one). The fast
domain has no reset: stale swap bits in flight after a reset can only reload a PE from the same
shadow tile before the first real swap (which the protocol puts on the first vector after
every reset) reaches it.
"""

from amaranth import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from zynqnn.hw.config import HwConfig

from .common import CreditBuffer, replica
from .pe_array import MAX_FANOUT, _split, weight_row_layout

__all__ = ["PEArray2x", "PIXELS", "act2_layout", "sum2_layout", "carry_bits", "latency2x"]

#: Pixels (activation vectors) per fabric cycle: the DSP clock ratio.
PIXELS = 2

#: Mux select bits one fast phase copy drives (docs/architecture.md: the phase net is on the
#: fast domain's worst path).
PHASE_SINKS = 6


def act2_layout(cfg: HwConfig) -> data.StructLayout:
    """One transfer of ``acts``: two pixels' vectors (``data[0]`` first) of ``rows`` operands, as
    in :func:`~zynqnn.rtl.pe_array.act_layout`, and one ``swap`` for both (a tile starts on an
    even pixel; a producer pads an odd pass with a vector whose sums it drops)."""
    vec = data.ArrayLayout(signed(cfg.signed_operand_bits), cfg.rows)
    return data.StructLayout({"data": data.ArrayLayout(vec, PIXELS), "swap": unsigned(1)})


def sum2_layout(cfg: HwConfig) -> data.ArrayLayout:
    """One transfer of ``sums``: per pixel, ``cols`` column sums at accumulator width."""
    return data.ArrayLayout(data.ArrayLayout(signed(cfg.acc_bits), cfg.cols), PIXELS)


def _pack(cfg: HwConfig) -> int:
    return 2 if cfg.dsp_packing else 1


def carry_bits(cfg: HwConfig) -> int:
    """Bits of the packed column's low-field carry ``c = floor(L / 2^16)`` (0 without packing):
    the narrowest two's complement width holding ``floor(+-rows * max|a * w| / 2^16)``."""
    if _pack(cfg) == 1:
        return 0
    top = cfg.rows * (2 ** cfg.operand_bits - 1) * 2 ** (cfg.operand_bits - 1)
    lo, hi = -top // 2 ** 16, top // 2 ** 16  # floor(-top / 2^16), floor(top / 2^16)
    g = 1
    while not (-(2 ** (g - 1)) <= lo and hi <= 2 ** (g - 1) - 1):
        g += 1
    return g


def _arrival(cfg: HwConfig, j: int) -> int:
    """Fabric edges from the pair's register to the edge after which column position ``j``'s
    two packed sums are both in slow registers."""
    return (cfg.rows + j + 6) // 2


def latency2x(cfg: HwConfig) -> int:
    """Fabric cycles from an accepted pair to its sums entering the output buffer."""
    J = cfg.cols // _pack(cfg)
    return _arrival(cfg, J - 1) + (3 if _pack(cfg) == 2 else 1)


class PEArray2x(wiring.Component):
    """The double-pumped ``rows x cols`` array of a :class:`~zynqnn.hw.config.HwConfig` with
    ``dsp_clock_ratio == 2``; two clock domains: ``sync`` (``clk``/``rst``) and ``fast``
    (``fast_clk``: twice the frequency, rising edges on ``clk``'s; no reset: the generated
    ``fast_rst`` port is unused).

    Members
    -------
    weights: In(stream)
        Weight tile rows, ``rows`` transfers per tile, row 0 first (as :class:`PEArray`).
    acts: In(stream)
        Two activation vectors per transfer (:func:`act2_layout`); ``swap`` marks the first pair
        of a newly loaded tile.
    sums: Out(stream)
        Both pixels' ``cols`` sums per pair (:func:`sum2_layout`), in order.

    The array itself never stalls; ``acts`` is ready while the output buffer has a free slot.
    """

    def __init__(self, cfg: HwConfig):
        if cfg.dsp_clock_ratio != PIXELS:
            self._MustUse__silence = True  # refused: no "created but never used" warning
            raise ValueError(f"PEArray2x needs dsp_clock_ratio = {PIXELS}, config {cfg.name} "
                             f"has {cfg.dsp_clock_ratio}")
        self._cfg = cfg
        super().__init__({
            "weights": In(stream.Signature(weight_row_layout(cfg))),
            "acts": In(stream.Signature(act2_layout(cfg))),
            "sums": Out(stream.Signature(sum2_layout(cfg))),
        })

    @property
    def cfg(self) -> HwConfig:
        return self._cfg

    @property
    def pack(self) -> int:
        """Columns per PE: 2 when two int8 products share a DSP48E1, else 1."""
        return _pack(self._cfg)

    @property
    def latency(self) -> int:
        """Fabric cycles from an accepted pair to its sums entering the output buffer."""
        return latency2x(self._cfg)

    def elaborate(self, platform):
        cfg = self._cfg
        R, C = cfg.rows, cfg.cols
        P = self.pack
        J = C // P
        m = Module()

        a_bits = cfg.signed_operand_bits
        pw_bits = 25 if P == 2 else cfg.operand_bits
        field_bits = 16 if P == 2 else a_bits + pw_bits  # one product's exact width
        out_bits = field_bits + (R - 1).bit_length()     # one column sum's exact width
        assert out_bits <= cfg.acc_bits
        g = carry_bits(cfg)
        # Bits of the bottom P register that are kept: the packed pair H * 2^16 + L mod 2^(16 +
        # out_bits) (H and L then follow exactly from it and the side sum), or the one sum.
        keep = 16 + out_bits if P == 2 else out_bits
        arrival = [_arrival(cfg, j) for j in range(J)]
        a_max = max(arrival)

        # The output buffer in column groups (each its own CreditBuffer, all in step), each
        # entry both pixels' sums of the group's columns: pixel p, column i at p * n + i.
        per_group = max(1, (MAX_FANOUT - 16) // (PIXELS * out_bits))
        col_groups = _split(C, -(-C // per_group))
        obufs = []
        for k, cols in enumerate(col_groups):
            obufs.append(CreditBuffer(data.ArrayLayout(signed(out_bits), PIXELS * len(cols)),
                                      self.latency + 4))
            m.submodules[f"out_buffer{k}" if k else "out_buffer"] = obufs[-1]
        obuf = obufs[0]

        # -- control: tile loading and swap ordering (as PEArray's, but for the fast grid) -----
        # PE (r, j) reads its shadow weight at the fast edge 2c + r + j + 2 (c: the fabric edge
        # that registers the swap pair), i.e. no later than fabric edge
        # c + ceil((r + J + 1) / 2) for the row's last PE; row r of the next tile is written
        # at fabric edge c + lock + 3 + r at the earliest (rows arrive in order, one a cycle).
        # Row 0 is the binding one: lock >= ceil((J + 1) / 2) - 3; one cycle of margin on top.
        lock = max(1, -(-(J + 1) // 2) - 2)
        swap_ok = Signal()
        swap_d = Signal()
        lockout = Signal(range(lock + 1))
        lock_zero = Signal(init=1)
        lock_one = Signal()
        lock_zero_next = ~swap_d & (lock_zero | lock_one)
        m.d.comb += self.acts.ready.eq(obuf.can_accept & (~self.acts.payload.swap | swap_ok))
        accept = Signal()
        accept_swap = Signal()
        m.d.comb += [
            accept.eq(self.acts.valid & self.acts.ready),
            accept_swap.eq(accept & self.acts.payload.swap),
        ]
        m.d.comb += [b.accept.eq(accept) for b in obufs]
        m.d.sync += [swap_d.eq(accept_swap), lock_zero.eq(lock_zero_next)]
        with m.If(swap_d):
            m.d.sync += [lockout.eq(lock), lock_one.eq(lock == 1)]
        with m.Elif(~lock_zero):
            m.d.sync += [lockout.eq(lockout - 1), lock_one.eq(lockout == 2)]

        # Shadow writes: a weight row lands in a stage register and is written into its shadow
        # row a cycle later under per-row, per-PE-group enables (one-hot pointer and ready flag
        # per group, so that no enable drives more than a group). With packing, the low g bits
        # of each PE's upper weight also go to a small shadow of their own, for the side sum.
        if P == 2:
            packed_in = [(self.weights.payload[2 * j + 1] << 16) + self.weights.payload[2 * j]
                         for j in range(J)]
        else:
            packed_in = [self.weights.payload[j] for j in range(J)]
        w_stage = [Signal(signed(pw_bits), name=f"wstage_j{j}", reset_less=True)
                   for j in range(J)]
        m.d.sync += [w_stage[j].eq(packed_in[j]) for j in range(J)]
        h_stage = []
        if g:
            h_stage = [Signal(g, name=f"hstage_j{j}", reset_less=True) for j in range(J)]
            m.d.sync += [h_stage[j].eq(self.weights.payload[2 * j + 1][:g]) for j in range(J)]
        groups = _split(J, -(-J * (pw_bits + g) // MAX_FANOUT))
        w_en = [[None] * J for _ in range(R)]
        for k, pes in enumerate(groups):
            ptr = Signal(R, init=1, name=f"wptr_g{k}")
            ready = Signal(init=1, name=f"wready_g{k}")
            shift = ready & self.weights.valid
            last = shift & ptr[R - 1]
            with m.If(swap_d):
                m.d.sync += ptr.eq(1)
            with m.Elif(shift):
                m.d.sync += ptr.eq(ptr << 1) if R > 1 else ptr.eq(1)
            m.d.sync += ready.eq(~(swap_ok | last) & lock_zero_next)
            if k == 0:
                m.d.comb += self.weights.ready.eq(ready)
                with m.If(accept_swap):
                    m.d.sync += swap_ok.eq(0)
                with m.Elif(last):
                    m.d.sync += swap_ok.eq(1)
            for r in range(R):
                en = Signal(name=f"pe_r{r}_wen_g{k}")
                m.d.sync += en.eq(shift & ptr[r])
                for j in pes:
                    w_en[r][j] = en
        shadow = [[Signal(signed(pw_bits), name=f"pe_r{r}_j{j}_wshadow", reset_less=True)
                   for j in range(J)] for r in range(R)]
        h_shadow = [[Signal(g, name=f"pe_r{r}_j{j}_hshadow", reset_less=True) if g else None
                     for j in range(J)] for r in range(R)]
        for r in range(R):
            for j in range(J):
                with m.If(w_en[r][j]):
                    m.d.sync += shadow[r][j].eq(w_stage[j])
                    if g:
                        m.d.sync += h_shadow[r][j].eq(h_stage[j])

        # -- the pair, the slow delay lines and the phase --------------------------------------
        # The pair register loads every cycle; ``accept_swap`` marks a swap pair. Row r's
        # operands wait r // 2 fabric cycles (both pixels; flip-flops with a reset, so that
        # Yosys keeps them flip-flops rather than shift-register LUTs).
        pair = [[Signal(signed(a_bits), name=f"pair_p{p}_r{r}", reset_less=True)
                 for r in range(R)] for p in range(PIXELS)]
        pair_swap = Signal(name="pair_swap")
        m.d.sync += [pair[p][r].eq(self.acts.payload.data[p][r])
                     for p in range(PIXELS) for r in range(R)]
        m.d.sync += pair_swap.eq(accept_swap)
        src = []  # per row: (pixel 0, pixel 1, swap) in front of the row's 2:1 mux
        for r in range(R):
            v = [pair[0][r], pair[1][r], pair_swap]
            for k in range(r // 2):
                d = [Signal(signed(a_bits), name=f"dly_r{r}_p0_{k}"),
                     Signal(signed(a_bits), name=f"dly_r{r}_p1_{k}"),
                     Signal(name=f"dly_r{r}_swap_{k}")]
                m.d.sync += [d[i].eq(v[i]) for i in range(3)]
                v = d
            src.append(v)

        # The phase: 0 in the first fast cycle of a fabric cycle, 1 in the second. ``phase_t``
        # toggles every fabric cycle; in the first fast cycle its fast sample still holds the
        # previous value, so their XOR, registered (``phase_x``), is the phase. The 2:1 muxes
        # take it from a two-level tree of fast copies, each loading the inverse of its parent
        # (a cycle later, the same phase) when it differs from it: it reads its own output, so
        # Yosys keeps the copies apart. A leaf selects PHASE_SINKS mux bits of one row; the
        # select reaches the DSP's B input through one LUT (Yosys moves the row register into
        # the DSP's B register), so its net is kept short.
        phase_t = Signal(name="phase_t", reset_less=True)
        phase_s = Signal(name="phase_s", reset_less=True)
        phase_x = Signal(name="phase_x", reset_less=True)
        m.d.sync += phase_t.eq(~phase_t)
        m.d.fast += [phase_s.eq(phase_t), phase_x.eq(phase_t ^ phase_s)]

        def phase_copy(parent, name):
            copy = Signal(name=name, reset_less=True)
            with m.If(copy == parent):
                m.d.fast += copy.eq(~parent)
            return copy

        leaves_per_row = -(-(a_bits + 1) // PHASE_SINKS)
        n_leaves = R * leaves_per_row
        mids = [phase_copy(phase_x, f"phase_m{k}")
                for k in range(-(-n_leaves // PHASE_SINKS))]
        phase = [[phase_copy(mids[(r * leaves_per_row + i) // PHASE_SINKS], f"phase_r{r}_{i}")
                  for i in range(leaves_per_row)] for r in range(R)]

        # Fast row registers: the 2:1 mux (pixel 0 in the first half); odd rows one more.
        west = []
        for r in range(R):
            a = Signal(signed(a_bits), name=f"row_r{r}_a", reset_less=True)
            s = Signal(name=f"row_r{r}_swap", reset_less=True)
            sel = [phase[r][i // PHASE_SINKS] for i in range(a_bits + 1)]
            m.d.fast += [a.eq(Cat(Mux(sel[i], src[r][1][i], src[r][0][i])
                                  for i in range(a_bits))),
                         s.eq(src[r][2] & ~sel[a_bits])]
            if r % 2:
                a_d = Signal(signed(a_bits), name=f"row_r{r}_a1", reset_less=True)
                s_d = Signal(name=f"row_r{r}_swap1", reset_less=True)
                m.d.fast += [a_d.eq(a), s_d.eq(s)]
                a, s = a_d, s_d
            west.append((a, s))

        # -- the PEs (fast domain): B, A, M and P registers, the sum down the PCIN cascade ------
        north = [None] * J
        bottom = []
        for r in range(R):
            a_in, s_in = west[r]
            for j in range(J):
                pfx = f"pe_r{r}_j{j}"
                a_reg = Signal(signed(a_bits), name=f"{pfx}_a", reset_less=True)
                s_reg = Signal(name=f"{pfx}_swap", reset_less=True)
                w_act = Signal(signed(pw_bits), name=f"{pfx}_w", reset_less=True)
                prod = Signal(signed(a_bits + pw_bits), name=f"{pfx}_m", reset_less=True)
                psum = Signal(signed(48), name=f"{pfx}_p", reset_less=True)
                m.d.fast += [a_reg.eq(a_in), s_reg.eq(s_in)]
                with m.If(s_in):
                    m.d.fast += w_act.eq(shadow[r][j])
                m.d.fast += prod.eq(a_reg * w_act)
                m.d.fast += psum.eq(prod if north[j] is None else north[j] + prod)
                north[j] = psum
                a_in, s_in = a_reg, s_reg
                if r == R - 1:
                    bottom.append(psum)

        # -- fast -> slow: every fabric edge captures each bottom P and its fast copy ----------
        pairs = []  # per position j: (pixel 0, pixel 1) packed sums, after fabric edge arrival[j]
        for j in range(J):
            pv = bottom[j][:keep]
            # The slow registers from here to the output buffer keep a reset: reset-less, the
            # copies among them (the low field's 16 bits run through three) become SRL16Es.
            hold = Signal(keep, name=f"bot_j{j}_hold", reset_less=True)
            cap_p = Signal(keep, name=f"bot_j{j}_cap_p")
            cap_h = Signal(keep, name=f"bot_j{j}_cap_h")
            m.d.fast += hold.eq(pv)
            m.d.sync += [cap_p.eq(pv), cap_h.eq(hold)]
            if (R + j) % 2:
                v = [cap_h, cap_p]
            else:
                first = Signal(keep, name=f"bot_j{j}_cap_p1")
                m.d.sync += first.eq(cap_p)
                v = [first, cap_h]
            # Align the positions: j waits a_max - arrival[j] more fabric cycles.
            for d in range(a_max - arrival[j]):
                v_d = [Signal(keep, name=f"deskew_j{j}_p{p}_{d}") for p in range(PIXELS)]
                m.d.sync += [v_d[p].eq(v[p]) for p in range(PIXELS)]
                v = v_d
            pairs.append(v)

        # -- the side sum: H mod 2^g per pixel and position (packed only) ---------------------
        out = [[None] * C for _ in range(PIXELS)]
        if P == 2:
            # Fabric edge c + 1: the activations' low bits; the active upper weights' low bits,
            # loaded when the swap pair's flag (swap_d) is seen, a cycle after the pair (the
            # shadow's last row is written no later than the swap pair's own edge).
            # (Reset-less: with a reset they would equal the first delay-line registers, and
            # Yosys would merge the two, loading the delay line's net with every side product.)
            a_low = [[Signal(g, name=f"side_a_p{p}_r{r}", reset_less=True) for r in range(R)]
                     for p in range(PIXELS)]
            m.d.sync += [a_low[p][r].eq(pair[p][r][:g]) for p in range(PIXELS) for r in range(R)]
            # The load enable is ``swap_d`` in a copy per row (``replica``), each driving J * g
            # clock enables.
            w_side = [[Signal(g, name=f"side_w_r{r}_j{j}", reset_less=True) for j in range(J)]
                      for r in range(R)]
            for r in range(R):
                with m.If(replica(m, accept_swap, f"side_wen_r{r}")):
                    m.d.sync += [w_side[r][j].eq(h_shadow[r][j]) for j in range(J)]
            sides = [[None] * J for _ in range(PIXELS)]
            for p in range(PIXELS):
                for j in range(J):
                    # Edge c + 2: the products mod 2^g; then the sum, two adder levels a stage.
                    terms = []
                    for r in range(R):
                        t = Signal(g, name=f"side_m_p{p}_j{j}_r{r}")
                        m.d.sync += t.eq((a_low[p][r] * w_side[r][j])[:g])
                        terms.append(t)
                    stage = 0
                    while len(terms) > 1:
                        for _ in range(2):
                            if len(terms) > 1:
                                terms = [(terms[i] + terms[i + 1])[:g] if i + 1 < len(terms)
                                         else terms[i] for i in range(0, len(terms), 2)]
                        regs = []
                        for i, t in enumerate(terms):
                            t_d = Signal(g, name=f"side_s_p{p}_j{j}_{stage}_{i}")
                            m.d.sync += t_d.eq(t)
                            regs.append(t_d)
                        terms = regs
                        stage += 1
                    # Delay to fabric edge c + a_max (flip-flops with a reset, as above).
                    assert a_max - 2 - stage >= 0
                    v = terms[0]
                    for d in range(a_max - 2 - stage):
                        v_d = Signal(g, name=f"side_d_p{p}_j{j}_{d}")
                        m.d.sync += v_d.eq(v)
                        v = v_d
                    sides[p][j] = v
            # Edge c + a_max + 1: the carry c = ((P >> 16) - H) mod 2^g; then L and H.
            for j in range(J):
                for p in range(PIXELS):
                    pv = pairs[j][p]
                    q = Signal(out_bits, name=f"split_j{j}_p{p}_q")
                    low = Signal(16, name=f"split_j{j}_p{p}_low")
                    carry = Signal(signed(g), name=f"split_j{j}_p{p}_c")
                    m.d.sync += [q.eq(pv[16:]), low.eq(pv[:16]),
                                 carry.eq((pv[16:16 + g] - sides[p][j])[:g])]
                    lo = Signal(signed(out_bits), name=f"sum_j{j}_p{p}_lo")
                    hi = Signal(signed(out_bits), name=f"sum_j{j}_p{p}_hi")
                    m.d.sync += [lo.eq(Cat(low, carry).as_signed()),
                                 hi.eq((q - carry)[:out_bits].as_signed())]
                    out[p][2 * j], out[p][2 * j + 1] = lo, hi
        else:
            for j in range(J):
                for p in range(PIXELS):
                    out[p][j] = pairs[j][p].as_signed()

        # The valid bit of an accepted pair, delayed by the array's latency.
        valid = accept
        for k in range(self.latency):
            v_d = Signal(name=f"valid_d{k}")
            m.d.sync += v_d.eq(valid)
            valid = v_d

        for b, cols in zip(obufs, col_groups, strict=True):
            n = len(cols)
            m.d.comb += [b.w_data[p * n + i].eq(out[p][c])
                         for p in range(PIXELS) for i, c in enumerate(cols)]
            m.d.comb += [b.w_en.eq(valid), b.r_ready.eq(self.sums.ready)]
            m.d.comb += [self.sums.payload[p][c].eq(b.r_data[p * n + i])
                         for p in range(PIXELS) for i, c in enumerate(cols)]
        m.d.comb += self.sums.valid.eq(obuf.r_valid)
        return m
