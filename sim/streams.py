"""cocotb helpers for Amaranth stream interfaces (``<name>__valid/ready/payload`` ports).

Payloads are packed and unpacked with the component's own ``amaranth.lib.data`` layouts, so a
testbench names fields instead of computing bit offsets.
"""

from __future__ import annotations

import random

from cocotb.triggers import ReadOnly, RisingEdge


def pack(layout, value) -> int:
    """Bits of ``value`` (a dict / list matching ``layout``)."""
    return layout.const(value).as_bits()


def unpack(layout, bits: int):
    """A view of ``bits`` by ``layout``: index fields and elements as Python ints."""
    return layout.from_bits(bits)


class StreamSource:
    """Drives ``<name>__valid`` / ``__payload`` of a stream into the DUT, honouring ``ready``.

    ``idle`` is the probability of inserting an idle cycle before each transfer.
    """

    def __init__(self, dut, name, clk, layout, idle=0.0, rng=None):
        self.valid = getattr(dut, f"{name}__valid")
        self.ready = getattr(dut, f"{name}__ready")
        self.payload = getattr(dut, f"{name}__payload")
        self.clk = clk
        self.layout = layout
        self.idle = idle
        self.rng = rng or random.Random(0)
        self.valid.value = 0
        self.payload.value = 0  # a DUT's ready may look at the payload: never leave it X
        self.sent = 0

    async def send(self, items):
        for item in items:
            while self.rng.random() < self.idle:
                self.valid.value = 0
                await RisingEdge(self.clk)
            self.payload.value = pack(self.layout, item)
            self.valid.value = 1
            while True:
                await ReadOnly()
                done = int(self.ready.value) == 1
                await RisingEdge(self.clk)
                if done:
                    break
            self.sent += 1
        self.valid.value = 0


class StreamSink:
    """Collects transfers of ``<name>__payload``, driving ``ready`` low with probability
    ``stall`` each cycle."""

    def __init__(self, dut, name, clk, layout, stall=0.0, rng=None):
        self.valid = getattr(dut, f"{name}__valid")
        self.ready = getattr(dut, f"{name}__ready")
        self.payload = getattr(dut, f"{name}__payload")
        self.clk = clk
        self.layout = layout
        self.stall = stall
        self.rng = rng or random.Random(1)
        self.ready.value = 0

    async def recv(self, n, timeout_cycles=None):
        """Return the next ``n`` payloads (as views); fail if they take over ``timeout_cycles``
        (default: 100 per transfer plus 1000)."""
        if timeout_cycles is None:
            timeout_cycles = 100 * n + 1000
        out = []
        cycles = 0
        while len(out) < n:
            r = 0 if self.rng.random() < self.stall else 1
            self.ready.value = r
            await ReadOnly()
            if r and int(self.valid.value) == 1:
                out.append(unpack(self.layout, self.payload.value.to_unsigned()))
            await RisingEdge(self.clk)
            cycles += 1
            if cycles > timeout_cycles:
                raise TimeoutError(f"received {len(out)} of {n} transfers in {cycles} cycles")
        self.ready.value = 0
        return out
