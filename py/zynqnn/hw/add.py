"""Element-wise add words: the per-layer constants of ``zynqnn.rtl.eltwise.EltwiseAdd``.

:func:`add_layer` computes them, in each framework's float32 operation order, from the same
arguments as ``zynqnn.numerics.ops.add_<semantics>``; ``zynqnn.addmodel`` decodes them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from amaranth import signed, unsigned
from amaranth.lib import data, enum

from zynqnn.hw.config import HwConfig
from zynqnn.hw.post import decompose
from zynqnn.numerics import gemmlowp
from zynqnn.numerics.f32int import np_fma32

__all__ = ["AddSemantics", "add_params_layout", "AddLayer", "add_layer"]


class AddSemantics(enum.IntEnum, shape=2):
    TORCH = 0          # ops.add_torch (fbgemm / x86 engine)
    QNNPACK = 1        # ops.add_qnnpack
    ONNXRUNTIME = 2    # ops.add_onnxruntime (QLinearAdd)
    TFLITE = 3         # ops.add_tflite


_torch = data.StructLayout({
    "sa_sig": unsigned(24),     # s_a = sa_sig * 2^ea
    "ea": signed(9),
    "ca_sig": signed(25),       # f32(-zp_a * s_a) = ca_sig * 2^(ea + ca_shift) (vector path)
    "ca_shift": unsigned(5),
    "sb_sig": unsigned(24),
    "eb": signed(9),
    "cb_sig": signed(25),
    "cb_shift": unsigned(5),
    "inv_sig": unsigned(24),    # f32(1 / s_out) = inv_sig * 2^e_inv
    "e_inv": signed(9),
})

_qnnpack = data.StructLayout({
    "ma": unsigned(24),         # lrintf(f32(s_a / s_out) * 2^shift), <= 22 bits
    "mb": unsigned(24),
    "zpp": signed(32),          # -(ma * zp_a + mb * zp_b), wrapped to int32
    "shift": unsigned(5),       # 13..31
})

_onnxruntime = data.StructLayout({
    "ra_sig": unsigned(24),     # f32(s_a / s_out) = ra_sig * 2^ra_exp
    "ra_exp": signed(9),
    "rb_sig": unsigned(24),
    "rb_exp": signed(9),
    "fixed_sig": unsigned(24),  # f32(zp_out - fma(r_a, zp_a, f32(r_b * zp_b)))
    "fixed_neg": unsigned(1),
    "fixed_exp": signed(9),
})

_tflite = data.StructLayout({
    "left_shift": unsigned(5),  # 20 (15 for int16)
    "ma": unsigned(31),         # QuantizeMultiplier of s_a / (2 max(s_a, s_b)), shift <= 0
    "sha": signed(6),
    "mb": unsigned(31),
    "shb": signed(6),
    "mo": unsigned(31),         # of 2 max(s_a, s_b) / (2^left_shift s_out)
    "sho": signed(6),
    "single": unsigned(1),      # TFLITE_SINGLE_ROUNDING
})


def add_params_layout(cfg: HwConfig) -> data.StructLayout:
    """Per-layer constants of :class:`EltwiseAdd` (``c`` is a union by ``semantics``)."""
    q = signed(cfg.signed_operand_bits)
    return data.StructLayout({
        "semantics": AddSemantics,
        "scalar": unsigned(1),       # TORCH: the scalar-tail formulas
        "zp_a": q,
        "zp_b": q,
        "c": data.UnionLayout({"torch": _torch, "qnnpack": _qnnpack,
                               "onnxruntime": _onnxruntime, "tflite": _tflite}),
    })


# ------------------------------------------------------------------------------------------------
# host side

_f32 = np.float32
_f64 = np.float64


@dataclass(frozen=True)
class AddLayer:
    """Per-layer inputs of :class:`EltwiseAdd`: ``params`` (bits of :func:`add_params_layout`),
    ``zp_out``, ``clamp_min``, ``clamp_max``."""

    params: int
    zp_out: int
    clamp_min: int
    clamp_max: int


def _fma_const(s, zp, path):
    """(sig, exp, c_sig, c_shift) of a PyTorch dequantization ``fma(s, q, f32(-zp*s))``."""
    sig, e = decompose(s)
    if path == "scalar":
        return sig, e, 0, 0
    c_sig, c_e = decompose(_f32(s * _f32(-int(zp))))
    shift = 0 if c_sig == 0 else c_e - e
    if not 0 <= shift <= 31:
        raise ValueError(f"add constants: f32(-zp*s) for s={s!r}, zp={zp} does not align")
    return sig, e, c_sig, shift


def add_layer(semantics: str, cfg: HwConfig, s_a, zp_a, s_b, zp_b, s_out, zp_out,
              relu: bool = False, qmin: int | None = None, qmax: int | None = None,
              path: str = "vector", left_shift: int | None = None,
              single_rounding: bool = False) -> AddLayer:
    """Constants of one add layer; arguments as ``zynqnn.numerics.ops.add_<semantics>``.

    ``semantics``: ``"torch"``, ``"qnnpack"``, ``"onnxruntime"`` or ``"tflite"``. The float32
    constants are computed in numerics' (the framework's) operation order; invalid scale
    combinations raise ``ValueError`` as numerics does.
    """
    qb = cfg.signed_operand_bits
    default = (-128, 127) if semantics == "tflite" else (0, 255)
    if cfg.operand_bits == 16 and semantics == "tflite":
        default = (-(2**15), 2**15 - 1)
    qmin = default[0] if qmin is None else int(qmin)
    qmax = default[1] if qmax is None else int(qmax)
    sa, sb, so = _f32(s_a), _f32(s_b), _f32(s_out)
    fields = {"zp_a": int(zp_a), "zp_b": int(zp_b)}
    if semantics == "torch":
        if path not in ("vector", "scalar"):
            raise ValueError(f"path must be 'vector' or 'scalar', not {path!r}")
        a_sig, ea, ca, cas = _fma_const(sa, zp_a, path)
        b_sig, eb, cb, cbs = _fma_const(sb, zp_b, path)
        inv_sig, e_inv = decompose(_f32(_f32(1) / so))
        fields.update(semantics=AddSemantics.TORCH, scalar=int(path == "scalar"),
                      c={"torch": {"sa_sig": a_sig, "ea": ea, "ca_sig": ca, "ca_shift": cas,
                                   "sb_sig": b_sig, "eb": eb, "cb_sig": cb, "cb_shift": cbs,
                                   "inv_sig": inv_sig, "e_inv": e_inv}})
    elif semantics == "qnnpack":
        ra, rb = _f32(sa / so), _f32(sb / so)
        for name, r in (("s_a/s_out", ra), ("s_b/s_out", rb)):
            if not 2.0**-14 <= r < 2.0**8:
                raise ValueError(f"add constants: {name} = {float(r)!r} is outside qnnpack's "
                                 "[2^-14, 2^8)")
        mx = max(ra, rb)
        shift = 21 - (int((np.array(mx, dtype=_f32).view(np.uint32) >> 23) & 0xFF) - 127)
        ma = int(np.rint(_f32(ra * _f32(2.0**shift))))
        mb = int(np.rint(_f32(rb * _f32(2.0**shift))))
        zpp = int(gemmlowp.wrap_int32(-(ma * int(zp_a) + mb * int(zp_b))))
        fields.update(semantics=AddSemantics.QNNPACK,
                      c={"qnnpack": {"ma": ma, "mb": mb, "zpp": zpp, "shift": shift}})
    elif semantics == "onnxruntime":
        ra, rb = _f32(sa / so), _f32(sb / so)
        fixed = _f32(_f32(int(zp_out)) - np_fma32(ra, _f32(int(zp_a)), _f32(rb * _f32(zp_b))))
        ra_sig, ra_exp = decompose(ra)
        rb_sig, rb_exp = decompose(rb)
        f_sig, f_exp = decompose(fixed)
        fields.update(semantics=AddSemantics.ONNXRUNTIME,
                      c={"onnxruntime": {"ra_sig": ra_sig, "ra_exp": ra_exp, "rb_sig": rb_sig,
                                         "rb_exp": rb_exp, "fixed_sig": abs(f_sig),
                                         "fixed_neg": int(f_sig < 0), "fixed_exp": f_exp}})
    elif semantics == "tflite":
        ls = (15 if cfg.operand_bits == 16 else 20) if left_shift is None else int(left_shift)
        if ls not in (15, 20):
            raise ValueError(f"add constants: left_shift must be 20 or 15 (TFLite's), not {ls}")
        twice_max = _f64(_f32(2) * max(sa, sb))
        mults = []
        for real in (_f64(sa) / twice_max, _f64(sb) / twice_max,
                     twice_max / _f64(_f32(_f32(2.0**ls) * so))):
            if not 0 < real < 1:
                raise ValueError(f"add constants: rescale multiplier {real!r} must be in (0, 1)")
            mults.append(gemmlowp.quantize_multiplier(real))
        (ma, sha), (mb, shb), (mo, sho) = mults
        fields.update(semantics=AddSemantics.TFLITE,
                      c={"tflite": {"left_shift": ls, "ma": ma, "sha": sha, "mb": mb, "shb": shb,
                                    "mo": mo, "sho": sho, "single": int(single_rounding)}})
    else:
        raise ValueError(f"semantics must be one of torch, qnnpack, onnxruntime, tflite, "
                         f"not {semantics!r}")
    lo = max(qmin, int(zp_out)) if relu else qmin
    for name, v in (("zp_out", zp_out), ("clamp_min", lo), ("clamp_max", qmax)):
        if not -(1 << (qb - 1)) <= int(v) < (1 << (qb - 1)):
            raise ValueError(f"add constants: {name} {v} does not fit {qb} bits")
    return AddLayer(add_params_layout(cfg).const(fields).as_bits(), int(zp_out), lo, qmax)
