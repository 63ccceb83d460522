"""DDR word layouts of activations, weights and post-processing constants.

Activations are ``NHWC<R>``: channel block, row, column, then the ``R`` codes of the block
(channels padded with the tensor's zero point). Weights of one command are its ``(ky, kx, cin
block, r)`` WBUF rows of ``C`` weights; constants one 128-bit PBUF word per output channel.
"""

from __future__ import annotations

import numpy as np

from zynqnn.config import HwConfig
from zynqnn.machine import PARAM_WORD_BITS, pack_words, unpack_words

__all__ = ["act_bytes", "act_codes", "weight_bytes", "param_bytes", "cblocks"]


def cblocks(channels: int, n: int) -> int:
    return -(-channels // n)


def act_bytes(cfg: HwConfig, x: np.ndarray, zero_point: int) -> np.ndarray:
    """(C, H, W) codes -> DDR bytes of the ``NHWC<R>`` tensor."""
    R = cfg.rows
    c, h, w = x.shape
    cb = cblocks(c, R)
    xp = np.full((cb * R, h, w), zero_point, np.int64)
    xp[:c] = x
    return pack_words(xp.reshape(cb, R, h, w).transpose(0, 2, 3, 1), cfg.operand_bits).reshape(-1)


def act_codes(cfg: HwConfig, raw: np.ndarray, shape, signed: bool) -> np.ndarray:
    """Inverse of :func:`act_bytes` (drops the padding channels)."""
    R, B = cfg.rows, cfg.operand_bits
    c, h, w = shape
    cb = cblocks(c, R)
    v = unpack_words(np.asarray(raw).reshape(cb, h, w, R * B // 8), B, signed)
    return v.transpose(0, 3, 1, 2).reshape(cb * R, h, w)[:c]


def weight_bytes(cfg: HwConfig, w: np.ndarray) -> np.ndarray:
    """(cout <= C, cin <= cb*R, k, k) weights of one command -> WBUF rows (ky, kx, cb, r)."""
    R, C = cfg.rows, cfg.cols
    cout, cin, k, _ = w.shape
    cb = cblocks(cin, R)
    wp = np.zeros((C, cb * R, k, k), np.int64)
    wp[:cout, :cin] = w
    rows = wp.reshape(C, cb, R, k, k).transpose(3, 4, 1, 2, 0)
    return pack_words(rows, cfg.operand_bits).reshape(-1)


def param_bytes(bias, multiplier, shift, count: int) -> bytes:
    """One PBUF word per output channel (TFLite bias, Q31 multiplier, shift); ``count`` words,
    the channels past ``len(bias)`` zero (their outputs are the zero point)."""
    from zynqnn.rtl.engine import pbuf_word_layout

    out = []
    for i in range(count):
        if i < len(bias):
            v = {"bias": int(bias[i]), "multiplier": int(multiplier[i]), "shift": int(shift[i])}
        else:
            v = {"bias": 0, "multiplier": 0, "shift": 0}
        bits = pbuf_word_layout.const({"tflite": v}).as_bits()
        out.append(bits.to_bytes(PARAM_WORD_BITS // 8, "little"))
    return b"".join(out)
