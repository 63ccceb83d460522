"""Protocol checkers for the accelerator's AXI4 manager port (``m_axi_*``) and its AXI4-Lite
register port (``s_axi_*``), after the rules of Xilinx's AXI Protocol Checker (PG101) that
matter for them.

:class:`AxiChecker` and :class:`AxiLiteChecker` sample their port every cycle (after the rising
edge, in the read-only phase) and record each broken rule. The rules themselves live in
:class:`AxiRules` and :class:`AxiLiteRules`, which take one cycle's samples at a time from any
source, so ``tests/test_axi_checker.py`` feeds them broken traces without a simulator. Both
ports:

* reset: every ``xVALID`` low while ``ARESETn`` is low (from the first edge that samples it
  low: the reset is synchronous) and in the first cycle after it rises (PG101
  ``AXI_ERRM_AWVALID_RESET`` ...);
* X/Z: out of reset no ``xVALID`` is X or Z, and while ``xVALID`` is high neither is its
  ``xREADY`` nor its payload (address, len, size, burst, id, data, strb, last, resp; ``WDATA``
  on the strobed byte lanes) (PG101 ``AXI_ERRM_AWADDR_X`` ...); on Icarus only, Verilator has
  two states;
* handshakes, all five channels: a valid stays high and its payload stable until ready;
* responses: a write response only for a write whose address and (last) data were both
  accepted, never in the same cycle; read data only for an accepted read; response ids only
  ids issued and outstanding (AXI4).

The AXI4 port also:

* bursts: INCR, full-width beats (AxSIZE = the bus width), beat-aligned addresses, at most
  ``max_burst`` (16, AXI3) beats, never across a ``page`` (4 KB) boundary;
* ``wlast`` on exactly the len-th beat of each burst (W bursts are matched with AW bursts in
  order, whichever arrives first); ``rlast`` on exactly the last beat of each read burst;
* the DDR window: no burst outside ``[window[0], window[1])`` (``window`` may change between
  runs).

They keep the bursts they saw and the largest number of read bursts in flight at once.
"""

from __future__ import annotations

from collections.abc import Callable

import cocotb
from cocotb.triggers import ReadOnly, RisingEdge

__all__ = ["AxiChecker", "AxiLiteChecker", "AxiLiteRules", "AxiRules"]

#: A sampled value: an ``int``, or the bits as a string (``"01XZ..."``, most significant first)
#: when any bit is not 0/1 (``LogicArray.is_resolvable`` false).
Sample = int | str
Getter = Callable[[str], Sample]

_AXI_PAYLOAD = {
    "aw": ("awid", "awaddr", "awlen", "awsize", "awburst", "awlock", "awcache", "awprot"),
    "w": ("wdata", "wstrb", "wlast"),
    "b": ("bid", "bresp"),
    "ar": ("arid", "araddr", "arlen", "arsize", "arburst", "arlock", "arcache", "arprot"),
    "r": ("rid", "rdata", "rresp", "rlast"),
}

_LITE_PAYLOAD = {
    "aw": ("awaddr", "awprot"),
    "w": ("wdata", "wstrb"),
    "b": ("bresp",),
    "ar": ("araddr", "arprot"),
    "r": ("rdata", "rresp"),
}

#: Responses are checked before requests: a request accepted in a cycle cannot be answered in
#: that same cycle.
_ORDER = ("b", "r", "aw", "w", "ar")


def _x_lanes(data: str, strb: Sample) -> list[int]:
    """Byte lanes of ``data`` (a bit string, MSB first) that hold X/Z and are strobed."""
    n = len(data) // 8
    bad = []
    for lane in range(n):
        bits = data[len(data) - 8 * (lane + 1):len(data) - 8 * lane]
        if isinstance(strb, int) and not strb >> lane & 1:
            continue
        if any(c not in "01LH" for c in bits.upper()):
            bad.append(lane)
    return bad


