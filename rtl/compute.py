"""The interface between the SoC shell and the compute engine.

The shell (``zynqnn.rtl.top``: registers, command processor, DMA) executes ``LOAD``, ``STORE`` and
``END`` itself and hands every ``CONV`` / ``ELTWISE`` command to a compute engine through
:class:`ComputeSignature`. **The engine owns the on-chip buffers** (IBUF, WBUF, PBUF and OBUF, two
banks each, depths from the :class:`~zynqnn.hw.config.HwConfig`), so it can shape them as its
datapath needs (width, read ports, banking); the shell only writes loaded words into IBUF / WBUF /
PBUF and reads stored words out of OBUF.

An engine is a ``wiring.Component`` whose signature is ``ComputeSignature(cfg).flip()`` (its
members ``cmd``, ``done``, ... are at its top level) and is passed to
``zynqnn.rtl.top.Top(cfg, engine)``.

Protocol (the shell is the manager; every signal is in the accelerator's one clock domain)
-------------------------------------------------------------------------------------------
``cmd`` (stream of 256-bit commands, ``zynqnn.hw.isa.ComputeHeader`` + the engine's ``op`` bits)
    ``CONV`` and ``ELTWISE`` commands in program order (the engine may view the payload with any
    256-bit layout, e.g. ``isa.ConvCommand``). The shell presents a command once its ``needs``
    banks are full and not being released by a command still in the engine, and its output bank
    is empty and not the output of a command still in the engine. Up to
    :data:`COMPUTE_OUTSTANDING` commands may be outstanding (accepted and not yet answered), so
    an engine can overlap one command's post-processing with the next one's MACs; an engine
    that takes one at a time simply keeps ``ready`` low while it works. ``valid`` never waits
    for ``ready``; the payload is stable while ``valid``.
``done`` (1 cycle per command)
    The oldest outstanding command finished: every OBUF write it makes has been performed (a
    read in the next cycle sees it) and it no longer reads its input banks. The shell then
    clears the command's ``releases`` banks and marks its output bank full. Answers come in
    command order.
``error``, ``error_cause`` (1 cycle, instead of ``done``)
    The oldest outstanding command cannot run (``error_cause`` is a ``zynqnn.hw.isa.ErrorCause``,
    normally ``BAD_COMPUTE``). The shell stops the program with that cause and the command's
    index, and pulses ``cancel``.
``array_busy``
    The array computed this cycle: counted by PERF_CYCLES_COMPUTE. It is not progress for the
    watchdog: an engine's progress is its answers, so a command the engine holds for longer
    than the watchdog bound while no other unit moves (an engine stuck busy) ends the run
    with the WATCHDOG error. The default bound (1 ms, 150,000 cycles) is above the longest
    command a ``pynq_z2`` build can be given (at most 128 weight tiles over 1,024 output
    pixels, then their post-processing: under 136,000 cycles).
``cancel`` (1 cycle)
    Soft reset or error: drop every outstanding command (no ``done`` / ``error`` is expected for
    them) and return to idle. Buffer contents need not be kept.
``ibuf_w``, ``wbuf_w``, ``pbuf_w`` (buffer write ports, from the load unit)
    ``en`` with ``bank``, ``addr`` (word index) and ``data``: write one word this cycle. There is
    no back-pressure: the engine accepts a write in every cycle. The shell only writes a bank
    whose full flag is clear, so the engine never computes on a bank being loaded.
    Word widths: IBUF ``cfg.act_word_bits``, WBUF ``cfg.out_word_bits``, PBUF
    :data:`zynqnn.hw.config.PBUF_WORD_BITS`; depths ``act_buffer_depth``, ``weight_buffer_depth``,
    ``param_buffer_depth``.
``obuf_r`` (buffer read port, to the store unit)
    ``en`` with ``bank`` and ``addr``: ``data`` holds that word in the next cycle (a synchronous
    read, as from a block RAM with a registered address). Width ``cfg.out_word_bits``, depth
    ``acc_buffer_depth``. The shell only reads banks whose full flag is set.

Word ``i`` of a buffer is DDR bytes ``[i * word_bytes, (i + 1) * word_bytes)`` of a transfer's
line, little-endian (operand 0 in the low bits).
"""

from amaranth import Shape
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from zynqnn.hw import isa
from zynqnn.hw.config import HwConfig
from zynqnn.hw.geometry import buffer_depth, buffer_word_bits

__all__ = [
    "BufferWriteSignature",
    "BufferReadSignature",
    "ComputeSignature",
    "check_engine",
]



