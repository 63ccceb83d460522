"""DMA building blocks in Amaranth's simulator: the burst generator's AXI3 rules, and the
gearboxes between bus beats and buffer words at every ratio a config can produce (a word of 1,
2 or 3 beats, or 2 and 4 words per beat)."""

import random

import pytest
from amaranth.sim import Simulator

from zynqnn.hw.geometry import MAX_BURST, PAGE_BYTES
from zynqnn.rtl.dma import BurstGen, Packer, Unpacker, WindowGuard


def _sim(dut, bench, cycles=20000):
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run_until(cycles * 1e-8)


@pytest.mark.parametrize("beat_bytes", [4, 8])
def test_burst_gen_covers_transfers_within_axi3_rules(beat_bytes):
    rng = random.Random(beat_bytes)
    dut = BurstGen(beat_bytes)
    xfers = []
    for _ in range(12):
        lines = rng.randint(1, 4)
        line_beats = rng.choice([1, 3, 15, 16, 17, 40, 600])
        addr = rng.randrange(0, 1 << 20) * beat_bytes
        stride = (line_beats + rng.randint(0, 9)) * beat_bytes
        xfers.append((addr, stride, lines, line_beats))
    xfers.append((0x1000 - beat_bytes, 0, 0, 5))       # empty: no bursts
    got_t = []

    async def bench_exact(ctx):
        for addr, stride, lines, line_beats in xfers:
            ctx.set(dut.req.payload, {"addr": addr, "stride": stride, "lines": lines,
                                      "line_beats": line_beats})
            ctx.set(dut.req.valid, 1)
            await ctx.tick().until(dut.req.ready)
            ctx.set(dut.req.valid, 0)
            while True:
                ready = rng.random() < 0.7
                ctx.set(dut.bursts.ready, ready)
                valid = ctx.get(dut.bursts.valid)
                payload = (ctx.get(dut.bursts.payload.addr), ctx.get(dut.bursts.payload.len))
                await ctx.tick()
                if valid and ready:
                    got_t.append((payload[0], payload[1] + 1))
                if ctx.get(dut.idle) and not ctx.get(dut.bursts.valid):
                    break

    _sim(dut, bench_exact)
    expected_beats = []
    for addr, stride, lines, line_beats in xfers:
        for i in range(lines):
            base = addr + i * stride
            expected_beats += [base + j * beat_bytes for j in range(line_beats)]
    beats = []
    for addr, n in got_t:
        assert 1 <= n <= MAX_BURST
        assert addr // PAGE_BYTES == (addr + n * beat_bytes - 1) // PAGE_BYTES, hex(addr)
        beats += [addr + j * beat_bytes for j in range(n)]
    assert beats == expected_beats


RATIOS = [(64, 64), (128, 64), (192, 64), (32, 64), (16, 64), (128, 32), (96, 32)]


