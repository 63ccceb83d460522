"""The accelerator's command set: layouts shared by the compiler's encoder and the RTL decoder.

A program is a sequence of fixed-size commands (:data:`COMMAND_BITS` bits, little-endian in DDR)
that the command processor fetches with the DMA. Every command starts with a 4-bit opcode.
Commands go to three in-order units:

* the **load** unit (``LOAD``): DDR -> an on-chip buffer bank;
* the **compute** unit (``CONV``, ``ELTWISE``): reads input banks, writes an output bank;
* the **store** unit (``STORE``): an output bank -> DDR.

They run concurrently and synchronise through one *full* flag per buffer bank: a ``LOAD`` waits
until its bank is empty and marks it full; a compute command waits until every bank in its
``needs`` mask is full and its output bank is empty, clears the banks in its ``releases`` mask
when it finishes, and marks its output bank full; a ``STORE`` waits until its bank is full and
clears it. ``END`` waits until all units are idle, then reports done. So the compiler
double-buffers by alternating banks, and a load of the next tile overlaps the current compute.
Every run starts with every flag clear (END, an error and a soft reset clear them), and a
``LOAD`` of zero lines or zero words is refused (``EMPTY_LOAD``): a compute command only ever
waits for banks that a ``LOAD`` of its own run wrote.

The layouts are ``amaranth.lib.data`` layouts so that the RTL decodes fields by name and the
encoder packs them with ``layout.const({...}).as_bits()``; no bit offset is written twice.
"""

from __future__ import annotations

from amaranth import signed, unsigned
from amaranth.lib import data, enum

__all__ = [
    "COMMAND_BITS",
    "COMMAND_BYTES",
    "Opcode",
    "Buffer",
    "BANKS",
    "ErrorCause",
    "Header",
    "LoadStore",
    "ComputeHeader",
    "Mode",
    "pairs_passes",
    "dw_walk",
    "dw_walked",
    "Scheme",
    "Pool",
    "ConvOp",
    "ConvCommand",
    "EltwiseOp",
    "EltwiseCommand",
    "lut_table_words",
    "bank_bit",
    "encode",
    "decode_opcode",
]

COMMAND_BITS = 256
COMMAND_BYTES = COMMAND_BITS // 8
#: Banks per buffer (double buffering).
BANKS = 2


class Opcode(enum.IntEnum, shape=4):
    NOP = 0
    LOAD = 1
    STORE = 2
    CONV = 3
    ELTWISE = 4
    END = 15


class Buffer(enum.IntEnum, shape=2):
    """On-chip buffers. ``IBUF`` words hold ``rows`` activations, ``WBUF`` words one weight-tile
    row of ``cols`` weights, ``PBUF`` words one output channel's post-processing constants,
    ``OBUF`` words ``cols`` output codes."""

    IBUF = 0
    WBUF = 1
    PBUF = 2
    OBUF = 3


class ErrorCause(enum.IntEnum, shape=8):
    """Why the accelerator stopped with an error (STATUS register, error cause field)."""

    NONE = 0
    BAD_OPCODE = 1          # unknown opcode
    BAD_BUFFER = 2          # LOAD into OBUF, STORE from a buffer other than OBUF
    SRAM_RANGE = 3          # a transfer beyond the end of the on-chip buffer
    DDR_WINDOW = 4          # an address outside the DDR window [base, limit)
    BAD_ALIGN = 5           # a DDR address or stride not aligned to the AXI beat
    AXI_SLVERR = 6          # the interconnect answered SLVERR
    AXI_DECERR = 7          # the interconnect answered DECERR
    WATCHDOG = 8            # a bus wait exceeded the watchdog bound
    BAD_COMPUTE = 9         # a compute command's geometry does not fit the hardware
    EMPTY_PROGRAM = 10      # command-stream length of zero, or no END before its end
    EMPTY_LOAD = 11         # a LOAD of zero lines or zero words (it would mark a bank full
                            # that holds an earlier run's data)
    PORT_WINDOW = 12        # an AXI port refused a burst outside the DDR window (defence in
                            # depth behind the dispatcher's DDR_WINDOW check)


def bank_bit(buffer: Buffer, bank: int) -> int:
    """Bit of (buffer, bank) in a compute command's ``needs`` / ``releases`` masks."""
    if buffer == Buffer.OBUF:
        raise ValueError("OBUF banks are not in the needs/releases masks")
    if bank not in range(BANKS):
        raise ValueError(f"bank must be 0..{BANKS - 1}, not {bank}")
    return 1 << (int(buffer) * BANKS + bank)


