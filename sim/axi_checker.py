"""A protocol checker for the accelerator's AXI4 manager port (``m_axi_*``).

:class:`AxiChecker` samples the port every cycle and records each broken rule:

* handshakes: on AW, W and AR (the manager's channels) a valid stays high and its payload
  stable until ready; no valid is X after reset;
* bursts: INCR, full-width beats (AxSIZE = the bus width), beat-aligned addresses, at most
  ``max_burst`` (16, AXI3) beats, never across a ``page`` (4 KB) boundary;
* write data: ``wlast`` on exactly the last beat of each burst (W bursts are matched with AW
  bursts in order, whichever arrives first); no write response without a burst;
* read data: ``rlast`` where the subordinate must put it (checks the memory model);
* the DDR window: no burst outside ``[window[0], window[1])`` (``window`` may change between
  runs).

It also keeps the bursts it saw and the largest number of read bursts in flight at once.
"""

from __future__ import annotations

import cocotb
from cocotb.triggers import ReadOnly, RisingEdge

__all__ = ["AxiChecker"]

_PAYLOAD = {
    "aw": ("awid", "awaddr", "awlen", "awsize", "awburst", "awlock", "awcache", "awprot"),
    "w": ("wdata", "wstrb", "wlast"),
    "ar": ("arid", "araddr", "arlen", "arsize", "arburst", "arlock", "arcache", "arprot"),
}


class AxiChecker:
    """Checks ``<prefix>_*`` of ``dut`` on ``clock``; ``resetn`` (active low) pauses it.

    Parameters
    ----------
    data_bits:
        Bus width.
    window:
        ``(lo, hi)`` or ``None`` (no window check).
    """

    def __init__(self, dut, prefix, clock, resetn, data_bits, window=None, max_burst=16,
                 page=4096):
        self._sig = {}
        for ch in ("aw", "w", "b", "ar", "r"):
            for name in ("valid", "ready"):
                self._sig[ch + name] = getattr(dut, f"{prefix}_{ch}{name}")
        for names in _PAYLOAD.values():
            for name in names:
                self._sig[name] = getattr(dut, f"{prefix}_{name}")
        for name in ("rlast", "rresp", "bresp"):
            self._sig[name] = getattr(dut, f"{prefix}_{name}")
        self.clock = clock
        self.resetn = resetn
        self.beat_bytes = data_bits // 8
        self.window = window
        self.max_burst = max_burst
        self.page = page
        self.errors: list[str] = []
        self.cycle = 0
        self.reset_state()
        self._task = cocotb.start_soon(self._run())

    def reset_state(self):
        self.read_bursts: list[tuple[int, int]] = []    # (addr, beats) at the AR handshake
        self.write_bursts: list[tuple[int, int]] = []
        self._reads: list[list[int]] = []               # [beats, beats seen] per read burst
        self._aw_lens: list[int] = []                   # AW bursts whose W is not complete
        self._w_lens: list[int] = []                    # W bursts (by wlast) without an AW
        self._w_beats = 0
        self._b_owed = 0                                # AW bursts without a response
        self._prev = {"aw": None, "w": None, "ar": None}
        self.max_reads_in_flight = 0
        self.r_beats = self.w_beats = 0

    def stop(self):
        self._task.cancel()

    def error(self, msg):
        if len(self.errors) < 1000:
            self.errors.append(f"cycle {self.cycle}: {msg}")

    def assert_clean(self):
        """Raise ``AssertionError`` listing the first rule violations, if any."""
        if self.errors:
            more = f" (+{len(self.errors) - 10} more)" if len(self.errors) > 10 else ""
            raise AssertionError("AXI protocol violations:\n  " + "\n  ".join(self.errors[:10])
                                 + more)

    @property
    def quiet(self) -> bool:
        """No read burst, write data or write response outstanding."""
        return not self._reads and not self._aw_lens and not self._w_lens \
            and self._b_owed == 0 and self._w_beats == 0

    def _int(self, name):
        try:
            return int(self._sig[name].value)
        except ValueError:
            self.error(f"{name} is not 0/1 ({self._sig[name].value})")
            return 0

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
            aw, w = self._aw_lens.pop(0), self._w_lens.pop(0)
            if aw != w:
                self.error(f"write burst of {aw} beats got wlast after {w} beats")

    async def _run(self):
        while True:
            await RisingEdge(self.clock)
            await ReadOnly()
            self.cycle += 1
            try:
                in_reset = int(self.resetn.value) == 0
            except ValueError:
                in_reset = True
            if in_reset:
                self.reset_state()
                continue
            for ch in ("aw", "w", "ar"):
                valid = self._int(ch + "valid")
                ready = self._int(ch + "ready")
                payload = None
                if valid or self._prev[ch] is not None:
                    payload = tuple(str(self._sig[n].value) for n in _PAYLOAD[ch])
                if self._prev[ch] is not None:
                    if not valid:
                        self.error(f"{ch}valid dropped before {ch}ready")
                    elif payload != self._prev[ch]:
                        self.error(f"{ch} payload changed while waiting for {ch}ready")
                self._prev[ch] = payload if valid and not ready else None
                if valid and ready:
                    self._handshake(ch)
            if self._int("rvalid") and self._int("rready"):
                self.r_beats += 1
                last = self._int("rlast")
                if not self._reads:
                    self.error("read data without a read burst")
                else:
                    head = self._reads[0]
                    head[1] += 1
                    if bool(last) != (head[1] == head[0]):
                        self.error(f"rlast={last} on beat {head[1]} of a {head[0]}-beat burst")
                    if last or head[1] >= head[0]:
                        self._reads.pop(0)
            if self._int("bvalid") and self._int("bready"):
                if self._b_owed == 0:
                    self.error("write response without a write burst")
                else:
                    self._b_owed -= 1

    def _handshake(self, ch):
        v = {n: int(self._sig[n].value) for n in _PAYLOAD[ch]}
        if ch == "ar":
            beats = self._burst("read", v["araddr"], v["arlen"], v["arsize"], v["arburst"])
            self.read_bursts.append((v["araddr"], beats))
            self._reads.append([beats, 0])
            self.max_reads_in_flight = max(self.max_reads_in_flight, len(self._reads))
        elif ch == "aw":
            beats = self._burst("write", v["awaddr"], v["awlen"], v["awsize"], v["awburst"])
            self.write_bursts.append((v["awaddr"], beats))
            self._aw_lens.append(beats)
            self._b_owed += 1
            self._match_writes()
        else:
            self.w_beats += 1
            self._w_beats += 1
            if v["wlast"]:
                self._w_lens.append(self._w_beats)
                self._w_beats = 0
                self._match_writes()
            elif self._aw_lens and len(self._w_lens) == 0 and self._w_beats > self._aw_lens[0]:
                self.error(f"write burst of {self._aw_lens[0]} beats without wlast on its "
                           f"last beat")
