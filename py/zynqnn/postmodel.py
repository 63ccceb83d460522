"""Word-level model of the engine's post-processing: output codes from PBUF words and a command.

The hardware (:class:`zynqnn.rtl.postproc.PostProc`) sees only what the command stream gave it:
per output channel one :data:`~zynqnn.hw.post.pbuf_word_layout` word, per layer the scheme,
output zero point, clamp and (``ConvOp.act``) an :func:`~zynqnn.hw.post.act_params_layout`
word. This module computes the same codes from the same bits with ``zynqnn.numerics``' integer
primitives, so that the command-level model (:mod:`zynqnn.machine`) executes a compiled program
without access to the graph's scales: a constant packed wrongly by the compiler shows up here.

Float32 steps follow ``zynqnn.numerics.f32int`` (exact significands, one rounding per float
operation). The PyTorch leaky ReLU constants are stored relative to ``s_in``'s exponent; its
arithmetic is scale invariant, so it is evaluated with ``s_in``'s exponent taken as zero.
"""

from __future__ import annotations

import numpy as np

from zynqnn.hw import isa
from zynqnn.hw.config import HwConfig
from zynqnn.numerics import f32int as F
from zynqnn.numerics import gemmlowp
from zynqnn.numerics.quant import torch_quantize_val, torch_vec_quantize
from zynqnn.numerics.rounding import ROUNDING_MODES, shift_round
from zynqnn.numerics.schemes import x86_cvt

__all__ = ["apply_post", "apply_step", "decode_act"]

f32 = np.float32


def _fields(layout, words, name, keys):
    """Per-channel arrays of ``keys`` of union member ``name`` of each word."""
    views = [getattr(layout.const({"bits": int(w)}), name) for w in words]
    return {k: np.array([int(getattr(v, k)) for v in views], dtype=np.int64) for k in keys}


def decode_act(cfg: HwConfig, act_bits: int):
    """The activation word as a Const view (``mode`` 0 = none)."""
    from zynqnn.hw.post import act_params_layout

    return act_params_layout(cfg).from_bits(act_bits)


def _requant(cfg, scheme, words, acc, zp, lo, hi):
    from zynqnn.hw.post import pbuf_word_layout as L

    acc = np.asarray(acc, dtype=np.int64)          # (pixels, channels)
    if scheme == isa.Scheme.COPY:
        return np.clip(acc + zp, lo, hi)
    if scheme in (isa.Scheme.POW2, isa.Scheme.FIXED16):
        w = _fields(L, words, "fixed", ("bias", "bias_shift", "rounding", "wrap", "wrap_bits",
                                        "mult_pos", "shift_pos", "mult_neg", "shift_neg"))
        v = acc + (w["bias"] << w["bias_shift"])
        out = np.empty_like(v)
        for c in range(v.shape[1]):            # rounding mode and shifts differ per channel
            mode = ROUNDING_MODES[int(w["rounding"][c])]
            vc = v[:, c]
            pos = shift_round(vc * w["mult_pos"][c], int(w["shift_pos"][c]), mode)
            neg = shift_round(vc * w["mult_neg"][c], int(w["shift_neg"][c]), mode)
            r = np.where(vc < 0, neg, pos) + zp
            if w["wrap"][c]:
                m = 1 << int(w["wrap_bits"][c])
                r = ((r + (m >> 1)) & (m - 1)) - (m >> 1)
            out[:, c] = r
        return np.clip(out, lo, hi)
    # The 32-bit schemes see the low 32 bits of a wider (int16 build) accumulator.
    acc = gemmlowp.wrap_int32(acc)
    if scheme in (isa.Scheme.TFLITE, isa.Scheme.TFLITE_SINGLE_ROUNDING):
        w = _fields(L, words, "tflite", ("bias", "multiplier", "shift"))
        return gemmlowp.requantize(acc, w["bias"], w["multiplier"], w["shift"], zp, lo, hi,
                                   single_rounding=scheme == isa.Scheme.TFLITE_SINGLE_ROUNDING)
    if scheme in (isa.Scheme.TORCH_QNNPACK, isa.Scheme.ONNXRUNTIME):
        w = _fields(L, words, "float", ("m_sig", "m_exp", "bias"))
        y = F.mul(F.from_int(gemmlowp.wrap_int32(acc + w["bias"])), (w["m_sig"], w["m_exp"]))
        r = F.rne_int(y)
        if scheme == isa.Scheme.TORCH_QNNPACK:
            r = x86_cvt(r)
        return np.clip(np.asarray(r, dtype=np.int64) + zp, lo, hi)
    if scheme == isa.Scheme.TORCH_FBGEMM:
        w = _fields(L, words, "fbgemm", ("m_sig", "m_exp", "b_mag", "b_neg", "b_exp"))
        # Adding a zero bias (b_mag = 0) leaves the 24-bit f32(acc) unchanged, as numerics'
        # "no bias" case does.
        b_sig = np.where(w["b_neg"] == 1, -w["b_mag"], w["b_mag"])
        t = F.add(F.from_int(acc), (b_sig + 0 * acc, w["b_exp"] + 0 * acc))
        y = F.mul(t, (w["m_sig"], w["m_exp"]))
        return np.clip(x86_cvt(F.rne_int(y)) + zp, lo, hi)
    raise ValueError(f"post-processing model: unknown scheme {scheme!r}")