class _Rules:
    """The rules both ports share: reset, X/Z, handshake stability. Subclasses count bursts
    and responses in :meth:`_handshake`."""

    PAYLOAD: dict[str, tuple[str, ...]] = {}
    KIND = "AXI"

    def __init__(self):
        self.errors: list[str] = []
        self.cycle = 0
        self._prev_reset: bool | None = None      # ARESETn low at the previous sample
        self.reset_state()

    def reset_state(self):
        self._prev = dict.fromkeys(self.PAYLOAD)

    def error(self, msg):
        if len(self.errors) < 1000:
            self.errors.append(f"cycle {self.cycle}: {msg}")

    def assert_clean(self):
        """Raise ``AssertionError`` listing the first rule violations, if any."""
        if self.errors:
            more = f" (+{len(self.errors) - 10} more)" if len(self.errors) > 10 else ""
            raise AssertionError(f"{self.KIND} protocol violations:\n  "
                                 + "\n  ".join(self.errors[:10]) + more)

    def step(self, get: Getter, in_reset: bool):
        """One cycle: ``get(name)`` is the sampled value of ``name`` (``"awvalid"``, ...),
        ``in_reset`` whether ARESETn is low (or not 0/1)."""
        self.cycle += 1
        prev_reset, self._prev_reset = self._prev_reset, in_reset
        if prev_reset:
            # The edge that made these values sampled ARESETn low: every valid is low.
            when = "during reset" if in_reset else "in the first cycle after ARESETn rose"
            for ch in self.PAYLOAD:
                v = get(ch + "valid")
                if v != 0:
                    self.error(f"{ch}valid is {v} {when}")
        if in_reset:
            self.reset_state()
            return
        valid = {}
        for ch in _ORDER:
            v = get(ch + "valid")
            if isinstance(v, str):
                self.error(f"{ch}valid is {v}")
                v = 0
            valid[ch] = v
        if not any(valid.values()) and not any(self._prev.values()):
            return      # an idle cycle (most of them): nothing more to sample
        ready = {}
        for ch in _ORDER:
            r = get(ch + "ready") if valid[ch] else 0
            if isinstance(r, str):
                self.error(f"{ch}ready is {r} while {ch}valid")
                r = 0
            ready[ch] = r
        for ch in _ORDER:
            payload = None
            if valid[ch] or self._prev[ch] is not None:
                payload = {n: get(n) for n in self.PAYLOAD[ch]}
            if valid[ch]:
                self._check_x(ch, payload)
            prev = self._prev[ch]
            if prev is not None:
                if not valid[ch]:
                    self.error(f"{ch}valid dropped before {ch}ready")
                elif payload != prev:
                    changed = [n for n in payload if payload[n] != prev[n]]
                    self.error(f"{ch} payload ({', '.join(changed)}) changed while waiting "
                               f"for {ch}ready")
            self._prev[ch] = payload if valid[ch] and not ready[ch] else None
            if valid[ch] and ready[ch]:
                self._handshake(ch, payload)

    def _check_x(self, ch, payload):
        for name, v in payload.items():
            if not isinstance(v, str):
                continue
            if name == "wdata":
                lanes = _x_lanes(v, payload["wstrb"])
                if lanes:
                    self.error(f"wdata is X/Z on strobed byte lanes {lanes} while wvalid")
            else:
                self.error(f"{name} is {v} while {ch}valid")

    def _handshake(self, ch, payload):
        raise NotImplementedError

    @staticmethod
    def _int(v: Sample) -> int:
        """A payload value as an int (X/Z bits, already reported, read as 0)."""
        if isinstance(v, int):
            return v
        return int("".join("1" if c in "1H" else "0" for c in v.upper()) or "0", 2)