@pytest.mark.parametrize("word_bits,beat_bits", RATIOS)
def test_unpacker_writes_line_words(word_bits, beat_bits):
    """Beats of ``lines`` DDR lines -> consecutive buffer words; a line's unused tail dropped."""
    rng = random.Random(word_bits * beat_bits)
    depth = 256
    dut = Unpacker(word_bits, beat_bits, depth)
    lines, line_words, sram = 3, 5, 17
    k_beats = max(1, word_bits // beat_bits)
    per_beat = max(1, beat_bits // word_bits)
    beats_per_line = line_words * k_beats if word_bits >= beat_bits else \
        -(-line_words // per_beat)
    line_bits = beats_per_line * beat_bits
    ddr_lines = [rng.getrandbits(line_bits) for _ in range(lines)]
    mask = (1 << word_bits) - 1
    expected = {sram + i * line_words + w: (ddr_lines[i] >> (w * word_bits)) & mask
                for i in range(lines) for w in range(line_words)}
    written = {}

    async def bench(ctx):
        ctx.set(dut.bank, 1)
        ctx.set(dut.sram_addr, sram)
        ctx.set(dut.line_words, line_words)
        ctx.set(dut.lines, lines)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        queue = [(line >> (b * beat_bits)) & ((1 << beat_bits) - 1)
                 for line in ddr_lines for b in range(beats_per_line)]
        for _ in range(2000):
            if queue and rng.random() < 0.8:
                ctx.set(dut.beats.valid, 1)
                ctx.set(dut.beats.payload, {"data": queue[0], "resp": 0})
            else:
                ctx.set(dut.beats.valid, 0)
            took = ctx.get(dut.beats.valid) and ctx.get(dut.beats.ready)
            await ctx.tick()
            if took:
                queue.pop(0)
            if ctx.get(dut.w.en):
                assert ctx.get(dut.w.bank) == 1
                written[ctx.get(dut.w.addr)] = ctx.get(dut.w.data)
            if not queue and not ctx.get(dut.busy) and len(written) == len(expected):
                break

    _sim(dut, bench)
    assert written == expected


@pytest.mark.parametrize("word_bits,beat_bits", RATIOS)
def test_packer_reads_words_into_beats(word_bits, beat_bits):
    """Consecutive buffer words -> beats of ``lines`` DDR lines, partial beats strobed."""
    rng = random.Random(word_bits + beat_bits)
    depth = 256
    dut = Packer(word_bits, beat_bits, depth)
    lines, line_words, sram = 3, 5, 9
    mem = {a: rng.getrandbits(word_bits) for a in range(depth)}
    bb = beat_bits // 8
    wbytes = word_bits // 8
    expected = []   # (data, strb) of each beat, strobed bytes only
    for i in range(lines):
        raw = b"".join(mem[sram + i * line_words + w].to_bytes(wbytes, "little")
                       for w in range(line_words))
        for off in range(0, len(raw), bb):
            chunk = raw[off:off + bb]
            expected.append((int.from_bytes(chunk, "little"), (1 << len(chunk)) - 1))
    got = []

    async def bench(ctx):
        ctx.set(dut.bank, 0)
        ctx.set(dut.sram_addr, sram)
        ctx.set(dut.line_words, line_words)
        ctx.set(dut.lines, lines)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        read_addr = None
        for _ in range(2000):
            ready = rng.random() < 0.7
            ctx.set(dut.beats.ready, ready)
            # A synchronous read: the word of last cycle's address.
            ctx.set(dut.r.data, mem[read_addr] if read_addr is not None else 0)
            en, addr = ctx.get(dut.r.en), ctx.get(dut.r.addr)
            valid = ctx.get(dut.beats.valid)
            data, strb = ctx.get(dut.beats.payload.data), ctx.get(dut.beats.payload.strb)
            await ctx.tick()
            read_addr = addr if en else None
            if valid and ready:
                mask = sum(0xFF << (8 * b) for b in range(bb) if strb >> b & 1)
                got.append((data & mask, strb))
            if len(got) == len(expected) and not ctx.get(dut.busy):
                break

    _sim(dut, bench)
    assert got == expected


def test_window_guard_passes_inside_and_refuses_outside():
    """The ports' WindowGuard: every burst inside [base, limit) comes out in order (the last
    beat ending exactly at the limit included); a burst one beat past the limit, one beat below
    the base, wrapping past 2^32 or under an inverted window is refused (one pulse, with its
    tag), dropped with the burst behind it, and nothing is taken until the abort."""
    bb = 8
    dut = WindowGuard(32, bb, tag_bits=1)
    top = 1 << 32
    cases = [
        # (window, bursts as (addr, beats), index of the first refused burst or None)
        ((0x1000, 0x3000), [(0x1000, 16), (0x2F80, 16), (0x2FF8, 1)], None),
        ((0x1000, 0x3000), [(0x1000, 4), (0x2F88, 16), (0x1000, 1)], 1),   # one beat past
        ((0x1000, 0x3000), [(0x0FF8, 1), (0x1000, 1)], 0),                 # one beat below
        ((0x1000, 0x2FFC), [(0x2F80, 15), (0x2FF0, 1), (0x2FF8, 1)], 2),  # unaligned limit
        ((top - 0x1000, top - 1), [(top - 0x100, 16), (top - 8, 1)], 1),   # top of 4 GB
        ((top - 0x1000, top - 1), [(top - 0x80, 16)], 0),                  # end = 2^32
        ((0x3000, 0x1000), [(0x2000, 1)], 0),                              # inverted
        ((0, 0), [(0, 1)], 0),                                             # empty
    ]
    log = []

    async def bench(ctx):
        for n, ((lo, hi), bursts, _bad) in enumerate(cases):
            ctx.set(dut.window_base, lo)
            ctx.set(dut.window_limit, hi)
            ctx.set(dut.abort, 1)
            await ctx.tick()
            ctx.set(dut.abort, 0)
            out, refused = [], []
            pending = list(enumerate(bursts))
            for cyc in range(60):
                if pending:
                    i, (addr, beats) = pending[0]
                    ctx.set(dut.req.payload, {"addr": addr, "len": beats - 1, "tag": i & 1})
                    ctx.set(dut.req.valid, 1)
                else:
                    ctx.set(dut.req.valid, 0)
                ctx.set(dut.out.ready, (n + cyc) % 3 != 0)
                took = pending and ctx.get(dut.req.ready)
                if ctx.get(dut.out.valid) and ctx.get(dut.out.ready):
                    out.append((ctx.get(dut.out.payload.addr), ctx.get(dut.out.payload.len) + 1))
                if ctx.get(dut.refused):
                    refused.append(ctx.get(dut.refused_tag))
                await ctx.tick()
                if took:
                    pending.pop(0)
            ctx.set(dut.req.valid, 0)
            log.append((n, out, refused, len(pending)))

    _sim(dut, bench)
    for (n, out, refused, left), ((lo, hi), bursts, bad) in zip(log, cases, strict=True):
        if bad is None:
            assert out == bursts and refused == [] and left == 0, (n, out, refused)
        else:
            assert out == bursts[:bad], (n, out)
            assert refused == [bad & 1], (n, refused)
            for addr, beats in out:
                assert lo <= addr and addr + beats * bb <= hi, (n, addr)