#: The first byte of every command.
Header = data.StructLayout({"opcode": Opcode, "_rest": unsigned(COMMAND_BITS - 4)})

#: ``LOAD`` / ``STORE``: ``lines`` lines of ``line_words`` buffer words each. Line ``i`` is at
#: ``ddr_addr + i * ddr_stride`` in DDR and at word ``sram_addr + i * line_words`` of the bank.
LoadStore = data.StructLayout({
    "opcode": Opcode,
    "buffer": Buffer,
    "bank": unsigned(1),
    "_pad0": unsigned(1),
    "sram_addr": unsigned(16),
    "line_words": unsigned(16),
    "lines": unsigned(16),
    "ddr_addr": unsigned(32),
    "ddr_stride": unsigned(32),
    "_pad1": unsigned(COMMAND_BITS - 4 - 2 - 1 - 1 - 16 - 16 - 16 - 32 - 32),
})

#: The part of ``CONV`` / ``ELTWISE`` the command processor reads; ``op`` is the engine's.
ComputeHeader = data.StructLayout({
    "opcode": Opcode,
    "needs": unsigned(3 * BANKS),      # bank_bit() mask over IBUF, WBUF, PBUF banks
    "releases": unsigned(3 * BANKS),
    "obuf_bank": unsigned(1),
    "_pad0": unsigned(3),
    "op": unsigned(COMMAND_BITS - 4 - 2 * 3 * BANKS - 1 - 3),
})



class Scheme(enum.IntEnum, shape=3):
    """Requantization scheme of a layer (``zynqnn.numerics.schemes``)."""

    TFLITE = 0
    TFLITE_SINGLE_ROUNDING = 1
    TORCH_FBGEMM = 2
    TORCH_QNNPACK = 3
    ONNXRUNTIME = 4
    POW2 = 5
    FIXED16 = 6
    COPY = 7            # no requantization: clamp(acc + zp_out) (pooling, copies)


class Mode(enum.IntEnum, shape=3):
    """What a ``CONV`` command computes over its windows.

    ``CONV`` multiplies in the PE array. ``PAIRS`` is a depthwise convolution with fbgemm's
    saturating tap pairs (see :func:`pairs_passes`). ``DW`` is an exact 3x3 depthwise
    convolution in one pass over the input (see :func:`dw_walk`); ``DW_PAIRS`` the same with
    fbgemm's saturating tap pairs. The others bypass the array
    (they need ``rows == cols``): the accumulator takes the window generator's ``q - zp_in`` vectors
    directly and keeps their maximum (``MAXPOOL``), their sum over every pixel into one output
    (``SUMPOOL``, global average pooling), or copies them (``COPY``: with ``upsample``,
    nearest-neighbour x2).
    """

    CONV = 0
    PAIRS = 1
    MAXPOOL = 2
    SUMPOOL = 3
    COPY = 4
    DW = 5
    DW_PAIRS = 6