class AxiRules(_Rules):
    """The AXI4 rules on one port (see the module's docstring).

    Parameters
    ----------
    data_bits:
        Bus width.
    window:
        ``(lo, hi)`` or ``None`` (no window check).
    """

    PAYLOAD = _AXI_PAYLOAD

    def __init__(self, data_bits, window=None, max_burst=16, page=4096):
        self.beat_bytes = data_bits // 8
        self.window = window
        self.max_burst = max_burst
        self.page = page
        super().__init__()

    def reset_state(self):
        super().reset_state()
        self.read_bursts: list[tuple[int, int]] = []    # (addr, beats) at the AR handshake
        self.write_bursts: list[tuple[int, int]] = []
        self._reads: list[list[int]] = []               # [id, beats, beats seen] per read burst
        self._aw_lens: list[tuple[int, int]] = []       # (id, beats): AW whose W is not complete
        self._w_lens: list[int] = []                    # W bursts (by wlast) without an AW
        self._w_beats = 0
        self._b_ids: list[int] = []                     # ids of complete writes owed a response
        self.max_reads_in_flight = 0
        self.r_beats = self.w_beats = 0

    @property
    def _b_owed(self) -> int:
        """AW bursts without a write response."""
        return len(self._b_ids) + len(self._aw_lens)

    @property
    def quiet(self) -> bool:
        """No read burst, write data or write response outstanding."""
        return not self._reads and not self._aw_lens and not self._w_lens \
            and not self._b_ids and self._w_beats == 0

    def _burst(self, kind, addr, length, size, burst):
        beats = length + 1
        nbytes = beats * self.beat_bytes
        if beats > self.max_burst:
            self.error(f"{kind} burst of {beats} beats at {addr:#x} (max {self.max_burst})")
        if (1 << size) != self.beat_bytes:
            self.error(f"{kind} AxSIZE {size} at {addr:#x} is not the bus width")
        if burst != 1:
            self.error(f"{kind} AxBURST {burst} at {addr:#x} is not INCR")
        if addr % self.beat_bytes:
            self.error(f"{kind} address {addr:#x} is not beat-aligned")
        if addr // self.page != (addr + nbytes - 1) // self.page:
            self.error(f"{kind} burst {addr:#x}+{nbytes} crosses a {self.page}-byte boundary")
        if self.window is not None:
            lo, hi = self.window
            if addr < lo or addr + nbytes > hi:
                self.error(f"{kind} burst {addr:#x}+{nbytes} outside the window "
                           f"[{lo:#x}, {hi:#x})")
        return beats

    def _match_writes(self):
        while self._aw_lens and self._w_lens:
            (wid, aw), w = self._aw_lens.pop(0), self._w_lens.pop(0)
            if aw != w:
                self.error(f"write burst of {aw} beats got wlast after {w} beats")
            self._b_ids.append(wid)

    def _handshake(self, ch, payload):
        v = {n: self._int(x) for n, x in payload.items()}
        if ch == "ar":
            beats = self._burst("read", v["araddr"], v["arlen"], v["arsize"], v["arburst"])
            self.read_bursts.append((v["araddr"], beats))
            self._reads.append([v["arid"], beats, 0])
            self.max_reads_in_flight = max(self.max_reads_in_flight, len(self._reads))
        elif ch == "aw":
            beats = self._burst("write", v["awaddr"], v["awlen"], v["awsize"], v["awburst"])
            self.write_bursts.append((v["awaddr"], beats))
            self._aw_lens.append((v["awid"], beats))
            if len(self._aw_lens) == 1 and not self._w_lens and self._w_beats >= beats:
                self.error(f"write burst of {beats} beats without wlast on its last beat")
            self._match_writes()
        elif ch == "w":
            self.w_beats += 1
            self._w_beats += 1
            if v["wlast"]:
                self._w_lens.append(self._w_beats)
                self._w_beats = 0
                self._match_writes()
            elif self._aw_lens and not self._w_lens and self._w_beats == self._aw_lens[0][1]:
                self.error(f"write burst of {self._aw_lens[0][1]} beats without wlast on its "
                           f"last beat")
        elif ch == "r":
            self.r_beats += 1
            rid, last = v["rid"], v["rlast"]
            head = next((rd for rd in self._reads if rd[0] == rid), None)
            if head is None:
                if self._reads:
                    ids = sorted({rd[0] for rd in self._reads})
                    self.error(f"read data with rid {rid}, no outstanding read has it "
                               f"(outstanding ids {ids})")
                else:
                    self.error("read data without an outstanding read burst")
                return
            head[2] += 1
            if bool(last) != (head[2] == head[1]):
                self.error(f"rlast={last} on beat {head[2]} of a {head[1]}-beat burst")
            if last or head[2] >= head[1]:
                self._reads.remove(head)
        else:   # b
            bid = v["bid"]
            if bid in self._b_ids:
                self._b_ids.remove(bid)
            elif self._b_ids:
                self.error(f"write response with bid {bid}, no complete write has it "
                           f"(ids {sorted(set(self._b_ids))})")
            elif self._aw_lens or self._w_lens or self._w_beats:
                self.error("write response before its burst's address and last data were "
                           "both accepted")
            else:
                self.error("write response without a write burst")


