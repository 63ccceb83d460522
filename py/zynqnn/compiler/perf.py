"""Performance model of a command stream, and a checker of its bank-flag protocol.

:func:`simulate` runs the three in-order units (load, compute, store) of the command processor
as a discrete-event simulation with the bank full/empty flags of :mod:`zynqnn.hw.isa`, so
double-buffering overlap comes out of the program itself. Per command:

* **MAC stage** (engine): ``R + C/2 + 2`` cycles of array fill and as many of drain, then
  one pass per (tap, input channel block) over the tile's output pixels; a pass is never
  shorter than ``2R + C/2`` cycles (the next weight tile must be shifted into the array).
  Bypass modes make one pass per tap; ``DW`` one pass over its padded window span.
* **post stage**: ``pixels x C / requant_lanes`` cycles plus the requantizer's pipeline; it
  overlaps the next command's MAC stage (two accumulator banks).
* **ELTWISE** (residual add): waits until the post stage is idle, then ``ELT_LATENCY +
  pixels x C / add_lanes`` cycles with the engine to itself. A lookup (``lut``) first streams
  its table (``256 / add_lanes`` cycles), then ``LUT_LATENCY + pixels x C / add_lanes``.
* **DMA** (:class:`DmaModel`): ``bytes / min(beat, DDR bandwidth / clock)``, the first burst's
  latency, and more latency when too few bursts are in flight to hide it (bursts of at most
  16 beats per line).

The same simulation checks the program: it fails on a deadlock (flags that are never
satisfied), on a command that would read a bank holding other data than in program order, and
on a LOAD that could read DDR before an earlier STORE to it has finished (or a STORE that could
overwrite what an earlier LOAD has not read yet).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

from zynqnn.hw import isa
from zynqnn.hw.config import HwConfig
from zynqnn.hw.geometry import (
    COMPUTE_OUTSTANDING,
    MAX_BURST,
    READ_OUTSTANDING,
    WRITE_OUTSTANDING,
    buffer_word_bits,
)

__all__ = ["DmaModel", "PerfReport", "ProtocolError", "conv_cycles", "eltwise_cycles",
           "network_report", "simulate", "useful_macs"]

#: Post-processing pipeline depth after the last lane group (read, requantize, write back):
#: PostProc.LATENCY (70), the engine's take of the command (a register) and its read and write
#: stages; fitted to the RTL figures in tests/compiler/test_perf.py.
POST_LATENCY = 80
#: A DW / DW_PAIRS command's MAC stage besides its walk (check, registered start, weights, FIR
#: and array pipeline; RTL: 934 cycles per 28x28 command of 900 walk pixels).
DW_OVERHEAD = 34
#: The step lanes' post stage besides one cycle per pixel (constants, the 7-stage lane, OBUF).
STEP_POST_LATENCY = 19
#: A step command's post stage trails its walk (handed over at the start): its last output
#: this many cycles after the MAC stage's end.
STEP_TAIL = 16
#: Cycles of an ELTWISE command besides its lane groups (check, constants read, the reader's
#: two-cycle IBUF read, the adder's EltwiseAdd.LATENCY = 54-stage pipeline, output write; the
#: reader's counters restart a cycle after the constants are in).
ELT_LATENCY = 66
#: Cycles of an ELTWISE lookup (lut) besides its table fill and lane groups (check, the
#: reader's two-cycle read for the table and for the codes, EltwiseLUT.LATENCY = 3 stages,
#: output write, a restart cycle before the table and before the codes): counted from the
#: RTL pipeline.
LUT_LATENCY = 16
#: Compute commands the engine holds at once (the shell's, zynqnn.hw.geometry).
OUTSTANDING = COMPUTE_OUTSTANDING
#: Cycles of a LOAD or STORE besides its bursts (decode, range checks, burst generator start);
#: fitted to the RTL in tests/compiler/test_perf.py.
TRANSFER_OVERHEAD = 0


class ProtocolError(RuntimeError):
    """The command stream deadlocks or races on a buffer bank or on DDR."""


#: Cycles from a read burst's address to its first data beat on the board at 150 MHz:
#: ~155 MiB/s, the throughput reported for a Zynq-7000 HP port with one transfer in flight, is
#: ~118 cycles per 128-byte burst, 16 of them the data beats.
BOARD_LATENCY = 100
#: The same in the RTL simulations' DDR (``zynqnn.sim.tb_program.LeanDdr`` with no added
#: latency answers an address on the next edge).
SIM_LATENCY = 2


@dataclass
class DmaModel:
    """DDR as the accelerator's DMA sees it: bandwidth (GB/s at the config's clock), cycles of
    latency per burst, and the RTL's outstanding bursts (reads :data:`READ_OUTSTANDING`,
    writes :data:`WRITE_OUTSTANDING`), which hide that latency once enough are in flight.
    ``enabled=False`` makes transfers free (data preloaded: the compute-only figure).

    A transfer of ``b`` bursts of ``d`` cycles of data each takes
    ``overhead + latency + b x max(d, (latency + d) / outstanding)`` cycles: the first burst's
    latency is always paid; after it the bus is busy unless too few bursts are in flight."""

    ddr_gbps: float = 1.2
    latency: int = BOARD_LATENCY
    enabled: bool = True
    overhead: int = 0  # cycles per transfer besides the bursts (command checks, burst generator)

    @classmethod
    def simulation(cls, latency: int = 0) -> DmaModel:
        """The RTL simulations' DDR: a beat per cycle, ``latency`` cycles added to
        :data:`SIM_LATENCY` (the program runner's ``ddr_latency``)."""
        return cls(ddr_gbps=1e9, latency=SIM_LATENCY + latency, overhead=TRANSFER_OVERHEAD)

    def cycles(self, cfg: HwConfig, line_bytes: int, lines: int, write: bool = False) -> int:
        if not self.enabled or lines * line_bytes == 0:
            return 0
        beat = cfg.axi_data_bits // 8
        bpc = min(beat, self.ddr_gbps * 1e3 / cfg.clock_mhz)
        bursts = lines * -(-line_bytes // (MAX_BURST * beat))
        data = lines * line_bytes / bpc
        per_burst = max(data / bursts, (self.latency + data / bursts) /
                        (WRITE_OUTSTANDING if write else READ_OUTSTANDING))
        return int(self.overhead + self.latency + bursts * per_burst + 0.5)


def conv_cycles(cfg: HwConfig, op) -> tuple[int, int, int]:
    """(MAC stage, post stage, useful MACs) of one ``CONV`` command's ``op`` fields."""
    R, C = cfg.rows, cfg.cols
    mode = isa.Mode(int(op.mode))
    k, cb = int(op.kernel), int(op.cin_blocks)
    pixels = int(op.out_h) * int(op.out_w)
    passes = {isa.Mode.CONV: k * k * cb, isa.Mode.PAIRS: isa.pairs_passes(k),
              isa.Mode.MAXPOOL: k * k}.get(mode, 1)
    fill = R + C // 2 + 2
    # PAIRS: two IBUF reads per vector, and the zero-point vector first in every pass.
    per_pass = 2 * pixels + 1 if mode == isa.Mode.PAIRS else pixels
    if mode in (isa.Mode.DW, isa.Mode.DW_PAIRS):  # one walk over the padded window span
        s = int(op.stride)
        dw = mode == isa.Mode.DW        # DW_PAIRS walks its padding: it can saturate
        per_pass = (isa.dw_walked(int(op.out_h), s, dw and int(op.y_off) < 0)
                    * isa.dw_walked(int(op.out_w), s,
                                    dw and int(op.x_off) < 0 and int(op.out_w) > 1)
                    + (not dw))  # DW_PAIRS: the zero-point vector first
    mac = (per_pass + DW_OVERHEAD if mode in (isa.Mode.DW, isa.Mode.DW_PAIRS)
           else 2 * fill + 1 + passes * max(per_pass, 2 * R + C // 2))  # 1: registered start
    out_pixels = 1 if mode == isa.Mode.SUMPOOL else pixels
    post = (0 if op.acc_keep
            else out_pixels + STEP_POST_LATENCY if op.step  # one pixel a cycle
            else out_pixels * C // cfg.requant_lanes + POST_LATENCY)
    macs = (k * k * cb * R * C * pixels
            if mode in (isa.Mode.CONV, isa.Mode.PAIRS, isa.Mode.DW, isa.Mode.DW_PAIRS) else 0)
    return mac, post, macs


def eltwise_cycles(cfg: HwConfig, op) -> int:
    """Cycles of one ``ELTWISE`` command's ``op`` fields (the engine does nothing else)."""
    groups = int(op.pixels) * cfg.cols // cfg.add_lanes
    if int(getattr(op, "lut", 0)):
        fill = isa.lut_table_words(cfg.cols) * cfg.cols // cfg.add_lanes
        return LUT_LATENCY + fill + groups
    return ELT_LATENCY + groups


@dataclass
class PerfReport:
    cycles: int
    mac_cycles: int = 0  # busy cycles of the MAC stage
    post_cycles: int = 0  # busy cycles of the post-processing stage
    load_cycles: int = 0
    store_cycles: int = 0
    macs: int = 0  # MACs of the commands (padding channels included)
    layers: dict = field(default_factory=dict)  # layer -> dict(start, end, mac, load, store)

    def utilization(self, cfg: HwConfig, useful_macs: int | None = None) -> float:
        m = self.macs if useful_macs is None else useful_macs
        return m / (self.cycles * cfg.rows * cfg.cols) if self.cycles else 0.0

    def bound(self) -> str:
        return _bound(self.mac_cycles, self.post_cycles, self.load_cycles, self.store_cycles)


def _bound(mac, post, load, store) -> str:
    """The busiest resource: ``compute`` (MAC stage), ``post`` (requantization lanes) or
    ``memory`` (the load or store DMA)."""
    return max((mac, "compute"), (post, "post"), (max(load, store), "memory"))[1]


def _decode(raw):
    bits = int.from_bytes(raw, "little")
    op = bits & 0xF
    if op in (isa.Opcode.LOAD, isa.Opcode.STORE):
        return op, isa.LoadStore.from_bits(bits)
    if op == isa.Opcode.CONV:
        return op, isa.ConvCommand.from_bits(bits)
    if op == isa.Opcode.ELTWISE:
        # The compute unit treats both alike (the header fields are in the same places).
        return isa.Opcode.CONV, isa.EltwiseCommand.from_bits(bits)
    return op, None


def simulate(cfg: HwConfig, commands: bytes, labels=None, dma: DmaModel | None = None,
             check: bool = True, scratch: tuple = (0, 0)) -> PerfReport:
    """Cycle estimate of a command stream (and, with ``check``, its protocol check). DDR bytes
    in ``scratch`` [lo, hi) are don't-care (dummy transfers) and not race-checked."""
    dma = dma or DmaModel()
    n = len(commands) // isa.COMMAND_BYTES
    cmds = [_decode(commands[i * isa.COMMAND_BYTES:(i + 1) * isa.COMMAND_BYTES])
            for i in range(n)]
    labels = labels or ["?"] * n
    word_bytes = {b: buffer_word_bits(cfg, b) // 8 for b in isa.Buffer}
    queues = {isa.Opcode.LOAD: [], isa.Opcode.CONV: [], isa.Opcode.STORE: []}
    # Program-order versions: which LOAD a compute's banks hold, which CONV a STORE drains.
    want, ver = {}, {}
    for i, (op, c) in enumerate(cmds):
        if op == isa.Opcode.END:
            break
        if op not in queues:
            continue
        queues[op].append(i)
        if op == isa.Opcode.LOAD:
            ver[int(c.buffer), int(c.bank)] = i
        elif op == isa.Opcode.CONV:
            want[i] = {b: ver.get(b) for b in _need_banks(c)}
            ver[int(isa.Buffer.OBUF), int(c.obuf_bank)] = i
        else:
            want[i] = ver.get((int(isa.Buffer.OBUF), int(c.bank)))

    full, cur = set(), {}
    held = []  # compute commands issued, not done: (index, releases, obuf)
    events = []  # (time, seq, kind, index)
    seq = 0
    t = 0
    pos = {k: 0 for k in queues}
    busy = {isa.Opcode.LOAD: False, isa.Opcode.STORE: False}
    mac_free, post_free, post_ends = 0, 0, []
    rep = PerfReport(0)
    spans = {}  # cmd index -> (start, end)
    ddr_done = []  # (index, lo, hi, start, end, is_store)

    def push(time, kind, i):
        nonlocal seq
        heapq.heappush(events, (time, seq, kind, i))
        seq += 1

    def layer_add(i, key, v):
        d = rep.layers.setdefault(labels[i], dict(start=None, end=0, mac=0, post=0, load=0,
                                                  store=0, macs=0))
        d[key] += v

    while True:
        progressed = True
        while progressed:
            progressed = False
            for kind in (isa.Opcode.LOAD, isa.Opcode.STORE):
                q = queues[kind]
                if busy[kind] or pos[kind] >= len(q):
                    continue
                i = q[pos[kind]]
                c = cmds[i][1]
                flag = (int(c.buffer), int(c.bank))
                if (flag in full) == (kind == isa.Opcode.LOAD):
                    continue
                if kind == isa.Opcode.STORE and check and cur.get(flag) != want[i]:
                    raise ProtocolError(f"command {i}: STORE drains OBUF bank {c.bank} holding "
                                        f"the result of command {cur.get(flag)}, not {want[i]}")
                nbytes = int(c.line_words) * word_bytes[isa.Buffer(int(c.buffer))]
                d = dma.cycles(cfg, nbytes, int(c.lines), kind == isa.Opcode.STORE)
                busy[kind] = True
                pos[kind] += 1
                spans[i] = (t, t + d)
                key = "load" if kind == isa.Opcode.LOAD else "store"
                layer_add(i, key, d)
                if kind == isa.Opcode.LOAD:
                    rep.load_cycles += d
                else:
                    rep.store_cycles += d
                for line in range(int(c.lines)):
                    a = int(c.ddr_addr) + line * int(c.ddr_stride)
                    if scratch[0] <= a < scratch[1]:
                        continue
                    ddr_done.append((i, a, a + nbytes, t, t + d, kind == isa.Opcode.STORE))
                push(t + d, kind, i)
                progressed = True
            q = queues[isa.Opcode.CONV]
            if pos[isa.Opcode.CONV] < len(q) and len(held) < OUTSTANDING:
                i = q[pos[isa.Opcode.CONV]]
                c = cmds[i][1]
                releasing = set()
                for _, rel, _ in held:
                    releasing |= rel
                needs = _need_banks(c)
                ob = (int(isa.Buffer.OBUF), int(c.obuf_bank))
                if (all(b in full and b not in releasing for b in needs) and ob not in full
                        and all(h[2] != ob for h in held)):
                    if check:
                        for b in needs:
                            if cur.get(b) != want[i][b]:
                                raise ProtocolError(
                                    f"command {i}: bank {isa.Buffer(b[0]).name}{b[1]} holds the "
                                    f"data of command {cur.get(b)}, not {want[i][b]}")
                    elt = int(c.opcode) == isa.Opcode.ELTWISE
                    if elt:
                        mac, post, macs = eltwise_cycles(cfg, c.op), 0, 0
                        start = max(t, mac_free, post_free)
                    else:
                        mac, post, macs = conv_cycles(cfg, c.op)
                        start = max(t, mac_free)
                    if len(post_ends) >= 2:
                        start = max(start, post_ends[-2])  # its accumulator bank is free
                    mac_end = start + mac
                    mac_free = mac_end
                    if elt:
                        done = post_free = mac_end
                    elif c.op.acc_keep:
                        done = mac_end
                    elif c.op.step:  # handed over at its start: the post stage trails the walk
                        p0 = max(start, post_free)
                        done = post_free = max(p0 + post, mac_end + STEP_TAIL)
                        post_ends.append(done)
                    else:
                        p0 = max(mac_end, post_free)
                        done = post_free = p0 + post
                        post_ends.append(done)
                    rep.mac_cycles += mac
                    rep.post_cycles += post
                    rep.macs += macs
                    layer_add(i, "mac", mac)
                    layer_add(i, "post", post)
                    layer_add(i, "macs", macs)
                    spans[i] = (start, done)
                    held.append((i, _banks(c.releases), ob))
                    pos[isa.Opcode.CONV] += 1
                    push(done, isa.Opcode.CONV, i)
                    progressed = True
        if not events:
            break
        t, _, kind, i = heapq.heappop(events)
        c = cmds[i][1]
        if kind == isa.Opcode.LOAD:
            full.add((int(c.buffer), int(c.bank)))
            cur[int(c.buffer), int(c.bank)] = i
            busy[kind] = False
        elif kind == isa.Opcode.STORE:
            full.discard((int(isa.Buffer.OBUF), int(c.bank)))
            busy[kind] = False
        else:
            h = held.pop(0)
            assert h[0] == i
            full -= h[1]
            full.add(h[2])
            cur[h[2]] = i
    left = [k.name for k in queues if pos[k] < len(queues[k])]
    if left:
        i = queues[next(k for k in queues if pos[k] < len(queues[k]))][
            pos[next(k for k in queues if pos[k] < len(queues[k]))]]
        raise ProtocolError(f"deadlock: the {'/'.join(left)} unit(s) wait forever "
                            f"(command {i})")
    rep.cycles = t
    for i, (s, e) in spans.items():
        d = rep.layers[labels[i]]
        d["start"] = s if d["start"] is None else min(d["start"], s)
        d["end"] = max(d["end"], e)
    if check:
        _check_ddr(ddr_done)
    return rep


def _check_ddr(xfers):
    """Every pair of overlapping transfers with a store runs in program order."""
    xfers = sorted(xfers, key=lambda x: x[1])
    active = []
    for x in xfers:
        active = [a for a in active if a[2] > x[1]]
        for a in active:
            if not (a[5] or x[5]):
                continue
            first, second = (a, x) if a[0] < x[0] else (x, a)
            if second[3] < first[4]:
                raise ProtocolError(f"DDR race: command {second[0]} starts at cycle "
                                    f"{second[3]} before command {first[0]} ends at {first[4]}"
                                    f" on bytes [{max(a[1], x[1]):#x}, ...)")
        active.append(x)


def _banks(mask: int) -> set:
    return {(b // isa.BANKS, b % isa.BANKS) for b in range(3 * isa.BANKS) if mask >> b & 1}


def _need_banks(c) -> set:
    return _banks(int(c.needs))


def useful_macs(layer) -> int:
    """MACs of a layer without padding channels (0 for the bypass layers)."""
    from .layers import HwConv

    if not isinstance(layer, HwConv):
        return 0
    if layer.macs is not None:
        return int(layer.macs)
    cout, cin, k, _ = layer.weights.shape
    return cout * cin * k * k * layer.output.height * layer.output.width


def network_report(prog, dma: DmaModel | None = None) -> dict:
    """Per-layer and whole-network figures of a compiled program: cycles (first command's start
    to last one's end; layers overlap at their boundaries), MAC/load/store busy cycles,
    utilization (useful MACs / (cycles x R x C)) and what bounds the layer."""
    cfg = prog.cfg
    rep = prog.perf(dma)
    out = {}
    for la in prog.net.layers:
        d = rep.layers.get(la.name)
        if d is None:
            continue
        cyc = d["end"] - d["start"]
        m = useful_macs(la)
        out[la.name] = dict(cycles=cyc, mac=d["mac"], post=d["post"], load=d["load"],
                            store=d["store"], macs=m,
                            utilization=m / (cyc * cfg.rows * cfg.cols) if cyc else 0.0,
                            bound=_bound(d["mac"], d["post"], d["load"], d["store"]))
    total = sum(useful_macs(la) for la in prog.net.layers)
    out["total"] = dict(cycles=rep.cycles, mac=rep.mac_cycles, post=rep.post_cycles,
                        load=rep.load_cycles,
                        store=rep.store_cycles, macs=total,
                        utilization=rep.utilization(cfg, total), bound=rep.bound(),
                        ms=rep.cycles / (cfg.clock_mhz * 1e3))
    return out