def pairs_passes(kernel: int) -> int:
    """Passes of a ``PAIRS`` command: taps ``(2m, 2m + 1)`` for each pair ``m``, each over the
    two halves of the channel block.

    ``PAIRS`` (needs ``rows == cols``, even, and ``cin_blocks == 1``) is fbgemm's depthwise
    kernel, which adds the raw-code products of taps ``2m`` and ``2m + 1`` (row-major, a last odd
    tap paired with nothing) in saturating int16. Pass ``(m, h)`` (``h`` inner) reads each output
    pixel's input word under tap ``2m`` and under tap ``2m + 1`` (tap ``t`` at ``(t // k, t % k)``;
    tap ``k*k`` lies below the kernel and its weights are 0) and gives the array the vector of
    channels ``[h R/2, (h+1) R/2)`` of the first word, then the same channels of the second, as
    ``q - zp_in``. With the pass's ``R x C`` weight tile ``W`` the accumulators add
    ``sat16(v W + zp_in colsum(W)) - zp_in colsum(W)``: the pair sum over raw codes saturated,
    back in ``q - zp_in`` terms (the compiler puts channel ``c`` of the half at row ``c`` (tap 2m)
    and row ``R/2 + c`` (tap 2m + 1) of column ``h R/2 + c``).
    """
    return 2 * ((kernel * kernel + 1) // 2)


def dw_walk(out: int, stride: int, kernel: int = 3) -> int:
    """Input pixels a ``DW`` command walks along one axis for ``out`` outputs: every position of
    the padded window span, ``(out - 1) * stride + kernel``.

    ``DW`` (needs ``HwConfig.dw_kernel`` = 3: ``rows == cols >= 9``; ``kernel`` 3, one channel
    block, no ``acc_cont`` / ``acc_keep`` / ``upsample``) holds one ``R x C`` weight tile: row
    ``r`` is channel ``r``, column ``t`` its tap ``t = ky * 3 + kx`` (columns 9.. are unused).
    The window generator streams the span ``[y_off, y_off + dw_walk(out_h))`` x ``[x_off,
    x_off + dw_walk(out_w))`` in raster order, one input word per cycle (the zero point outside
    the tile); PE row ``r`` multiplies channel ``r`` by its nine taps and a transposed FIR (two
    line delays of ``dw_walk(out_w) - 2`` pixels, at most ``max_width``) sums each window, so a
    command takes about ``dw_walk(out_h) * dw_walk(out_w)`` cycles instead of nine passes (less
    the padding line and column the engine skips, :func:`dw_walked`).

    ``DW_PAIRS`` (``HwConfig.dw_pairs``: int8 builds) is ``DW`` with fbgemm's sums (see
    :func:`pairs_passes`): the walk starts with one zero-point vector (``zp_in`` in every row),
    whose products give each channel's ``kz_m = zp_in (w[2m] + w[2m + 1])``, and the FIR adds
    ``clamp(P[2m] + P[2m + 1], -2^15 - kz_m, 2^15 - 1 - kz_m)`` for the pairs ``m = 0..3`` of
    every window, then tap 8 alone (a raw code times one int8 weight cannot leave int16).
    """
    return (out - 1) * stride + kernel


def dw_walked(out: int, stride: int, skip: bool) -> int:
    """Positions a ``DW`` command's walk visits along one axis: :func:`dw_walk`, less the first
    one when it is padding (``y_off < 0``; ``x_off < 0`` with ``out_w > 1``), which the
    engine skips (``rtl.depthwise``; ``DW_PAIRS`` walks it: its zero-point pairs can
    saturate)."""
    return dw_walk(out, stride) - int(bool(skip))


class Pool(enum.IntEnum, shape=2):
    NONE = 0
    MAX2_S2 = 1        # 2x2 max pool, stride 2
    MAX2_S1_PAD = 2    # 2x2 max pool, stride 1, bottom/right padding (YOLOv3-tiny)
    GLOBAL_AVG = 3


#: The engine's part of a ``CONV`` command: one output tile of ``out_h x out_w`` pixels for one
#: block of ``cols`` output channels, reduced over ``kernel x kernel`` taps and ``cin_blocks``
#: input-channel blocks. The input tile occupies ``cin_blocks x in_h x in_w`` IBUF words from
#: ``ibuf_addr`` (block-major, then rows, then columns); output pixel ``(oy, ox)`` reads input
#: ``(oy*stride + ky + y_off, ox*stride + kx + x_off)`` of the tile, or the input zero point
#: outside it (``y_off``/``x_off`` are minus the padding the tile still needs). Weights: one
#: IBUF-block x ``cols`` tile per (ky, kx, cin block), ``rows`` WBUF words each, in that order from
#: ``wbuf_addr``. Post-processing constants: ``cols`` PBUF words from ``pbuf_addr``; with ``act``
#: the next ``requant_lanes`` words hold the layer's activation word. Outputs:
#: ``out_h x out_w`` OBUF words from ``obuf_addr`` (fewer after pooling).
ConvOp = data.StructLayout({
    "mode": Mode,
    "pad_min": unsigned(1),            # padding is -infinity (max pooling), not the zero point
    "upsample": unsigned(1),           # read input (oy // 2, ox // 2): nearest upsampling x2
    "in_signed": unsigned(1),          # input codes are int8 (else uint8)
    # A layer whose reduction does not fit one command is split: every part but the last sets
    # acc_keep (results stay in the accumulators, no post-processing), every part but the first
    # sets acc_cont (its first pass adds to them). The parts must run back to back.
    "acc_cont": unsigned(1),
    "acc_keep": unsigned(1),
    "ibuf_bank": unsigned(1),
    "wbuf_bank": unsigned(1),
    "pbuf_bank": unsigned(1),
    "kernel": unsigned(3),
    "stride": unsigned(2),
    "pool": Pool,
    "scheme": Scheme,
    "act": unsigned(1),                # an activation word follows the channel constants
    "y_off": signed(4),
    "x_off": signed(4),
    "cin_blocks": unsigned(8),
    "in_h": unsigned(12),
    "in_w": unsigned(12),
    "out_h": unsigned(12),
    "out_w": unsigned(12),
    "ibuf_addr": unsigned(16),
    "wbuf_addr": unsigned(16),
    "pbuf_addr": unsigned(16),
    "obuf_addr": unsigned(16),
    "zp_in": signed(17),
    "zp_out": signed(17),
    "clamp_min": signed(17),
    "clamp_max": signed(17),
    # DW / DW_PAIRS only (configs with HwConfig.step_lanes): post-process with the step lanes,
    # one pixel per cycle; each channel's PBUF word is a zynqnn.hw.step.step_params_layout.
    "step": unsigned(1),
})

ConvCommand = data.StructLayout({
    "opcode": Opcode,
    "needs": unsigned(3 * BANKS),
    "releases": unsigned(3 * BANKS),
    "obuf_bank": unsigned(1),
    "_pad0": unsigned(3),
    "op": ConvOp,
    "_pad1": unsigned(COMMAND_BITS - 4 - 2 * 3 * BANKS - 1 - 3 - ConvOp.size),
})

#: The engine's part of an ``ELTWISE`` command: a residual (element-wise) add of ``pixels`` words.
#: Input A is ``pixels`` IBUF words from ``ibuf_addr``, input B ``pixels`` WBUF words from
#: ``wbuf_addr`` (the engine needs ``rows == cols``, so both words hold ``cols`` codes: operand
#: ``i`` in bits ``[i*B, (i+1)*B)``), uint8/int8 codes as ``a_signed`` / ``b_signed`` say. The
#: add's constants (``zynqnn.hw.add.add_params_layout``: semantics, input zero points,
#: multipliers) are the PBUF row at ``pbuf_addr`` (a multiple of ``requant_lanes``): their bits
#: little-endian across its ``requant_lanes`` 128-bit words, like a CONV command's activation
#: word. Output ``o = clamp(add(a, b), clamp_min, clamp_max)`` (``zp_out`` added as each
#: semantics does; a fused ReLU is ``clamp_min = max(qmin, zp_out)``): ``pixels`` OBUF words from
#: ``obuf_addr``.
#:
#: With ``lut`` set the command is a table lookup instead (a unary activation): each code of the
#: ``pixels`` IBUF words from ``ibuf_addr`` is replaced by ``table[code & 0xFF]``, where the
#: 256-entry table is the first 256 codes of the WBUF words from ``wbuf_addr`` in order (entry
#: ``t`` is code ``t % cols`` of word ``wbuf_addr + t // cols``; :func:`lut_table_words` words).
#: ``b_signed``, ``pbuf_*``, ``zp_out`` and the clamps are not read. Needs 8-bit operands.
EltwiseOp = data.StructLayout({
    "ibuf_bank": unsigned(1),
    "wbuf_bank": unsigned(1),
    "pbuf_bank": unsigned(1),
    "a_signed": unsigned(1),           # A codes are int8 (else uint8)
    "b_signed": unsigned(1),
    "pixels": unsigned(16),
    "ibuf_addr": unsigned(16),
    "wbuf_addr": unsigned(16),
    "pbuf_addr": unsigned(16),
    "obuf_addr": unsigned(16),
    "zp_out": signed(17),
    "clamp_min": signed(17),
    "clamp_max": signed(17),
    "lut": unsigned(1),                # table lookup of A (see above), not an add
})


def lut_table_words(cols: int) -> int:
    """WBUF words an ``ELTWISE`` lookup's 256-entry table occupies (``cols`` codes a word)."""
    return -(-256 // cols)

#: ``ELTWISE``: the :data:`ComputeHeader` fields in their places (the command processor treats it
#: like ``CONV``), then :data:`EltwiseOp`.
EltwiseCommand = data.StructLayout({
    "opcode": Opcode,
    "needs": unsigned(3 * BANKS),
    "releases": unsigned(3 * BANKS),
    "obuf_bank": unsigned(1),
    "_pad0": unsigned(3),
    "op": EltwiseOp,
    "_pad1": unsigned(COMMAND_BITS - 4 - 2 * 3 * BANKS - 1 - 3 - EltwiseOp.size),
})

assert (Header.size == LoadStore.size == ComputeHeader.size == ConvCommand.size
        == EltwiseCommand.size == COMMAND_BITS)
for _name in ("opcode", "needs", "releases", "obuf_bank", "op"):
    assert (ComputeHeader[_name].offset == ConvCommand[_name].offset
            == EltwiseCommand[_name].offset), _name


def encode(layout: data.Layout, **fields) -> bytes:
    """Pack one command into its :data:`COMMAND_BYTES` little-endian bytes."""
    return layout.const(fields).as_bits().to_bytes(COMMAND_BYTES, "little")


def decode_opcode(raw: bytes) -> int:
    return int.from_bytes(raw[:COMMAND_BYTES], "little") & 0xF
