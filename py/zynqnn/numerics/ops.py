"""Golden integer ops on NCHW numpy arrays of codes.

Everything is vectorized over pixels and channels; loops run over kernel taps only. Accumulation
is exact: ``sum((q_x - zp_x) * (q_w - zp_w))`` as int64. For speed the sums are computed with a
float64 GEMM when a bound proves every partial sum is an integer below 2**53 (so the float64
result *is* the exact integer sum, in any summation order); otherwise int64 arithmetic is used.

One framework effect is not an exact sum: fbgemm's depthwise kernels (PyTorch, fbgemm engine)
add the raw products of two adjacent kernel taps with int16 saturation (``vpmaddubsw``);
``conv2d_acc(..., saturate_pairs=True)`` reproduces it and :func:`fbgemm_depthwise_path` says
when PyTorch takes that kernel.

Requantization comes from :mod:`schemes` (pass a :class:`~schemes.Requant`); elementwise add,
pooling, activations and concat exist in each framework's own integer/float32 semantics, named
by suffix (``_torch``, ``_qnnpack``, ``_onnxruntime``, ``_tflite``).
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

from . import f32int as F
from . import gemmlowp
from .errors import (
    RangeError,
    ScaleError,
    ShapeError,
    ZeroPointError,
    check_int_range,
    check_scale,
    check_shift,
    check_zero_point,
)
from .f32int import np_fma32
from .quant import torch_quantize_val, torch_quantize_vec, torch_vec_quantize
from .rounding import ROUNDING_MODES, shift_round
from .schemes import Requant, x86_cvt

__all__ = [
    "PackedWeights",
    "pack_weights",
    "pad2d",
    "conv2d_acc",
    "conv2d",
    "fbgemm_depthwise_path",
    "linear_acc",
    "linear",
    "max_pool2d",
    "avg_pool2d_torch",
    "adaptive_avg_pool2d_torch",
    "avg_pool2d_tflite",
    "global_avg_pool_onnxruntime",
    "avg_pool2d_onnxruntime",
    "add_torch",
    "add_qnnpack",
    "add_onnxruntime",
    "add_tflite",
    "relu",
    "hardtanh_torch",
    "relu6_torch",
    "leaky_relu_fixed",
    "leaky_relu_torch",
    "upsample_nearest",
    "concat",
    "concat_torch",
    "concat_onnxruntime",
    "concat_tflite",
]

f32 = np.float32
f64 = np.float64
_EXACT = 2.0**53


# ---------------------------------------------------------------------------------------------
# argument helpers


def _codes(op, name, x, ndim=None):
    x = np.asarray(x)
    if x.dtype.kind not in "iub":
        raise RangeError(f"{op}: {name} must be an integer array of codes, not dtype {x.dtype}")
    if ndim is not None and x.ndim != ndim:
        raise ShapeError(f"{op}: {name} must be {ndim}-D, got shape {x.shape}")
    return x.astype(np.int64)


def _pair(op, name, v, lo):
    t = (v, v) if np.ndim(v) == 0 else tuple(v)
    if len(t) != 2:
        raise ShapeError(f"{op}: {name} must be an int or a pair, not {v!r}")
    t = tuple(int(check_shift(op, name, x, lo, 1 << 20)) for x in t)
    return t


def _pads(op, padding):
    """int -> 4 sides; (ph, pw) -> (ph, ph, pw, pw); (top, bottom, left, right) as is."""
    if np.ndim(padding) == 0:
        p = (padding,) * 4
    else:
        p = tuple(padding)
        if len(p) == 2:
            p = (p[0], p[0], p[1], p[1])
        elif len(p) != 4:
            raise ShapeError(f"{op}: padding must be an int, (ph, pw) or (top, bottom, left, "
                             f"right), not {padding!r}")
    return tuple(int(check_shift(op, "padding", v, 0, 1 << 20)) for v in p)


def _out_size(op, size, k, s, d, p0, p1, ceil_mode=False):
    span = d * (k - 1) + 1
    num = size + p0 + p1 - span
    if num < 0:
        raise ShapeError(f"{op}: kernel extent {span} is larger than the padded input "
                         f"{size + p0 + p1}")
    o = (-(-num // s) if ceil_mode else num // s) + 1
    if ceil_mode and (o - 1) * s >= size + p0:  # last window must start inside input/left pad
        o -= 1
    return o


def pad2d(x, padding, value):
    """Constant padding of the two spatial axes of an NCHW code array (value: a code)."""
    x = _codes("pad2d", "x", x, 4)
    t, b, l, r = _pads("pad2d", padding)
    return np.pad(x, ((0, 0), (0, 0), (t, b), (l, r)), constant_values=int(value))


def _taps(xp, kh, kw, sh, sw, dh, dw, ho, wo):
    """Yield (i, j, view) for every kernel tap of a padded NHWC array."""
    for i in range(kh):
        for j in range(kw):
            yield i, j, xp[:, i * dh: i * dh + (ho - 1) * sh + 1: sh,
                           j * dw: j * dw + (wo - 1) * sw + 1: sw, :]


# ---------------------------------------------------------------------------------------------
# convolution / linear


class PackedWeights:
    """Conv or linear weights prepared once for :func:`conv2d_acc` / :func:`linear_acc`.

    Holds ``w - zp_w`` in GEMM layout, ``max |w - zp_w|`` and per-dtype copies, so a layer run
    many times (a model) does not redo the weight transform. ``w``: (K, C/groups, kh, kw) conv
    or (K, C) linear codes; ``zp_w`` scalar or per output channel.
    """

    def __init__(self, w, zp_w=0, groups=1, _op="pack_weights"):
        op = _op
        w = _codes(op, "weight", w)
        if w.ndim not in (2, 4):
            raise ShapeError(f"{op}: weight must be 2-D (linear) or 4-D (conv), got {w.shape}")
        k = w.shape[0]
        self.groups = int(check_shift(op, "groups", groups, 1, 1 << 20))
        if k % self.groups:
            raise ShapeError(f"{op}: weight has {k} output channels, not divisible by "
                             f"groups={self.groups}")
        zw = check_int_range(op, "zp_w", zp_w, -(2**31), 2**31 - 1)
        if zw.ndim > 1 or (zw.ndim == 1 and zw.size != k):
            raise ShapeError(f"{op}: zp_w must be a scalar or have {k} entries, got shape "
                             f"{zw.shape}")
        self.shape = w.shape
        self.zp_w = zw
        # raw codes of depthwise taps (k, kh, kw): fbgemm multiplies raw codes (saturate_pairs)
        self.raw_taps = w.reshape(k, w.shape[2], w.shape[3]) if (
            w.ndim == 4 and w.shape[1] == 1) else None
        if np.any(zw != 0):
            w = w - zw.reshape((-1,) + (1,) * (w.ndim - 1))
        self.wmax = max(int(w.max()), -int(w.min())) if w.size else 0
        if w.ndim == 2:
            self._base = w.T  # (C, K)
        else:
            g, (k, cg, kh, kw) = self.groups, w.shape
            if cg == 1:  # depthwise taps: (k, kh, kw)
                self._base = w.reshape(k, kh, kw)
            else:  # (g, kh*kw*cg, k/g), rows ordered (kh, kw, cg) like the im2col columns
                self._base = (w.reshape(g, k // g, cg, kh, kw).transpose(0, 3, 4, 2, 1)
                              .reshape(g, kh * kw * cg, k // g))
        self._cache = {}

    def as_dtype(self, dt):
        key = np.dtype(dt).name
        if key not in self._cache:
            self._cache[key] = np.ascontiguousarray(self._base, dtype=dt)
        return self._cache[key]


def pack_weights(w, zp_w=0, groups=1) -> PackedWeights:
    """Prepare weights once for repeated :func:`conv2d_acc` / :func:`linear_acc` calls."""
    return PackedWeights(w, zp_w, groups)


def _packed(op, w, zp_w, groups, ndim):
    if isinstance(w, PackedWeights):
        if groups not in (None, w.groups):
            raise ShapeError(f"{op}: groups={groups} differs from the packed weights' {w.groups}")
        if zp_w is not None and not np.array_equal(np.asarray(zp_w), w.zp_w):
            raise ZeroPointError(f"{op}: zp_w differs from the packed weights' zero point")
        pw = w
    else:
        pw = PackedWeights(_codes(op, "weight", w, ndim), 0 if zp_w is None else zp_w,
                           1 if groups is None else groups, _op=op)
    if len(pw.shape) != ndim:
        raise ShapeError(f"{op}: weight must be {ndim}-D, got shape {pw.shape}")
    return pw


def conv2d_acc(x, w, zp_x=0, zp_w=None, stride=1, padding=0, dilation=1, groups=None,
               saturate_pairs=False):
    """Accumulators of a 2-D convolution: int64 array (N, K, Ho, Wo), exact by default.

    ``x``: (N, C, H, W) codes; ``w``: (K, C/groups, kh, kw) codes or :class:`PackedWeights`;
    ``zp_w`` scalar or per output channel (default 0); ``groups`` default 1. Padding positions
    hold the input zero point (real zero), as in every framework. ``padding`` is an int,
    (ph, pw) or (top, bottom, left, right).

    ``saturate_pairs=True`` (depthwise weights only, one input channel per group): fbgemm's
    depthwise kernel instead of the exact sum. With ``a_t`` the raw uint8 input code under tap
    ``t`` (taps in row-major ``(i, j)`` order, padding = ``zp_x``) and ``b_t`` the raw int8
    weight code, the raw products of taps ``2m`` and ``2m + 1`` are added and saturated to
    int16, the pair sums added exactly (a last odd tap stands alone and cannot saturate),
    and the zero points enter exactly afterwards::

        acc = sum_m sat16(a_2m b_2m + a_2m+1 b_2m+1) - zp_w sum_t a_t - zp_x (sum_t b_t - T zp_w)
            = exact acc + sum_m (sat16(p_m) - p_m)

    Needs codes in 0..255 (and ``zp_x`` when padding), weight codes in -128..127. Use
    :func:`fbgemm_depthwise_path` to decide whether PyTorch's fbgemm engine takes this kernel.
    """
    op = "conv2d"
    x = _codes(op, "x", x, 4)
    pw = _packed(op, w, zp_w, groups, 4)
    n, c, h, wd = x.shape
    k, cg, kh, kw = pw.shape
    g = pw.groups
    if c % g:
        raise ShapeError(f"{op}: input has {c} channels, not divisible by groups={g}")
    if cg != c // g:
        raise ShapeError(f"{op}: weight has {cg} input channels per group, input has {c // g}")
    sh, sw = _pair(op, "stride", stride, 1)
    dh, dw = _pair(op, "dilation", dilation, 1)
    pt, pb, pl, pr = _pads(op, padding)
    zp_x = int(check_int_range(op, "zp_x", zp_x, -(2**31), 2**31 - 1))
    ho = _out_size(op, h, kh, sh, dh, pt, pb)
    wo = _out_size(op, wd, kw, sw, dw, pl, pr)
    kg = k // g
    terms = cg * kh * kw
    xmax = max(abs(int(x.max()) - zp_x), abs(int(x.min()) - zp_x)) if x.size else 0
    wmax = pw.wmax
    if cg == 1:
        dt = _exact_dtype(kh * kw * xmax * wmax)
    else:
        dt = _exact_dtype(terms * xmax * wmax)
        if dt is not f32:  # a data-dependent bound often still allows float32
            dt = _exact_dtype(_window_abs_sum_max(x, zp_x, g, kh, kw, sh, sw, dh, dw,
                                                  (pt, pb, pl, pr), ho, wo) * wmax)
    # NHWC, zero point subtracted, zero padded (zero = zp_x in code space), in the GEMM dtype
    xh = np.zeros((n, h + pt + pb, wd + pl + pr, c), dtype=dt)
    inner = xh[:, pt: pt + h, pl: pl + wd, :]
    inner[...] = x.transpose(0, 2, 3, 1)
    inner -= dt(zp_x)
    if cg == 1:  # depthwise (and channel multipliers): per-tap multiply-accumulate
        acc = np.zeros((n, ho, wo, k), dtype=dt)
        wt = pw.as_dtype(dt)
        for i, j, v in _taps(xh, kh, kw, sh, sw, dh, dw, ho, wo):
            if kg > 1:
                v = np.repeat(v, kg, axis=3)
            acc += v * wt[:, i, j]
        acc = acc.astype(np.int64)
        if saturate_pairs:
            corr = _pair_saturation(x, pw, zp_x, (sh, sw, dh, dw), (pt, pb, pl, pr), ho, wo)
            if corr is not None:
                acc += corr
        return acc.transpose(0, 3, 1, 2)
    if saturate_pairs:
        raise ShapeError(f"{op}: saturate_pairs models fbgemm's depthwise kernel and needs one "
                         f"input channel per group, the weight has {cg}")
    wm = pw.as_dtype(dt)
    if kh == kw == 1 and sh == sw == 1:
        cols = xh.reshape(n * ho * wo, g, terms)
    else:  # im2col in one strided gather: (n, ho, wo, g, kh, kw, cg)
        s0, s1, s2, s3 = xh.strides
        win = as_strided(xh, (n, ho, wo, g, kh, kw, cg),
                         (s0, sh * s1, sw * s2, cg * s3, dh * s1, dw * s2, s3), writeable=False)
        cols = np.ascontiguousarray(win).reshape(n * ho * wo, g, terms)
    if g == 1:
        acc = cols[:, 0, :] @ wm[0]
    else:
        acc = np.matmul(cols.transpose(1, 0, 2), wm).transpose(1, 0, 2)
    return acc.astype(np.int64).reshape(n, ho, wo, k).transpose(0, 3, 1, 2)


_I16_MIN, _I16_MAX = -(2**15), 2**15 - 1


def _pair_saturation(x, pw, zp_x, steps, pads, ho, wo):
    """``sum_m (sat16(p_m) - p_m)`` of fbgemm's depthwise kernel, NHWC int64 (N, Ho, Wo, K).

    ``p_m`` is the raw-code product sum of taps ``2m`` and ``2m + 1`` (row-major). ``None`` when
    no pair can leave int16 (every pair's ``max(a) * (sum of positive / negative weights)``
    stays inside), which is the case whenever the codes are at most 127.
    """
    op = "conv2d"
    sh, sw, dh, dw = steps
    pt, pb, pl, pr = pads
    raw = pw.raw_taps
    k, kh, kw = raw.shape
    n, c, h, wd = x.shape
    kg = k // c
    taps = raw.reshape(k, kh * kw)
    npair = taps.shape[1] // 2
    if npair == 0 or x.size == 0:
        return None
    lo, hi = int(x.min()), int(x.max())
    if pt or pb or pl or pr:
        lo, hi = min(lo, zp_x), max(hi, zp_x)
    if lo < 0 or hi > 255:
        raise RangeError(f"{op}: saturate_pairs needs uint8 input codes and zero point "
                         f"(0..255), got {lo}..{hi}")
    if int(taps.min()) < -128 or int(taps.max()) > 127:
        raise RangeError(f"{op}: saturate_pairs needs int8 weight codes (-128..127), got "
                         f"{int(taps.min())}..{int(taps.max())}")
    w0, w1 = taps[:, 0: 2 * npair: 2], taps[:, 1: 2 * npair: 2]  # (K, pairs)
    pos = np.maximum(w0, 0) + np.maximum(w1, 0)
    neg = np.maximum(-w0, 0) + np.maximum(-w1, 0)
    live = np.flatnonzero(((hi * pos > _I16_MAX) | (hi * neg > -_I16_MIN)).any(axis=0))
    if live.size == 0:
        return None
    xr = np.full((n, h + pt + pb, wd + pl + pr, c), zp_x, dtype=np.int32)
    xr[:, pt: pt + h, pl: pl + wd, :] = x.transpose(0, 2, 3, 1)
    views = [v for _, _, v in _taps(xr, kh, kw, sh, sw, dh, dw, ho, wo)]
    w0, w1 = w0.astype(np.int32), w1.astype(np.int32)
    corr = np.zeros((n, ho, wo, k), dtype=np.int64)
    for m in live:
        a0, a1 = views[2 * m], views[2 * m + 1]
        if kg > 1:  # channel multiplier: output channel o reads input channel o // kg
            a0, a1 = np.repeat(a0, kg, axis=3), np.repeat(a1, kg, axis=3)
        p = a0 * w0[:, m] + a1 * w1[:, m]  # |p| <= 2 * 255 * 128
        corr += np.clip(p, _I16_MIN, _I16_MAX) - p
    return corr


def fbgemm_depthwise_path(c_in, c_out, groups, kernel, stride=1, padding=0, dilation=1):
    """Whether PyTorch's fbgemm engine runs a quantized conv in fbgemm's depthwise kernel.

    That kernel (``vpmaddubsw`` on raw codes, every x86 CPU) saturates pairs of taps in int16
    (``conv2d_acc(..., saturate_pairs=True)``); other fbgemm convs and linears were exact on an
    AVX-512 VNNI CPU. Conditions (fbgemm ``takeDepthWiseFastPath``, measured with torch
    2.13): ``groups == c_in``, ``c_out`` is ``groups`` or ``2 * groups``, ``groups % 8 == 0``,
    a square 3x3, 5x5 or 7x7 kernel, strides 1 or 2, dilation 1, padding ``(k - 1) / 2`` on
    every side. ``kernel``/``stride``/``dilation``: int or pair; ``padding`` as in
    :func:`conv2d_acc`.
    """
    op = "fbgemm_depthwise_path"
    kh, kw = _pair(op, "kernel", kernel, 1)
    sh, sw = _pair(op, "stride", stride, 1)
    dh, dw = _pair(op, "dilation", dilation, 1)
    pads = _pads(op, padding)
    c_in, c_out, groups = int(c_in), int(c_out), int(groups)
    return (groups == c_in and c_out in (groups, 2 * groups) and groups % 8 == 0
            and kh == kw and kh in (3, 5, 7) and sh in (1, 2) and sw in (1, 2)
            and dh == dw == 1 and pads == ((kh - 1) // 2,) * 4)


def _exact_dtype(bound):
    """Cheapest arithmetic whose sums are exact when no partial sum exceeds ``bound``.

    Sums of integer products are exact in float32 below 2**24 and in float64 below 2**53 in any
    summation order (BLAS blocking, FMA), because every partial sum is then a representable
    integer; beyond that, int64.
    """
    if bound < 2**24:
        return f32
    if bound < _EXACT:
        return f64
    return np.int64


def _window_abs_sum_max(x, zp_x, g, kh, kw, sh, sw, dh, dw, pads, ho, wo):
    """Largest sum of ``|q - zp_x|`` over one group's receptive field (bounds every partial sum
    of that output's dot product once multiplied by ``max |w|``)."""
    n, c, h, w = x.shape
    pt, pb, pl, pr = pads
    a = np.abs(x - zp_x).reshape(n, g, c // g, h, w).sum(axis=2)
    ap = np.zeros((n, g, h + pt + pb, w + pl + pr), dtype=np.int64)
    ap[:, :, pt: pt + h, pl: pl + w] = a
    s0, s1, s2, s3 = ap.strides
    win = as_strided(ap, (n, g, ho, wo, kh, kw), (s0, s1, sh * s2, sw * s3, dh * s2, dw * s3),
                     writeable=False)
    return int(win.sum(axis=(4, 5)).max()) if win.size else 0


def conv2d(x, w, requant: Requant, zp_x=0, zp_w=None, stride=1, padding=0, dilation=1,
           groups=None, hw=False, saturate_pairs=False):
    """Quantized convolution: :func:`conv2d_acc` then ``requant.apply`` (``hw``: ``apply_hw``).

    ``saturate_pairs``: fbgemm's depthwise pair saturation (see :func:`conv2d_acc`)."""
    if not isinstance(requant, Requant):
        raise RangeError("conv2d: requant must be a Requant object (see make_requant)")
    acc = conv2d_acc(x, w, zp_x, zp_w, stride, padding, dilation, groups, saturate_pairs)
    return requant.apply_hw(acc, axis=1) if hw else requant.apply(acc, axis=1)


def linear_acc(x, w, zp_x=0, zp_w=None):
    """Exact accumulators of a fully connected layer: (..., C) x (K, C) -> (..., K) int64.

    ``w``: (K, C) codes or :class:`PackedWeights`; ``zp_w`` scalar or per output channel.
    """
    op = "linear"
    x = _codes(op, "x", x)
    pw = _packed(op, w, zp_w, None, 2)
    if x.ndim < 1 or x.shape[-1] != pw.shape[1]:
        raise ShapeError(f"{op}: weight has {pw.shape[1]} input features, input has "
                         f"{x.shape[-1] if x.ndim else 0}")
    xv = x - int(check_int_range(op, "zp_x", zp_x, -(2**31), 2**31 - 1))
    rowsum = int(np.abs(xv).sum(axis=-1).max()) if xv.size else 0
    dt = _exact_dtype(rowsum * pw.wmax)
    return (xv.astype(dt) @ pw.as_dtype(dt)).astype(np.int64)


def linear(x, w, requant: Requant, zp_x=0, zp_w=None, hw=False):
    """Quantized fully connected layer (output channel on the last axis)."""
    if not isinstance(requant, Requant):
        raise RangeError("linear: requant must be a Requant object (see make_requant)")
    acc = linear_acc(x, w, zp_x, zp_w)
    return requant.apply_hw(acc, axis=-1) if hw else requant.apply(acc, axis=-1)


# ---------------------------------------------------------------------------------------------
# pooling


def _pool_geometry(op, x, kernel, stride, padding, dilation, ceil_mode):
    kh, kw = _pair(op, "kernel", kernel, 1)
    sh, sw = _pair(op, "stride", kernel if stride is None else stride, 1)
    dh, dw = _pair(op, "dilation", dilation, 1)
    pt, pb, pl, pr = _pads(op, padding)
    ho = _out_size(op, x.shape[2], kh, sh, dh, pt, pb, ceil_mode)
    wo = _out_size(op, x.shape[3], kw, sw, dw, pl, pr, ceil_mode)
    return kh, kw, sh, sw, dh, dw, pt, pb, pl, pr, ho, wo


def max_pool2d(x, kernel, stride=None, padding=0, dilation=1, ceil_mode=False, pad_value=None):
    """Max pooling of codes (same scale and zero point in and out).

    ``pad_value=None``: padded positions are ignored (PyTorch/ONNX ``MaxPool`` padding, -inf).
    ``pad_value=zp``: explicit zero padding, e.g. YOLOv3-tiny's ``ZeroPad2d((0, 1, 0, 1))`` +
    ``MaxPool2d(2, 1)`` is ``max_pool2d(x, 2, 1, padding=(0, 1, 0, 1), pad_value=zp)``.
    Windows running past the input (``ceil_mode``) ignore the missing positions.
    """
    op = "max_pool2d"
    x = _codes(op, "x", x, 4)
    kh, kw, sh, sw, dh, dw, pt, pb, pl, pr, ho, wo = _pool_geometry(
        op, x, kernel, stride, padding, dilation, ceil_mode)
    low = np.iinfo(np.int64).min
    fill = low if pad_value is None else int(pad_value)
    eh = max(0, (ho - 1) * sh + dh * (kh - 1) + 1 - (x.shape[2] + pt + pb))
    ew = max(0, (wo - 1) * sw + dw * (kw - 1) + 1 - (x.shape[3] + pl + pr))
    n, c, h, w = x.shape
    xp = np.full((n, c, h + pt + pb + eh, w + pl + pr + ew), low, dtype=np.int64)
    if fill != low:
        xp[:, :, : h + pt + pb, : w + pl + pr] = fill
    xp[:, :, pt: pt + h, pl: pl + w] = x
    out = np.full((n, c, ho, wo), low, dtype=np.int64)
    for i in range(kh):
        for j in range(kw):
            v = xp[:, :, i * dh: i * dh + (ho - 1) * sh + 1: sh,
                   j * dw: j * dw + (wo - 1) * sw + 1: sw]
            np.maximum(out, v, out=out)
    return out


def _window_sums(x, kh, kw, sh, sw, pt, pb, pl, pr, ho, wo):
    """Sum of valid codes and number of valid positions per window (zero-padded sums)."""
    n, c, h, w = x.shape
    eh = max(0, (ho - 1) * sh + kh - (h + pt + pb))
    ew = max(0, (wo - 1) * sw + kw - (w + pl + pr))
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb + eh), (pl, pr + ew)))
    ones = np.pad(np.ones((h, w), dtype=np.int64), ((pt, pb + eh), (pl, pr + ew)))
    s = np.zeros((n, c, ho, wo), dtype=np.int64)
    cnt = np.zeros((ho, wo), dtype=np.int64)
    for i in range(kh):
        for j in range(kw):
            s += xp[:, :, i: i + (ho - 1) * sh + 1: sh, j: j + (wo - 1) * sw + 1: sw]
            cnt += ones[i: i + (ho - 1) * sh + 1: sh, j: j + (wo - 1) * sw + 1: sw]
    # pool_size counts padding but not positions past input + padding (PyTorch's definition)
    hs = np.arange(ho) * sh - pt
    ws = np.arange(wo) * sw - pl
    he = np.minimum(hs + kh, h + pb)
    we = np.minimum(ws + kw, w + pr)
    pool = (he - hs)[:, None] * (we - ws)[None, :]
    return s, cnt, pool


