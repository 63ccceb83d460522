"""IR graph -> hardware layers: the adapter between :mod:`zynqnn.ir` and the compiler.

:func:`lower_graph` maps a validated quantized graph onto the compiler's hardware layers
(:mod:`zynqnn.compiler.layers`) so that ``run_reference(net, boundary.to_network(codes))`` equals
the graph's integer execution (``graph.run_int(codes)``) value for value, and returns the graph's
float boundary (the quantize of the input, the host's window gathering for the first
convolution, the dequantize of each output) as a :class:`BoundaryInfo`, so that
``boundary.dequantize(net(boundary.to_network(boundary.quantize(x))))`` equals ``graph.run(x)``.
A graph may have several outputs: ``net.outputs`` and ``boundary.outputs`` list them in graph order.

=========================  =====================================================================
IR op                      hardware
=========================  =====================================================================
quantize / dequantize      the boundary (the input's quantize, the outputs' dequantizes)
conv2d (groups 1)          :class:`HwConv` with the node's Requant; a ``clamp`` attribute narrows
                           the Requant's range; non-square kernels are zero-padded to square
conv2d (depthwise)         :class:`HwConv` with ``groups`` (diagonal weight tiles); torch-fbgemm
                           when its saturating int16 pair sums can saturate: ``saturate_pairs``
                           (``isa.Mode.DW_PAIRS`` / ``PAIRS``, fbgemm's sums exactly)
linear                     :class:`HwConv` on the flattened map: maps up to ``max_kernel`` a side:
                           the weights ``(K, C*H*W)`` become a ``K x C x k x k`` kernel
                           (``k = max(H, W)``, zero-padded) applied once: a 1x1 output (after
                           global pooling a 1x1 conv); larger maps: the map's words read as a
                           1x1 map (:class:`HwView`) and the weight columns permuted to them
max_pool2d                 :class:`HwMaxPool` (square kernels, equal strides); ``pad_value``
                           None or at most the input's lowest code: ``pad_min``; the zero point:
                           zero-point padding; ``ceil_mode``: extra bottom/right ``pad_min`` rows
global / adaptive (1x1) /  :class:`HwGlobalSumPool` with a per-tensor Requant chosen so that it
avg pool over the map      reproduces the framework's average exactly (checked over every
                           possible window sum; refused when no scheme does)
upsample_nearest           :class:`HwUpsample2x` (factor 2^k: k layers)
concat (channels)          :class:`HwConcat`; an input with other qparams than the output is
                           rescaled first by a layer of its own (see requantize); every input
                           starts a channel block (padding channels after an input of another
                           count than a multiple of ``rows``: zero weights in the consumers,
                           gathered out of graph outputs on the host, ``_Val.slots``); a tensor
                           in a second concatenation is copied
requantize                 nothing for equal qparams, else a 1x1 convolution with identity
                           weights and a Requant equal to the framework's rescaling on every
                           code the input can hold (an exact interval solver, _solve_map)
relu, relu6, hardtanh,     folded into the producer's clamp (through max pooling and upsampling,
clamp                      which commute with a clamp), or dropped when a no-op on the codes the
                           producer can emit
leaky_relu                 the producer's ``act``: ``LeakyFixed`` (tflite-like flavours) or
                           ``LeakyTorch`` (torch/ONNX Runtime; checked over every code)
flatten, reshape, pad      no-ops (views); ``pad`` merges into the conv2d/max_pool2d after it
add                        :class:`HwAdd` in the flavour's add semantics (torch / qnnpack /
                           onnxruntime / tflite; pow2 and fixed16 as tflite); torch-fbgemm's
                           scalar tail (rounds differently) as commands of its own when it is
                           whole words (``scalar_from``, ``scalar_mask``)
grouped conv2d             :class:`HwConv` with block-diagonal weights (zero between groups)
conv_transpose2d           stride 1: :class:`HwConv` with the kernel flipped (padding
                           ``k - 1 - p``); stride s > 1: :class:`HwConvTranspose`, run as s * s
                           stride-1 convolutions, one per output phase, each row stored pixel
                           by pixel into the interleaved output (groups block-diagonal)
slice (channels),          views: the producer's tensor seen through some of its slots (a range,
channel_shuffle            or permuted); a copy (1x1, 0/1 weights) only where a layout forces it:
                           a part alone in a concatenation, an add, a depthwise layer
lut                        :class:`HwLut` (``ELTWISE`` lookups): the node's table; with a
                           torch-fbgemm ``scalar_table`` that differs on a code the input can
                           hold, only when PyTorch's scalar tail is empty
=========================  =====================================================================

Anything else raises :class:`CompileError` naming the node, its op and the reason. Where a
choice is checked "over every code", the check runs the graph's own kernel
(:data:`zynqnn.ir.execute.KERNELS`) on synthetic inputs covering the whole input code range.
(Averages over more window sums than can be checked, e.g. 16-bit maps, accept only the formula
exact by construction for the flavour, checked on a sample.)
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass

import numpy as np

from zynqnn.hw.config import HwConfig, get_config

from .layers import (
    CompileError,
    CompileErrors,
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
    Tensor,
    code_range,
)

__all__ = ["BoundaryInfo", "OutputInfo", "lower_graph"]

f32 = np.float32
_TORCH = ("torch-fbgemm", "torch-qnnpack")
_TFLITE_LIKE = ("tflite", "pow2", "fixed16")
#: An exhaustive check of a pooling evaluates at most this many synthetic input values (in
#: chunks of _SAMPLE_LIMIT); beyond, the sums are sampled (_SAMPLE_LIMIT values).
_CHECK_LIMIT = 400_000_000
_SAMPLE_LIMIT = 4_000_000
_CLAMPS = ("relu", "relu6", "hardtanh", "clamp")
_VIEWS = ("flatten", "reshape")


# -------------------------------------------------------------------------------------------------
# the float boundary


@dataclass
class OutputInfo:
    """One graph output: the IR name, per-sample ``shape`` (e.g. ``(10,)`` after a linear
    layer), code ``dtype``, ``scale`` and ``zero_point``, and the ``flavour`` of the graph's
    dequantize (``None``: the graph returns the codes).

    Where the output's hardware tensor holds more than the graph's values, :meth:`gather` takes
    them out of its ``(C, H, W)`` codes: ``slots``, the hardware channel of each of the graph's
    channels (a concatenation whose inputs take whole channel blocks), and ``size``, the graph's
    ``[H, W]`` when the tensor is larger (the top-left corner: a 1x1 map stored as a row of
    whole AXI beats on ``tiny``). Both ``None``: the codes are the values."""

    name: str
    shape: tuple
    dtype: str
    scale: float | None
    zero_point: int
    flavour: str | None
    slots: list | None = None
    size: list | None = None

    def gather(self, codes) -> np.ndarray:
        """The hardware tensor's codes ``(..., C, H, W)`` -> the graph's ``(..., *shape)``."""
        c = np.asarray(codes, dtype=np.int64)
        if self.slots is not None:
            c = np.take(c, np.asarray(self.slots, dtype=np.int64), axis=-3)
        if self.size is not None:
            c = c[..., :int(self.size[0]), :int(self.size[1])]
        return c.reshape(c.shape[:-3] + tuple(self.shape))

    def dequantize(self, codes) -> np.ndarray:
        """Codes ``(N, *shape)`` -> float32 (the graph's own dequantizer); the codes themselves
        (int64) when the graph returns codes."""
        from zynqnn.ir import kernels as K

        if self.flavour is None:
            return np.asarray(codes, dtype=np.int64)
        return K.dequantize(self.flavour, np.asarray(codes, dtype=np.int64), self.scale,
                            self.zero_point)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["shape"] = list(self.shape)
        for key in ("slots", "size"):   # absent when the codes are the values (as before)
            if d[key] is None:
                del d[key]
            else:
                d[key] = [int(v) for v in d[key]]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> OutputInfo:
        d = dict(d)
        d["shape"] = tuple(int(v) for v in d["shape"])
        for key in ("slots", "size"):
            if d.get(key) is not None:
                d[key] = [int(v) for v in d[key]]
        return cls(**d)


_OUT_FIELDS = ("name", "shape", "dtype", "scale", "zero_point", "flavour")


@dataclass
class BoundaryInfo:
    """The graph's float interface around the hardware network.

    Input: ``input_flavour`` quantizes float32 ``(N, *input_shape)`` to codes exactly as the
    graph's quantize node (``None``: the graph takes codes). Outputs: ``outputs``, one
    :class:`OutputInfo` per graph output in graph order (the network's ``outputs``, same order).
    The ``output_*`` fields repeat the first output (single-output code reads them):
    ``output_flavour`` dequantizes the network's codes (``None``: the graph returns codes);
    ``output_shape`` is the graph output's per-sample shape (e.g. ``(10,)`` after a linear
    layer). Constructed without ``outputs``, it describes one output, the ``output_*`` fields.
    """

    input_name: str
    input_shape: tuple
    input_dtype: str
    input_qmin: int
    input_qmax: int
    input_scale: float | None
    input_zero_point: int
    input_flavour: str | None
    input_rounding: str | None
    input_overflow: str | None
    output_name: str
    output_shape: tuple
    output_dtype: str
    output_scale: float | None
    output_zero_point: int
    output_flavour: str | None
    outputs: list = dataclasses.field(default_factory=list)
    #: ``[k, stride, top, bottom, left, right]`` when the host gathers the first convolution's
    #: windows (:meth:`to_network`), else ``None``.
    input_patches: list | None = None

    def __post_init__(self):
        self.output_shape = tuple(self.output_shape)
        first = OutputInfo(*(getattr(self, "output_" + f) for f in _OUT_FIELDS))
        self.outputs = [o if isinstance(o, OutputInfo) else OutputInfo.from_dict(o)
                        for o in self.outputs]
        if not self.outputs:
            self.outputs = [first]
        elif any(getattr(self.outputs[0], f) != getattr(first, f) for f in _OUT_FIELDS):
            raise ValueError(f"output_* fields {first} differ from the first of outputs "
                             f"{self.outputs[0]}")

    @property
    def multi(self) -> bool:
        """True when the graph has more than one output (runs return a tuple)."""
        return len(self.outputs) > 1

    def quantize(self, x) -> np.ndarray:
        """Float32 ``(N, C, H, W)`` -> int64 codes (the graph's own quantizer)."""
        from zynqnn.ir import kernels as K

        if hasattr(x, "detach"):
            x = x.detach().cpu().numpy()
        x = np.asarray(x)
        if self.input_flavour is None:
            raise ValueError(f"the graph's input {self.input_name!r} is integer codes "
                             f"({self.input_dtype}); use run_int")
        if x.dtype.kind != "f":
            raise ValueError(f"input {self.input_name!r} must be float32, got dtype {x.dtype}")
        self.check_shape(x, "input")
        return K.quantize(self.input_flavour, x.astype(f32), self.input_scale,
                          self.input_zero_point, self.input_dtype, self.input_qmin,
                          self.input_qmax, self.input_rounding, self.input_overflow)

    def check_shape(self, x: np.ndarray, what: str) -> None:
        if x.ndim != 1 + len(self.input_shape) or tuple(x.shape[1:]) != tuple(self.input_shape):
            dims = ", ".join(map(str, self.input_shape))
            raise ValueError(f"{what} {self.input_name!r} must have shape (N, {dims}), got "
                             f"{list(x.shape)}")

    def check_codes(self, codes) -> np.ndarray:
        """Integer ``(N, C, H, W)`` codes within the input's range, as int64."""
        if hasattr(codes, "detach"):
            codes = codes.detach().cpu().numpy()
        c = np.asarray(codes)
        if c.dtype.kind not in "iu":
            raise ValueError(f"input {self.input_name!r} must be integer codes, got dtype "
                             f"{c.dtype}")
        self.check_shape(c, "input")
        c = c.astype(np.int64)
        if c.size and (c.min() < self.input_qmin or c.max() > self.input_qmax):
            raise ValueError(f"input {self.input_name!r} holds codes outside "
                             f"{self.input_qmin}..{self.input_qmax}")
        return c

    def to_network(self, codes: np.ndarray) -> np.ndarray:
        """Checked graph input codes ``(N, C, H, W)`` -> the network's input codes: the codes
        themselves, or with ``input_patches`` the ``k x k`` window of every output pixel of the
        first convolution (input padded with its zero point) as ``k * k * C`` channels,
        tap-major (channel ``(ky * k + kx) * C + c``): that convolution runs as a 1x1."""
        if not self.input_patches:
            return codes
        k, s, t, b, left, r = (int(v) for v in self.input_patches)
        n, c, h, w = codes.shape
        p = np.pad(codes, ((0, 0), (0, 0), (t, b), (left, r)),
                   constant_values=self.input_zero_point)
        oh, ow = (h + t + b - k) // s + 1, (w + left + r - k) // s + 1
        out = np.empty((n, k * k * c, oh, ow), dtype=codes.dtype)
        for ky in range(k):
            for kx in range(k):
                i = (ky * k + kx) * c
                out[:, i:i + c] = p[:, :, ky:ky + s * (oh - 1) + 1:s, kx:kx + s * (ow - 1) + 1:s]
        return out

    def dequantize(self, codes) -> np.ndarray:
        """Codes ``(N, *output_shape)`` of the first output -> float32 (the graph's own
        dequantizer); the codes themselves when the graph returns codes."""
        return self.outputs[0].dequantize(codes)

    def gather_all(self, codes: list) -> list:
        """The hardware tensors' codes, one per output (``outputs`` order, each ``(..., C, H,
        W)``) -> the graph's output codes (``(..., *shape)``, :meth:`OutputInfo.gather`)."""
        if len(codes) != len(self.outputs):
            raise ValueError(f"{len(codes)} code arrays for {len(self.outputs)} outputs")
        return [o.gather(c) for o, c in zip(self.outputs, codes, strict=True)]

    def dequantize_all(self, codes: list) -> list:
        """One code array per output (``outputs`` order) -> their float values."""
        if len(codes) != len(self.outputs):
            raise ValueError(f"{len(codes)} code arrays for {len(self.outputs)} outputs")
        return [o.dequantize(c) for o, c in zip(self.outputs, codes, strict=True)]

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["input_shape"] = list(self.input_shape)
        d["output_shape"] = list(self.output_shape)
        d["outputs"] = [o.to_dict() for o in self.outputs]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> BoundaryInfo:
        """From :meth:`to_dict`, or from a dict without ``outputs`` (program file version 1:
        one output, the ``output_*`` fields)."""
        d = dict(d)
        d["input_shape"] = tuple(int(v) for v in d["input_shape"])
        d["output_shape"] = tuple(int(v) for v in d["output_shape"])
        d["outputs"] = [OutputInfo.from_dict(o) for o in d.get("outputs", [])]
        return cls(**d)


# -------------------------------------------------------------------------------------------------
# helpers


def _fail(node, why: str) -> CompileError:
    return CompileError(f"node {node.name!r} ({node.op}): {why}")


def _block_diagonal(w: np.ndarray, groups: int) -> np.ndarray:
    """Grouped weights (K, C / groups, kh, kw) as dense ones (K, C, kh, kw), zero between
    groups."""
    k, cg = w.shape[:2]
    kg = k // groups
    out = np.zeros((k, cg * groups) + w.shape[2:], dtype=w.dtype)
    for g in range(groups):
        out[g * kg:(g + 1) * kg, g * cg:(g + 1) * cg] = w[g * kg:(g + 1) * kg]
    return out


def _bits(dtype: str) -> int:
    return 16 if "16" in dtype else 32 if "32" in dtype else 8


def _pair(v, default) -> tuple[int, int]:
    v = default if v is None else v
    return (int(v), int(v)) if np.ndim(v) == 0 else (int(v[0]), int(v[1]))


def _square_stride(node, a) -> int:
    """The (equal) stride of a convolution without dilation; refuses anything else."""
    if _pair(a.get("dilation"), 1) != (1, 1):
        raise _fail(node, f"dilation {list(_pair(a.get('dilation'), 1))} is not supported "
                          "(1 only)")
    sh, sw = _pair(a.get("stride"), 1)
    if sh != sw:
        raise _fail(node, f"stride {[sh, sw]}: the hardware needs equal strides")
    return sh


def _pads(v) -> tuple[int, int, int, int]:
    if v is None:
        return (0, 0, 0, 0)
    if np.ndim(v) == 0:
        return (int(v),) * 4
    t = tuple(int(p) for p in v)
    return (t[0], t[0], t[1], t[1]) if len(t) == 2 else t


def _narrowed(node, rq, lo: int, hi: int):
    """A copy of Requant ``rq`` clamping to ``[lo, hi]`` after its own clamp
    (``clip(clip(v, a, b), lo, hi) == clip(v, clip(a, lo, hi), clip(b, lo, hi))``)."""
    lo, hi = min(max(rq.lo, lo), hi), max(min(rq.hi, hi), lo)
    if (lo, hi) == (rq.lo, rq.hi):
        return rq
    if getattr(rq, "overflow", "saturate") == "wrap":
        raise _fail(node, "a clamp after a fixed16 requantization that wraps on overflow")
    out = copy.copy(rq)
    out.lo, out.hi = int(lo), int(hi)
    return out


def _solve_map(acc: np.ndarray, target: np.ndarray, ratio: float, zp_out: int, qmin: int,
               qmax: int):
    """A Requant ``r`` with ``r.apply(acc) == target`` for every value, or None.

    The family is TFLite's single rounding, ``clamp(floor((acc * Q + 2^(t-1)) / 2^t) + zp_out)``
    at the shift of ``ratio`` (the nominal ``s_in / s_out``): every constraint is an interval
    of the integer multiplier ``Q``, so their intersection gives one exactly when one exists.
    """
    from zynqnn.numerics import gemmlowp, make_requant

    if not 0 < ratio < 2**30:
        return None
    _, sh = gemmlowp.quantize_multiplier(ratio)
    t = 31 - sh
    if not -31 <= sh <= 30 or t < 1:
        return None
    one, half = 1 << t, 1 << (t - 1)
    q_lo, q_hi = 0, 2**31 - 1
    for a, tv in zip(acc.tolist(), target.tolist(), strict=True):
        tp = tv - zp_out
        need_ge = tv > qmin or qmin == qmax   # floor(...) >= tp unless the clamp makes it qmin
        need_le = tv < qmax or qmin == qmax
        lo_b = tp * one - half                 # a*Q >= lo_b
        hi_b = (tp + 1) * one - half - 1       # a*Q <= hi_b
        if a == 0:
            if (need_ge and lo_b > 0) or (need_le and hi_b < 0):
                return None
            continue
        if a > 0:
            if need_ge:
                q_lo = max(q_lo, -(-lo_b // a))
            if need_le:
                q_hi = min(q_hi, hi_b // a)
        else:
            if need_ge:
                q_hi = min(q_hi, lo_b // a)
            if need_le:
                q_lo = max(q_lo, -(-hi_b // a))
        if q_lo > q_hi:
            return None
    rq = make_requant("tflite-single-rounding", 1.0, 1.0, 1.0, zp_out, None, qmin, qmax,
                      multiplier=q_lo, shift=sh)
    return rq if np.array_equal(rq.apply(acc[:, None], axis=1)[:, 0], target) else None


def _solve_channel(k: np.ndarray, target: np.ndarray, zp_out: int, qmin: int, qmax: int,
                   wmax: int = 127):
    """``(w, b, Q, shift)`` with ``clamp(floor(((w*k + b) * Q + 2^(t-1)) / 2^t) + zp_out)``
    (TFLite's single rounding, ``t = 31 - shift``) equal to ``target`` for every ``k`` (the
    input codes minus their zero point), or None. ``w`` is +-``wmax`` (the finest offset ``b``
    can set; above 127 the input is read from several slots), the shift that of the slope
    fitted to ``target``; then for each bias ``b`` near the fitted offset's (searched outward)
    every code bounds the multiplier ``Q`` to an interval and their intersection gives ``Q``
    exactly when one exists (as ``_solve_map``)."""
    from zynqnn.numerics import gemmlowp

    k = np.asarray(k, dtype=np.int64)
    target = np.asarray(target, dtype=np.int64)
    tp = target - zp_out
    need_ge = (target > qmin) | (qmin == qmax)
    need_le = (target < qmax) | (qmin == qmax)
    inside = need_ge & need_le
    if np.all(target == target[0]):          # a constant: w = 0, acc = b
        v = int(target[0]) - zp_out
        return 0, 2 * v, 1 << 30, 0
    if inside.sum() >= 2 and np.ptp(k[inside]) > 0:
        slope, offset = np.polyfit(k[inside], tp[inside], 1)
    else:
        slope = (tp[-1] - tp[0]) / max(1, k[-1] - k[0])
        offset = tp[0] - slope * k[0]
    if slope == 0:
        return None
    w = wmax if slope > 0 else -wmax
    _, sh = gemmlowp.quantize_multiplier(abs(slope) / wmax)
    if not -31 <= sh <= 30:
        return None
    t = 31 - sh
    one, half = 1 << t, 1 << (t - 1)
    lo_b = tp * one - half                   # x * Q >= lo_b  (x = w*k + b)
    hi_b = (tp + 1) * one - half - 1         # x * Q <= hi_b
    big = np.iinfo(np.int64).max // 4
    b0 = int(round(offset * wmax / abs(slope)))
    start, step = 0, 32
    while start < 1 << 15:
        d = np.arange(start, start + step, dtype=np.int64)
        start, step = start + step, min(step * 4, 2048)
        bs = np.concatenate([b0 + d, b0 - d - 1])[:, None]
        x = w * k[None, :] + bs                            # (candidates, codes)
        pos, neg = x > 0, x < 0
        xs = np.where(x == 0, 1, x)
        # x > 0: Q >= ceil(lo/x) (need_ge), Q <= floor(hi/x) (need_le); x < 0: reversed
        q_lo = np.where(pos & need_ge, -((-lo_b) // xs), 0)
        q_lo = np.maximum(q_lo, np.where(neg & need_le, -((-hi_b) // xs), 0))
        q_hi = np.where(pos & need_le, hi_b // xs, big)
        q_hi = np.minimum(q_hi, np.where(neg & need_ge, lo_b // xs, big))
        zero_bad = (x == 0) & ((need_ge & (lo_b > 0)) | (need_le & (hi_b < 0)))
        lo, hi = q_lo.max(axis=1), np.minimum(q_hi.min(axis=1), 2**31 - 1)
        ok = np.nonzero((lo <= hi) & ~zero_bad.any(axis=1))[0]
        for i in ok:
            b = int(bs[i, 0])
            if abs(b) < 2**30 and np.all(np.abs(w * k + b) < 2**31):
                return w, b, int(lo[i]), sh
    return None


def _act_codes(act, q, rq):
    """The hardware's activation after requantization (``LeakyFixed``/``LeakyTorch``)."""
    from zynqnn.hw.post import LeakyFixed
    from zynqnn.numerics import ops

    if act is None:
        return q
    if isinstance(act, LeakyFixed):
        return ops.leaky_relu_fixed(q, rq.zp_out, act.mult, act.shift, act.rounding, rq.lo, rq.hi)
    return ops.leaky_relu_torch(q, act.s_in, act.zp_in, act.s_out, act.zp_out,
                                act.negative_slope, act.path, act.qmin, act.qmax)


#: IR flavour -> HwAdd semantics.
#: The hardware add semantics of each flavour. zynqnn.quantize's pow2 and fixed16 graphs add as
#: TFLite does (zynqnn.ir.execute: add_tflite, left shift 20, or 15 for 16-bit codes).
_ADD_SEMANTICS = {"torch-fbgemm": "torch", "torch-qnnpack": "qnnpack",
                  "onnxruntime": "onnxruntime", "tflite": "tflite", "pow2": "tflite",
                  "fixed16": "tflite"}


@dataclass
class _Val:
    """What an IR tensor is on the hardware: a hardware tensor seen with the IR's per-sample
    ``shape`` (a view when it differs from the map), or a hardware tensor with a pending ``pad``.

    The IR map (:attr:`map`) may be a part of the hardware tensor: ``slots`` lists the hardware
    channel of each of its channels (None: channel ``c`` is ``c``; the others are padding
    channels, which no layer reads as data: a concatenation's inputs take whole channel blocks),
    ``size`` its ``(H, W)`` when the tensor is larger (the top-left corner: a 1x1 map of several
    channel blocks stored as a row of whole AXI beats, on configs whose words are shorter)."""

    hw: Tensor
    shape: tuple
    pad: tuple | None = None
    pad_value: int | None = None
    slots: np.ndarray | None = None
    size: tuple | None = None
    view: bool = False

    @property
    def map(self) -> tuple[int, int, int]:
        """The IR map ``(C, H, W)`` the hardware tensor holds."""
        c = self.hw.channels if self.slots is None else len(self.slots)
        h, w = (self.hw.height, self.hw.width) if self.size is None else self.size
        return (c, h, w)

    def channel_slots(self) -> np.ndarray:
        """The hardware channel of each IR channel."""
        return np.arange(self.hw.channels) if self.slots is None else self.slots

    @property
    def layout(self) -> dict:
        """``slots`` and ``size``, to bind another IR tensor to the same layout (``view``: the
        slots select or permute channels of a tensor that holds others, see ``_op_slice``)."""
        out = {"slots": self.slots, "size": self.size}
        if self.view:
            out["view"] = True
        return out


# -------------------------------------------------------------------------------------------------
# the lowering


class _Lowering:
    def __init__(self, graph, cfg: HwConfig):
        self.g, self.cfg = graph, cfg
        self.layers: list = []
        self.vals: dict[str, _Val] = {}
        self.prod: dict[int, object] = {}           # id(hw tensor) -> producing layer
        self.range: dict[int, tuple[int, int]] = {}  # id(hw tensor) -> codes it can hold
        self.names: dict[int, list[str]] = {}       # id(hw tensor) -> IR names that are it
        self.in_concat: dict[int, str] = {}         # id(hw tensor) -> the concat it feeds
        self.logical: dict[int, int] = {}           # id(hw tensor) -> channels it was made with
        self.n_aux = 0                              # counter of the lowering's own tensors
        self.net_input: Tensor | None = None
        self.net_input_name: str | None = None
        self.boundary: dict = {}

    # -- tensors -----------------------------------------------------------------------------
    def qparams(self, node, name: str) -> tuple[int, bool]:
        """(zero point, signed) of an activation the hardware holds."""
        t = self.g.tensors[name]
        if not t.is_quantized or t.per_channel:
            raise _fail(node, f"tensor {name!r} ({t.describe()}) is not a per-tensor quantized "
                              "activation")
        if _bits(t.dtype) != self.cfg.operand_bits:
            raise _fail(node, f"tensor {name!r} is {t.dtype}, config {self.cfg.name} "
                              f"({self.cfg.config_id}) has {self.cfg.operand_bits}-bit operands")
        return int(t.zero_point), t.dtype.startswith("int")

    def hw_tensor(self, node, name: str, shape=None) -> Tensor:
        """The hardware tensor of IR tensor ``name`` (``shape``: (C, H, W) when the IR tensor is
        not a 4-D map, e.g. a linear layer's (N, K) output as K x 1 x 1)."""
        zp, signed = self.qparams(node, name)
        t = self.g.tensors[name]
        if shape is None:
            if len(t.shape) != 4:
                raise _fail(node, f"tensor {name!r} must be 4-D NCHW, has shape "
                                  f"{list(t.shape)}")
            shape = t.shape[1:]
        return Tensor(name, *shape, zp, signed)

    def bind(self, name: str, hw: Tensor, shape=None, slots=None, size=None, **kw) -> None:
        """IR tensor ``name`` is ``hw`` (``slots``, ``size``: the part of it, see ``_Val``)."""
        if slots is not None:
            slots = np.asarray(slots, dtype=np.int64)
            if np.array_equal(slots, np.arange(hw.channels)):
                slots = None
        if size is not None and tuple(size) == (hw.height, hw.width):
            size = None
        v = _Val(hw, (), slots=slots, size=None if size is None else tuple(size), **kw)
        v.shape = tuple(v.map if shape is None else shape)
        self.vals[name] = v
        self.logical.setdefault(id(hw), v.map[0])
        self.names.setdefault(id(hw), []).append(name)

    def produce(self, layer, lo: int, hi: int, **layout) -> _Val:
        """Add ``layer``; its output holds codes ``lo..hi`` (``layout``: ``slots``/``size``
        of the IR map in it)."""
        self.layers.append(layer)
        self.prod[id(layer.output)] = layer
        self.range[id(layer.output)] = (int(lo), int(hi))
        self.bind(layer.output.name, layer.output, **layout)
        return self.vals[layer.output.name]

    def unique(self, base: str) -> str:
        """A hardware tensor/layer name not used yet."""
        self.n_aux += 1
        return f"{base}.{self.n_aux}"

    def relayout(self, node, v: _Val, slots=None, channels: int | None = None,
                 what: str = "slots") -> _Val:
        """``v``'s IR map moved into hardware channels ``slots`` (default ``0..C-1``) of a new
        tensor of ``channels`` channels (default ``C``): a 1x1 convolution with 0/1 weights and
        an identity requantization, ``(q - zp) * 1 + zp``, exact on every code (the other
        channels get the zero point). Used where two layouts must meet (an add of a
        concatenation with another tensor), before a depthwise convolution, and to copy a tensor
        that a second concatenation needs in its own place."""
        from zynqnn.numerics import make_requant

        x = v.hw
        c = v.map[0]
        dst = np.arange(c) if slots is None else np.asarray(slots, dtype=np.int64)
        n = c if channels is None else int(channels)
        w = np.zeros((n, x.channels, 1, 1), np.int64)
        w[dst, v.channel_slots(), 0, 0] = 1
        name = self.unique(f"{node.name}.{what}")
        y = Tensor(name, n, x.height, x.width, x.zero_point, x.signed)
        lo, hi = code_range(x.signed, self.cfg.operand_bits)
        rq = make_requant("tflite-single-rounding", 1.0, 1.0, 1.0, x.zero_point, np.array([0]),
                          lo, hi, multiplier=1 << 30, shift=1)
        h, wd = v.map[1:]
        layer = HwConv(name, x, y, w, requant=rq, macs=c * h * wd)
        return self.produce(layer, *self.range[id(x)], slots=dst, size=v.size)

    def only_maps(self, node, name: str, v: _Val) -> None:
        """Refuse an input whose map is only the corner of its hardware tensor (``_Val.size``)
        for a layer that would read the rest."""
        if v.size is not None:
            c, h, w = v.map
            raise _fail(node, f"input {name!r} is a {c}x{h}x{w} map that config {self.cfg.name} "
                              f"stores {v.hw.height}x{v.hw.width} (a row of whole AXI beats); "
                              "only linear layers, 1x1 convolutions, adds, concatenations, "
                              "requantizations and the graph output read it there (configs "
                              "whose words are whole beats, e.g. pynq_z2, take any layer)")

    def val(self, node, name: str, pad_ok: bool = False) -> _Val:
        v = self.vals.get(name)
        if v is None:
            raise _fail(node, f"input {name!r} is not computed on the accelerator (it comes "
                              "from a part of the graph that was not lowered)")
        if v.pad is not None and not pad_ok:
            raise _fail(node, f"input {name!r} is an explicit pad, which the hardware only "
                              "merges into a following conv2d or max_pool2d")
        return v

    def map4(self, node, name: str, pad_ok: bool = False) -> _Val:
        v = self.val(node, name, pad_ok)
        if v.shape != v.map:
            raise _fail(node, f"input {name!r} is a reshaped view {list(v.shape)} of the "
                              f"{'x'.join(map(str, v.map))} map {v.hw.name!r}; only "
                              "linear layers and the graph output may consume reshaped maps")
        return v

    def uses(self, hw: Tensor) -> int:
        """IR consumers (and graph outputs) of the IR names bound to ``hw``, not counting the
        views and dropped clamps that are ``hw`` themselves."""
        names = set(self.names.get(id(hw), []))
        n = 0
        for name in names:
            n += name in self.g.outputs
            n += sum(1 for c in self.g.consumers(name) if not names & set(c.outputs))
        return n

    def weights(self, node, w) -> np.ndarray:
        zp = np.asarray(w.zero_point, dtype=np.int64)
        data = np.asarray(w.data, dtype=np.int64)
        if zp.ndim:
            zp = zp.reshape((-1,) + (1,) * (data.ndim - 1))
        q = data - zp
        lo, hi = -(1 << (self.cfg.operand_bits - 1)), (1 << (self.cfg.operand_bits - 1)) - 1
        if q.size and (q.min() < lo or q.max() > hi):
            raise _fail(node, f"weights minus their zero point span {q.min()}..{q.max()}, "
                              f"beyond the array's signed {self.cfg.operand_bits}-bit operands")
        return q

    def requant(self, node):
        from zynqnn.ir import node_requant

        rq = node_requant(self.g, node)
        c = node.attrs.get("clamp")
        if c is not None:
            rq = _narrowed(node, rq, int(c[0]), int(c[1]))
        return rq

    # -- ops ---------------------------------------------------------------------------------
    def lower(self, node) -> None:
        fn = getattr(self, "_op_" + node.op, None)
        if fn is None:
            raise _fail(node, "not supported by the accelerator (no hardware layer for this op)")
        fn(node)

    def _op_quantize(self, node):
        if node.inputs[0] not in self.g.inputs:
            raise _fail(node, "a quantize inside the graph (only the graph input is quantized; "
                              "the hardware keeps codes between layers)")
        out = self.g.tensors[node.outputs[0]]
        hw = self.hw_tensor(node, node.outputs[0])
        self.net_input = hw
        self.net_input_name = node.outputs[0]
        self.range[id(hw)] = (out.qmin, out.qmax)
        self.bind(node.outputs[0], hw)
        self.boundary.update(
            input_name=node.inputs[0], input_shape=tuple(out.shape[1:]), input_dtype=out.dtype,
            input_qmin=out.qmin, input_qmax=out.qmax, input_scale=float(out.scale),
            input_zero_point=int(out.zero_point), input_flavour=node.flavour,
            input_rounding=node.attrs.get("rounding"), input_overflow=node.attrs.get("overflow"))

    def _op_dequantize(self, node):
        if node.outputs[0] not in self.g.outputs:
            raise _fail(node, "a dequantize inside the graph (float tensors between layers are "
                              "not supported; only the graph output is dequantized)")
        self.val(node, node.inputs[0])

    def _op_requantize(self, node):
        x, out = self.g.tensors[node.inputs[0]], self.g.tensors[node.outputs[0]]
        if x.same_qparams(out):
            v = self.val(node, node.inputs[0])
            self.bind(node.outputs[0], v.hw, v.shape, **v.layout)
            return
        v = self.map4(node, node.inputs[0])
        zp, signed = self.qparams(node, node.outputs[0])
        if v.view:   # a part of a split (or a shuffled map): rescaled into a compact tensor
            y = Tensor(node.outputs[0], v.map[0], v.hw.height, v.hw.width, zp, signed)
            self._code_map(node, node.name, v.hw, x, out, y, select=v.channel_slots(),
                           size=v.size)
            return
        y = Tensor(node.outputs[0], *v.hw.shape, zp, signed)
        self._code_map(node, node.name, v.hw, x, out, y, **v.layout)

    def _code_map(self, node, name: str, x: Tensor, ir_in, ir_out, y: Tensor,
                  select=None, **layout) -> None:
        """``y = f(x)`` for the node's code-to-code map ``f`` (a requantization to other qparams)
        as a 1x1 convolution with identity weights and a requantization equal to ``f`` on every
        code ``x`` can hold (``layout``: the IR map's part of ``x`` and ``y``)."""
        from zynqnn.ir.execute import KERNELS

        lo, hi = self.range[id(x)]
        codes = np.arange(lo, hi + 1, dtype=np.int64)
        ref = np.asarray(KERNELS[node.op](self.g, node, [codes.reshape(1, 1, 1, -1)], [ir_in],
                                          ir_out, False)).reshape(-1)
        rq = _solve_map(codes - x.zero_point, ref, float(ir_in.scale) / float(ir_out.scale),
                        y.zero_point, int(ir_out.qmin), int(ir_out.qmax))
        if rq is None:
            raise _fail(node, f"no requantization of the hardware reproduces the {node.flavour} "
                              f"rescaling {ir_in.describe()} -> {ir_out.describe()} on every "
                              "code")
        if select is None:
            eye = np.eye(x.channels, dtype=np.int64).reshape(x.channels, x.channels, 1, 1)
        else:   # y's channel c is x's channel select[c] (a compact copy of a view)
            eye = np.zeros((len(select), x.channels, 1, 1), np.int64)
            eye[np.arange(len(select)), np.asarray(select), 0, 0] = 1
        self.produce(HwConv(name, x, y, eye, requant=rq), int(ref.min()), int(ref.max()),
                     **layout)

    def _op_flatten(self, node):
        v = self.val(node, node.inputs[0])
        self.bind(node.outputs[0], v.hw, self.g.tensors[node.outputs[0]].shape[1:], **v.layout)

    _op_reshape = _op_flatten

    def _op_pad(self, node):
        v = self.map4(node, node.inputs[0])
        self.only_maps(node, node.inputs[0], v)
        value = node.attrs.get("value")
        self.bind(node.outputs[0], v.hw, pad=_pads(node.attrs.get("pads")),
                  pad_value=v.hw.zero_point if value is None else int(value), slots=v.slots)

    def _op_slice(self, node):
        """A channel range of the input: no layer. The output is the input's hardware tensor
        seen through the range's slots (``_Val.slots``); its consumers read those channels
        (convolutions and linear layers by their weights, per-channel layers in place), so a
        split costs nothing unless a layout forces a copy (a concatenation, a depthwise layer,
        an add: see ``_op_concat``, ``relayout``)."""
        a = node.attrs
        x = self.g.tensors[node.inputs[0]]
        axis = int(a.get("axis", 1))
        if len(x.shape) != 4 or axis != 1:
            raise _fail(node, f"a slice on axis {axis} of a {len(x.shape)}-D tensor; the "
                              "hardware splits channels (axis 1 of an NCHW map) only")
        v = self.map4(node, node.inputs[0])
        slots = v.channel_slots()[int(a["start"]):int(a["end"])]
        self.bind(node.outputs[0], v.hw, slots=slots, size=v.size, view=True)

    def _op_channel_shuffle(self, node):
        """A channel permutation: no layer, the output's slots are the input's permuted (the
        consumers' weights follow them)."""
        from zynqnn.ir.execute import shuffle_perm

        v = self.map4(node, node.inputs[0])
        perm = shuffle_perm(v.map[0], int(node.attrs["groups"]))
        self.bind(node.outputs[0], v.hw, slots=v.channel_slots()[perm], size=v.size, view=True)

    def _op_batch_norm(self, node):
        """A stand-alone quantized BatchNorm (+ ReLU): per channel a code-to-code map (the
        node's ``table``, measured from the framework's kernel). It runs as a 1x1 convolution
        with one weight per channel (diagonal; the input's slots as for any convolution) and a
        per-channel TFLite single-rounding Requant whose constants ``_solve_channel`` finds so
        that the layer equals the table on every code the input can hold; refused naming the
        channel when none does."""
        from zynqnn.numerics import make_requant

        v = self.map4(node, node.inputs[0])
        self.only_maps(node, node.inputs[0], v)
        out = self.g.tensors[node.outputs[0]]
        table = np.asarray(node.attrs["table"], dtype=np.int64)
        lo, hi = self.range[id(v.hw)]
        in_lo = int(node.attrs["in_lo"])
        codes = np.arange(lo, hi + 1)
        k = codes - v.hw.zero_point
        c = table.shape[0]
        zp, signed = self.qparams(node, node.outputs[0])
        qmin, qmax = int(out.qmin), int(out.qmax)
        ws, bs, qs, shs, copies = [], [], [], [], []
        for ch in range(c):
            target = table[ch, codes - in_lo]
            # the offset's resolution is slope / |w|: a channel whose codes need a finer one
            # reads its input from m slots (weights 127 each, an extra copy layer)
            for m in (1, 2, 3, 4):
                sol = _solve_channel(k, target, zp, qmin, qmax, wmax=127 * m)
                if sol is not None:
                    break
            if sol is None:
                raise _fail(node, f"channel {ch}: no weight of at most 4 x 127 and "
                                  "requantization of the hardware reproduces the "
                                  f"{node.flavour} BatchNorm's codes on the input codes "
                                  f"{lo}..{hi}")
            ws.append(sol[0]), bs.append(sol[1]), qs.append(sol[2]), shs.append(sol[3])
            copies.append(m if sol[0] else 1)
        rq = make_requant("tflite-single-rounding", 1.0, 1.0, 1.0, zp, np.array(bs), qmin, qmax,
                          multiplier=np.array(qs), shift=np.array(shs))
        got = rq.apply(np.asarray(ws)[:, None] * k[None, :], axis=0)
        if not np.array_equal(got, table[:, codes - in_lo]):
            raise AssertionError(f"{node.name}: the solved BatchNorm differs from its table")
        extra = [ch for ch in range(c) for _ in range(copies[ch] - 1)]
        w = np.zeros((c, c + len(extra), 1, 1), np.int64)
        for ch in range(c):
            w[ch, ch, 0, 0] = ws[ch] // copies[ch]
        for j, ch in enumerate(extra):
            w[ch, c + j, 0, 0] = ws[ch] // copies[ch]
        if extra:
            v = self._duplicate(node, v, list(range(c)) + extra)
        y = self.hw_tensor(node, node.outputs[0])
        self._conv_layer(node, v, w, 1, (0, 0, 0, 0), rq, y)
        got = table[:, codes - in_lo]
        self.range[id(y)] = (int(got.min()), int(got.max()))

    def _duplicate(self, node, v: _Val, channels: list) -> _Val:
        """A compact copy of ``v`` whose channel ``j`` is ``v``'s IR channel ``channels[j]``
        (channels may repeat): a 1x1 convolution with 0/1 weights and the identity
        requantization, as ``relayout``."""
        from zynqnn.numerics import make_requant

        x = v.hw
        src = v.channel_slots()[np.asarray(channels)]
        n = len(channels)
        w = np.zeros((n, x.channels, 1, 1), np.int64)
        w[np.arange(n), src, 0, 0] = 1
        name = self.unique(f"{node.name}.copies")
        y = Tensor(name, n, x.height, x.width, x.zero_point, x.signed)
        lo, hi = code_range(x.signed, self.cfg.operand_bits)
        rq = make_requant("tflite-single-rounding", 1.0, 1.0, 1.0, x.zero_point, np.array([0]),
                          lo, hi, multiplier=1 << 30, shift=1)
        return self.produce(HwConv(name, x, y, w, requant=rq), *self.range[id(x)])

    def _op_transpose(self, node):
        raise _fail(node, f"transpose {list(node.attrs.get('perm', []))} is not supported: the "
                          "hardware keeps maps in NCHW order; a channel shuffle (reshape to (N, "
                          "g, C/g, H, W), transpose(1, 2), reshape back) is taken when it comes "
                          "as that pattern")

    def _conv_layer(self, node, v: _Val, w: np.ndarray, stride: int, pads, rq, y: Tensor,
                    groups: int = 1, saturate_pairs: bool = False, size=None):
        """An HwConv of ``w`` (K, C, kh, kw) over ``v``; kernels made square by zero rows or
        columns at the bottom/right (the padding grows there so the output size is kept). The
        input channels of ``w`` are the IR map's: they go to their hardware channels
        (``v.slots``), the padding channels get zero weights. ``size``: the IR map's part of
        ``y`` (see ``_Val``)."""
        kout, cin, kh, kw = w.shape
        k = max(kh, kw)
        t, b, left, r = pads
        macs = None
        if v.slots is not None and groups == 1:
            wide = np.zeros((kout, v.hw.channels, kh, kw), dtype=np.int64)
            wide[:, v.slots] = w
            oh, ow = (y.height, y.width) if size is None else size
            w, macs = wide, kout * cin * kh * kw * oh * ow
        if (kh, kw) != (k, k):
            sq = np.zeros(w.shape[:2] + (k, k), dtype=np.int64)
            sq[:, :, :kh, :kw] = w
            w, b, r = sq, b + k - kh, r + k - kw
        if y.zero_point != rq.zp_out:
            raise _fail(node, f"output zero point {y.zero_point} differs from the "
                              f"requantization's {rq.zp_out}")
        layer = HwConv(node.name, v.hw, y, w, stride=stride, padding=(t, b, left, r), requant=rq,
                       groups=groups, saturate_pairs=saturate_pairs, macs=macs)
        self.produce(layer, rq.lo, rq.hi, size=size)
        return layer

    def _op_conv2d(self, node):
        a = node.attrs
        v = self.val(node, node.inputs[0], pad_ok=True)
        if v.shape != v.map:
            self.map4(node, node.inputs[0])
        w = self.g.tensors[node.inputs[1]]
        groups = int(a.get("groups", 1))
        # Grouped (not depthwise) convolutions run as one convolution whose weights are zero
        # between groups (block diagonal): the same sums, groups times the MACs.
        grouped = groups != 1 and not (groups == v.map[0] == w.shape[0] and w.shape[1] == 1)
        if grouped and (v.map[0] % groups or w.shape[0] % groups
                        or w.shape[1] * groups != v.map[0]):
            raise _fail(node, f"groups = {groups} does not divide the {v.map[0]} input and "
                              f"{w.shape[0]} output channels (weights {list(w.shape)})")
        if groups != 1 and not grouped and v.slots is not None:
            # a depthwise layer keeps every channel in place: its requantization constants
            # would need padding channels too; the channels are packed first (a pending
            # explicit pad stays pending)
            v = dataclasses.replace(self.relayout(node, v, what="packed"), pad=v.pad,
                                    pad_value=v.pad_value)
        sh = _square_stride(node, a)
        pads = _pads(a.get("padding"))
        if v.pad is not None:
            if v.pad_value != v.hw.zero_point:
                raise _fail(node, f"its input is padded with {v.pad_value}, not the zero point "
                                  f"{v.hw.zero_point} (the hardware pads convolutions with the "
                                  "zero point)")
            pads = tuple(p + q for p, q in zip(pads, v.pad, strict=True))
        wq = self.weights(node, w)
        if grouped:
            wq, groups = _block_diagonal(wq, groups), 1
        pairs = groups != 1 and self._fbgemm_pairs_saturate(node, v, wq)
        if self._patches_on_host(node, v, wq, sh, pads, groups):
            return
        y, size = self.hw_tensor(node, node.outputs[0]), None
        if v.size is not None:   # a 1x1 map stored as a row: 1x1 kernels keep it so
            if (wq.shape[2:], sh, any(pads), groups) != ((1, 1), 1, False, 1):
                self.only_maps(node, node.inputs[0], v)
            y, size = Tensor(y.name, y.channels, *v.hw.shape[1:], y.zero_point, y.signed), v.size
        self._conv_layer(node, v, wq, sh, pads, self.requant(node), y, groups=groups,
                         saturate_pairs=pairs, size=size)

    def _op_conv_transpose2d(self, node):
        """A transposed convolution: its weights ``(C, K/g, kh, kw)`` as ``(K, C, kh, kw)``
        (block-diagonal for groups). Stride 1 is the ordinary convolution with the kernel
        flipped and padding ``k - 1 - p`` (when that is not negative); other strides run as
        :class:`HwConvTranspose` (``compile._Compiler.conv_transpose``: one stride-1
        convolution per output phase)."""
        a = node.attrs
        v = self.map4(node, node.inputs[0])
        self.only_maps(node, node.inputs[0], v)
        sh = _square_stride(node, a)
        t, b, left, r = _pads(a.get("padding"))
        oph, opw = _pair(a.get("output_padding"), 0)
        wq = self.weights(node, self.g.tensors[node.inputs[1]])
        groups = int(a.get("groups", 1))
        c, kg, kh, kw = wq.shape
        cg = c // groups
        w = np.zeros((kg * groups, c, kh, kw), np.int64)
        for g in range(groups):
            w[g * kg:(g + 1) * kg, g * cg:(g + 1) * cg] = \
                wq[g * cg:(g + 1) * cg].transpose(1, 0, 2, 3)
        rq = self.requant(node)
        y = self.hw_tensor(node, node.outputs[0])
        if y.zero_point != rq.zp_out:
            raise _fail(node, f"output zero point {y.zero_point} differs from the "
                              f"requantization's {rq.zp_out}")
        b, r = b - oph, r - opw      # output_padding: rows/columns only the bias reaches
        pads = (kh - 1 - t, kh - 1 - b, kw - 1 - left, kw - 1 - r)
        if sh == 1 and min(pads) >= 0:
            self._conv_layer(node, v, np.ascontiguousarray(w[:, :, ::-1, ::-1]), 1, pads, rq,
                             y)
            return
        macs = kg * cg * kh * kw * v.map[1] * v.map[2] * groups
        if v.slots is not None:
            wide = np.zeros((w.shape[0], v.hw.channels, kh, kw), np.int64)
            wide[:, v.slots] = w
            w = wide
        layer = HwConvTranspose(node.name, v.hw, y, w, stride=sh, padding=(t, b, left, r),
                                requant=rq, macs=macs)
        self.produce(layer, rq.lo, rq.hi)

    def _patches_on_host(self, node, v, wq, stride, pads, groups) -> bool:
        """The first convolution over few input channels (an RGB stem uses 3 of the array's R
        rows): when it alone reads the graph input, the host gathers each output pixel's window
        into channels (:meth:`BoundaryInfo.to_network`) and the layer runs as a 1x1 convolution,
        ``ceil(k*k*C / R)`` passes per output block instead of ``k*k * ceil(C / R)``. Integer
        sums are order-free and the padding holds the zero point either way, so the result is
        the same. Returns whether it did."""
        x, R = v.hw, self.cfg.rows
        _, c, kh, kw = wq.shape
        if (x is not self.net_input or node.inputs[0] != self.net_input_name or groups != 1
                or v.pad is not None or v.shape != x.shape or kh != kw or kh == 1
                or node.inputs[0] in self.g.outputs
                or sum(node.inputs[0] in n.inputs for n in self.g.nodes) != 1
                or -(-kh * kw * c // R) >= kh * kw * -(-c // R)):
            return False
        k = kh
        t, b, left, r = pads
        oh = (x.height + t + b - k) // stride + 1
        ow = (x.width + left + r - k) // stride + 1
        patches = Tensor(x.name, k * k * c, oh, ow, x.zero_point, x.signed)
        self.net_input = patches
        self.range[id(patches)] = self.range[id(x)]
        self.boundary["input_patches"] = [k, stride, t, b, left, r]
        w = wq.transpose(0, 2, 3, 1).reshape(wq.shape[0], k * k * c, 1, 1)
        self._conv_layer(node, _Val(patches, patches.shape), w, 1, (0, 0, 0, 0),
                         self.requant(node), self.hw_tensor(node, node.outputs[0]))
        return True

    def _fbgemm_pairs_saturate(self, node, v, wq) -> bool:
        """Whether the layer must run fbgemm's saturating tap pairs (``isa.Mode.DW_PAIRS`` /
        ``PAIRS``): it takes fbgemm's depthwise kernel (``zynqnn.numerics.ops.
        fbgemm_depthwise_path``, which adds the raw-code products of taps 2m and 2m+1 in
        saturating int16) and some pair can reach beyond int16 for an input code the producer
        can emit (padding holds the zero point, also inside that range). Otherwise the exact
        sums are fbgemm's and the exact modes run it."""
        from zynqnn.ir.execute import fbgemm_saturates

        if not fbgemm_saturates(self.g, node):
            return False
        w = self.g.tensors[node.inputs[1]]
        raw = np.asarray(w.data, dtype=np.int64).reshape(wq.shape[0], -1)
        lo, hi = self.range.get(id(v.hw), (0, 255))
        lo, hi = min(lo, v.hw.zero_point), max(hi, v.hw.zero_point)
        if raw.shape[1] % 2:
            raw = np.concatenate([raw, np.zeros((raw.shape[0], 1), np.int64)], axis=1)
        w1, w2 = raw[:, 0::2], raw[:, 1::2]
        top = np.where(w1 > 0, hi, lo) * w1 + np.where(w2 > 0, hi, lo) * w2
        bottom = np.where(w1 > 0, lo, hi) * w1 + np.where(w2 > 0, lo, hi) * w2
        return bool(top.max() > 32767 or bottom.min() < -32768)

    def _beat_row(self) -> int:
        """Words of the shortest row of whole AXI beats (1 when a word is whole beats)."""
        from math import gcd

        beat = self.cfg.axi_data_bits // 8
        return beat // gcd(beat, self.cfg.rows * self.cfg.operand_bits // 8)

    def _op_linear(self, node):
        """A matrix-vector product over the flattened map (flatten order (C, H, W), as PyTorch
        and ONNX flatten NCHW). A map of at most ``max_kernel`` pixels a side: a ``k x k``
        convolution over it applied once (``k = max(H, W)``, zero-padded when not square); a
        1x1 map is a 1x1 convolution. Larger maps: :meth:`_flat_linear`. The output is a
        ``K x 1 x 1`` map, or ``K x 1 x row`` (value in the first pixel) where a 1x1 map of
        several channel blocks would break the AXI beats (``_beat_row``)."""
        v = self.val(node, node.inputs[0])
        x = v.hw
        c, h, wd = v.map
        w = self.weights(node, self.g.tensors[node.inputs[1]])
        kout = w.shape[0]
        if w.shape[1] != c * h * wd:
            raise _fail(node, f"takes {w.shape[1]} features, its input is the {c}x{h}x{wd} "
                              f"map {x.name!r}")
        cfg = self.cfg
        rq = self.requant(node)
        zp, signed = self.qparams(node, node.outputs[0])
        row = self._beat_row()
        ow = row if row > 1 and kout > cfg.rows else 1
        k = max(h, wd)
        w4 = w.reshape(kout, c, h, wd)  # flatten order is (C, H, W)
        if v.size is not None:   # a 1x1 map stored as a row: a 1x1 convolution keeps it so
            y = Tensor(node.outputs[0], kout, x.height, x.width, zp, signed)
            self._conv_layer(node, v, w4, 1, (0, 0, 0, 0), rq, y, size=(1, 1))
        elif k <= cfg.max_kernel and ow == 1 and k * k * cfg.rows <= cfg.weight_buffer_depth:
            y = Tensor(node.outputs[0], kout, 1, 1, zp, signed)
            self._conv_layer(node, v, w4, 1, (0, 0, 0, 0), rq, y)
        else:
            self._flat_linear(node, v, w4, rq, Tensor(node.outputs[0], kout, 1, ow, zp, signed))
        self.vals[node.outputs[0]].shape = tuple(self.g.tensors[node.outputs[0]].shape[1:])

    def _flat_linear(self, node, v: _Val, w4: np.ndarray, rq, y: Tensor) -> None:
        """A linear layer over any map: the map's ``NHWC<R>`` words in DDR (channel block, row,
        column; one word = the R channels of a pixel) are read as a map of ``n`` channel blocks
        of one row of ``row`` words (:class:`HwView`: no copy, ``row`` = 1 unless a word is
        shorter than an AXI beat), and the layer is a convolution over it whose weights follow
        the words: the weight of feature ``(c, y, x)`` (PyTorch's flatten order) goes to word
        ``((p // R) * H + y) * W + x``, lane ``p % R``, of hardware channel ``p`` (``c``, or
        its slot), the padding channels' lanes get 0. ``row`` = 1: a 1x1 convolution over
        ``H * W * ceil(C / R) * R`` channels; ``row`` = 2 (``tiny``): a 2x2 kernel whose first
        row covers a view row (the second reads bottom padding)."""
        cfg, R = self.cfg, self.cfg.rows
        x = v.hw
        c, h, wd = v.map
        kout = w4.shape[0]
        row = self._beat_row()
        if row > cfg.max_kernel:
            raise _fail(node, f"config {cfg.name}: a row of whole AXI beats is {row} words, "
                              f"above max_kernel = {cfg.max_kernel}")
        words = -(-x.channels // R) * x.height * x.width
        nb = -(-words // row)
        view = Tensor(self.unique(f"{node.name}.words"), nb * R, 1, row, x.zero_point, x.signed)
        self.layers.append(HwView(view.name, x, view, R))
        self.range[id(view)] = self.range[id(x)]
        ci, yi, xi = (a.reshape(-1) for a in np.indices((c, h, wd)))
        p = v.channel_slots()[ci]
        word = ((p // R) * x.height + yi) * x.width + xi
        wv = np.zeros((kout, nb * R, row, row), np.int64)
        wv[:, word // row * R + p % R, 0, word % row] = w4.reshape(kout, -1)
        if y.zero_point != rq.zp_out:
            raise _fail(node, f"output zero point {y.zero_point} differs from the "
                              f"requantization's {rq.zp_out}")
        layer = HwConv(node.name, view, y, wv, padding=(0, row - 1, 0, y.width - 1), requant=rq,
                       macs=kout * c * h * wd)
        self.produce(layer, rq.lo, rq.hi, size=(1, 1))

    def _op_max_pool2d(self, node):
        a = node.attrs
        v = self.val(node, node.inputs[0], pad_ok=True)
        if v.shape != v.map:
            self.map4(node, node.inputs[0])
        self.only_maps(node, node.inputs[0], v)
        x = v.hw
        kh, kw = _pair(a.get("kernel"), None)
        sh, sw = _pair(a.get("stride"), (kh, kw))
        if kh != kw or sh != sw:
            raise _fail(node, f"kernel {[kh, kw]} / stride {[sh, sw]}: the hardware pools "
                              "square windows with equal strides")
        if _pair(a.get("dilation"), 1) != (1, 1):
            raise _fail(node, "dilated max pooling is not supported")
        lo, hi = self.range[id(x)]
        pads = list(_pads(a.get("padding")))
        pad_value = a.get("pad_value")
        if v.pad is not None:
            if any(pads) and not (pad_value is None and v.pad_value <= lo):
                raise _fail(node, "an explicit pad before a max pooling with its own padding")
            pads = [p + q for p, q in zip(pads, v.pad, strict=True)]
            pad_value = v.pad_value
        # pad_min: padding never wins (-inf, or a value at most the lowest code x can hold).
        pad_min = pad_value is None or int(pad_value) <= lo
        if not pad_min and int(pad_value) != x.zero_point:
            raise _fail(node, f"padding value {pad_value}: the hardware pads max pooling with "
                              f"-infinity or the zero point ({x.zero_point})")
        out = self.g.tensors[node.outputs[0]]
        oh, ow = out.shape[2], out.shape[3]
        eh = max(0, (oh - 1) * sh + kh - (x.height + pads[0] + pads[1]))
        ew = max(0, (ow - 1) * sw + kw - (x.width + pads[2] + pads[3]))
        if eh or ew:  # ceil_mode: windows past the input ignore the missing positions
            if not pad_min:
                raise _fail(node, "ceil_mode with zero-point padding (the windows past the "
                                  "input ignore their missing positions, the hardware pads)")
            pads[1] += eh
            pads[3] += ew
        y = self.hw_tensor(node, node.outputs[0], (x.channels, oh, ow))
        if sh > 2:
            x, kh, sh, pads = self._max_pool_stride(node, x, y, kh, sh, pads, pad_min, lo, hi,
                                                    v.slots)
        layer = HwMaxPool(node.name, x, y, kh, sh, tuple(pads), pad_min)
        if pad_min:
            self.produce(layer, lo, hi, slots=v.slots)
        else:
            self.produce(layer, min(lo, x.zero_point), max(hi, x.zero_point), slots=v.slots)

    def _max_pool_stride(self, node, x, y, k, s, pads, pad_min, lo, hi, slots):
        """Max pooling with a stride 2^n above 2 as hardware poolings of stride 1 or 2:
        non-overlapping windows (kernel = stride, no padding) as n 2x2/2 poolings (the max of
        maxes of aligned 2x2 blocks); otherwise the k x k pooling at stride 1, then 1x1 windows
        at stride 2 (subsampling) n - 1 times. Returns the last pooling's ``(input, kernel,
        stride, padding)``; the earlier ones are added here."""
        n = s.bit_length() - 1
        if s != 1 << n:
            raise _fail(node, f"stride {s}: the hardware pools with strides 1 and 2 (and "
                              "powers of two as a chain of them)")
        if k == s and not any(pads):
            stages = [(2, 2, (0, 0, 0, 0))] * n
        else:
            # the stride-1 pooling must give every row/column the subsampling reads:
            # (out - 1) * s + 1 of them (ceil_mode's windows past the input are padded)
            need_h, need_w = (y.height - 1) * s + 1, (y.width - 1) * s + 1
            t, b, left, r = pads
            b += max(0, need_h - (x.height + t + b - k + 1))
            r += max(0, need_w - (x.width + left + r - k + 1))
            if (b, r) != (pads[1], pads[3]) and not pad_min:
                raise _fail(node, "ceil_mode with zero-point padding (the windows past the "
                                  "input ignore their missing positions, the hardware pads)")
            stages = [(k, 1, (t, b, left, r))] + [(1, 2, (0, 0, 0, 0))] * n
        for i, (kk, ss, pp) in enumerate(stages[:-1]):
            t, b, left, r = pp
            h = (x.height + t + b - kk) // ss + 1
            w = (x.width + left + r - kk) // ss + 1
            mid = Tensor(f"{y.name}.s{i}", x.channels, h, w, x.zero_point, x.signed)
            layer = HwMaxPool(f"{node.name}.{i}", x, mid, kk, ss, pp, pad_min)
            if pad_min:
                self.produce(layer, lo, hi, slots=slots)
            else:
                self.produce(layer, min(lo, x.zero_point), max(hi, x.zero_point), slots=slots)
            x = mid
        k, s, pads = stages[-1]
        return x, k, s, list(pads)

    def _op_upsample_nearest(self, node):
        fh, fw = _pair(node.attrs.get("scale"), None)
        v = self.map4(node, node.inputs[0])
        if fh != fw or fh < 1 or fh & (fh - 1):
            raise _fail(node, f"scale {[fh, fw]}: the hardware upsamples by 2 (factors 2^k "
                              "in both directions)")
        x = v.hw
        if fh == 1:
            self.bind(node.outputs[0], x, **v.layout)
            return
        self.only_maps(node, node.inputs[0], v)
        lo, hi = self.range[id(x)]
        y_final = self.hw_tensor(node, node.outputs[0], (x.channels, fh * x.height,
                                                         fh * x.width))
        steps = fh.bit_length() - 1
        for i in range(steps):
            last = i == steps - 1
            y = y_final if last else Tensor(f"{node.outputs[0]}.x{2 << i}", x.channels,
                                            x.height * 2, x.width * 2, x.zero_point, x.signed)
            name = node.name if steps == 1 else f"{node.name}.{i}"
            self.produce(HwUpsample2x(name, x, y), lo, hi, slots=v.slots)
            x = y

    def _op_concat(self, node):
        out = self.g.tensors[node.outputs[0]]
        axis = int(node.attrs.get("axis", 1))
        if axis % len(out.shape) != 1:
            raise _fail(node, f"concatenation on axis {axis}; the hardware concatenates channels")
        zp, signed = self.qparams(node, node.outputs[0])
        R = self.cfg.rows
        raw = [(name, self.map4(node, name)) for name in node.inputs]
        merged = self._concat_views(node, raw, out)
        vals: list[_Val] = []
        for i, (name, v) in enumerate(raw):
            t = self.g.tensors[name]
            hw = v.hw
            if i in merged:
                if merged[i] is not None:
                    vals.append(merged[i])
                continue
            if not t.same_qparams(out):
                # Requantized into the output's qparams by a layer of its own (the framework's
                # concat rescales such inputs); a view of some channels of a larger tensor
                # (a split) is taken out compactly by the same layer.
                self.qparams(node, name)
                rname = f"{node.name}.{name}"
                if rname in self.vals:
                    rname = self.unique(rname)
                if v.view:
                    r = Tensor(rname, v.map[0], hw.height, hw.width, zp, signed)
                    self._code_map(node, rname, hw, t, out, r, select=v.channel_slots(),
                                   size=v.size)
                else:
                    r = Tensor(rname, *hw.shape, zp, signed)
                    self._code_map(node, rname, hw, t, out, r, **v.layout)
                v = self.vals[rname]
            elif v.view:
                # some channels of a tensor that holds others (a split's part, a shuffle):
                # a compact copy of its own (the whole tensor would nest into this one)
                v = self.relayout(node, v, what="copy")
            elif id(hw) in self.in_concat or any(hw is u.hw for u in vals):
                # stored in another concatenation already (or twice in this one): a copy of its
                # own goes here
                v = self.relayout(node, v, v.slots, hw.channels, what="copy")
            vals.append(v)
        if len({(v.hw.height, v.hw.width) for v in vals}) > 1:
            sizes = ", ".join(f"{v.hw.height}x{v.hw.width}" for v in vals)
            raise _fail(node, f"its inputs are stored as maps of different sizes ({sizes}; a 1x1 "
                              f"map of several channel blocks is a row of whole AXI beats on "
                              f"config {self.cfg.name}); configs whose words are whole beats, "
                              "e.g. pynq_z2, take it")
        # Logical channels to physical slots: every input starts a channel block; an input of
        # C channels takes ceil(C / R) blocks, the rest of its last block is padding (no layer
        # reads it: the consumers' weights there are 0; the graph output is gathered).
        starts, off = [], 0
        for v in vals:
            starts.append(off)
            off += -(-v.hw.channels // R) * R
        packed = all(v.hw.channels % R == 0 for v in vals[:-1])
        slots = np.concatenate([s0 + v.channel_slots() for s0, v in zip(starts, vals,
                                                                          strict=True)])
        first = vals[0].hw
        y = Tensor(node.outputs[0], starts[-1] + vals[-1].hw.channels, first.height,
                   first.width, zp, signed)
        ins = [v.hw for v in vals]
        for hw in ins:
            self.in_concat[id(hw)] = node.name
        lo = min(self.range[id(h)][0] for h in ins)
        hi = max(self.range[id(h)][1] for h in ins)
        self.produce(HwConcat(node.name, ins, y, None if packed else starts), lo, hi,
                     slots=slots, size=vals[0].size)

    def _concat_views(self, node, raw, out) -> dict:
        """Consecutive inputs of a concatenation that are views of one hardware tensor (the
        parts of a split, in order or not: YOLOv8's C2f concatenates both halves of ``chunk``)
        and together hold all its channels, each once, stay where they are: the tensor is
        placed once and the output's slots follow the inputs' (zero cost). Returns ``{input
        index: merged _Val}`` for the first input of each such run and ``{index: None}`` for
        the others; inputs not listed are placed one by one (a view alone is copied)."""
        merged: dict = {}
        i = 0
        while i < len(raw):
            j = i + 1
            hw = raw[i][1].hw
            while j < len(raw) and raw[j][1].hw is hw:
                j += 1
            run = raw[i:j]
            if any(v.view for _, v in run) and all(
                    self.g.tensors[name].same_qparams(out) for name, _ in run):
                slots = np.concatenate([v.channel_slots() for _, v in run])
                placed = id(hw) in self.in_concat or any(
                    v.hw is hw for k, (_, v) in enumerate(raw) if not i <= k < j)
                if (not placed and len(set(slots.tolist())) == len(slots)
                        and len(slots) == self.logical.get(id(hw), -1)
                        and len({v.size for _, v in run}) == 1):
                    merged[i] = _Val(hw, (len(slots),) + tuple(run[0][1].map[1:]),
                                     slots=slots, size=run[0][1].size)
                    merged.update({k: None for k in range(i + 1, j)})
            i = j
        return merged

    def _op_add(self, node):
        self._lower_add(node)

    def _torch_scalar_tail(self, t, x: Tensor, tail: int):
        """First channel of PyTorch's scalar tail when the last ``tail`` elements (memory order)
        are whole channel blocks of the hardware (``HwAdd.scalar_from``), else None."""
        c, h, w = x.shape
        hw = h * w
        if hw > 1 and t.layout == "nhwc":
            return None              # the tail is the last pixels' channels: parts of words
        if tail % hw or (c - tail // hw) % self.cfg.rows:
            return None
        return c - tail // hw

    def _torch_tail_mask(self, t, v: _Val, tail: int):
        """PyTorch's scalar tail of an NHWC tensor (its last ``tail`` elements in memory
        order: the last pixels' channels) as a (channels, height, width) mask over the hardware
        tensor of ``v``, when it is whole words (each word's channels all in it or all out);
        else None. Padding channels follow the real channels of their word."""
        if t.layout != "nhwc" or v.size is not None:
            return None
        c, h, w = v.map
        hwt = v.hw
        R = self.cfg.rows
        first = c * h * w - tail
        tailed = (np.arange(h * w)[None, :] * c + np.arange(c)[:, None]) >= first   # (C, HW)
        mask = np.zeros((hwt.channels, h * w), dtype=bool)
        slots = v.channel_slots()
        for cb in range(-(-hwt.channels // R)):
            mine = (slots >= cb * R) & (slots < (cb + 1) * R)
            if not mine.any():
                continue
            rows = tailed[mine]
            if not np.array_equal(rows.all(axis=0), rows.any(axis=0)):
                return None
            mask[cb * R:(cb + 1) * R] = rows.any(axis=0)
        return mask.reshape(hwt.channels, h, w)

    def _lower_add(self, node):
        """An :class:`HwAdd` in the flavour's add semantics (ELTWISE commands)."""
        va, vb = (self.map4(node, n) for n in node.inputs[:2])
        ta, tb = (self.g.tensors[n] for n in node.inputs[:2])
        out = self.g.tensors[node.outputs[0]]
        fl = node.flavour
        sem = _ADD_SEMANTICS.get(fl)
        if sem is None:
            raise _fail(node, f"element-wise add in the {fl} flavour is not supported by the "
                              f"hardware (supported: {', '.join(_ADD_SEMANTICS)})")
        if va.hw.shape[1:] == vb.hw.shape[1:] and va.size == vb.size and (
                va.hw.channels != vb.hw.channels
                or not np.array_equal(va.channel_slots(), vb.channel_slots())):
            # the two maps lie in different channel slots: b's move to a's (a's to b's when
            # a is a view of some channels of a larger tensor and b is not: the smaller copy)
            if va.view and not vb.view:
                va = self.relayout(node, va, vb.slots, vb.hw.channels)
            else:
                vb = self.relayout(node, vb, va.slots, va.hw.channels)
        if va.hw.shape != vb.hw.shape:
            raise _fail(node, f"adds maps of shapes {list(va.hw.shape)} and "
                              f"{list(vb.hw.shape)} (the hardware adds equal shapes only)")
        relu = bool(node.attrs.get("relu", False))
        path = "vector"
        kw = {}
        if fl == "torch-fbgemm":
            from zynqnn.ir import kernels as K

            block = int(node.attrs.get("vector_block", K.torch_vector_block()))
            n = int(np.prod(va.map))
            if block == 0:
                path = "scalar"
            elif n % block:
                s0 = self._torch_scalar_tail(ta, Tensor(va.hw.name, *va.map), n % block)
                if s0 is not None and va.slots is not None:   # its hardware channel
                    s0 = int(va.slots[s0]) if va.slots[s0] % self.cfg.rows == 0 else None
                if s0 is not None:
                    kw["scalar_from"] = s0
                else:
                    kw["scalar_mask"] = self._torch_tail_mask(ta, va, n % block)
                if kw.get("scalar_mask") is None and s0 is None:
                    raise _fail(node, f"{n} elements are not a multiple of PyTorch's vector "
                                      f"block ({block}): its scalar tail (the last {n % block} "
                                      "elements in memory order) rounds differently and is not "
                                      f"whole words of {self.cfg.rows} channels")
        y = self.hw_tensor(node, node.outputs[0], va.hw.shape)
        if sem == "tflite" and "left_shift" in node.attrs:
            kw["left_shift"] = int(node.attrs["left_shift"])
        try:
            layer = HwAdd(node.name, va.hw, vb.hw, y, sem, float(ta.scale), float(tb.scale),
                          float(out.scale), relu=relu, path=path, qmin=int(out.qmin),
                          qmax=int(out.qmax), **kw)
        except (CompileError, ValueError) as e:
            raise _fail(node, str(e)) from None
        lo = max(int(out.qmin), y.zero_point) if relu else int(out.qmin)
        self.produce(layer, lo, int(out.qmax), **va.layout)

    def _op_lut(self, node):
        """A unary activation as a table lookup (:class:`HwLut`); element-wise, so also on a
        reshaped view (the output is the same view of the new map)."""
        v = self.val(node, node.inputs[0])
        x = v.hw
        a = node.attrs
        table = np.asarray(a["table"], dtype=np.int64)
        lo, hi = self.range[id(x)]
        codes = np.arange(lo, hi + 1, dtype=np.int64)
        if "scalar_table" in a:
            from zynqnn.ir import kernels as K

            scalar = np.asarray(a["scalar_table"], dtype=np.int64)
            block = int(a.get("vector_block", K.torch_vector_block()) or 0)
            n = int(np.prod(v.map))
            if block == 0:
                table = scalar
            elif n % block and not np.array_equal(scalar[codes & 0xFF], table[codes & 0xFF]):
                raise _fail(node, f"{n} elements are not a multiple of PyTorch's vector block "
                                  f"({block}): its scalar tail (the last {n % block} elements "
                                  "in memory order) gives other codes than the vector kernel "
                                  "for some inputs, and the hardware has one table a layer")
        zp, signed = self.qparams(node, node.outputs[0])
        y = Tensor(node.outputs[0], *x.shape, zp, signed)
        try:
            layer = HwLut(node.name, x, y, table, str(a.get("function", "lut")))
        except (CompileError, ValueError) as e:
            raise _fail(node, str(e)) from None
        out = table[codes & 0xFF]
        self.produce(layer, int(out.min()), int(out.max()), **v.layout).shape = v.shape

    # -- pooling -----------------------------------------------------------------------------
    def _op_global_avg_pool(self, node):
        self._global_pool(node)

    def _op_adaptive_avg_pool2d(self, node):
        oh, ow = _pair(node.attrs.get("output_size"), None)
        if (oh, ow) != (1, 1):
            raise _fail(node, f"output size {[oh, ow]}: only global (1x1) adaptive average "
                              "pooling is supported")
        self._global_pool(node)

    def _op_avg_pool2d(self, node):
        a = node.attrs
        v = self.map4(node, node.inputs[0])
        out = self.g.tensors[node.outputs[0]]
        kernel = tuple(_pair(a.get("kernel"), None))
        if tuple(out.shape[2:]) == (1, 1) and not any(_pads(a.get("padding"))) and \
                kernel == (v.hw.height, v.hw.width):
            self._global_pool(node)
        else:
            self._window_pool(node, v, out, *kernel)

    def _window_pool(self, node, v: _Val, out, kh: int, kw: int):
        """Average pooling over windows smaller than the map: a depthwise convolution with
        weights 1 (the window sum of ``q - zp_in``) and the requantization that reproduces the
        framework's average of one window (``_pool_requant`` over a ``kh x kw`` map; every
        window holds ``kh * kw`` pixels, so one mapping serves them all)."""
        a = node.attrs
        sh, sw = _pair(a.get("stride"), (kh, kw))
        if kh != kw or sh != sw:
            raise _fail(node, f"kernel {[kh, kw]} / stride {[sh, sw]}: the hardware averages "
                              "square windows with equal strides")
        if any(_pads(a.get("padding"))):
            raise _fail(node, "padded average pooling is not supported: the border windows "
                              "average fewer pixels (or count the padding), which one "
                              "requantization cannot reproduce; use padding=0")
        self.only_maps(node, node.inputs[0], v)
        x_ir, x = self.g.tensors[node.inputs[0]], v.hw
        oh, ow = out.shape[2], out.shape[3]
        if (oh - 1) * sh + kh > x.height or (ow - 1) * sw + kw > x.width:
            raise _fail(node, f"ceil_mode: the last windows of the {x.height}x{x.width} map "
                              "extend past it and average fewer pixels, which one "
                              "requantization cannot reproduce")
        if v.slots is not None:   # depthwise: the channels are packed first
            v = self.relayout(node, v, what="packed")
            x = v.hw
        if sh > 2 and sh & (sh - 1):
            raise _fail(node, f"stride {sh}: the hardware pools with strides 1 and 2 (and "
                              "powers of two as a chain of them)")
        window = Tensor(x.name, x.channels, kh, kw, x.zero_point, x.signed)
        rq = self._pool_requant(node, x_ir, out, window)
        y = self.hw_tensor(node, node.outputs[0])
        if rq is None:   # a 1x1 window with the same qparams: a subsampling
            self._subsample(node, x, y, sh, *self.range[id(x)])
            return
        # A stride above 2: every window at stride 1, then subsampled (exact, unlike an
        # average of averages). Codes labelled rq.zp_out when the zero point is inside the
        # rounding, relabelled at the end by a 1x1 identity convolution (as _global_pool).
        stride = sh if sh <= 2 else 1
        sums = Tensor(f"{node.name}.sum", x.channels, (x.height - kh) // stride + 1,
                      (x.width - kw) // stride + 1, rq.zp_out, y.signed)
        direct = stride == sh and rq.zp_out == y.zero_point
        ones = np.ones((x.channels, 1, kh, kw), dtype=np.int64)
        self._conv_layer(node, v, ones, stride, (0, 0, 0, 0), rq, y if direct else sums,
                         groups=x.channels)
        if direct:
            return
        relabelled = rq.zp_out == y.zero_point
        last = self._subsample(node, sums, y if relabelled else None, sh // stride, rq.lo,
                               rq.hi)
        if not relabelled:
            self._relabel(node, last, y, rq, out)

    def _subsample(self, node, x: Tensor, y: Tensor | None, s: int, lo: int, hi: int):
        """Every ``s``-th pixel of ``x`` (``s`` a power of two) by 1x1 max poolings of stride 2
        into ``y`` (None: a new tensor labelled like ``x``); returns the result."""
        n = s.bit_length() - 1
        if n == 0:
            if y is not None:
                raise AssertionError("a subsampling by 1 into a given tensor")
            return x
        for i in range(n):
            h, w = (x.height - 1) // 2 + 1, (x.width - 1) // 2 + 1
            nxt = y if (i == n - 1 and y is not None) else Tensor(
                f"{node.name}.s{i}", x.channels, h, w, x.zero_point, x.signed)
            self.produce(HwMaxPool(f"{node.name}.s{i}", x, nxt, 1, 2, 0, True), lo, hi)
            x = nxt
        return x

    def _relabel(self, node, mid: Tensor, y: Tensor, rq, out, slots=None):
        """``y``: the codes of ``mid`` (labelled with zero point ``rq.zp_out``) relabelled to
        ``y``'s zero point by a 1x1 identity convolution (acc = q - rq.zp_out, + bias)."""
        from zynqnn.numerics import make_requant

        relabel = make_requant("tflite-single-rounding", 1.0, 1.0, 1.0, y.zero_point,
                               np.array([rq.zp_out - y.zero_point]), int(out.qmin),
                               int(out.qmax), multiplier=1 << 30, shift=1)
        eye = np.eye(mid.channels, dtype=np.int64).reshape(mid.channels, mid.channels, 1, 1)
        self.produce(HwConv(f"{node.name}.zp", mid, y, eye, requant=relabel), rq.lo, rq.hi,
                     slots=slots)

    def _global_pool(self, node):
        v = self.map4(node, node.inputs[0])
        self.only_maps(node, node.inputs[0], v)
        x_ir, out = self.g.tensors[node.inputs[0]], self.g.tensors[node.outputs[0]]
        x = v.hw
        n = x.height * x.width
        if n * max(abs(x_ir.qmin - x_ir.zero_point), abs(x_ir.qmax - x_ir.zero_point)) >= 2**31:
            raise _fail(node, f"a sum over {n} pixels can leave the 32-bit accumulator")
        # (the framework's channel classes count the map's channels, not the padding ones)
        rq = self._pool_requant(node, x_ir, out, Tensor(x.name, *v.map, x.zero_point, x.signed))
        if rq is None:  # identity (a 1x1 map, same qparams)
            self.bind(node.outputs[0], x, **v.layout)
            return
        y = self.hw_tensor(node, node.outputs[0], (x.channels, 1, 1))
        if rq.zp_out == y.zero_point:
            self.produce(HwGlobalSumPool(node.name, x, y, requant=rq), rq.lo, rq.hi,
                         slots=v.slots)
            return
        # The average needs the zero point inside its rounding: the pooling writes the final
        # codes into a tensor labelled with zero point rq.zp_out, and a 1x1 convolution with
        # identity weights relabels them (acc = q - rq.zp_out, + bias, exact multiply by 1).
        mid = Tensor(f"{node.name}.sum", x.channels, 1, 1, rq.zp_out, y.signed)
        self.produce(HwGlobalSumPool(node.name, x, mid, requant=rq), rq.lo, rq.hi,
                     slots=v.slots)
        self._relabel(node, mid, y, rq, out, v.slots)

    def _pool_requant(self, node, x_ir, out, x: Tensor):
        """A per-tensor Requant of ``sum(q - zp_in)`` equal to the node's average for every
        window sum, None for an identity, or CompileError. Its ``zp_out`` may differ from the
        output's (see ``_global_pool``)."""
        from zynqnn.ir.execute import KERNELS

        h, w, c = x.height, x.width, x.channels
        n = h * w
        zp = int(x_ir.zero_point)
        qmin, qmax = int(x_ir.qmin), int(x_ir.qmax)
        # Channel classes of the framework's kernel: torch's vector body (channels below
        # C // vw * vw) and scalar tail. Each class is evaluated on images of `per` channels
        # that all take that path (vw channels: all vector; vw - 1: all tail).
        per = {"all": 16}
        if node.flavour in _TORCH and x_ir.layout == "nhwc":
            vw = int(node.attrs.get("vector_width", 8 if node.op == "adaptive_avg_pool2d"
                                    else 16) or 0)
            if vw > 0:
                per = {}
                if c // vw * vw:
                    per["vector"] = vw
                if c % vw:
                    per["tail"] = vw - 1
        sums = np.arange(n * qmin, n * qmax + 1, dtype=np.int64)
        sampled = sums.size * n * len(per) > _CHECK_LIMIT
        if sampled:
            rng = np.random.default_rng(0)
            keep = max(1, _SAMPLE_LIMIT // (n * len(per)))
            edge = np.concatenate([sums[:4096], sums[-4096:]])
            pick = rng.choice(sums, size=max(1, keep - edge.size), replace=False)
            sums = np.unique(np.concatenate([edge, pick]))
        refs = {}
        chunk = max(64, _SAMPLE_LIMIT // n)
        for cls, k in per.items():
            parts = []
            for i0 in range(0, sums.size, chunk):
                part = sums[i0:i0 + chunk]
                rows = -(-part.size // k)
                padded = np.concatenate([part, np.full(rows * k - part.size, part[-1])])
                base = np.floor_divide(padded, n)
                rem = padded - base * n
                pix = base[:, None] + (np.arange(n)[None, :] < rem[:, None])
                xs = pix.reshape(rows, k, h, w)
                try:
                    r = KERNELS[node.op](self.g, node, [xs], [x_ir], out, False)
                except Exception as e:  # noqa: BLE001 - the framework kernel refuses it
                    raise _fail(node, f"cannot evaluate the pooling: {e}") from None
                parts.append(np.asarray(r).reshape(-1)[:part.size])
            refs[cls] = np.concatenate(parts)
        ref = np.stack(list(refs.values()), axis=1)
        classes = list(range(len(refs)))
        acc = sums - n * zp
        if n == 1 and x_ir.same_qparams(out) and all(
                np.array_equal(ref[:, k], sums) for k in classes):
            return None
        cands = self._pool_candidates(node, x_ir, out, n, (h, w))
        if sampled:  # only the formula that is exact by construction for the flavour
            cands = [mk for mk, exact in cands if exact]
        else:
            cands = [mk for mk, _ in cands]
            if all(np.array_equal(ref[:, k], ref[:, classes[0]]) for k in classes):
                zo = int(out.zero_point)
                ratio = float(x_ir.scale) / (n * float(out.scale))
                for z in dict.fromkeys((zo, 0)):
                    rq = _solve_map(acc, ref[:, classes[0]], ratio, z, int(out.qmin),
                                    int(out.qmax))
                    if rq is not None:
                        cands.insert(0 if z == zo else len(cands), lambda r=rq: r)
        for make in cands:
            try:
                rq = make()
                got = rq.apply(acc[:, None], axis=1)[:, 0]
            except (ValueError, ArithmeticError):
                continue
            if all(np.array_equal(got, ref[:, k]) for k in classes):
                return rq
        raise _fail(node, f"no requantization of the hardware reproduces the {node.flavour} "
                          f"average over {h}x{w} pixels exactly (zero point {zp}); average "
                          "pooling is refused rather than approximated")

    def _pool_candidates(self, node, x_ir, out, n, window) -> list:
        """``(make, exact)`` pairs: requantizations of ``sum(q - zp)`` that may equal the
        flavour's average over a ``window = (h, w)`` of ``n`` pixels, in order of preference;
        ``exact``: equal by construction (the only ones used when the check can only sample
        the sums). Every one is checked before use."""
        from zynqnn.numerics import gemmlowp, make_requant

        zo, qmin, qmax = int(out.zero_point), int(out.qmin), int(out.qmax)
        zi = int(x_ir.zero_point)
        h, w = window
        fl = node.flavour
        s = f32(x_ir.scale)
        m = f32(1) / f32(n)
        m_qnnpack = f32(s / f32(s * f32(n)))
        first, rest = [], []
        if fl == "onnxruntime":  # rne(f32(f32(acc) * f32(s_x / f32(s_y * n)))) + zp_y
            sy = f32(f32(out.scale) * f32(n))
            first.append((lambda: make_requant("onnxruntime", float(s), 1.0, float(sy), zo,
                                               None, qmin, qmax), True))
        if fl == "torch-qnnpack" and x_ir.dtype == "uint8":  # qnnpack's average pooling
            first.append((lambda: make_requant("torch-qnnpack", 1.0, float(m_qnnpack), 1.0, zo,
                                               None, qmin, qmax), True))
        # TFLite: integer division with ties away from zero. A single-rounding Q31 multiplier
        # just above 1/n breaks ties by the sign of (acc + bias); with bias n * zp_in the
        # rounded value is the final code (then zp_out = 0, relabelled by _global_pool).
        q, sh = gemmlowp.quantize_multiplier(1.0 / n)
        q_up = int(np.floor((1.0 / n) / 2.0**sh * 2**31)) + 1
        if q_up < 2**31:
            for bias, z in ((n * (zi - zo), zo), (n * zi, 0)):
                (first if fl in _TFLITE_LIKE else rest).append((
                    lambda b=bias, z=z: make_requant("tflite-single-rounding", 1.0, 1.0, 1.0, z,
                                                     np.array([b]), qmin, qmax,
                                                     multiplier=q_up, shift=sh),
                    fl in _TFLITE_LIKE and n * (qmax - qmin + abs(zi)) < 2**29
                    and (z == 0 or zi == zo and (zi == 0 or n % 2 == 1))))
        ms = [m, f32(1) / (f32(1) / m), f32(f32(1) / f32(h)) / f32(w), f32(1.0 / n), m_qnnpack]
        for mv in dict.fromkeys(float(v) for v in ms):
            for scheme in ("torch-qnnpack", "onnxruntime"):
                rest.append((lambda mv=mv, sc=scheme: make_requant(sc, 1.0, mv, 1.0, zo, None,
                                                                   qmin, qmax), False))
            # zero point inside the rounding (torch's fma(acc, inv, zp)): bias n * zp, zp_out 0
            rest.append((lambda mv=mv: make_requant(
                "torch-fbgemm", 1.0, mv, 1.0, 0, np.array([zi], f32), qmin, qmax,
                bias_mode="fma"), False))
        rest.append((lambda: make_requant("tflite", 1.0, 1.0, 1.0, zo, None, qmin, qmax,
                                          multiplier=q, shift=sh), False))
        return first + rest

    # -- activations -------------------------------------------------------------------------
    def _op_relu(self, node):
        self._clamp_node(node)

    _op_relu6 = _op_hardtanh = _op_clamp = _op_relu

    def _clamp_node(self, node):
        from zynqnn.ir.execute import KERNELS

        v = self.val(node, node.inputs[0])
        x = v.hw
        lo, hi = self.range[id(x)]
        codes = np.arange(lo, hi + 1, dtype=np.int64)
        ins = [self.g.tensors[node.inputs[0]]]
        ref = np.asarray(KERNELS[node.op](self.g, node, [codes.reshape(1, 1, 1, -1)], ins,
                                          self.g.tensors[node.outputs[0]], False)).reshape(-1)
        a, b = int(ref.min()), int(ref.max())
        if not np.array_equal(ref, np.clip(codes, a, b)):
            raise _fail(node, "does not act as a clamp of the codes")
        if not (a <= lo and b >= hi):
            self._fold_clamp(node, x, a, b)
        self.bind(node.outputs[0], x, v.shape, **v.layout)

    def _fold_clamp(self, node, t: Tensor, a: int, b: int) -> None:
        """Clamp ``t`` to [a, b] in the layer that computes it (through max pooling and
        upsampling, which commute with a clamp, to the conv or pooling before them)."""
        layer = self.prod.get(id(t))
        where = "the graph input" if layer is None else f"{type(layer).__name__} {layer.name!r}"
        if layer is None or self.uses(t) != 1:
            raise _fail(node, f"cannot fold the clamp into {where}: its input is used elsewhere "
                              "too (or is the graph input), and the hardware has no standalone "
                              "clamp")
        if isinstance(layer, (HwConv, HwGlobalSumPool)):
            if layer.act is None:
                layer.requant = _narrowed(node, layer.requant, a, b)
            elif hasattr(layer.act, "qmin") and a <= layer.act.zp_out <= b:  # LeakyTorch
                act = layer.act  # it clamps last, to its own qmin..qmax
                layer.act = dataclasses.replace(act, qmin=min(max(act.qmin, a), b),
                                                qmax=max(min(act.qmax, b), a))
            else:
                raise _fail(node, f"cannot fold the clamp into {where} after its activation")
        elif isinstance(layer, (HwMaxPool, HwUpsample2x)):
            zp = layer.input.zero_point
            if isinstance(layer, HwMaxPool) and not layer.pad_min and not a <= zp <= b:
                raise _fail(node, f"cannot move the clamp before {where}: it pads with the "
                                  f"zero point {zp}, outside [{a}, {b}]")
            self._fold_clamp(node, layer.input, a, b)
        else:
            raise _fail(node, f"cannot fold the clamp into {where}")
        lo, hi = self.range[id(t)]
        self.range[id(t)] = (min(max(lo, a), b), max(min(hi, b), a))

    def _op_leaky_relu(self, node):
        from zynqnn.hw.post import LeakyFixed, LeakyTorch
        from zynqnn.ir import kernels as K
        from zynqnn.numerics import ops

        v = self.val(node, node.inputs[0])
        t = v.hw
        layer = self.prod.get(id(t))
        if not isinstance(layer, (HwConv, HwGlobalSumPool)) or self.uses(t) != 1 or (
                layer.act is not None):
            raise _fail(node, "the hardware applies leaky ReLU in the post-processing of the "
                              "conv2d/linear/pooling that produces its input, which must have no "
                              "other user")
        rq = layer.requant
        x, out, a = self.g.tensors[node.inputs[0]], self.g.tensors[node.outputs[0]], node.attrs
        codes = np.arange(rq.lo, rq.hi + 1, dtype=np.int64)
        fl = node.flavour
        if fl in _TFLITE_LIKE:
            refs = [ops.leaky_relu_fixed(codes, x.zero_point, a["mult"], a["shift"],
                                         a.get("rounding", "half_up"), qmin=out.qmin,
                                         qmax=out.qmax)]
            cands = [LeakyFixed(int(a["mult"]), int(a["shift"]), a.get("rounding", "half_up"))]
        else:
            slope = float(a["negative_slope"])
            if fl in _TORCH:
                block = int(a.get("vector_block", K.torch_vector_block()) or 0)
                size = int(np.prod(out.shape[1:]))
                paths = (["scalar"] if block <= 0 else ["vector"] if size % block == 0
                         else ["vector", "scalar"])
                refs = [ops.leaky_relu_torch(codes, x.scale, x.zero_point, out.scale,
                                             out.zero_point, slope, path=p, qmin=out.qmin,
                                             qmax=out.qmax) for p in paths]
            else:
                refs = [K.leaky_relu_onnxruntime(codes, x.scale, x.zero_point, out.scale,
                                                 out.zero_point, slope, qmin=x.qmin,
                                                 qmax=x.qmax)]
            cands = [LeakyTorch(float(x.scale), int(x.zero_point), float(out.scale),
                                int(out.zero_point), slope, p, int(out.qmin), int(out.qmax))
                     for p in ("vector", "scalar")]
        for act in cands:
            try:
                got = _act_codes(act, codes, rq)
            except (ValueError, ArithmeticError):
                continue
            if all(np.array_equal(got, r) for r in refs):
                break
        else:
            raise _fail(node, f"no activation of the hardware reproduces the {fl} leaky ReLU "
                              "on every code")
        t.zero_point, t.signed = self.qparams(node, node.outputs[0])
        layer.act = act
        self.range[id(t)] = (int(got.min()), int(got.max())) if got.size else (0, 0)
        self.bind(node.outputs[0], t, v.shape, **v.layout)

    # -- the whole graph ---------------------------------------------------------------------
    def run(self) -> tuple[Network, BoundaryInfo]:
        g = self.g
        if len(g.inputs) != 1:
            raise CompileError(f"graph {g.name!r}: the accelerator runs graphs with one input, "
                               f"this has {len(g.inputs)}")
        if not g.outputs:
            raise CompileError(f"graph {g.name!r} has no output")
        g.validate()
        name = g.inputs[0]
        t = g.tensors[name]
        if not t.is_float:
            hw = Tensor(name, *t.shape[1:], int(t.zero_point), t.dtype.startswith("int"))
            if len(t.shape) != 4 or not t.is_quantized or _bits(t.dtype) != self.cfg.operand_bits:
                raise CompileError(f"graph input {name!r} ({t.describe()}) is not a 4-D "
                                   f"{self.cfg.operand_bits}-bit quantized tensor")
            self.net_input = hw
            self.range[id(hw)] = (t.qmin, t.qmax)
            self.bind(name, hw)
            self.boundary.update(
                input_name=name, input_shape=tuple(t.shape[1:]), input_dtype=t.dtype,
                input_qmin=t.qmin, input_qmax=t.qmax, input_scale=float(t.scale),
                input_zero_point=int(t.zero_point), input_flavour=None, input_rounding=None,
                input_overflow=None)
        self._lower_all(self._needed())
        if self.net_input is None:
            raise CompileError(f"graph {g.name!r}: input {name!r} is not quantized by the graph")
        hws, infos = [], []
        for out_name in g.outputs:
            hw, info = self._output(out_name)
            hws.append(hw)
            infos.append(info)
        first = infos[0]
        self.boundary.update({"output_" + f: getattr(first, f) for f in _OUT_FIELDS})
        net = Network(self.net_input, self.layers, outputs=hws)
        return net, BoundaryInfo(**self.boundary, outputs=infos)

    def _output(self, out_name: str) -> tuple[Tensor, OutputInfo]:
        """The hardware tensor of graph output ``out_name`` and its :class:`OutputInfo`."""
        g = self.g
        p = g.producer(out_name)
        if p is not None and p.op == "dequantize":
            q = g.tensors[p.inputs[0]]
            v = self.vals[p.inputs[0]]
            flavour = p.flavour
        else:
            q = g.tensors[out_name]
            v = self.vals.get(out_name)
            if v is None or not q.is_quantized:
                raise CompileError(f"graph output {out_name!r} is not a quantized tensor the "
                                   "accelerator computes")
            flavour = None
        if v.pad is not None:
            raise CompileError(f"graph output {out_name!r} is an explicit pad of a map")
        if v.hw is self.net_input:
            raise CompileError(f"graph {g.name!r}: nothing to run on the accelerator (the "
                               f"output {out_name!r} is the input)")
        # the host gathers the graph's channels (and pixels) out of the hardware tensor
        slots = None if v.slots is None else [int(c) for c in v.slots]
        size = None if v.size is None else [int(d) for d in v.size]
        return v.hw, OutputInfo(out_name, tuple(q.shape[1:]), q.dtype, float(q.scale),
                                int(q.zero_point), flavour, slots, size)

    def _lower_all(self, nodes) -> None:
        """Lower ``nodes`` in order; raise every refusal at once (one :class:`CompileError`
        as it is, several as :class:`CompileErrors`). A node reading the output of a refused
        node cannot be lowered (its input does not exist): it is checked for op support only,
        and named in the error's ``unchecked`` list."""
        errors, unchecked, lost = [], [], set()
        for node in nodes:
            if lost.intersection(node.inputs):
                lost.update(node.outputs)
                if getattr(self, "_op_" + node.op, None) is None:
                    errors.append(_fail(node, "not supported by the accelerator (no hardware "
                                              "layer for this op)"))
                elif node.op not in ("quantize", "dequantize"):   # boundary nodes: no layer
                    unchecked.append(repr(node.name))
                continue
            try:
                self.lower(node)
            except CompileError as e:
                errors.append(e)
                lost.update(node.outputs)
        if len(errors) == 1:
            errors[0].unchecked = unchecked   # `zynqnn check` lists them; the message stays
            raise errors[0]
        if errors:
            raise CompileErrors(errors, unchecked, f"graph {self.g.name!r}")

    def _needed(self) -> list:
        """The nodes the graph outputs depend on, in graph order."""
        need = set(self.g.outputs)
        keep = []
        for node in reversed(self.g.nodes):
            if any(o in need for o in node.outputs):
                keep.append(node)
                need.update(node.inputs)
        return keep[::-1]


def lower_graph(graph, cfg: HwConfig | str = "pynq_z2") -> tuple[Network, BoundaryInfo]:
    """Map a quantized IR graph (:class:`zynqnn.ir.Graph`) onto hardware layers for ``cfg``.

    Returns ``(network, boundary)``: ``run_reference(network, codes)`` (or the compiled program)
    equals ``graph.run_int(codes)`` per sample, and ``boundary`` quantizes the float input and
    dequantizes the output exactly as the graph does. With several graph outputs,
    ``network.outputs`` and ``boundary.outputs`` hold them in graph order and
    ``run_reference(network, codes, all_outputs=True)`` is the list ``graph.run_int`` returns
    as a tuple. Raises :class:`CompileError` naming the
    node, its op and the reason for anything the hardware cannot compute exactly.
    """
    return _Lowering(graph, get_config(cfg)).run()
