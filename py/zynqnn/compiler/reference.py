"""The network computed with the golden ops of :mod:`zynqnn.numerics` (the compiler's oracle)."""

from __future__ import annotations

import numpy as np

from zynqnn.numerics import gemmlowp, ops
from zynqnn.rtl.postproc import LeakyFixed, LeakyTorch

from .layers import (
    HwConcat,
    HwConv,
    HwGlobalSumPool,
    HwMaxPool,
    HwUpsample2x,
    Network,
    code_range,
    norm_padding,
)

__all__ = ["run_reference", "post_codes"]


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


def run_reference(net: Network, x: np.ndarray, bits: int = 8) -> np.ndarray:
    """Codes of ``net.output`` for input codes ``x`` (C, H, W)."""
    vals = {id(net.input): np.asarray(x, dtype=np.int64)}
    for la in net.layers:
        if isinstance(la, HwConcat):
            vals[id(la.output)] = np.concatenate([vals[id(t)] for t in la.inputs])
            continue
        a, y = vals[id(la.input)], la.output
        lo, hi = getattr(la, "clamp", None) or code_range(y.signed, bits)
        if isinstance(la, HwConv):
            acc = ops.conv2d_acc(a[None], la.weights, zp_x=la.input.zero_point, zp_w=0,
                                 stride=la.stride, padding=norm_padding(la.padding))[0]
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
    return vals[id(net.output)]