def avg_pool2d_torch(x, kernel, zero_point, stride=None, padding=0, ceil_mode=False,
                     count_include_pad=True, divisor_override=None, layout="nhwc",
                     vector_width=16, qmin=0, qmax=255):
    """``torch.nn.functional.avg_pool2d`` on a quantized tensor (fbgemm/x86 engine).

    The output keeps the input scale and zero point. ``acc = sum(q) - zp * n_valid``, divisor
    ``d`` (``count_include_pad``/``divisor_override`` as in PyTorch):

    * ``layout="nchw"`` (contiguous input): ``m = f32(1.0 / d)``,
      ``q = clamp(nearbyint(f32(f32(acc) * m) + zp))``;
    * ``layout="nhwc"`` (channels_last input, e.g. after a quantized conv): ``m = f32(1 / d)``;
      channels below ``C // vector_width * vector_width`` take the AVX path
      ``zp + rne(f32(f32(acc) * m))`` (zero point after rounding), the rest the scalar
      ``quantize_val`` path ``rne(f32(f32(f32(acc) * f32(1 / f32(1 / m))) + zp))``.
      ``vector_width`` is 16 on AVX-512 CPUs (torch runs the AVX-512 build of this kernel) and 8
      on AVX2-only CPUs: channel counts that are multiples of 16, or below 8, give the same
      codes on both (measured on torch 2.13).
    """
    op = "avg_pool2d_torch"
    x = _codes(op, "x", x, 4)
    zp = int(check_zero_point(op, "zero_point", zero_point, qmin, qmax))
    kh, kw, sh, sw, dh, dw, pt, pb, pl, pr, ho, wo = _pool_geometry(
        op, x, kernel, stride, padding, 1, ceil_mode)
    s, cnt, pool = _window_sums(x, kh, kw, sh, sw, pt, pb, pl, pr, ho, wo)
    if divisor_override is not None:
        dov = int(check_shift(op, "divisor_override", divisor_override, 1, 1 << 30))
        d = np.full_like(cnt, dov)
    else:
        d = pool if count_include_pad else cnt
    acc = s - zp * cnt
    if layout == "nchw":
        m = (1.0 / d.astype(f64)).astype(f32)
        y = (acc.astype(f32) * m).astype(f32) + f32(zp)
        return np.clip(np.rint(y.astype(f32)).astype(np.int64), qmin, qmax)
    if layout != "nhwc":
        raise RangeError(f"{op}: layout must be 'nhwc' or 'nchw', not {layout!r}")
    m = (f32(1) / d.astype(f32)).astype(f32)
    m_tail = (f32(1) / (f32(1) / m).astype(f32)).astype(f32)
    nvec = _vector_channels(x.shape[1], vector_width)
    accf = acc.astype(f32)
    vec = torch_vec_quantize(accf[:, :nvec], m, zp, qmin, qmax)
    tail = torch_quantize_val(accf[:, nvec:], m_tail, zp, qmin, qmax)
    return np.concatenate([vec, tail], axis=1)


