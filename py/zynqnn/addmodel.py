"""Word-level model of the engine's element-wise add: output codes from the add's parameter bits.

The hardware (:class:`zynqnn.rtl.eltwise.EltwiseAdd`, run by ``ELTWISE`` commands) sees only the
:func:`~zynqnn.hw.add.add_params_layout` bits of its PBUF row and the command's ``zp_out``,
``clamp_min`` and ``clamp_max``. This module computes the same codes from the same bits with
``zynqnn.numerics``' integer primitives (``f32int`` for the float32 semantics, ``gemmlowp`` for
TFLite), so that the command-level model (:mod:`zynqnn.machine`) executes a compiled program
without the graph's scales: a constant packed wrongly by the compiler shows up here.

A fused ReLU is the clamp ``clamp_min = max(qmin, zp_out)`` (the same codes as each framework's
ReLU), so the formulas below never apply one themselves.
"""

from __future__ import annotations

import numpy as np

from zynqnn.hw.config import HwConfig
from zynqnn.numerics import f32int as F
from zynqnn.numerics import gemmlowp
from zynqnn.numerics.schemes import x86_cvt

__all__ = ["apply_add", "decode_add"]


def decode_add(cfg: HwConfig, params: int):
    """The parameter bits as a Const view of ``add_params_layout(cfg)``."""
    from zynqnn.hw.add import add_params_layout

    lay = add_params_layout(cfg)
    return lay.from_bits(int(params) & ((1 << lay.size) - 1))


def _pair(sig, exp):
    """A float32 ``sig * 2^exp`` as an f32int pair (zero: ``sig == 0``)."""
    sig = np.int64(int(sig))
    return sig, np.int64(F.ZERO_EXP if sig == 0 else int(exp))


def apply_add(cfg: HwConfig, params: int, zp_out: int, clamp_min: int, clamp_max: int, a, b
              ) -> np.ndarray:
    """Output codes of ``a + b`` (integer code arrays of one shape) for the add parameter bits
    ``params`` (:func:`zynqnn.hw.add.add_layer`'s ``AddLayer.params``)."""
    from zynqnn.hw.add import AddSemantics

    p = decode_add(cfg, params)
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    zp_a, zp_b = int(p.zp_a), int(p.zp_b)
    zp, lo, hi = int(zp_out), int(clamp_min), int(clamp_max)
    sem = AddSemantics(int(p.semantics))
    if sem == AddSemantics.TORCH:
        k = p.c.torch
        ea, eb = int(k.ea), int(k.eb)
        sa, sb = _pair(k.sa_sig, ea), _pair(k.sb_sig, eb)
        inv = _pair(k.inv_sig, k.e_inv)
        if int(p.scalar):
            da = F.mul(sa, F.from_int(a - zp_a))
            db = F.mul(sb, F.from_int(b - zp_b))
        else:
            ca = _pair(k.ca_sig, ea + int(k.ca_shift))
            cb = _pair(k.cb_sig, eb + int(k.cb_shift))
            da = F.fma(sa, F.from_int(a), ca)
            db = F.fma(sb, F.from_int(b), cb)
        y = F.mul(F.add(da, db), inv)
        if int(p.scalar):
            r = F.rne_int(F.add(y, F.from_int(np.full(a.shape, zp))))
            return np.clip(r, lo, hi)
        return np.clip(x86_cvt(F.rne_int(y)) + zp, lo, hi)
    if sem == AddSemantics.QNNPACK:
        k = p.c.qnnpack
        shift = int(k.shift)
        acc = gemmlowp.wrap_int32(int(k.zpp) + a * int(k.ma) + b * int(k.mb))
        mask = (1 << shift) - 1
        rem = (acc & mask) - (acc < 0)
        return np.clip((acc >> shift) + (rem > (mask >> 1)) + zp, lo, hi)
    if sem == AddSemantics.ONNXRUNTIME:
        k = p.c.onnxruntime
        f_sig = -int(k.fixed_sig) if int(k.fixed_neg) else int(k.fixed_sig)
        inner = F.fma(F.from_int(b), _pair(k.rb_sig, k.rb_exp), _pair(f_sig, k.fixed_exp))
        r = x86_cvt(F.rne_int(F.fma(F.from_int(a), _pair(k.ra_sig, k.ra_exp), inner)))
        return np.clip(r, lo, hi)
    k = p.c.tflite
    ls = int(k.left_shift)
    mbqm = (gemmlowp.multiply_by_quantized_multiplier_single_rounding if int(k.single)
            else gemmlowp.multiply_by_quantized_multiplier)
    xa = mbqm(gemmlowp.wrap_int32((a - zp_a) << ls), int(k.ma), int(k.sha))
    xb = mbqm(gemmlowp.wrap_int32((b - zp_b) << ls), int(k.mb), int(k.shb))
    raw = mbqm(gemmlowp.wrap_int32(xa + xb), int(k.mo), int(k.sho)) + zp
    return np.clip(raw, lo, hi)