class BufferWriteSignature(wiring.Signature):
    """A buffer write port, writer's view: ``en``, ``bank``, ``addr``, ``data``."""

    def __init__(self, word_bits: int, depth: int):
        self._word_bits, self._depth = word_bits, depth
        super().__init__({
            "en": Out(1),
            "bank": Out(ceil_log2(isa.BANKS)),
            "addr": Out(ceil_log2(depth)),
            "data": Out(word_bits),
        })

    @property
    def word_bits(self):
        return self._word_bits

    @property
    def depth(self):
        return self._depth

    def __eq__(self, other):
        return (type(other) is type(self) and other.word_bits == self.word_bits
                and other.depth == self.depth)

    def __repr__(self):
        return f"{type(self).__name__}({self.word_bits}, {self.depth})"


class BufferReadSignature(wiring.Signature):
    """A buffer read port, reader's view: ``en``, ``bank``, ``addr`` out; ``data`` in, valid the
    cycle after ``en``."""

    def __init__(self, word_bits: int, depth: int):
        self._word_bits, self._depth = word_bits, depth
        super().__init__({
            "en": Out(1),
            "bank": Out(ceil_log2(isa.BANKS)),
            "addr": Out(ceil_log2(depth)),
            "data": In(word_bits),
        })

    @property
    def word_bits(self):
        return self._word_bits

    @property
    def depth(self):
        return self._depth

    def __eq__(self, other):
        return (type(other) is type(self) and other.word_bits == self.word_bits
                and other.depth == self.depth)

    def __repr__(self):
        return f"{type(self).__name__}({self.word_bits}, {self.depth})"


class ComputeSignature(wiring.Signature):
    """The shell's side of the compute interface (see the module documentation).

    Members
    -------
    cmd: Out(stream.Signature(zynqnn.hw.isa.ComputeHeader))
    done, error: In(1)
    error_cause: In(zynqnn.hw.isa.ErrorCause)
    array_busy: In(1)
    cancel: Out(1)
    ibuf_w, wbuf_w, pbuf_w: Out(BufferWriteSignature)
    obuf_r: Out(BufferReadSignature)
    """

    def __init__(self, cfg: HwConfig):
        self._cfg = cfg
        B = isa.Buffer
        super().__init__({
            "cmd": Out(stream.Signature(isa.ComputeHeader)),
            "done": In(1),
            "error": In(1),
            "error_cause": In(isa.ErrorCause),
            "array_busy": In(1),
            "cancel": Out(1),
            "ibuf_w": Out(BufferWriteSignature(buffer_word_bits(cfg, B.IBUF),
                                               buffer_depth(cfg, B.IBUF))),
            "wbuf_w": Out(BufferWriteSignature(buffer_word_bits(cfg, B.WBUF),
                                               buffer_depth(cfg, B.WBUF))),
            "pbuf_w": Out(BufferWriteSignature(buffer_word_bits(cfg, B.PBUF),
                                               buffer_depth(cfg, B.PBUF))),
            "obuf_r": Out(BufferReadSignature(buffer_word_bits(cfg, B.OBUF),
                                              buffer_depth(cfg, B.OBUF))),
        })

    @property
    def cfg(self):
        return self._cfg

    def __eq__(self, other):
        return type(other) is type(self) and other.cfg == self.cfg

    def __repr__(self):
        return f"ComputeSignature({self.cfg.config_id})"


def check_engine(engine, cfg: HwConfig):
    """Raise ``TypeError`` unless ``engine`` can be connected as the compute engine of ``cfg``.

    Its members must be those of ``ComputeSignature(cfg).flip()`` with the same flows and widths;
    a port's shape may differ (e.g. ``cmd`` carrying ``isa.ConvCommand`` rather than
    ``isa.ComputeHeader``), since ``wiring.connect`` only requires equal widths.
    """
    want = {path: (m.flow, Shape.cast(m.shape).width)
            for path, m in ComputeSignature(cfg).flip().members.flatten() if m.is_port}
    have = {path: (m.flow, Shape.cast(m.shape).width)
            for path, m in engine.signature.members.flatten() if m.is_port}
    problems = []
    for path in sorted(set(want) | set(have)):
        name = ".".join(map(str, path))
        if path not in have:
            problems.append(f"missing {name} ({want[path][0].name}({want[path][1]}))")
        elif path not in want:
            problems.append(f"unexpected {name}")
        elif have[path] != want[path]:
            problems.append(f"{name} is {have[path][0].name}({have[path][1]}), expected "
                            f"{want[path][0].name}({want[path][1]})")
    if problems:
        raise TypeError(f"{type(engine).__name__} does not implement ComputeSignature("
                        f"{cfg.config_id}).flip(): " + "; ".join(problems))