class AxiLiteRules(_Rules):
    """The AXI4-Lite rules on one port: reset, X/Z, handshakes, one response per request."""

    PAYLOAD = _LITE_PAYLOAD
    KIND = "AXI4-Lite"

    def reset_state(self):
        super().reset_state()
        self.aw = self.w = self.b = self.ar = self.r = 0    # handshakes since reset

    @property
    def quiet(self) -> bool:
        """Every accepted request answered, no write half-accepted."""
        return self.aw == self.w == self.b and self.ar == self.r

    def _handshake(self, ch, payload):
        if ch == "b" and self.b >= min(self.aw, self.w):
            self.error(f"write response {self.b + 1} with {self.aw} write addresses and "
                       f"{self.w} write data accepted")
        elif ch == "r" and self.r >= self.ar:
            self.error(f"read response {self.r + 1} with {self.ar} read addresses accepted")
        setattr(self, ch, getattr(self, ch) + 1)


class _Sampler:
    """Samples ``<prefix>_*`` of ``dut`` after every rising edge of ``clock`` into ``step``;
    ``resetn`` (active low)."""

    def _attach(self, dut, prefix, clock, resetn, sample_with=None):
        names = [ch + s for ch in self.PAYLOAD for s in ("valid", "ready")]
        names += [n for payload in self.PAYLOAD.values() for n in payload]
        self._sig = {n: getattr(dut, f"{prefix}_{n}") for n in names}
        self.clock = clock
        self.resetn = resetn
        self._followers = []
        if sample_with is None:
            self._task = cocotb.start_soon(self._run())
        else:       # one coroutine wake-up per cycle for both (each costs Python time)
            assert sample_with.clock is clock and sample_with.resetn is resetn
            sample_with._followers.append(self)
            self._task = sample_with._task

    def stop(self):
        self._task.cancel()

    def _get(self, name) -> Sample:
        v = self._sig[name].value
        try:
            return int(v)
        except ValueError:
            return str(v)

    async def _run(self):
        while True:
            await RisingEdge(self.clock)
            await ReadOnly()
            try:
                in_reset = int(self.resetn.value) == 0
            except ValueError:
                in_reset = True
            self.step(self._get, in_reset)
            for other in self._followers:
                other.step(other._get, in_reset)


class AxiChecker(_Sampler, AxiRules):
    """:class:`AxiRules` on ``<prefix>_*`` of ``dut``, every cycle of ``clock``."""

    def __init__(self, dut, prefix, clock, resetn, data_bits, window=None, max_burst=16,
                 page=4096):
        AxiRules.__init__(self, data_bits, window, max_burst, page)
        self._attach(dut, prefix, clock, resetn)


class AxiLiteChecker(_Sampler, AxiLiteRules):
    """:class:`AxiLiteRules` on ``<prefix>_*`` of ``dut``, every cycle of ``clock`` (sampled
    by the coroutine of the checker ``sample_with`` if given, which must share the clock and
    the reset)."""

    def __init__(self, dut, prefix, clock, resetn, sample_with=None):
        AxiLiteRules.__init__(self)
        self._attach(dut, prefix, clock, resetn, sample_with)
