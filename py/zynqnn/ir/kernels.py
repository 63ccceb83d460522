"""Framework kernels the IR needs beyond :mod:`zynqnn.numerics`, built from its primitives.

* :func:`avg_pool2d_qnnpack`: PyTorch's quantized ``avg_pool2d`` (and divisible
  ``adaptive_avg_pool2d``) when the engine is qnnpack (torch routes quint8 pooling to qnnpack's
  average-pooling operator there);
* :func:`leaky_relu_onnxruntime`: ONNX Runtime's ``QLinearLeakyRelu`` (a 256-entry lookup table);
* :func:`torch_elementwise`: PyTorch's vectorized element-wise loop (vector body + scalar tail in
  the tensor's memory order), to call ``ops.add_torch`` / ``ops.leaky_relu_torch`` with the
  right ``path`` for every element;
* :func:`quantize` / :func:`dequantize` / :func:`requantize`: one entry per flavour;
* :func:`conv_transpose2d_acc`: the exact integer accumulators of a transposed convolution
  (PyTorch's quantized ``ConvTranspose2d`` requantizes them as its conv does).

These belong with the golden ops; they live here until :mod:`zynqnn.numerics` takes them over.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from ..numerics import quant
from ..numerics.schemes import x86_cvt

__all__ = [
    "avg_pool2d_qnnpack",
    "conv_transpose2d_acc",
    "conv_transpose_size",
    "dequantize",
    "fix_pos",
    "leaky_relu_onnxruntime",
    "quantize",
    "requantize",
    "torch_elementwise",
    "torch_vector_block",
]

f32 = np.float32


def torch_vector_block() -> int:
    """Elements per block of PyTorch's vectorized element-wise loops on this CPU.

    ``cpu_kernel_vec`` handles blocks of two ``Vectorized<quint8>`` (64 lanes on AVX-512 builds,
    32 on AVX2) and leaves the remaining ``n % block`` elements to the scalar tail.
    """
    try:
        import torch

        cap = str(torch.backends.cpu.get_cpu_capability()).upper()
    except Exception:  # pragma: no cover - torch missing or very old
        return 64
    if "AVX512" in cap:
        return 128
    if "AVX2" in cap:
        return 64
    return 0


def _order(layout: str, ndim: int) -> tuple[int, ...]:
    if layout == "nhwc" and ndim == 4:
        return (0, 2, 3, 1)
    return tuple(range(ndim))


def torch_elementwise(fn: Callable, arrays: list[np.ndarray], layout: str, block: int
                      ) -> np.ndarray:
    """Apply ``fn(*flat_arrays, path=...)`` as PyTorch's ``cpu_kernel_vec`` does (one thread).

    The tensors are walked in memory order (``layout``); the first ``n // block * block``
    elements take ``path="vector"``, the rest ``path="scalar"``. ``block = 0``: all scalar.
    """
    shape = arrays[0].shape
    perm = _order(layout, len(shape))
    flat = [np.ascontiguousarray(a.transpose(perm)).reshape(-1) for a in arrays]
    n = flat[0].size
    nv = n // block * block if block > 0 else 0
    out = np.empty(n, dtype=np.int64)
    if nv:
        out[:nv] = fn(*[f[:nv] for f in flat], path="vector")
    if nv < n:
        out[nv:] = fn(*[f[nv:] for f in flat], path="scalar")
    tshape = tuple(shape[p] for p in perm)
    return out.reshape(tshape).transpose(np.argsort(perm))


def avg_pool2d_qnnpack(x, kernel, scale, zero_point, stride=None, padding=0):
    """PyTorch quantized average pooling on the qnnpack engine (quint8, ``ceil_mode=False``).

    qnnpack pads with the zero point and always divides by the kernel area
    (``count_include_pad`` and ``divisor_override`` are ignored)::

        acc = sum over the window of (q - zp)            # padding contributes 0
        m   = f32(s / f32(s * f32(kh * kw)))              # s = f32(input scale) = output scale
        q'  = clamp(rne(f32(f32(acc) * m)) + zp, 0, 255)

    ``padding``: an int, (ph, pw) or (top, bottom, left, right).
    """
    x = np.asarray(x, dtype=np.int64)
    kh, kw = (kernel, kernel) if np.ndim(kernel) == 0 else tuple(kernel)
    sh, sw = (kh, kw) if stride is None else ((stride, stride) if np.ndim(stride) == 0
                                              else tuple(stride))
    if np.ndim(padding) == 0:
        pt = pb = pl = pr = int(padding)
    elif len(padding) == 2:
        pt = pb = int(padding[0])
        pl = pr = int(padding[1])
    else:
        pt, pb, pl, pr = (int(p) for p in padding)
    zp = int(zero_point)
    n, c, h, w = x.shape
    ho = (h + pt + pb - kh) // sh + 1
    wo = (w + pl + pr - kw) // sw + 1
    xp = np.zeros((n, c, h + pt + pb, w + pl + pr), dtype=np.int64)
    xp[:, :, pt: pt + h, pl: pl + w] = x - zp
    acc = np.zeros((n, c, ho, wo), dtype=np.int64)
    for i in range(kh):
        for j in range(kw):
            acc += xp[:, :, i: i + (ho - 1) * sh + 1: sh, j: j + (wo - 1) * sw + 1: sw]
    s = f32(scale)
    m = f32(s / f32(s * f32(kh * kw)))
    y = (acc.astype(f32) * m).astype(f32)
    r = np.clip(x86_cvt(np.rint(y).astype(np.int64)), -32768, 32767)
    return np.clip(r + zp, 0, 255)


def leaky_relu_onnxruntime(x, s_x, zp_x, s_y, zp_y, alpha, qmin=0, qmax=255):
    """ONNX Runtime ``QLinearLeakyRelu`` (com.microsoft): a lookup table over all codes.

    ``d = f32(s_x * f32(q - zp_x))``; ``v = d >= 0 ? d : f32(d * alpha)``;
    ``q' = QuantizeLinear(v)`` (true division, ties to even, + zp_y, saturate).
    """
    codes = np.arange(qmin, qmax + 1, dtype=np.int64)
    d = quant.dequantize_onnxruntime(codes, s_x, zp_x)
    v = np.where(d >= 0, d, (d * f32(alpha)).astype(f32)).astype(f32)
    dtype = "uint8" if qmin == 0 else "int8"
    table = quant.quantize_onnxruntime(v, s_y, zp_y, dtype)
    return table[np.asarray(x, dtype=np.int64) - qmin]


def fix_pos(scale: float) -> int:
    """``fp`` with ``scale == 2**-fp`` (raises ValueError when ``scale`` is not a power of two)."""
    m, e = math.frexp(float(scale))
    if m != 0.5:
        raise ValueError(f"scale {scale!r} is not a power of two")
    return -(e - 1)


def _dtype_bits(dtype: str) -> int:
    return 16 if "16" in dtype else 32 if "32" in dtype else 8


def quantize(flavour: str, x, scale, zero_point, dtype: str, qmin: int, qmax: int,
             rounding: str | None = None, overflow: str | None = None) -> np.ndarray:
    """Float32 -> codes exactly as ``flavour`` quantizes (then clipped to ``qmin..qmax``)."""
    x = np.asarray(x, dtype=f32)
    if flavour in ("torch-fbgemm", "torch-qnnpack"):
        q = quant.quantize_torch(x, scale, zero_point, dtype)
    elif flavour == "onnxruntime":
        q = quant.quantize_onnxruntime(x, scale, zero_point, dtype)
    elif flavour == "tflite":
        q = quant.quantize_tflite(x, scale, zero_point, dtype)
    elif flavour == "pow2":
        q = quant.quantize_pow2(x, fix_pos(scale), bits=_dtype_bits(dtype),
                                rounding=rounding or "half_up")
    elif flavour == "fixed16":
        q = quant.quantize_fixed(x, fix_pos(scale), bits=_dtype_bits(dtype),
                                 rounding=rounding or "half_up",
                                 overflow=overflow or "saturate")
    else:
        raise ValueError(f"no quantizer for flavour {flavour!r}")
    return np.clip(q, qmin, qmax).astype(np.int64)


def dequantize(flavour: str, q, scale, zero_point) -> np.ndarray:
    """Codes -> float32 exactly as ``flavour`` dequantizes."""
    if flavour in ("torch-fbgemm", "torch-qnnpack"):
        return quant.dequantize_torch(q, scale, zero_point)
    if flavour == "onnxruntime":
        return quant.dequantize_onnxruntime(q, scale, zero_point)
    if flavour == "tflite":
        return quant.dequantize_tflite(q, scale, zero_point)
    if flavour in ("pow2", "fixed16"):
        return quant.dequantize_pow2(q, fix_pos(scale))  # symmetric: zero point 0
    raise ValueError(f"no dequantizer for flavour {flavour!r}")


def requantize(flavour: str, q, s_in, zp_in, s_out, zp_out, dtype: str, qmin: int, qmax: int
               ) -> np.ndarray:
    """Dequantize then quantize in ``flavour``'s arithmetic (a framework's DQ -> Q pair)."""
    return quantize(flavour, dequantize(flavour, q, s_in, zp_in), s_out, zp_out, dtype, qmin, qmax)


def conv_transpose_size(n: int, k: int, s: int, d: int, lo: int, hi: int, extra: int) -> int:
    """Output size of a transposed convolution along one axis: input ``n``, kernel ``k``,
    stride ``s``, dilation ``d``, ``lo``/``hi`` positions removed from the start/end of the
    full output (``padding``) and ``extra`` added at the end (``output_padding``)."""
    return (n - 1) * s + d * (k - 1) + 1 - lo - hi + extra


def conv_transpose2d_acc(x, w, zp_x=0, zp_w=0, stride=(1, 1), padding=(0, 0, 0, 0),
                         output_padding=(0, 0), dilation=(1, 1), groups=1) -> np.ndarray:
    """Exact int64 accumulators (N, K, OH, OW) of a transposed 2-D convolution.

    ``x``: (N, C, H, W) codes; ``w``: (C, K / groups, kh, kw) codes (PyTorch's and ONNX's
    layout); ``zp_w``: a scalar. Input pixel ``(i, j)`` through tap ``(ky, kx)`` adds
    ``(x - zp_x)(w - zp_w)`` to output ``(i*sh + ky*dh - top, j*sw + kx*dw - left)``;
    ``padding`` ``(top, bottom, left, right)`` removes rows/columns from the full output,
    ``output_padding`` ``(h, w)`` adds them at the bottom/right (only padding reaches there)."""
    x = np.asarray(x, dtype=np.int64) - int(zp_x)
    w = np.asarray(w, dtype=np.int64) - int(zp_w)
    n, c, h, wd = x.shape
    cin, kg, kh, kw = w.shape
    if cin != c or c % groups:
        raise ValueError(f"conv_transpose2d: input has {c} channels, weight {list(w.shape)} "
                         f"with groups={groups}")
    sh, sw = stride
    dh, dw = dilation
    t, b, left, r = padding
    oh = conv_transpose_size(h, kh, sh, dh, t, b, output_padding[0])
    ow = conv_transpose_size(wd, kw, sw, dw, left, r, output_padding[1])
    full_h = max((h - 1) * sh + dh * (kh - 1) + 1, t + oh)
    full_w = max((wd - 1) * sw + dw * (kw - 1) + 1, left + ow)
    full = np.zeros((n, kg * groups, full_h, full_w), np.int64)
    cg = c // groups
    for g in range(groups):
        xg = x[:, g * cg:(g + 1) * cg]
        for ky in range(kh):
            for kx in range(kw):
                v = np.einsum("nchw,ck->nkhw", xg, w[g * cg:(g + 1) * cg, :, ky, kx])
                full[:, g * kg:(g + 1) * kg, ky * dh:ky * dh + (h - 1) * sh + 1:sh,
                     kx * dw:kx * dw + (wd - 1) * sw + 1:sw] += v
    return full[:, :, t:t + oh, left:left + ow]