def _vector_channels(c, vector_width):
    w = int(vector_width or 0)
    return c // w * w if w > 0 else 0


def _adaptive_bounds(i, o):
    k = np.arange(o)
    return (k * i) // o, -((-(k + 1) * i) // o)


def adaptive_avg_pool2d_torch(x, output_size, zero_point, layout="nhwc", vector_width=8,
                              qmin=0, qmax=255):
    """``adaptive_avg_pool2d`` on a quantized tensor (output keeps scale and zero point).

    ``nhwc`` (channels_last, the layout quantized convs produce): window size ``n``,
    ``m = f32(1 / n)``, ``inv = f32(1 / f32(1 / m))``, ``acc = sum - zp*n``; channels below
    ``C // vector_width * vector_width``: ``clamp(rne(fma(f32(acc), inv, zp)))`` (fbgemm array
    quantize), the others ``clamp(rne(f32(f32(f32(acc) * inv) + zp)))`` (``quantize_val``).
    ``vector_width`` is 8 on AVX2 and AVX-512 CPUs alike (torch runs the AVX2 build of this
    kernel on both; measured on torch 2.13).
    ``nchw``: ``r = f32(f32(1 / kh) / kw)``, ``q = rne(f32(f32(sum) * r))`` of the raw codes.
    """
    op = "adaptive_avg_pool2d_torch"
    x = _codes(op, "x", x, 4)
    zp = int(check_zero_point(op, "zero_point", zero_point, qmin, qmax))
    oh, ow = _pair(op, "output_size", output_size, 1)
    n, c, h, w = x.shape
    h0, h1 = _adaptive_bounds(h, oh)
    w0, w1 = _adaptive_bounds(w, ow)
    cs = np.pad(x, ((0, 0), (0, 0), (1, 0), (1, 0))).cumsum(2).cumsum(3)
    s = (cs[:, :, h1][:, :, :, w1] - cs[:, :, h0][:, :, :, w1]
         - cs[:, :, h1][:, :, :, w0] + cs[:, :, h0][:, :, :, w0])
    kh = (h1 - h0)[:, None]
    kw = (w1 - w0)[None, :]
    if layout == "nchw":
        r = ((f32(1) / kh.astype(f32)).astype(f32) / kw.astype(f32)).astype(f32)
        return np.rint((s.astype(f32) * r).astype(f32)).astype(np.int64)
    if layout != "nhwc":
        raise RangeError(f"{op}: layout must be 'nhwc' or 'nchw', not {layout!r}")
    size = (kh * kw).astype(f32)
    m = (f32(1) / size).astype(f32)
    inv = (f32(1) / (f32(1) / m).astype(f32)).astype(f32)
    accf = (s - zp * (kh * kw)).astype(f32)
    inv = np.broadcast_to(inv, accf.shape[2:])
    nvec = _vector_channels(c, vector_width)
    vec = torch_quantize_vec(accf[:, :nvec], inv, zp, qmin, qmax)
    tail = torch_quantize_val(accf[:, nvec:], inv, zp, qmin, qmax)
    return np.concatenate([vec, tail], axis=1)


