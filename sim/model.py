"""Transaction-level model of the SoC shell with the test engine, and a program builder.

:class:`SocModel` runs a program the way the hardware does, at the level of commands: the same
checks in the same order (``zynqnn.rtl.cmdproc``), three in-order units with bounded queues
synchronised by the bank flags, LOAD / STORE data movement with the hardware's word packing,
and the test engine's transform (:mod:`zynqnn.sim.test_engine`). It reports the outcome (done,
or error with cause and index), leaves the DDR contents the hardware must leave, and lists the
bytes each transfer may touch. Programs whose loads read what their stores write race in the
hardware; the tests do not write such programs.

The model's dispatcher runs ahead of the units as far as their queues allow (the hardware's
dispatcher takes a few cycles per command, its units hundreds), and a unit whose flags can never
be satisfied leaves the program deadlocked: the hardware's watchdog ends it with ``WATCHDOG``.
"""

from __future__ import annotations

from dataclasses import dataclass

from zynqnn.hw import geometry, isa
from zynqnn.hw.config import HwConfig
from zynqnn.hw.geometry import QUEUE_DEPTH, buffer_depth, buffer_word_bits, line_beats

from .test_engine import encode_op, op_cycles, op_error, reference

__all__ = ["Program", "Outcome", "SocModel", "check_command", "commands_in_window",
           "dispatch_outcome", "next_refusal"]

E = isa.ErrorCause
B = isa.Buffer
Op = isa.Opcode


class Program:
    """Builds a command stream (little-endian, :data:`zynqnn.hw.isa.COMMAND_BYTES` per command)."""

    def __init__(self):
        self.commands: list[bytes] = []

    def __len__(self):
        return len(self.commands)

    def to_bytes(self) -> bytes:
        return b"".join(self.commands)

    def raw(self, command: bytes | int) -> Program:
        if isinstance(command, int):
            command = command.to_bytes(isa.COMMAND_BYTES, "little")
        assert len(command) == isa.COMMAND_BYTES
        self.commands.append(bytes(command))
        return self

    def _ls(self, opcode, buffer, bank, sram_addr, line_words, lines, ddr_addr, stride):
        if stride is None:
            stride = 0
        return self.raw(isa.encode(isa.LoadStore, opcode=opcode, buffer=buffer, bank=bank,
                                   sram_addr=sram_addr, line_words=line_words, lines=lines,
                                   ddr_addr=ddr_addr, ddr_stride=stride))

    def load(self, buffer, bank, sram_addr, line_words, lines, ddr_addr, stride=None) -> Program:
        return self._ls(Op.LOAD, buffer, bank, sram_addr, line_words, lines, ddr_addr, stride)

    def store(self, bank, sram_addr, line_words, lines, ddr_addr, stride=None,
              buffer=B.OBUF) -> Program:
        return self._ls(Op.STORE, buffer, bank, sram_addr, line_words, lines, ddr_addr, stride)

    def compute(self, needs=0, releases=0, obuf_bank=0, opcode=Op.CONV, **op) -> Program:
        """A test-engine command (fields of :data:`zynqnn.sim.test_engine.TestOp`)."""
        return self.raw(encode_op(needs, releases, obuf_bank, opcode, **op))

    def nop(self) -> Program:
        return self.raw(isa.encode(isa.Header, opcode=Op.NOP))

    def end(self) -> Program:
        return self.raw(isa.encode(isa.Header, opcode=Op.END))


@dataclass(frozen=True)
class Outcome:
    status: str              # "done" or "error"
    cause: E = E.NONE
    index: int = 0

    def __str__(self):
        if self.status == "done":
            return "done"
        return f"error {E(self.cause).name} at command {self.index}"


def _fields(layout, raw: int) -> dict:
    view = layout.from_bits(raw)
    return {name: int(getattr(view, name)) for name, _ in layout if not name.startswith("_")}


def check_command(cfg: HwConfig, raw: int, window: tuple[int, int], has_engine=True) -> E:
    """The dispatcher's check of one command (``E.NONE`` if it passes)."""
    bb = cfg.axi_data_bits // 8
    opcode = raw & 0xF
    if opcode in (Op.NOP, Op.END):
        return E.NONE
    if opcode in (Op.CONV, Op.ELTWISE):
        return E.NONE if has_engine else E.BAD_COMPUTE
    if opcode not in (Op.LOAD, Op.STORE):
        return E.BAD_OPCODE
    f = _fields(isa.LoadStore, raw)
    if (opcode == Op.LOAD) == (f["buffer"] == B.OBUF):
        return E.BAD_BUFFER
    if f["ddr_addr"] % bb or (f["lines"] > 1 and f["ddr_stride"] % bb):
        return E.BAD_ALIGN
    if opcode == Op.LOAD and (f["lines"] == 0 or f["line_words"] == 0):
        return E.EMPTY_LOAD
    buf = B(f["buffer"])
    if f["sram_addr"] + f["lines"] * f["line_words"] > buffer_depth(cfg, buf):
        return E.SRAM_RANGE
    if f["lines"]:
        lo, hi = transfer_extent(cfg, buf, f)
        if lo < window[0] or hi > window[1]:
            return E.DDR_WINDOW
    return E.NONE


