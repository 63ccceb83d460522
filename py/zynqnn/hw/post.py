"""Post-processing words: the per-channel PBUF word and the per-layer activation word.

Contract between the host (compiler, machine model) and ``zynqnn.rtl.postproc.PostProc``: per
output channel one :data:`pbuf_word_layout` word (:data:`~zynqnn.hw.config.PBUF_WORD_BITS` bits,
a union over the schemes), per layer the scheme, the output zero point and clamp (ReLU and ReLU6
are clamps) and the activation parameters (:func:`act_params_layout`). The host builds both with
:func:`postproc_layer` from a ``zynqnn.numerics`` ``Requant`` and an optional
:class:`LeakyFixed` / :class:`LeakyTorch`; ``zynqnn.postmodel`` decodes the same words.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from amaranth import signed, unsigned
from amaranth.lib import data, enum

from zynqnn.hw import isa
from zynqnn.hw.config import PBUF_WORD_BITS, HwConfig
from zynqnn.numerics import f32int as F

__all__ = [
    "Rounding",
    "ActMode",
    "pbuf_word_layout",
    "act_params_layout",
    "LeakyFixed",
    "LeakyTorch",
    "PostProcLayer",
    "postproc_layer",
    "copy_layer",
    "requant_words",
    "decompose",
]

class Rounding(enum.IntEnum, shape=3):
    """Rounding of a right shift (``zynqnn.numerics.rounding.ROUNDING_MODES``, same order)."""

    FLOOR = 0
    CEIL = 1
    TOWARD_ZERO = 2
    HALF_UP = 3
    HALF_DOWN = 4
    HALF_EVEN = 5
    HALF_AWAY = 6
    HALF_ZERO = 7

    @classmethod
    def from_name(cls, name: str) -> Rounding:
        try:
            return cls[name.upper()]
        except KeyError:
            raise ValueError(f"rounding must be one of {', '.join(m.name.lower() for m in cls)},"
                             f" not {name!r}") from None


class ActMode(enum.IntEnum, shape=2):
    """Activation after the requantization (ReLU and ReLU6 are clamps, not modes)."""

    NONE = 0
    LEAKY_FIXED = 1      # ops.leaky_relu_fixed: slope mult / 2^shift on codes, same qparams
    LEAKY_TORCH = 2      # ops.leaky_relu_torch: quantized leaky_relu with its own qparams


# ------------------------------------------------------------------------------------------------
# layouts

#: ``tflite``: gemmlowp's per-channel constants.
_tflite = data.StructLayout({
    "bias": signed(32),
    "multiplier": signed(32),  # Q31, 0..2^31-1 from QuantizeMultiplier
    "shift": signed(6),        # -31..30; > 0 is a left shift
})

#: ``qnnpack`` / ``onnxruntime``: float32 multiplier and int32 bias.
_float_int_bias = data.StructLayout({
    "m_sig": unsigned(24),     # significand of M_c, 2^23 <= m_sig < 2^24
    "m_exp": signed(9),        # M_c = m_sig * 2^m_exp
    "bias": signed(32),
})

#: ``torch-fbgemm``: float32 multiplier and float bias (f32 b_c, or the exact 48-bit product
#: bias * rcp of the per-tensor FMA form), normalized to 48 bits.
_float_fbgemm = data.StructLayout({
    "m_sig": unsigned(24),
    "m_exp": signed(9),
    "b_mag": unsigned(48),     # 0 (no bias) or 2^47 <= b_mag < 2^48
    "b_neg": unsigned(1),
    "b_exp": signed(10),       # b = (-1)^b_neg * b_mag * 2^b_exp
})

#: ``pow2`` / ``fixed16``: aligned bias, then ``shift_round(v * mult, shift, rounding)`` with
#: the ``_neg`` pair for negative ``v`` (the leaky slope; the ``_pos`` pair otherwise). A left
#: shift (output finer than the product) is folded into the multiplier: ``mult = m << -shift``.
_fixed_point = data.StructLayout({
    "bias": signed(32),
    "bias_shift": unsigned(5),     # bias << bias_shift is added to the accumulator
    "rounding": Rounding,
    "wrap": unsigned(1),           # overflow wraps to wrap_bits instead of saturating
    "wrap_bits": unsigned(6),
    "mult_pos": unsigned(32),      # at most 2^31
    "shift_pos": unsigned(7),
    "mult_neg": unsigned(32),
    "shift_neg": unsigned(7),
})

#: The constant word of one output channel: which member applies is the layer's scheme.
pbuf_word_layout = data.UnionLayout({
    "tflite": _tflite,
    "float": _float_int_bias,
    "fbgemm": _float_fbgemm,
    "fixed": _fixed_point,
    "bits": unsigned(PBUF_WORD_BITS),
})
assert pbuf_word_layout.size == PBUF_WORD_BITS


def act_params_layout(cfg: HwConfig) -> data.StructLayout:
    """Per-layer activation parameters (an input of :class:`PostProc`).

    With ``mode != NONE`` the requantization writes an intermediate code with ``zp_mid`` and the
    clamp ``lo_mid..hi_mid``; the activation then produces the output with the layer's
    ``zp_out`` / ``clamp_min`` / ``clamp_max``.
    """
    q = signed(cfg.signed_operand_bits)
    return data.StructLayout({
        "mode": ActMode,
        "zp_mid": q,
        "lo_mid": q,
        "hi_mid": q,
        # LEAKY_FIXED: negative v = q - zp_out become shift_round(v * mult, shift, rounding)
        "mult": unsigned(21),
        "shift": unsigned(5),
        "rounding": Rounding,
        # LEAKY_TORCH: d = fma(s_in, q, c) (vector) or f32(s_in * (q - zp_mid)) (scalar);
        # d <= 0: d = f32(d * slope); q = zp_out + rne(f32(d * inv)) (vector) or
        # rne(f32(f32(d * inv) + zp_out)) (scalar)
        "scalar": unsigned(1),
        "s_sig": unsigned(24),      # s_in = s_sig * 2^e_s
        "c_sig": signed(25),        # c = c_sig * 2^(e_s + c_shift) (0 on the scalar path)
        "c_shift": unsigned(5),
        "slope_sig": signed(25),    # slope = slope_sig * 2^slope_exp (0: slope 0)
        "slope_exp": signed(9),
        "inv_sig": unsigned(24),    # inv = inv_sig * 2^e_inv
        "exp": signed(10),          # e_s + e_inv
    })


# ------------------------------------------------------------------------------------------------
# host side: constants from zynqnn.numerics objects


@dataclass(frozen=True)
class LeakyFixed:
    """``ops.leaky_relu_fixed`` after the requantization: slope ``mult / 2^shift`` on the codes
    (same zero point in and out), e.g. ``LeakyFixed(1, 3)`` (1/8) or ``LeakyFixed(26, 8)``."""

    mult: int
    shift: int
    rounding: str = "half_up"


@dataclass(frozen=True)
class LeakyTorch:
    """``ops.leaky_relu_torch`` after the requantization (torch.ao FX: a quantized LeakyReLU
    with its own output scale and zero point). ``s_in``/``zp_in`` are the requantized tensor's
    qparams (``zp_in`` must equal the Requant's ``zp_out``); ``path`` is ``"vector"`` or
    ``"scalar"`` (the kernel's tail, see ``ops.leaky_relu_torch``)."""

    s_in: float
    zp_in: int
    s_out: float
    zp_out: int
    negative_slope: float
    path: str = "vector"
    qmin: int = 0
    qmax: int = 255


@dataclass(frozen=True)
class PostProcLayer:
    """Everything :class:`PostProc` is loaded with for one layer.

    ``words``: one :data:`pbuf_word_layout` word per output channel (ints of
    :data:`PBUF_WORD_BITS` bits); ``scheme``, ``zp_out``, ``clamp_min``, ``clamp_max``: the
    per-layer inputs (``isa.ConvOp`` fields); ``act``: the bits of :func:`act_params_layout`.
    """

    scheme: isa.Scheme
    zp_out: int
    clamp_min: int
    clamp_max: int
    act: int
    words: tuple[int, ...]


_SCHEME = {
    "tflite": isa.Scheme.TFLITE,
    "tflite-single-rounding": isa.Scheme.TFLITE_SINGLE_ROUNDING,
    "torch-fbgemm": isa.Scheme.TORCH_FBGEMM,
    "torch-qnnpack": isa.Scheme.TORCH_QNNPACK,
    "onnxruntime": isa.Scheme.ONNXRUNTIME,
    "pow2": isa.Scheme.POW2,
    "fixed16": isa.Scheme.FIXED16,
}

_f32 = np.float32


def _check(cond, what):
    if not cond:
        raise ValueError(f"postproc constants: {what}")


def decompose(x) -> tuple[int, int]:
    """(significand, exponent) of a float32: 24-bit signed significand, or (0, 0) for zero."""
    m, e = F.decompose(np.asarray(x, dtype=_f32))
    m, e = int(m), int(e)
    return (0, 0) if m == 0 else (m, e)


def _fits(v, bits, is_signed=True):
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if is_signed else (0, (1 << bits) - 1)
    return lo <= int(v) <= hi


def _word_tflite(rq, c):
    q, sh = int(rq.multiplier[c]), int(rq.shift[c])
    bias = 0 if rq.bias_q is None else int(rq.bias_q[c])
    return {"tflite": {"bias": bias, "multiplier": q, "shift": sh}}


def _word_float(rq, c):
    m_sig, m_exp = int(rq.M_sig[c]), int(rq.M_exp[c])
    _check(2**23 <= m_sig < 2**24 and _fits(m_exp, 9), f"multiplier {rq.M[c]!r} out of range")
    if rq.scheme != "torch-fbgemm":
        bias = 0 if rq.bias_q is None else int(rq.bias_q[c])
        return {"float": {"m_sig": m_sig, "m_exp": m_exp, "bias": bias}}
    b_mag = b_exp = b_neg = 0
    if rq.bias_sig is not None and int(rq.bias_sig[c]) != 0:
        b, b_exp = int(rq.bias_sig[c]), int(rq.bias_exp[c])
        b_neg, b_mag = int(b < 0), abs(b)
        shift = 48 - b_mag.bit_length()   # normalize: 24-bit f32 or 47/48-bit exact product
        b_mag, b_exp = b_mag << shift, b_exp - shift
        _check(_fits(b_exp, 10), f"bias exponent {b_exp} out of range")
    return {"fbgemm": {"m_sig": m_sig, "m_exp": m_exp, "b_mag": b_mag, "b_neg": b_neg,
                       "b_exp": b_exp}}


def _word_fixed(rq, c, cfg):
    bias = 0 if rq.bias_q is None else int(rq.bias_q[c])
    bshift = 0 if rq.bias_q is None else int(rq.bias_shift[c])
    _check(abs(bias << bshift) < 2 ** (cfg.acc_bits - 1),
           f"aligned bias {bias} << {bshift} exceeds the {cfg.acc_bits}-bit accumulator")
    wrap = getattr(rq, "overflow", "saturate") == "wrap"
    bits = getattr(rq, "bits", 0)
    _check(not wrap or bits <= cfg.signed_operand_bits,
           f"wrap to {bits} bits needs signed_operand_bits >= {bits}")
    sh = int(rq.shift[c])

    def mult_shift(m, total):
        if total >= 0:
            return m, total
        _check(m << -total <= 2**31, f"left shift {-total} with multiplier {m} exceeds 2^31 "
                                     "(output fraction bits far beyond the product's)")
        return m << -total, 0

    mp, sp = mult_shift(1, sh)
    mn, sn = mp, sp
    if rq.leaky_mult is not None:
        mn, sn = mult_shift(int(rq.leaky_mult), sh + int(rq.leaky_shift))
    return {"fixed": {
        "bias": bias, "bias_shift": bshift, "rounding": Rounding.from_name(rq.rounding),
        "wrap": int(wrap), "wrap_bits": bits if wrap else 0,
        "mult_pos": mp, "shift_pos": sp, "mult_neg": mn, "shift_neg": sn,
    }}


def requant_words(rq, cfg: HwConfig, channels: int | None = None) -> tuple[int, ...]:
    """The :data:`pbuf_word_layout` words of a ``zynqnn.numerics`` Requant, one per channel.

    Per-tensor constants are repeated ``channels`` times (default: ``rq.channels``).
    """
    n = rq.channels if channels is None else channels
    _check(rq.channels in (1, n), f"{rq.channels} channels of constants, {n} requested")
    words = []
    for ch in range(n):
        c = ch if rq.channels > 1 else 0
        if rq.scheme.startswith("tflite"):
            w = _word_tflite(rq, c)
        elif rq.scheme in ("torch-fbgemm", "torch-qnnpack", "onnxruntime"):
            w = _word_float(rq, c)
        elif rq.scheme in ("pow2", "fixed16"):
            w = _word_fixed(rq, c, cfg)
        else:
            raise ValueError(f"postproc constants: unknown scheme {rq.scheme!r}")
        words.append(pbuf_word_layout.const(w).as_bits())
    return tuple(words)


def _range(rq):
    """Clamp the hardware applies for a Requant (fixed16 wrap: the wrapped range, as numerics)."""
    if getattr(rq, "overflow", "saturate") == "wrap":
        half = 1 << (rq.bits - 1)
        return (rq.lo if rq.relu else -half), half - 1
    return rq.lo, rq.hi


def _act_torch(leaky: LeakyTorch, qbits: int) -> dict:
    _check(leaky.path in ("vector", "scalar"),
           f"path must be 'vector' or 'scalar', not {leaky.path!r}")
    si, so = _f32(leaky.s_in), _f32(leaky.s_out)
    _check(si > 0 and so > 0, "scales must be > 0")
    s_sig, e_s = decompose(si)
    if leaky.path == "vector":       # ops.leaky_relu_torch's constants, same float32 order
        c = _f32(si * _f32(-int(leaky.zp_in)))
        inv = _f32(1.0 / np.float64(so))
    else:
        c = _f32(0)
        inv = _f32(_f32(1) / so)
    c_sig, e_c = decompose(c)
    c_shift = 0 if c_sig == 0 else e_c - e_s
    # c = f32(-zp * s_in) is a multiple of s_in's last bit: the FMA is an exact integer sum.
    _check(0 <= c_shift <= qbits, f"fma constant {c!r} does not align with s_in")
    slope_sig, slope_exp = decompose(_f32(leaky.negative_slope))
    inv_sig, e_inv = decompose(inv)
    _check(_fits(slope_exp, 9) and _fits(e_s + e_inv, 10), "scales out of range")
    return {"scalar": int(leaky.path == "scalar"), "s_sig": s_sig, "c_sig": c_sig,
            "c_shift": c_shift, "slope_sig": slope_sig, "slope_exp": slope_exp,
            "inv_sig": inv_sig, "exp": e_s + e_inv}


def postproc_layer(rq, cfg: HwConfig, act: LeakyFixed | LeakyTorch | None = None,
                   channels: int | None = None) -> PostProcLayer:
    """Per-layer inputs and per-channel words of a ``zynqnn.numerics`` Requant (+ activation).

    With :class:`LeakyFixed` the requantization's clamp also bounds the leaky result (as
    ``ops.leaky_relu_fixed(q, zp, mult, shift, rounding, qmin=rq.lo, qmax=rq.hi)``); with
    :class:`LeakyTorch` the output zero point and range are the LeakyTorch ones. Raises
    ``ValueError`` for constants the hardware cannot hold. ``COPY`` layers: :func:`copy_layer`.
    """
    qbits = cfg.signed_operand_bits
    lo, hi = _range(rq)
    zp = rq.zp_out
    fields = {"mode": ActMode.NONE}
    if act is not None:
        fields.update(zp_mid=zp, lo_mid=lo, hi_mid=hi)
        if isinstance(act, LeakyFixed):
            _check(0 <= act.mult <= 2**20 and 0 <= act.shift <= 30, "leaky slope out of range")
            fields.update(mode=ActMode.LEAKY_FIXED, mult=act.mult, shift=act.shift,
                          rounding=Rounding.from_name(act.rounding))
        elif isinstance(act, LeakyTorch):
            _check(rq.scheme in ("torch-fbgemm", "torch-qnnpack", "onnxruntime"),
                   "LeakyTorch follows a float scheme (its multiplier half is shared)")
            _check(int(act.zp_in) == rq.zp_out, f"LeakyTorch zp_in {act.zp_in} != the "
                                                 f"requantization's zp_out {rq.zp_out}")
            fields.update(mode=ActMode.LEAKY_TORCH, **_act_torch(act, qbits))
            zp, lo, hi = int(act.zp_out), int(act.qmin), int(act.qmax)
        else:
            raise TypeError(f"act must be LeakyFixed, LeakyTorch or None, not {act!r}")
    for name, v in (("zp_out", zp), ("clamp_min", lo), ("clamp_max", hi)):
        _check(_fits(v, qbits), f"{name} {v} does not fit {qbits} bits")
    act_bits = act_params_layout(cfg).const(fields).as_bits()
    return PostProcLayer(_SCHEME[rq.scheme], zp, lo, hi, act_bits,
                         requant_words(rq, cfg, channels))


def copy_layer(cfg: HwConfig, zp_out: int, qmin: int, qmax: int,
               channels: int = 1) -> PostProcLayer:
    """The ``COPY`` scheme: ``clamp(acc + zp_out, qmin, qmax)`` (words are ignored)."""
    act = act_params_layout(cfg).const({"mode": ActMode.NONE}).as_bits()
    return PostProcLayer(isa.Scheme.COPY, int(zp_out), int(qmin), int(qmax), act,
                         (0,) * channels)
