"""Buffer geometry and the shell's transfer limits, as the host and the RTL both need them.

The on-chip buffers are banked (``isa.BANKS``): :func:`buffer_word_bits` and :func:`buffer_depth`
give one bank's word width and depth from the config, :func:`line_beats` the bus beats a LOAD or
STORE line moves, :func:`pack_words` the byte order of a buffer word in DDR. The constants size
queues and bursts in ``zynqnn.rtl``; the performance and machine models assume the same.
"""

from __future__ import annotations

import numpy as np

from zynqnn.hw import isa
from zynqnn.hw.config import PBUF_WORD_BITS, HwConfig

__all__ = [
    "COMPUTE_OUTSTANDING",
    "FETCH_BEATS",
    "QUEUE_DEPTH",
    "READ_OUTSTANDING",
    "WRITE_OUTSTANDING",
    "MAX_BURST",
    "PAGE_BYTES",
    "buffer_word_bits",
    "buffer_depth",
    "line_beats",
    "transfer_extent",
    "pack_words",
    "unpack_words",
]

#: Compute commands the shell lets the engine hold at once.
COMPUTE_OUTSTANDING = 2
#: Beats of commands the fetcher reads ahead.
FETCH_BEATS = 32
#: Commands each unit queue holds (besides the one its unit works on).
QUEUE_DEPTH = 4
#: Bursts the read port keeps in flight: 8 x 16 beats cover the board's ~100 cycles from
#: address to data (zynqnn.compiler.perf.BOARD_LATENCY) at a beat per cycle; with 4 the
#: reads would run at 16 / 29 of the port's rate. The cost is an 8-entry tag FIFO.
READ_OUTSTANDING = 8
#: Write bursts awaiting their response.
WRITE_OUTSTANDING = 8
#: Longest burst (AXI3, the Zynq HP ports).
MAX_BURST = 16
#: No burst crosses a boundary of this many bytes.
PAGE_BYTES = 4096


def buffer_word_bits(cfg: HwConfig, buffer: isa.Buffer) -> int:
    """Bits of one word of ``buffer``."""
    return {
        isa.Buffer.IBUF: cfg.act_word_bits,
        isa.Buffer.WBUF: cfg.out_word_bits,
        isa.Buffer.PBUF: PBUF_WORD_BITS,
        isa.Buffer.OBUF: cfg.out_word_bits,
    }[isa.Buffer(buffer)]


def buffer_depth(cfg: HwConfig, buffer: isa.Buffer) -> int:
    """Words per bank of ``buffer``."""
    return {
        isa.Buffer.IBUF: cfg.act_buffer_depth,
        isa.Buffer.WBUF: cfg.weight_buffer_depth,
        isa.Buffer.PBUF: cfg.param_buffer_depth,
        isa.Buffer.OBUF: cfg.acc_buffer_depth,
    }[isa.Buffer(buffer)]


def line_beats(cfg: HwConfig, buffer: isa.Buffer, line_words: int) -> int:
    """Bus beats of one DDR line of ``line_words`` words of ``buffer`` (what the hardware
    transfers; a line's last beat may be partly unused when words are narrower than beats)."""
    wb, bb = buffer_word_bits(cfg, buffer), cfg.axi_data_bits
    if wb >= bb:
        return line_words * (wb // bb)
    k = bb // wb
    return (line_words + k - 1) // k


def transfer_extent(cfg: HwConfig, buffer: isa.Buffer, ddr_addr: int, lines: int,
                    ddr_stride: int, line_words: int) -> tuple[int, int]:
    """DDR bytes ``[first, end)`` the beats of a LOAD / STORE of ``lines >= 1`` lines cover, as the
    command processor's window check counts them (whole AXI beats)."""
    end = (ddr_addr + (lines - 1) * ddr_stride
           + line_beats(cfg, buffer, line_words) * (cfg.axi_data_bits // 8))
    return ddr_addr, end


def pack_words(values: np.ndarray, bits: int) -> np.ndarray:
    """Pack ``(..., n)`` integer operands into little-endian words of ``n*bits`` bits, returned
    as ``(..., n*bits/8)`` bytes."""
    v = np.asarray(values, dtype=np.int64) & ((1 << bits) - 1)
    n = v.shape[-1]
    if bits % 8:
        raise ValueError(f"operand width {bits} is not a whole number of bytes")
    nb = bits // 8
    out = np.zeros(v.shape[:-1] + (n * nb,), dtype=np.uint8)
    for b in range(nb):
        out[..., b::nb] = (v >> (8 * b)) & 0xFF
    return out


def unpack_words(raw: np.ndarray, bits: int, signed: bool) -> np.ndarray:
    """Inverse of :func:`pack_words`: ``(..., n*bits/8)`` bytes to ``(..., n)`` operands."""
    raw = np.asarray(raw, dtype=np.int64)
    nb = bits // 8
    v = np.zeros(raw.shape[:-1] + (raw.shape[-1] // nb,), dtype=np.int64)
    for b in range(nb):
        v |= raw[..., b::nb] << (8 * b)
    if signed:
        v = np.where(v >= (1 << (bits - 1)), v - (1 << bits), v)
    return v
