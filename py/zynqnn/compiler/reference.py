"""The network computed with the golden ops of :mod:`zynqnn.numerics` (the compiler's oracle)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from zynqnn.hw.post import LeakyFixed, LeakyTorch
from zynqnn.numerics import gemmlowp, ops

from .layers import (
    HwAdd,
    HwConcat,
    HwConv,
    HwConvTranspose,
    HwGlobalSumPool,
    HwLut,
    HwMaxPool,
    HwUpsample2x,
    HwView,
    Network,
    code_range,
    norm_padding,
)

__all__ = ["run_reference", "post_codes", "add_codes"]


def _post(la, acc, lo, hi):
    """Requantization (+ activation) of accumulators (C, H, W), as the framework computes it."""
    rq, act = la.requant, la.act
    if rq is None:
        col = (slice(None), None, None)
        return gemmlowp.requantize(acc, la.bias[col], la.multiplier[col], la.shift[col],
                                   la.output.zero_point, lo, hi,
                                   single_rounding=la.single_rounding)
    return post_codes(rq, act, acc, axis=0)


def post_codes(rq, act, acc, axis=1):
    """``rq.apply`` then the activation (None, LeakyFixed or LeakyTorch)."""
    q = rq.apply(acc, axis=axis)
    if isinstance(act, LeakyFixed):
        q = ops.leaky_relu_fixed(q, rq.zp_out, act.mult, act.shift, act.rounding, rq.lo, rq.hi)
    elif isinstance(act, LeakyTorch):
        q = ops.leaky_relu_torch(q, act.s_in, act.zp_in, act.s_out, act.zp_out,
                                 act.negative_slope, act.path, act.qmin, act.qmax)
    return q


def add_codes(la: HwAdd, a, b, bits: int = 8) -> np.ndarray:
    """Codes of an :class:`HwAdd` for input codes ``a``, ``b``: ``zynqnn.numerics.ops.add_*``.
    A ReLU where the framework's add has none (ONNX Runtime, TFLite) is its fused clamp at the
    output zero point."""
    lo, hi = la.out_range(bits)
    zp_out = la.output.zero_point
    args = (a, la.s_a, la.a.zero_point, b, la.s_b, la.b.zero_point, la.s_out, zp_out)
    if la.semantics == "torch":
        s = la.scalar_from
        if s is not None and np.ndim(a) == 3:   # (C, H, W): the scalar tail from channel s
            head = add_codes(replace(la, scalar_from=None), a[:s], b[:s], bits)
            tail = add_codes(replace(la, scalar_from=None, path="scalar"), a[s:], b[s:], bits)
            return np.concatenate([head, tail])
        if la.scalar_mask is not None and np.ndim(a) == 3:   # the tail's elements by mask
            vec = add_codes(replace(la, scalar_mask=None), a, b, bits)
            sca = add_codes(replace(la, scalar_mask=None, path="scalar"), a, b, bits)
            return np.where(la.scalar_mask, sca, vec)
        return ops.add_torch(*args, relu=la.relu, path=la.path, qmin=lo, qmax=hi)
    if la.semantics == "qnnpack":
        return ops.add_qnnpack(*args, relu=la.relu, qmin=lo, qmax=hi)
    if la.semantics == "onnxruntime":
        y = ops.add_onnxruntime(*args, qmin=lo, qmax=hi)
    else:
        ls = (15 if bits == 16 else 20) if la.left_shift is None else la.left_shift
        y = ops.add_tflite(*args, qmin=lo, qmax=hi, left_shift=ls,
                           single_rounding=la.single_rounding)
    return np.maximum(y, zp_out) if la.relu else y


def run_reference(net: Network, x: np.ndarray, bits: int = 8, all_outputs: bool = False):
    """Codes of ``net.output`` for input codes ``x`` (C, H, W); with ``all_outputs`` a list of
    the codes of every output (``net.outputs``, in order)."""
    vals = {id(net.input): np.asarray(x, dtype=np.int64)}
    for la in net.layers:
        if isinstance(la, HwConcat):
            # padding channels between the inputs (offsets): the zero point here; on the
            # hardware whatever the producers wrote (no layer reads them as data)
            y = la.output
            out = np.full(y.shape, y.zero_point, np.int64)
            for t, c0 in zip(la.inputs, la.starts(), strict=True):
                out[c0:c0 + t.channels] = vals[id(t)]
            vals[id(y)] = out
            continue
        if isinstance(la, HwView):
            vals[id(la.output)] = la.codes(vals[id(la.input)])
            continue
        if isinstance(la, HwAdd):
            vals[id(la.output)] = add_codes(la, vals[id(la.a)], vals[id(la.b)], bits)
            continue
        if isinstance(la, HwLut):
            vals[id(la.output)] = la.codes(vals[id(la.input)])
            continue
        a, y = vals[id(la.input)], la.output
        lo, hi = getattr(la, "clamp", None) or code_range(y.signed, bits)
        if isinstance(la, HwConvTranspose):
            from zynqnn.ir.kernels import conv_transpose2d_acc

            acc = conv_transpose2d_acc(a[None], la.weights.transpose(1, 0, 2, 3),
                                       la.input.zero_point, 0, (la.stride, la.stride),
                                       norm_padding(la.padding))[0]
            out = _post(la, acc, lo, hi)
        elif isinstance(la, HwConv):
            acc = ops.conv2d_acc(a[None], la.weights, zp_x=la.input.zero_point, zp_w=0,
                                 stride=la.stride, padding=norm_padding(la.padding),
                                 groups=la.groups, saturate_pairs=la.saturate_pairs)[0]
            out = _post(la, acc, lo, hi)
        elif isinstance(la, HwMaxPool):
            pad = norm_padding(la.padding)
            m = ops.max_pool2d(a[None], la.kernel, la.stride, padding=pad,
                               pad_value=None if la.pad_min else la.input.zero_point)[0]
            out = np.clip(m - la.input.zero_point + y.zero_point, lo, hi)
        elif isinstance(la, HwUpsample2x):
            u = ops.upsample_nearest(a[None], 2)[0]
            out = np.clip(u - la.input.zero_point + y.zero_point, lo, hi)
        elif isinstance(la, HwGlobalSumPool):
            acc = (a - la.input.zero_point).sum(axis=(1, 2))[:, None, None]
            out = _post(la, acc, lo, hi)
        else:
            raise TypeError(type(la).__name__)
        vals[id(y)] = out
    if all_outputs:
        return [vals[id(t)] for t in net.outputs]
    return vals[id(net.output)]