def apply_post(cfg: HwConfig, scheme, zp_out: int, clamp_min: int, clamp_max: int,
               act_bits: int, words, acc) -> np.ndarray:
    """Output codes ``(pixels, channels)`` of the post-processing for accumulators ``acc``.

    ``words``: one PBUF word (int) per channel; ``act_bits``: the activation word (0: none).
    """
    from zynqnn.hw.post import ActMode

    scheme = isa.Scheme(int(scheme))
    act = decode_act(cfg, act_bits)
    mode = ActMode(int(act.mode))
    if mode == ActMode.NONE:
        return _requant(cfg, scheme, words, acc, zp_out, clamp_min, clamp_max)
    q = _requant(cfg, scheme, words, acc, int(act.zp_mid), int(act.lo_mid), int(act.hi_mid))
    zp_mid = int(act.zp_mid)
    if mode == ActMode.LEAKY_FIXED:
        v = q - zp_mid
        neg = shift_round(v * int(act.mult), int(act.shift), ROUNDING_MODES[int(act.rounding)])
        return np.clip(np.where(v < 0, neg, v) + zp_out, clamp_min, clamp_max)
    # LEAKY_TORCH (ops.leaky_relu_torch) with s_in's exponent taken as 0.
    s_in = f32(int(act.s_sig))
    inv = f32(F.compose(np.int64(int(act.inv_sig)), np.int64(int(act.exp))))
    slope = f32(F.compose(np.int64(int(act.slope_sig)), np.int64(int(act.slope_exp))))
    if int(act.scalar):
        d = (s_in * (q - zp_mid).astype(f32)).astype(f32)
    else:
        c = f32(int(act.c_sig) * 2.0 ** int(act.c_shift))
        d = F.np_fma32(s_in, q.astype(f32), c)
    d = np.where(d > 0, d, (d * slope).astype(f32))
    if int(act.scalar):
        return torch_quantize_val(d, inv, zp_out, clamp_min, clamp_max)
    return torch_vec_quantize(d, inv, zp_out, clamp_min, clamp_max)



def apply_step(cfg: HwConfig, clamp_min: int, clamp_max: int, words, acc) -> np.ndarray:
    """Output codes ``(pixels, channels)`` of the step lanes (``ConvOp.step``,
    :class:`zynqnn.rtl.steprequant.StepRequant`): ``words`` one
    :func:`~zynqnn.hw.step.step_params_layout` PBUF word per channel; the lanes see the
    low ``dw_acc_bits`` of each accumulator."""
    from amaranth.lib import data

    from zynqnn.hw.step import step_params_layout

    layout = step_params_layout(cfg)
    A = cfg.dw_acc_bits
    acc = np.asarray(acc, dtype=np.int64)
    acc = ((acc + (1 << (A - 1))) & ((1 << A) - 1)) - (1 << (A - 1))
    out = np.empty_like(acc)
    for c, w in enumerate(words):
        p = data.Const(layout, int(w) & ((1 << layout.size) - 1))
        v = acc[:, c]
        y = (v.astype(object) * int(p.mult) + int(p.offset)) >> cfg.step_frac_bits
        q = np.clip(y.astype(np.int64), clamp_min, clamp_max)
        for e in range(cfg.step_exceptions):
            q[v == int(p.exc_acc[e])] += int(p.exc_delta[e])
        out[:, c] = q
    return out