def next_refusal(count: int, in_window: int, index: int) -> Outcome | None:
    """The refusal of command ``index`` (not END, its own checks passed) for its successor, as
    the dispatcher makes it before queueing the command (``rtl/cmdproc.py``, PUSH / next_fail):
    ``EMPTY_PROGRAM`` at ``index`` for the last of ``count`` commands, ``DDR_WINDOW`` at
    ``index + 1`` for the last of the ``in_window`` commands inside the window; ``None`` if the
    successor can be fetched."""
    if index == count - 1:
        return Outcome("error", E.EMPTY_PROGRAM, index)
    if index == in_window - 1:
        return Outcome("error", E.DDR_WINDOW, index + 1)
    return None


def commands_in_window(cmd_base: int, count: int, window: tuple[int, int]) -> int:
    """How many of the ``count`` commands from ``cmd_base`` lie whole inside ``window`` (those
    the hardware fetches)."""
    lo, hi = window
    if not lo <= cmd_base <= hi:
        return 0
    return min(count, (hi - cmd_base) // isa.COMMAND_BYTES)


def dispatch_outcome(cfg: HwConfig, mem, cmd_base: int, count: int, window: tuple[int, int],
                     has_engine=True) -> Outcome:
    """The outcome if no unit ever waited for a flag: the first check that fails in program
    order, or done at the first END (what a sequential model such as ``zynqnn.machine``
    reports for LOAD, STORE, NOP and END)."""
    bb = cfg.axi_data_bits // 8
    if count == 0:
        return Outcome("error", E.EMPTY_PROGRAM, 0)
    if cmd_base % bb:
        return Outcome("error", E.BAD_ALIGN, 0)
    in_window = commands_in_window(cmd_base, count, window)
    if in_window == 0:
        return Outcome("error", E.DDR_WINDOW, 0)
    for i in range(count):
        raw = int.from_bytes(mem.read(cmd_base + i * isa.COMMAND_BYTES, isa.COMMAND_BYTES),
                             "little")
        cause = check_command(cfg, raw, window, has_engine)
        if cause != E.NONE:
            return Outcome("error", cause, i)
        if raw & 0xF == Op.END:
            return Outcome("done")
        if refused := next_refusal(count, in_window, i):
            return refused
    raise AssertionError("unreachable: next_refusal refuses the last command")


def transfer_extent(cfg, buf, f) -> tuple[int, int]:
    """[first byte, end) of DDR the beats of a transfer of one or more lines cover."""
    return geometry.transfer_extent(cfg, buf, f["ddr_addr"], f["lines"], f["ddr_stride"],
                                    f["line_words"])


class SocModel:
    """Runs programs on a memory (``read(addr, n) -> bytes``, ``write(addr, data)``).

    Parameters
    ----------
    cfg:
        The hardware configuration.
    has_engine:
        ``False`` models a top without an engine (compute commands: BAD_COMPUTE).
    """

    def __init__(self, cfg: HwConfig, has_engine: bool = True):
        self.cfg = cfg
        self.has_engine = has_engine
        self.banks = {(b, k): [0] * buffer_depth(cfg, b) for b in B for k in range(isa.BANKS)}
        #: DDR ranges [lo, hi) the last run read and wrote (whole beats for reads; strobed
        #: bytes for writes).
        self.read_ranges: list[tuple[int, int]] = []
        self.write_ranges: list[tuple[int, int]] = []

    # -- data movement ---------------------------------------------------------------------------

    def _words(self, buf):
        wb = buffer_word_bits(self.cfg, buf)
        return wb, wb // 8

    def _load(self, mem, f):
        buf = B(f["buffer"])
        wb, wbytes = self._words(buf)
        bank = self.banks[(buf, f["bank"])]
        bb = self.cfg.axi_data_bits // 8
        for line in range(f["lines"]):
            addr = f["ddr_addr"] + line * f["ddr_stride"]
            nbytes = line_beats(self.cfg, buf, f["line_words"]) * bb
            raw = mem.read(addr, nbytes)
            self.read_ranges.append((addr, addr + nbytes))
            for w in range(f["line_words"]):
                word = int.from_bytes(raw[w * wbytes:(w + 1) * wbytes], "little")
                bank[f["sram_addr"] + line * f["line_words"] + w] = word

    def _store(self, mem, f):
        wb, wbytes = self._words(B.OBUF)
        bank = self.banks[(B.OBUF, f["bank"])]
        for line in range(f["lines"]):
            addr = f["ddr_addr"] + line * f["ddr_stride"]
            out = b"".join(
                bank[f["sram_addr"] + line * f["line_words"] + w].to_bytes(wbytes, "little")
                for w in range(f["line_words"]))
            mem.write(addr, out)
            self.write_ranges.append((addr, addr + len(out)))

    # -- execution -------------------------------------------------------------------------------

    def run(self, mem, cmd_base, count, window_base, window_limit) -> Outcome:
        """Run ``count`` commands from ``cmd_base``; return the outcome."""
        cfg = self.cfg
        bb = cfg.axi_data_bits // 8
        window = (window_base, window_limit)
        self.read_ranges, self.write_ranges = [], []
        if count == 0:
            return Outcome("error", E.EMPTY_PROGRAM, 0)
        if cmd_base % bb:
            return Outcome("error", E.BAD_ALIGN, 0)
        # Commands inside the window; a command whose successor is outside is refused.
        in_window = commands_in_window(cmd_base, count, window)
        if in_window == 0:
            return Outcome("error", E.DDR_WINDOW, 0)
        # Only the commands inside the window are fetched (and the dispatcher reaches no
        # other: a command whose successor is outside is refused).
        program = mem.read(cmd_base, in_window * isa.COMMAND_BYTES)
        self.read_ranges.append((cmd_base, cmd_base + in_window * isa.COMMAND_BYTES))
        cmds = [int.from_bytes(program[i * isa.COMMAND_BYTES:(i + 1) * isa.COMMAND_BYTES],
                               "little") for i in range(in_window)]

        full = set()         # (buffer, bank) pairs whose flag is set
        load, compute, store = [], [], []
        cap = QUEUE_DEPTH + 1  # queue + the unit's current command
        nxt = 0              # next command to dispatch
        ended = False
        while True:
            progress = False
            # Dispatcher: as far as the queues allow.
            while not ended:
                raw = cmds[nxt]
                cause = check_command(cfg, raw, window, self.has_engine)
                if cause != E.NONE:
                    return Outcome("error", cause, nxt)
                opcode = raw & 0xF
                # A command whose successor cannot be fetched is refused before it is queued
                # (the hardware does not wait for room in the queue to refuse it).
                if opcode != Op.END and (lookahead := next_refusal(count, in_window, nxt)):
                    return lookahead
                target = {Op.LOAD: load, Op.STORE: store, Op.CONV: compute,
                          Op.ELTWISE: compute}.get(opcode)
                if opcode == Op.END:
                    ended = True
                elif target is not None:
                    if len(target) >= cap:
                        break
                    target.append((nxt, raw))
                nxt += 1
                progress = True
            # Units.
            if load:
                i, raw = load[0]
                f = _fields(isa.LoadStore, raw)
                key = (B(f["buffer"]), f["bank"])
                if key not in full:
                    self._load(mem, f)
                    full.add(key)
                    load.pop(0)
                    progress = True
            if compute:
                i, raw = compute[0]
                h = _fields(isa.ComputeHeader, raw)
                needs = {(b, k) for b in (B.IBUF, B.WBUF, B.PBUF) for k in range(isa.BANKS)
                         if h["needs"] & isa.bank_bit(b, k)}
                out = (B.OBUF, h["obuf_bank"])
                if needs <= full and out not in full:
                    if op_error(cfg, raw):
                        return Outcome("error", E.BAD_COMPUTE, i)
                    reference(cfg, raw, self.banks)
                    for b in (B.IBUF, B.WBUF, B.PBUF):
                        for k in range(isa.BANKS):
                            if h["releases"] & isa.bank_bit(b, k):
                                full.discard((b, k))
                    full.add(out)
                    compute.pop(0)
                    progress = True
            if store:
                i, raw = store[0]
                f = _fields(isa.LoadStore, raw)
                key = (B.OBUF, f["bank"])
                if key in full:
                    self._store(mem, f)
                    full.discard(key)
                    store.pop(0)
                    progress = True
            if ended and not (load or compute or store):
                return Outcome("done")
            if not progress:
                # The hardware reports the oldest command a unit (or the dispatcher) holds.
                waiting = [q[0][0] for q in (load, compute, store) if q]
                return Outcome("error", E.WATCHDOG, min(waiting + [nxt]))

    def engine_failures(self, mem, cmd_base, count, window, watchdog=None) -> set[Outcome]:
        """BAD_COMPUTE outcomes of compute commands before the first malformed one: an engine
        error may beat the dispatcher to a malformed command further on. With ``watchdog``
        (the bound in cycles), also WATCHDOG at any index up to a compute command the engine
        holds for more than half the bound: the engine's answer is its only progress, and
        whether the other units move meanwhile depends on timing. A command refused for its
        successor (``next_refusal``) never reaches the engine."""
        out = set()
        in_window = commands_in_window(cmd_base, count, window)
        program = mem.read(cmd_base, in_window * isa.COMMAND_BYTES)
        for i in range(in_window):
            raw = int.from_bytes(program[i * 32:(i + 1) * 32], "little")
            if check_command(self.cfg, raw, window, self.has_engine) != E.NONE:
                break
            if (raw & 0xF) != Op.END and next_refusal(count, in_window, i):
                break
            if (raw & 0xF) in (Op.CONV, Op.ELTWISE) and op_error(self.cfg, raw):
                out.add(Outcome("error", E.BAD_COMPUTE, i))
            elif ((raw & 0xF) in (Op.CONV, Op.ELTWISE) and watchdog is not None
                  and op_cycles(raw) > watchdog // 2):
                out.update(Outcome("error", E.WATCHDOG, k) for k in range(i + 1))
            if (raw & 0xF) == Op.END:
                break
        return out
