"""DDR word layouts of activations, weights and post-processing constants.

Activations are ``NHWC<R>``: channel block, row, column, then the ``R`` codes of the block
(channels padded with the tensor's zero point). Weights of one command are its ``(ky, kx, cin
block, r)`` WBUF rows of ``C`` weights; constants one 128-bit PBUF word per output channel
(``zynqnn.hw.post.pbuf_word_layout``), then the layer's activation word if it has one.
"""

from __future__ import annotations

import numpy as np

from zynqnn.hw.config import PBUF_WORD_BITS, HwConfig
from zynqnn.hw.geometry import pack_words, unpack_words

__all__ = ["act_bytes", "act_codes", "weight_bytes", "param_bytes", "post_layer", "step_post",
           "cblocks", "pairs_tiles", "dw_tile"]


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


def pairs_tiles(w: np.ndarray, R: int) -> np.ndarray:
    """A ``PAIRS`` command's weight tiles (``isa.pairs_passes``): (passes, R, R) from one channel
    block's depthwise weights ``w`` (n <= R, k, k). Pass ``(m, h)``: channel ``c`` of half ``h``
    is column ``h R/2 + c``, its tap ``2m`` weight in row ``c``, its tap ``2m + 1`` in row
    ``R/2 + c`` (0 beyond the kernel)."""
    from zynqnn.hw import isa

    n, k, _ = w.shape
    half = R // 2
    taps = np.zeros((isa.pairs_passes(k), R), np.int64)   # (tap, channel)
    taps[:k * k, :n] = w.reshape(n, k * k).T
    tiles = np.zeros((len(taps), R, R), np.int64)
    c = np.arange(half)
    for p in range(len(taps)):
        m, h = divmod(p, 2)
        col = h * half + c
        tiles[p, c, col] = taps[2 * m, col]
        tiles[p, half + c, col] = taps[2 * m + 1, col]
    return tiles


def dw_tile(w: np.ndarray, R: int, C: int) -> np.ndarray:
    """A ``DW`` command's weight tile (``isa.dw_walk``): (R, C) from one channel block's 3x3
    depthwise weights ``w`` (n <= R, 3, 3); row ``c`` holds channel ``c``'s taps ``ky * 3 + kx``
    in columns 0..8."""
    n, k, _ = w.shape
    tile = np.zeros((R, C), np.int64)
    tile[:n, :k * k] = w.reshape(n, k * k)
    return tile


def post_layer(cfg: HwConfig, la, channels: int):
    """The engine's post-processing of a conv or global-pool layer (``PostProcLayer``): from its
    Requant (+ activation), or from its TFLite constants."""
    from zynqnn.hw import isa
    from zynqnn.hw.post import PostProcLayer, act_params_layout, pbuf_word_layout, postproc_layer

    from .layers import CompileError, code_range

    y = la.output
    if la.requant is not None:
        if la.clamp is not None:
            raise CompileError(f"{la.name}: clamp is the requant's (qmin/qmax, relu); "
                               "do not pass both")
        try:
            post = postproc_layer(la.requant, cfg, la.act, channels=channels)
        except (ValueError, TypeError) as e:
            raise CompileError(f"{la.name}: {e}") from None
        if post.zp_out != y.zero_point:
            raise CompileError(f"{la.name}: output zero point {y.zero_point} differs from the "
                               f"post-processing's {post.zp_out}")
        return post
    lo, hi = la.clamp or code_range(y.signed, cfg.operand_bits)
    words = tuple(pbuf_word_layout.const({"tflite": {
        "bias": int(la.bias[c]), "multiplier": int(la.multiplier[c]), "shift": int(la.shift[c]),
    }}).as_bits() for c in range(channels))
    scheme = isa.Scheme.TFLITE_SINGLE_ROUNDING if la.single_rounding else isa.Scheme.TFLITE
    act = act_params_layout(cfg).const({}).as_bits()
    return PostProcLayer(scheme, y.zero_point, lo, hi, act, words)


def step_post(cfg: HwConfig, la, post):
    """The step lanes' post-processing of a one-pass depthwise layer (``ConvOp.step``): the
    layer's float-scheme requantization fitted by ``numerics.stepfit`` on the accumulator range
    its weights and input codes allow, one :func:`~zynqnn.hw.step.step_params_layout`
    PBUF word per channel; ``None`` when the build has no step lanes, the layer has an activation
    word, its scheme has no step form, or the fit needs more than the lane holds (the general
    lanes then do the layer)."""
    from dataclasses import replace

    from zynqnn.hw import isa
    from zynqnn.hw.step import step_params, step_params_layout
    from zynqnn.numerics.errors import RangeError
    from zynqnn.numerics.stepfit import dw_acc_range, fit_steps

    from .layers import code_range

    rq, x = la.requant, la.input
    floats = (isa.Scheme.TORCH_FBGEMM, isa.Scheme.TORCH_QNNPACK, isa.Scheme.ONNXRUNTIME)
    if not cfg.step_lanes or rq is None or has_act(post) or post.scheme not in floats:
        return None
    x_lo, x_hi = code_range(x.signed, cfg.operand_bits)
    lo, hi = dw_acc_range(la.weights, x_lo, x_hi, x.zero_point)
    if rq.channels == 1:
        lo, hi = lo.min(), hi.max()
    try:
        fit = fit_steps(rq, lo, hi, cfg.step_frac_bits, cfg.step_exceptions)
        params = step_params(fit, cfg, la.name)
    except (RangeError, ValueError):
        return None
    if rq.channels == 1:
        params = params * len(post.words)
    layout = step_params_layout(cfg)
    return replace(post, words=tuple(layout.const(p).as_bits() for p in params))


def has_act(post) -> bool:
    """Whether a post-processing needs its activation word (mode other than none)."""
    return post.act != 0


def param_bytes(cfg: HwConfig, post, c0: int, c1: int, count: int) -> bytes:
    """PBUF words of output channels ``[c0, c1)`` of ``post``, zero up to ``count`` words (the
    padding channels' outputs are discarded), then the activation row when the layer has one
    (``requant_lanes`` words, the activation word's bits little-endian)."""
    mask = (1 << PBUF_WORD_BITS) - 1
    words = list(post.words[c0:c1]) + [0] * (count - (c1 - c0))
    if has_act(post):
        words += [(post.act >> (PBUF_WORD_BITS * i)) & mask for i in range(cfg.requant_lanes)]
    return b"".join(w.to_bytes(PBUF_WORD_BITS // 8, "little") for w in words)