def avg_pool2d_tflite(x, kernel, stride=None, padding=0, act_min=-128, act_max=127):
    """TFLite ``AVERAGE_POOL_2D`` reference (int8/uint8, same scale and zero point in and out).

    Sums raw codes over the valid (non-padded) positions and divides by their count rounding
    half away from zero: ``(acc + n/2) / n`` or ``(acc - n/2) / n`` with C truncation.
    """
    op = "avg_pool2d_tflite"
    x = _codes(op, "x", x, 4)
    kh, kw, sh, sw, dh, dw, pt, pb, pl, pr, ho, wo = _pool_geometry(
        op, x, kernel, stride, padding, 1, False)
    s, cnt, _ = _window_sums(x, kh, kw, sh, sw, pt, pb, pl, pr, ho, wo)
    half = cnt // 2
    num = np.where(s > 0, s + half, s - half)
    q = np.sign(num) * (np.abs(num) // cnt)
    return np.clip(q, act_min, act_max)


def global_avg_pool_onnxruntime(x, s_x, zp_x, s_y, zp_y, qmin=0, qmax=255):
    """ONNX Runtime ``QLinearGlobalAveragePool`` (com.microsoft, MLAS).

    ``scale = f32(s_x / f32(s_y * f32(n)))``,
    ``q = clamp(rne(f32(f32(sum - zp_x*n) * scale)) + zp_y)``.
    Output shape (N, C, 1, 1).
    """
    op = "global_avg_pool_onnxruntime"
    x = _codes(op, "x", x, 4)
    sx = f32(check_scale(op, "s_x", s_x, allow_array=False))
    sy = f32(check_scale(op, "s_y", s_y, allow_array=False))
    zpx = int(check_zero_point(op, "zp_x", zp_x, qmin, qmax))
    zpy = int(check_zero_point(op, "zp_y", zp_y, qmin, qmax))
    n = x.shape[2] * x.shape[3]
    scale = f32(sx / f32(sy * f32(n)))
    acc = x.sum(axis=(2, 3), keepdims=True) - zpx * n
    y = (acc.astype(f32) * scale).astype(f32)
    return np.clip(x86_cvt(np.rint(y).astype(np.int64)) + zpy, qmin, qmax)


def avg_pool2d_onnxruntime(x, kernel, s_x, zp_x, s_y, zp_y, stride=None, padding=0,
                           count_include_pad=False, qmin=0, qmax=255):
    """ONNX Runtime ``QLinearAveragePool`` (com.microsoft): float32 pooling of dequantized values.

    ``d = f32(f32(q - zp_x) * s_x)``; per window the valid taps are summed in row-major order in
    float32 and divided by the count (``count_include_pad``: the kernel size);
    ``q = clamp(rne(f32(f32(avg / s_y) + zp_y)))``.
    """
    op = "avg_pool2d_onnxruntime"
    x = _codes(op, "x", x, 4)
    sx = f32(check_scale(op, "s_x", s_x, allow_array=False))
    sy = f32(check_scale(op, "s_y", s_y, allow_array=False))
    zpx = int(check_zero_point(op, "zp_x", zp_x, qmin, qmax))
    zpy = int(check_zero_point(op, "zp_y", zp_y, qmin, qmax))
    kh, kw, sh, sw, dh, dw, pt, pb, pl, pr, ho, wo = _pool_geometry(
        op, x, kernel, stride, padding, 1, False)
    n, c, h, w = x.shape
    d = np.zeros((n, c, h + pt + pb, w + pl + pr), dtype=f32)
    d[:, :, pt: pt + h, pl: pl + w] = ((x - zpx).astype(f32) * sx).astype(f32)
    acc = np.zeros((n, c, ho, wo), dtype=f32)
    for i in range(kh):  # row-major tap order, as ORT adds them; padded taps add 0.0 (exact)
        for j in range(kw):
            acc += d[:, :, i: i + (ho - 1) * sh + 1: sh, j: j + (wo - 1) * sw + 1: sw]
    if count_include_pad:
        cnt = np.full((ho, wo), kh * kw, dtype=f32)
    else:
        hs, ws = np.arange(ho) * sh - pt, np.arange(wo) * sw - pl
        hc = np.minimum(hs + kh, h) - np.maximum(hs, 0)
        wc = np.minimum(ws + kw, w) - np.maximum(ws, 0)
        cnt = (hc[:, None] * wc[None, :]).astype(f32)
    y = ((acc / cnt).astype(f32) / sy).astype(f32) + f32(zpy)
    return np.clip(np.rint(y.astype(f32)).astype(np.int64), qmin, qmax)


# ---------------------------------------------------------------------------------------------
# elementwise add


def _binary(op, a, b):
    a = _codes(op, "a", a)
    b = _codes(op, "b", b)
    try:
        np.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        raise ShapeError(f"{op}: shapes {a.shape} and {b.shape} do not broadcast") from None
    return a, b


def add_torch(a, s_a, zp_a, b, s_b, zp_b, s_out, zp_out, relu=False, path="vector", hw=False,
              qmin=0, qmax=255):
    """``torch.ops.quantized.add[_relu]`` on the fbgemm/x86 engine (float32 arithmetic).

    ``path="vector"`` (AVX kernel, every element of tensors whose size is a multiple of 128)::

        d = fma(s, q, f32(-zp * s)) per input;  c = f32(d_a + d_b);  relu: c = max(c, 0)
        q = clamp(zp_out + rne(f32(c * f32(1 / s_out))))

    ``path="scalar"`` (the scalar tail of the vectorized loop): ``d = f32(s * (q - zp))`` and
    ``quantize_val``: ``q = clamp(rne(f32(f32(c * f32(1 / s_out)) + zp_out)))``.
    ``hw=True`` computes the same with :mod:`f32int` (integers only).
    """
    op = "add_torch"
    a, b = _binary(op, a, b)
    sa = f32(check_scale(op, "s_a", s_a, allow_array=False))
    sb = f32(check_scale(op, "s_b", s_b, allow_array=False))
    so = f32(check_scale(op, "s_out", s_out, allow_array=False))
    zpa = int(check_zero_point(op, "zp_a", zp_a, qmin, qmax))
    zpb = int(check_zero_point(op, "zp_b", zp_b, qmin, qmax))
    zpo = int(check_zero_point(op, "zp_out", zp_out, qmin, qmax))
    if path not in ("vector", "scalar"):
        raise RangeError(f"{op}: path must be 'vector' or 'scalar', not {path!r}")
    inv = f32(f32(1) / so)
    if not hw:
        if path == "vector":
            da = np_fma32(sa, a.astype(f32), f32(sa * f32(-zpa)))
            db = np_fma32(sb, b.astype(f32), f32(sb * f32(-zpb)))
        else:
            da = (sa * (a - zpa).astype(f32)).astype(f32)
            db = (sb * (b - zpb).astype(f32)).astype(f32)
        c = (da + db).astype(f32)
        if relu:
            c = np.maximum(c, f32(0))
        if path == "vector":
            return torch_vec_quantize(c, inv, zpo, qmin, qmax)
        return torch_quantize_val(c, inv, zpo, qmin, qmax)
    else:
        Sa, Sb, Inv = F.decompose(sa), F.decompose(sb), F.decompose(inv)
        if path == "vector":
            da = F.fma(Sa, F.from_int(a), F.decompose(f32(sa * f32(-zpa))))
            db = F.fma(Sb, F.from_int(b), F.decompose(f32(sb * f32(-zpb))))
        else:
            da = F.mul(Sa, F.from_int(a - zpa))
            db = F.mul(Sb, F.from_int(b - zpb))
        cm, ce = F.add(da, db)
        if relu:
            neg = cm < 0
            cm, ce = np.where(neg, 0, cm), np.where(neg, F.ZERO_EXP, ce)
        y = F.mul((cm, ce), Inv)
        if path == "vector":
            return np.clip(x86_cvt(F.rne_int(y)) + zpo, qmin, qmax)
        return np.clip(F.rne_int(F.add(y, F.from_int(np.full(cm.shape, zpo)))), qmin, qmax)


def add_qnnpack(a, s_a, zp_a, b, s_b, zp_b, s_out, zp_out, relu=False, qmin=0, qmax=255):
    """``torch.ops.quantized.add[_relu]`` on the qnnpack engine (fixed point, equal shapes).

    ``r_a = f32(s_a/s_out)``, ``r_b = f32(s_b/s_out)`` must lie in [2^-14, 2^8).
    ``shift = 21 - exponent(max(r_a, r_b))``, multipliers ``m = lrintf(r * 2^shift)`` (<= 22 bits),
    ``acc = q_a*m_a + q_b*m_b - (m_a*zp_a + m_b*zp_b)``, arithmetic shift right rounding half
    away from zero, ``+ zp_out``, clamp (ReLU: at ``zp_out``).
    """
    op = "add_qnnpack"
    a, b = _binary(op, a, b)
    for name, s in (("s_a", s_a), ("s_b", s_b), ("s_out", s_out)):
        check_scale(op, name, s, allow_array=False)
    zpa = int(check_zero_point(op, "zp_a", zp_a, 0, 255))
    zpb = int(check_zero_point(op, "zp_b", zp_b, 0, 255))
    zpo = int(check_zero_point(op, "zp_out", zp_out, 0, 255))
    ra = f32(f32(s_a) / f32(s_out))
    rb = f32(f32(s_b) / f32(s_out))
    for name, r in (("s_a/s_out", ra), ("s_b/s_out", rb)):
        if not (2.0**-14 <= r < 2.0**8):
            raise ScaleError(f"{op}: {name} = {float(r)!r} is outside qnnpack's [2^-14, 2^8)")
    mx = max(ra, rb)
    exp = int((np.array(mx, dtype=f32).view(np.uint32) >> 23) & 0xFF) - 127
    shift = 21 - exp
    ma = int(np.rint(f32(ra * f32(2.0**shift))))
    mb = int(np.rint(f32(rb * f32(2.0**shift))))
    zpp = gemmlowp.wrap_int32(-(ma * zpa + mb * zpb))
    acc = gemmlowp.wrap_int32(zpp + a * ma + b * mb)
    mask = (1 << shift) - 1
    rem = (acc & mask) - (acc < 0)
    out = (acc >> shift) + (rem > (mask >> 1))
    lo = max(qmin, zpo) if relu else qmin
    if lo >= qmax:  # pytorch_qnnp_create_add_nc_q8 refuses an empty output range
        raise ZeroPointError(f"{op}: output range {lo}..{qmax} is empty (qnnpack refuses it)")
    return np.clip(out + zpo, lo, qmax)


def add_onnxruntime(a, s_a, zp_a, b, s_b, zp_b, s_out, zp_out, qmin=0, qmax=255, hw=False):
    """ONNX Runtime ``QLinearAdd`` (com.microsoft, MLAS AVX2 kernel)::

        r_a = f32(s_a/s_c), r_b = f32(s_b/s_c)
        fixed = f32(zp_c - fma(r_a, zp_a, f32(r_b * zp_b)))
        q = clamp(rne(fma(a, r_a, fma(b, r_b, fixed))))
    """
    op = "add_onnxruntime"
    a, b = _binary(op, a, b)
    sa = f32(check_scale(op, "s_a", s_a, allow_array=False))
    sb = f32(check_scale(op, "s_b", s_b, allow_array=False))
    sc = f32(check_scale(op, "s_out", s_out, allow_array=False))
    zpa = int(check_zero_point(op, "zp_a", zp_a, qmin, qmax))
    zpb = int(check_zero_point(op, "zp_b", zp_b, qmin, qmax))
    zpc = int(check_zero_point(op, "zp_out", zp_out, qmin, qmax))
    ra = f32(sa / sc)
    rb = f32(sb / sc)
    fixed = f32(f32(zpc) - np_fma32(ra, f32(zpa), f32(rb * f32(zpb))))
    if not hw:
        t = np_fma32(a.astype(f32), ra, np_fma32(b.astype(f32), rb, fixed))
        r = x86_cvt(np.rint(np.clip(t, f32(qmin), f32(qmax))).astype(np.int64))
    else:
        inner = F.fma(F.from_int(b), F.decompose(rb), F.decompose(fixed))
        r = x86_cvt(F.rne_int(F.fma(F.from_int(a), F.decompose(ra), inner)))
    return np.clip(r, qmin, qmax)


def add_tflite(a, s_a, zp_a, b, s_b, zp_b, s_out, zp_out, qmin=-128, qmax=127, left_shift=20,
               single_rounding=False):
    """TFLite ``ADD`` (int8/uint8 reference, integer only).

    ``twice_max = 2*max(s_a, s_b)``; input multipliers ``s_i / twice_max`` and output multiplier
    ``twice_max / (2^left_shift * s_out)`` (QuantizeMultiplierSmallerThanOneExp);
    ``sum = MBQM((q_a - zp_a) << ls, m_a) + MBQM((q_b - zp_b) << ls, m_b)``,
    ``q = clamp(MBQM(sum, m_out) + zp_out)``.
    """
    op = "add_tflite"
    a, b = _binary(op, a, b)
    sa = f32(check_scale(op, "s_a", s_a, allow_array=False))
    sb = f32(check_scale(op, "s_b", s_b, allow_array=False))
    so = f32(check_scale(op, "s_out", s_out, allow_array=False))
    zpa = int(check_zero_point(op, "zp_a", zp_a, qmin, qmax))
    zpb = int(check_zero_point(op, "zp_b", zp_b, qmin, qmax))
    zpo = int(check_zero_point(op, "zp_out", zp_out, qmin, qmax))
    ls = int(check_shift(op, "left_shift", left_shift, 0, 30))
    twice_max = f64(f32(2) * max(sa, sb))
    mults = []
    for real in (f64(sa) / twice_max, f64(sb) / twice_max,
                 twice_max / f64(f32(f32(2.0**ls) * so))):
        if not 0 < real < 1:
            raise ScaleError(f"{op}: rescale multiplier {real!r} must be in (0, 1) (scales too "
                             f"far apart for left_shift={ls})")
        mults.append(gemmlowp.quantize_multiplier(real))
    mbqm = (gemmlowp.multiply_by_quantized_multiplier_single_rounding if single_rounding
            else gemmlowp.multiply_by_quantized_multiplier)
    xa = mbqm(gemmlowp.wrap_int32((a - zpa) << ls), *mults[0])
    xb = mbqm(gemmlowp.wrap_int32((b - zpb) << ls), *mults[1])
    raw = mbqm(gemmlowp.wrap_int32(xa + xb), *mults[2]) + zpo
    return np.clip(raw, qmin, qmax)


# ---------------------------------------------------------------------------------------------
# activations


def relu(x, zero_point):
    """ReLU on codes: ``max(q, zp)``."""
    return np.maximum(_codes("relu", "x", x), int(zero_point))


def _quantize_val_torch(value, scale, zp, qmin, qmax):
    inv = f32(f32(1) / f32(scale))
    return int(torch_quantize_val(f32(value), inv, zp, qmin, qmax))


def hardtanh_torch(x, scale, zero_point, min_val, max_val, qmin=0, qmax=255):
    """Quantized ``hardtanh``/``clamp`` (torch ``qclamp``): bounds quantized with the input qparams
    (``quantize_val``: ``rne(f32(f32(v * f32(1/s)) + zp))``), then an integer clamp of codes."""
    op = "hardtanh_torch"
    x = _codes(op, "x", x)
    check_scale(op, "scale", scale, allow_array=False)
    zp = int(check_zero_point(op, "zero_point", zero_point, qmin, qmax))
    lo = _quantize_val_torch(min_val, scale, zp, qmin, qmax)
    hi = _quantize_val_torch(max_val, scale, zp, qmin, qmax)
    return np.minimum(np.maximum(x, lo), hi)


def relu6_torch(x, scale, zero_point, qmin=0, qmax=255):
    """Quantized ``relu6`` / ``ReLU6``: ``min(max(q, zp), quantize_val(6.0))``."""
    return hardtanh_torch(x, scale, zero_point, 0.0, 6.0, qmin, qmax)


def leaky_relu_fixed(x, zero_point, mult, shift, rounding="half_up", qmin=-128, qmax=127):
    """LeakyReLU with slope ``mult / 2^shift`` in integers (same scale in and out).

    ``v = q - zp``; negative ``v`` become ``round(v * mult / 2^shift)`` (``rounding``: a mode of
    :mod:`rounding`); ``q' = clamp(v' + zp)``. Slope 1/8 = (1, 3), DPU slope 26/256 = (26, 8).
    """
    op = "leaky_relu_fixed"
    x = _codes(op, "x", x)
    zp = int(check_zero_point(op, "zero_point", zero_point, qmin, qmax))
    m = int(check_int_range(op, "mult", mult, 0, 2**20))
    k = int(check_shift(op, "shift", shift, 0, 30))
    if rounding not in ROUNDING_MODES:
        raise RangeError(f"{op}: rounding must be one of {', '.join(ROUNDING_MODES)}")
    v = x - zp
    out = np.where(v < 0, shift_round(v * m, k, rounding), v)
    return np.clip(out + zp, qmin, qmax)


def leaky_relu_torch(x, s_in, zp_in, s_out, zp_out, negative_slope, path="vector", qmin=0,
                     qmax=255):
    """``torch.ops.quantized.leaky_relu`` (what torch.ao's quantized LeakyReLU runs).

    Vector path: ``d = fma(s_in, q, f32(-zp_in*s_in))``; ``d <= 0: d = f32(d * slope)``;
    ``q = clamp(zp_out + rne(f32(d * f32(1.0 / double(s_out)))))``. Scalar path (tail):
    ``d = f32(s_in * (q - zp_in))`` and ``quantize_val``: ``rne(f32(f32(d * f32(1/s_out)) + zp))``.
    """
    op = "leaky_relu_torch"
    x = _codes(op, "x", x)
    si = f32(check_scale(op, "s_in", s_in, allow_array=False))
    so = f32(check_scale(op, "s_out", s_out, allow_array=False))
    zpi = int(check_zero_point(op, "zp_in", zp_in, qmin, qmax))
    zpo = int(check_zero_point(op, "zp_out", zp_out, qmin, qmax))
    slope = f32(negative_slope)
    if path == "vector":
        d = np_fma32(si, x.astype(f32), f32(si * f32(-zpi)))
        inv = f32(1.0 / f64(so))
    elif path == "scalar":
        d = (si * (x - zpi).astype(f32)).astype(f32)
        inv = f32(f32(1) / so)
    else:
        raise RangeError(f"{op}: path must be 'vector' or 'scalar', not {path!r}")
    d = np.where(d > 0, d, (d * slope).astype(f32))
    if path == "vector":
        return torch_vec_quantize(d, inv, zpo, qmin, qmax)
    return torch_quantize_val(d, inv, zpo, qmin, qmax)


# ---------------------------------------------------------------------------------------------
# resampling and concat


def upsample_nearest(x, factor=2):
    """Nearest-neighbour upsampling by an integer factor (codes are copied)."""
    op = "upsample_nearest"
    x = _codes(op, "x", x, 4)
    f = int(check_shift(op, "factor", factor, 1, 1 << 10))
    return np.repeat(np.repeat(x, f, axis=2), f, axis=3)


def concat(xs, axis=1):
    """Concatenation of code arrays that share scale and zero point (a plain copy)."""
    xs = [_codes("concat", "input", x) for x in xs]
    try:
        return np.concatenate(xs, axis=axis)
    except ValueError as exc:
        raise ShapeError(f"concat: {exc}") from None


def _concat_args(op, xs, scales, zps, qmin, qmax):
    xs = [_codes(op, "input", x) for x in xs]
    if not (len(xs) == len(scales) == len(zps)) or not xs:
        raise ShapeError(f"{op}: need one scale and zero point per input ({len(xs)} inputs, "
                         f"{len(scales)} scales, {len(zps)} zero points)")
    sc = [f32(check_scale(op, f"scales[{i}]", s, allow_array=False)) for i, s in enumerate(scales)]
    zs = [int(check_zero_point(op, f"zps[{i}]", z, qmin, qmax)) for i, z in enumerate(zps)]
    return xs, sc, zs


def concat_torch(xs, scales, zps, s_out, zp_out, axis=1, path="generic", qmin=0, qmax=255):
    """``torch.cat`` / ``quantized::cat`` requantizing each input to ``(s_out, zp_out)``.

    ``generic``: dequantize ``f32(s_i * (q - zp_i))``, ``quantize_per_tensor``
    ``rne(fma(d, f32(1/s), zp))``. ``nhwc``: the channels_last fast path (dim=1, AVX):
    ``d = fma(s_i, q, f32(-zp_i*s_i))``, ``zp + rne(f32(d * f32(1/s)))``.
    """
    op = "concat_torch"
    xs, sc, zs = _concat_args(op, xs, scales, zps, qmin, qmax)
    so = f32(check_scale(op, "s_out", s_out, allow_array=False))
    zpo = int(check_zero_point(op, "zp_out", zp_out, qmin, qmax))
    inv = f32(f32(1) / so)
    outs = []
    for x, s, z in zip(xs, sc, zs, strict=True):
        if path == "generic":
            d = (s * (x - z).astype(f32)).astype(f32)
            outs.append(torch_quantize_vec(d, inv, zpo, qmin, qmax))
        elif path == "nhwc":
            d = np_fma32(s, x.astype(f32), f32(s * f32(-z)))
            outs.append(torch_vec_quantize(d, inv, zpo, qmin, qmax))
        else:
            raise RangeError(f"{op}: path must be 'generic' or 'nhwc', not {path!r}")
    return concat(outs, axis)


def concat_onnxruntime(xs, scales, zps, s_out, zp_out, axis=1, qmin=0, qmax=255):
    """ONNX Runtime ``QLinearConcat`` (com.microsoft): per input a lookup table built as
    ``clamp(rne(f32(f32(f32(q - zp_i) * s_i) / s_out)) + zp_out)``; equal qparams copy."""
    op = "concat_onnxruntime"
    xs, sc, zs = _concat_args(op, xs, scales, zps, qmin, qmax)
    so = f32(check_scale(op, "s_out", s_out, allow_array=False))
    zpo = int(check_zero_point(op, "zp_out", zp_out, qmin, qmax))
    outs = []
    for x, s, z in zip(xs, sc, zs, strict=True):
        if s == so and z == zpo:
            outs.append(x)
            continue
        d = ((x - z).astype(f32) * s).astype(f32)
        y = np.clip((d / so).astype(f32), f32(qmin - zpo), f32(qmax - zpo))
        outs.append(x86_cvt(np.rint(y).astype(np.int64)) + zpo)
    return concat(outs, axis)


def concat_tflite(xs, scales, zps, s_out, zp_out, axis=1, qmin=-128, qmax=127):
    """TFLite ``CONCATENATION`` with rescaling (reference ``ConcatenationWithScaling``)::

        scale = f32(s_i * f32(1/s_out));  bias = f32(-zp_i * scale)
        q = clamp(round(f32(f32(q_i * scale) + bias)) + zp_out)      # round: ties away

    Inputs whose qparams equal the output's are copied. (Formula from the reference kernel;
    TFLite itself is not available to test against.)
    """
    op = "concat_tflite"
    xs, sc, zs = _concat_args(op, xs, scales, zps, qmin, qmax)
    so = f32(check_scale(op, "s_out", s_out, allow_array=False))
    zpo = int(check_zero_point(op, "zp_out", zp_out, qmin, qmax))
    inv = f32(f32(1) / so)
    outs = []
    for x, s, z in zip(xs, sc, zs, strict=True):
        if s == so and z == zpo:
            outs.append(x)
            continue
        scale = f32(s * inv)
        bias = f32(f32(-z) * scale)
        y = ((x.astype(f32) * scale).astype(f32) + bias).astype(f32).astype(f64)
        r = np.sign(y) * np.floor(np.abs(y) + 0.5)
        outs.append(np.clip(r.astype(np.int64) + zpo, qmin, qmax))
    return concat(outs, axis)
