"""The IR's operations: attributes, flavours, shape rules and quantization rules.

=====================  ==========================================================================
op                     inputs -> output, attributes (defaults)
=====================  ==========================================================================
quantize               float x -> q. ``rounding``/``overflow`` (pow2, fixed16)
dequantize             q -> float32
requantize             q -> q' (dequantize then quantize, in the flavour's arithmetic)
conv2d                 x, w(const), [b(const)] -> y. ``stride`` [sh, sw], ``padding`` [t, b, l, r],
                       ``dilation`` [dh, dw], ``groups``, ``requant`` {scheme, options},
                       ``activation`` none|relu|relu6|clamp|leaky, ``clamp`` [lo, hi] codes or None
conv_transpose2d       x, w(const) (C, K/groups, kh, kw), [b] -> y: the transposed convolution
                       (PyTorch's ConvTranspose2d). ``stride``, ``padding`` [t, b, l, r] (removed
                       from the full output), ``output_padding`` [h, w] (added at the
                       bottom/right), ``dilation``, ``groups``, ``requant``, ``activation``,
                       ``clamp`` as conv2d; per-tensor weights
linear                 x (N, C), w (K, C), [b] -> (N, K); ``requant``, ``activation``, ``clamp``
max_pool2d             ``kernel``, ``stride``, ``padding`` [t, b, l, r], ``dilation``,
                       ``ceil_mode``, ``pad_value`` (None: padding ignored; a code: explicit pad)
avg_pool2d             ``kernel``, ``stride``, ``padding``, ``ceil_mode``, ``count_include_pad``,
                       ``divisor_override``, ``vector_width`` (torch-fbgemm channels-last)
adaptive_avg_pool2d    ``output_size`` [oh, ow], ``vector_width`` (torch flavours)
global_avg_pool        -> (N, C, 1, 1)
add                    a, b -> y. ``relu``; ``vector_block`` (torch-fbgemm); ``left_shift`` (tflite)
relu                   codes max(q, zp)
relu6, hardtanh        ``min_val``, ``max_val`` (floats, quantized by the flavour's rule)
clamp                  ``lo``, ``hi`` (codes; None = unbounded)
leaky_relu             ``negative_slope``; torch/onnxruntime: own output qparams; tflite, pow2,
                       fixed16: ``mult``/``shift``/``rounding`` slope m/2^k, same qparams
upsample_nearest       ``scale`` [fh, fw] (integers)
concat                 x1..xn -> y. ``axis``
flatten                ``start_dim``;  reshape: ``shape`` (a reshape to the same shape marks
                       a change of memory layout only, e.g. PyTorch's ``.contiguous()``)
pad                    ``pads`` [t, b, l, r], ``value`` (a code; default the zero point)
slice                  ``axis``, ``start``, ``end`` (0 <= start < end <= size, step 1): one part
                       of a split / chunk / ``x[:, a:b]``; codes and qparams unchanged
channel_shuffle        ``groups``: ShuffleNet's reshape (N, g, C/g, H, W) -> transpose(1, 2) ->
                       reshape (N, C, H, W); output channel i is input channel
                       (i % g) * (C / g) + i // g
batch_norm             a stand-alone quantized BatchNorm (+ ReLU): ``table`` [C][n], the
                       framework's output code for each channel and input code
                       ``in_lo .. in_lo + n - 1`` (``in_lo``), measured at import by running the
                       framework's own kernel on every code of every channel; ``relu``
transpose              ``perm``: a general permutation of the axes (imported from Transpose /
                       ``transpose``; the importers turn the shuffle pattern into
                       ``channel_shuffle``, the compiler takes no other transpose)
lut                    8-bit q -> q': ``table`` (256 output codes; code c reads entry c & 0xFF),
                       ``function`` (a name, e.g. tanh); torch-fbgemm: ``scalar_table`` with
                       ``vector_block``: PyTorch's scalar tail (the last n % block elements in
                       memory order) reads that table
=====================  ==========================================================================

Every importer gives every node a flavour, also to ops that only move codes (pooling, padding,
reshapes), where it does not change the arithmetic. :func:`validate_graph` checks a whole
graph; :func:`infer_shape` gives an op's output shape.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..numerics.schemes import SCHEMES
from .core import (
    DTYPE_RANGE,
    DTYPES,
    FLAVOURS,
    LAYOUTS,
    TORCH_FLAVOURS,
    Graph,
    IRError,
    Node,
    Tensor,
)

__all__ = ["OPS", "SAME_QPARAMS", "infer_shape", "validate_graph", "validate_node"]

ANY = None
_Q_FLAVOURS = set(FLAVOURS)
_TFLITE_LIKE = {"tflite", "pow2", "fixed16"}

#: op -> flavours it accepts (None in the set: may have no flavour).
OPS: dict[str, set[str | None]] = {
    "quantize": _Q_FLAVOURS,
    "dequantize": _Q_FLAVOURS,
    "requantize": _Q_FLAVOURS,
    "conv2d": _Q_FLAVOURS,
    "conv_transpose2d": _Q_FLAVOURS,
    "linear": _Q_FLAVOURS,
    "max_pool2d": _Q_FLAVOURS | {None},
    "avg_pool2d": _Q_FLAVOURS,
    "adaptive_avg_pool2d": set(TORCH_FLAVOURS),
    "global_avg_pool": {"onnxruntime"} | _TFLITE_LIKE,
    "add": _Q_FLAVOURS,
    "relu": _Q_FLAVOURS | {None},
    "relu6": _Q_FLAVOURS,
    "hardtanh": _Q_FLAVOURS,
    "clamp": _Q_FLAVOURS | {None},
    "leaky_relu": _Q_FLAVOURS,
    "upsample_nearest": _Q_FLAVOURS | {None},
    "concat": _Q_FLAVOURS,
    "flatten": _Q_FLAVOURS | {None},
    "reshape": _Q_FLAVOURS | {None},
    "pad": _Q_FLAVOURS | {None},
    "slice": _Q_FLAVOURS | {None},
    "channel_shuffle": _Q_FLAVOURS | {None},
    "transpose": _Q_FLAVOURS | {None},
    "batch_norm": set(TORCH_FLAVOURS) | {"onnxruntime"},
    "lut": _Q_FLAVOURS,
}

#: Ops whose output keeps the input's scale and zero point (for some flavours, see _same_qp).
SAME_QPARAMS = {"max_pool2d", "relu", "relu6", "hardtanh", "clamp", "upsample_nearest",
                "flatten", "reshape", "pad", "adaptive_avg_pool2d", "slice", "channel_shuffle",
                "transpose"}

ACTIVATIONS = ("none", "relu", "relu6", "clamp", "leaky")


def _fail(node: Node, why: str) -> IRError:
    return IRError(f"node {node.name!r} ({node.op}): {why}")


def _pair(node: Node, attrs: dict, key: str, default: Any = None, lo: int = 1) -> tuple[int, int]:
    v = attrs.get(key, default)
    if v is None:
        raise _fail(node, f"attribute {key!r} is missing")
    t = (v, v) if np.ndim(v) == 0 else tuple(v)
    if len(t) != 2 or not all(isinstance(x, (int, np.integer)) and x >= lo for x in t):
        raise _fail(node, f"attribute {key!r} must be two integers >= {lo}, not {v!r}")
    return int(t[0]), int(t[1])


def _pads(node: Node, attrs: dict, key: str = "padding") -> tuple[int, int, int, int]:
    v = attrs.get(key, 0)
    if np.ndim(v) == 0:
        v = [v] * 4
    t = tuple(v)
    if len(t) == 2:
        t = (t[0], t[0], t[1], t[1])
    if len(t) != 4 or not all(isinstance(x, (int, np.integer)) and x >= 0 for x in t):
        raise _fail(node, f"attribute {key!r} must be [top, bottom, left, right] >= 0, not {v!r}")
    return tuple(int(x) for x in t)  # type: ignore[return-value]


def _out_size(node, size, k, s, d, p0, p1, ceil_mode=False):
    span = d * (k - 1) + 1
    num = size + p0 + p1 - span
    if num < 0:
        raise _fail(node, f"kernel extent {span} exceeds the padded input size {size + p0 + p1}")
    o = (-(-num // s) if ceil_mode else num // s) + 1
    if ceil_mode and (o - 1) * s >= size + p0:
        o -= 1
    return o


def _four_d(node: Node, t: Tensor, what: str = "input") -> None:
    if len(t.shape) != 4:
        raise _fail(node, f"{what} {t.name!r} must be 4-D NCHW, has shape {list(t.shape)}")


# ---------------------------------------------------------------------------------------------
# shape rules: (node, attrs, input tensors) -> output shape


def _shape_conv(node, a, ins):
    x, w = ins[0], ins[1]
    _four_d(node, x)
    if len(w.shape) != 4:
        raise _fail(node, f"weight {w.name!r} must be 4-D (K, C/groups, kh, kw), has "
                          f"{list(w.shape)}")
    g = int(a.get("groups", 1))
    k, cg, kh, kw = w.shape
    if g < 1 or k % g or x.shape[1] != cg * g:
        raise _fail(node, f"input has {x.shape[1]} channels, weight {list(w.shape)} with "
                          f"groups={g} needs {cg * g} (and K divisible by groups)")
    sh, sw = _pair(node, a, "stride", 1)
    dh, dw = _pair(node, a, "dilation", 1)
    t, b, l, r = _pads(node, a)
    return (x.shape[0], k, _out_size(node, x.shape[2], kh, sh, dh, t, b),
            _out_size(node, x.shape[3], kw, sw, dw, l, r))


def _shape_conv_transpose(node, a, ins):
    from .kernels import conv_transpose_size

    x, w = ins[0], ins[1]
    _four_d(node, x)
    if len(w.shape) != 4:
        raise _fail(node, f"weight {w.name!r} must be 4-D (C, K/groups, kh, kw), has "
                          f"{list(w.shape)}")
    g = int(a.get("groups", 1))
    c, kg, kh, kw = w.shape
    if g < 1 or c % g or x.shape[1] != c:
        raise _fail(node, f"input has {x.shape[1]} channels, weight {list(w.shape)} with "
                          f"groups={g} needs {c} (divisible by groups)")
    sh, sw = _pair(node, a, "stride", 1)
    dh, dw = _pair(node, a, "dilation", 1)
    t, b, l, r = _pads(node, a)
    oph, opw = _pair(node, a, "output_padding", 0, lo=0)
    oh = conv_transpose_size(x.shape[2], kh, sh, dh, t, b, oph)
    ow = conv_transpose_size(x.shape[3], kw, sw, dw, l, r, opw)
    if oh < 1 or ow < 1:
        raise _fail(node, f"output size {oh}x{ow} is empty")
    return (x.shape[0], kg * g, oh, ow)


def _shape_linear(node, a, ins):
    x, w = ins[0], ins[1]
    if len(x.shape) != 2:
        raise _fail(node, f"input {x.name!r} must be 2-D (N, C), has shape {list(x.shape)} "
                          "(flatten first)")
    if len(w.shape) != 2 or w.shape[1] != x.shape[1]:
        raise _fail(node, f"weight {w.name!r} {list(w.shape)} does not take {x.shape[1]} "
                          "input features")
    return (x.shape[0], w.shape[0])


def _shape_pool(node, a, ins):
    x = ins[0]
    _four_d(node, x)
    kh, kw = _pair(node, a, "kernel")
    sh, sw = _pair(node, a, "stride", (kh, kw))
    dh, dw = _pair(node, a, "dilation", 1)
    t, b, l, r = _pads(node, a)
    cm = bool(a.get("ceil_mode", False))
    return (x.shape[0], x.shape[1], _out_size(node, x.shape[2], kh, sh, dh, t, b, cm),
            _out_size(node, x.shape[3], kw, sw, dw, l, r, cm))


def _shape_adaptive(node, a, ins):
    x = ins[0]
    _four_d(node, x)
    oh, ow = _pair(node, a, "output_size")
    return (x.shape[0], x.shape[1], oh, ow)


def _shape_global(node, a, ins):
    _four_d(node, ins[0])
    return (ins[0].shape[0], ins[0].shape[1], 1, 1)


def _shape_same(node, a, ins):
    return ins[0].shape


def _shape_binary(node, a, ins):
    if ins[0].shape != ins[1].shape:
        raise _fail(node, f"inputs have different shapes {list(ins[0].shape)} and "
                          f"{list(ins[1].shape)} (broadcasting is not supported)")
    return ins[0].shape


def _shape_upsample(node, a, ins):
    _four_d(node, ins[0])
    fh, fw = _pair(node, a, "scale")
    n, c, h, w = ins[0].shape
    return (n, c, h * fh, w * fw)


def _shape_concat(node, a, ins):
    axis = int(a.get("axis", 1))
    rank = len(ins[0].shape)
    if not -rank <= axis < rank:
        raise _fail(node, f"axis {axis} out of range for rank {rank}")
    axis %= rank
    shape = list(ins[0].shape)
    for t in ins[1:]:
        if len(t.shape) != rank or any(
            d != e for i, (d, e) in enumerate(zip(t.shape, shape, strict=True)) if i != axis
        ):
            raise _fail(node, f"input {t.name!r} {list(t.shape)} does not concatenate with "
                              f"{list(ins[0].shape)} on axis {axis}")
        shape[axis] += t.shape[axis]
    return tuple(shape)


def _shape_flatten(node, a, ins):
    start = int(a.get("start_dim", 1))
    s = ins[0].shape
    if not 0 <= start < len(s):
        raise _fail(node, f"start_dim {start} out of range for shape {list(s)}")
    return tuple(s[:start]) + (int(np.prod(s[start:], dtype=np.int64)),)


def _shape_reshape(node, a, ins):
    shape = list(a.get("shape", []))
    n = ins[0].size
    if shape.count(-1) > 1:
        raise _fail(node, f"shape {shape} has more than one -1")
    known = int(np.prod([d for d in shape if d != -1], dtype=np.int64))
    if -1 in shape:
        if known == 0 or n % known:
            raise _fail(node, f"cannot reshape {list(ins[0].shape)} to {shape}")
        shape[shape.index(-1)] = n // known
    if int(np.prod(shape, dtype=np.int64)) != n:
        raise _fail(node, f"cannot reshape {list(ins[0].shape)} ({n} values) to {shape}")
    return tuple(shape)


def _shape_pad(node, a, ins):
    _four_d(node, ins[0])
    t, b, l, r = _pads(node, a, "pads")
    n, c, h, w = ins[0].shape
    return (n, c, h + t + b, w + l + r)


def _shape_slice(node, a, ins):
    s = list(ins[0].shape)
    axis = a.get("axis")
    if not isinstance(axis, (int, np.integer)) or not 0 <= axis < len(s):
        raise _fail(node, f"axis {axis!r} out of range for shape {s}")
    start, end = a.get("start"), a.get("end")
    if not all(isinstance(v, (int, np.integer)) for v in (start, end)) or not (
            0 <= start < end <= s[axis]):
        raise _fail(node, f"start {start!r} / end {end!r} must satisfy 0 <= start < end <= "
                          f"{s[axis]} (axis {axis} of {s})")
    s[axis] = int(end) - int(start)
    return tuple(s)


def _shape_shuffle(node, a, ins):
    _four_d(node, ins[0])
    g = a.get("groups")
    c = ins[0].shape[1]
    if not isinstance(g, (int, np.integer)) or g < 1 or c % g:
        raise _fail(node, f"groups {g!r} must divide the {c} channels")
    return ins[0].shape


def _shape_transpose(node, a, ins):
    s = ins[0].shape
    perm = list(a.get("perm", []))
    if sorted(perm) != list(range(len(s))):
        raise _fail(node, f"perm {perm} is not a permutation of the {len(s)} axes")
    return tuple(s[p] for p in perm)


def _shape_batch_norm(node, a, ins):
    _four_d(node, ins[0])
    table = a.get("table")
    x = ins[0]
    n = x.qmax - x.qmin + 1
    if (not isinstance(table, (list, tuple)) or len(table) != x.shape[1]
            or any(len(r) != n for r in table)):
        raise _fail(node, f"attribute 'table' must hold {x.shape[1]} rows of {n} codes (one per "
                          f"input code {x.qmin}..{x.qmax})")
    if a.get("in_lo") != x.qmin:
        raise _fail(node, f"attribute 'in_lo' must be the input's lowest code {x.qmin}")
    return x.shape


_SHAPES: dict[str, Callable] = {
    "quantize": _shape_same,
    "dequantize": _shape_same,
    "requantize": _shape_same,
    "conv2d": _shape_conv,
    "conv_transpose2d": _shape_conv_transpose,
    "linear": _shape_linear,
    "max_pool2d": _shape_pool,
    "avg_pool2d": _shape_pool,
    "adaptive_avg_pool2d": _shape_adaptive,
    "global_avg_pool": _shape_global,
    "add": _shape_binary,
    "relu": _shape_same,
    "relu6": _shape_same,
    "hardtanh": _shape_same,
    "clamp": _shape_same,
    "leaky_relu": _shape_same,
    "upsample_nearest": _shape_upsample,
    "concat": _shape_concat,
    "flatten": _shape_flatten,
    "reshape": _shape_reshape,
    "pad": _shape_pad,
    "slice": _shape_slice,
    "channel_shuffle": _shape_shuffle,
    "transpose": _shape_transpose,
    "batch_norm": _shape_batch_norm,
    "lut": _shape_same,
}

_ARITY: dict[str, tuple[int, int]] = {
    "conv2d": (2, 3),
    "conv_transpose2d": (2, 3),
    "linear": (2, 3),
    "add": (2, 2),
    "concat": (1, 1 << 16),
}


def infer_shape(op: str, attrs: dict, inputs: list[Tensor], name: str = "?") -> tuple[int, ...]:
    """Output shape of ``op`` with ``attrs`` applied to ``inputs`` (raises :class:`IRError`)."""
    node = Node(name, op, [t.name for t in inputs], [], attrs=attrs)
    if op not in _SHAPES:
        raise _fail(node, f"unknown op (known: {', '.join(sorted(OPS))})")
    return tuple(int(d) for d in _SHAPES[op](node, attrs, inputs))


# ---------------------------------------------------------------------------------------------
# quantization rules


def _check_qtensor(node: Node, t: Tensor, what: str) -> None:
    if not t.is_quantized:
        raise _fail(node, f"{what} {t.name!r} must be a quantized tensor, is {t.describe()}")
    if t.per_channel and what != "weight":
        raise _fail(node, f"{what} {t.name!r} is per-channel; only weights may be")


def _check_requant(node: Node, a: dict) -> None:
    rq = a.get("requant")
    if not isinstance(rq, dict) or rq.get("scheme") not in SCHEMES:
        raise _fail(node, f"attribute 'requant' must be a dict with 'scheme' in {SCHEMES}, "
                          f"not {rq!r}")
    act = a.get("activation", "none")
    if act not in ACTIVATIONS:
        raise _fail(node, f"activation must be one of {ACTIVATIONS}, not {act!r}")
    clamp = a.get("clamp")
    if clamp is not None and (len(clamp) != 2 or clamp[0] > clamp[1]):
        raise _fail(node, f"clamp must be [lo, hi] with lo <= hi, not {clamp!r}")


def _same_qp(node: Node, ins: list[Tensor], out: Tensor) -> bool:
    return ins[0].same_qparams(out)


def _check_quant(graph: Graph, node: Node, ins: list[Tensor], outs: list[Tensor]) -> None:
    op, a = node.op, node.attrs
    out = outs[0]
    if op == "quantize":
        if not ins[0].is_float:
            raise _fail(node, f"input {ins[0].name!r} must be float32, is {ins[0].describe()}")
        _check_qtensor(node, out, "output")
        return
    if op == "dequantize":
        _check_qtensor(node, ins[0], "input")
        if not out.is_float:
            raise _fail(node, f"output {out.name!r} must be float32, is {out.describe()}")
        return
    if op in ("conv2d", "linear", "conv_transpose2d"):
        _check_qtensor(node, ins[0], "input")
        w = ins[1]
        if not w.is_const or not w.is_quantized:
            raise _fail(node, f"weight {w.name!r} must be a quantized constant")
        if op == "conv_transpose2d" and w.per_channel:
            raise _fail(node, f"weight {w.name!r} is per-channel; a transposed convolution "
                              "takes per-tensor weights")
        if len(ins) > 2 and not ins[2].is_const:
            raise _fail(node, f"bias {ins[2].name!r} must be a constant")
        if w.per_channel and (w.axis != 0 or len(w.scale) != w.shape[0]):
            raise _fail(node, f"per-channel weight {w.name!r} needs one scale per output channel "
                              f"on axis 0 (axis={w.axis}, {len(w.scale)} scales)")
        _check_requant(node, a)
        _check_qtensor(node, out, "output")
        return
    for i, t in enumerate(ins):
        _check_qtensor(node, t, f"input {i}")
    _check_qtensor(node, out, "output")
    if op in SAME_QPARAMS and not _same_qp(node, ins, out):
        raise _fail(node, f"output {out.name!r} must keep the input's qparams "
                          f"({ins[0].describe()} vs {out.describe()})")
    fl = node.flavour
    keeps = (
        (op == "avg_pool2d" and fl != "onnxruntime")
        or (op == "global_avg_pool" and fl != "onnxruntime")
        or (op == "leaky_relu" and fl in _TFLITE_LIKE)
    )
    if keeps and not _same_qp(node, ins, out):
        raise _fail(node, f"in the {fl} flavour the output must keep the input's qparams "
                          f"({ins[0].describe()} vs {out.describe()})")
    if op == "leaky_relu" and fl in _TFLITE_LIKE and ("mult" not in a or "shift" not in a):
        raise _fail(node, f"the {fl} flavour needs integer slope attributes 'mult' and 'shift'")
    if op == "lut":
        if ins[0].dtype not in ("uint8", "int8"):
            raise _fail(node, f"a table lookup needs an 8-bit input, not {ins[0].dtype}")
        for key in ("table", "scalar_table"):
            if key not in a and key == "scalar_table":
                continue
            tab = np.asarray(a.get(key, ()))
            if tab.shape != (256,) or tab.dtype.kind not in "iu" or (
                    tab.min() < out.qmin or tab.max() > out.qmax):
                raise _fail(node, f"'{key}' must be 256 integer codes within the output's "
                                  f"{out.qmin}..{out.qmax}")
    if op == "add" and fl == "torch-fbgemm" and ins[0].layout != ins[1].layout:
        raise _fail(node, f"inputs have different memory layouts ({ins[0].layout}, "
                          f"{ins[1].layout}); PyTorch's element order is then not reproduced")


def _check_pow2(node: Node, tensors: list[Tensor]) -> None:
    """pow2/fixed16 nodes work on symmetric codes with power-of-two scales."""
    for t in tensors:
        if not t.is_quantized:
            continue
        z = np.atleast_1d(np.asarray(t.zero_point))
        s = np.atleast_1d(np.asarray(t.scale, dtype=np.float64))
        if np.any(z != 0) or np.any(np.frexp(s)[0] != 0.5):
            raise _fail(node, f"the {node.flavour} flavour needs zero point 0 and power-of-two "
                              f"scales; {t.name!r} is {t.describe()}")


def validate_node(graph: Graph, node: Node) -> None:
    """Check one node: op, flavour, arity, attributes, shapes, dtypes and qparams."""
    if node.op not in OPS:
        raise _fail(node, f"unknown op (known: {', '.join(sorted(OPS))})")
    if node.flavour not in OPS[node.op]:
        allowed = ", ".join(sorted(f for f in OPS[node.op] if f)) or "none"
        raise _fail(node, f"flavour {node.flavour!r} is not supported (allowed: {allowed})")
    lo, hi = _ARITY.get(node.op, (1, 1))
    if not lo <= len(node.inputs) <= hi:
        raise _fail(node, f"takes {lo}..{hi} inputs, got {len(node.inputs)}")
    if len(node.outputs) != 1:
        raise _fail(node, f"must have one output, has {len(node.outputs)}")
    for name in node.inputs + node.outputs:
        if name not in graph.tensors:
            raise _fail(node, f"refers to unknown tensor {name!r}")
    ins = [graph.tensors[i] for i in node.inputs]
    outs = [graph.tensors[o] for o in node.outputs]
    shape = _SHAPES[node.op](node, node.attrs, ins)
    if tuple(shape) != outs[0].shape:
        raise _fail(node, f"output {outs[0].name!r} has shape {list(outs[0].shape)}, the op "
                          f"gives {list(shape)}")
    _check_quant(graph, node, ins, outs)
    if node.flavour in ("pow2", "fixed16"):
        _check_pow2(node, ins + outs)


def _validate_tensor(t: Tensor) -> None:
    def fail(why):
        return IRError(f"tensor {t.name!r}: {why}")

    if t.dtype not in DTYPES:
        raise fail(f"dtype must be one of {DTYPES}, not {t.dtype!r}")
    if t.layout not in LAYOUTS:
        raise fail(f"layout must be one of {LAYOUTS}, not {t.layout!r}")
    if any(d <= 0 for d in t.shape) or not t.shape:
        raise fail(f"shape {list(t.shape)} must be static and positive")
    if t.is_float:
        if t.scale is not None:
            raise fail("a float32 tensor has no scale")
    elif t.scale is not None:
        s = np.atleast_1d(np.asarray(t.scale, dtype=np.float64))
        if not np.all(np.isfinite(s)) or np.any(s <= 0):
            raise fail(f"scale must be finite and > 0, got {t.scale!r}")
        z = np.atleast_1d(np.asarray(t.zero_point))
        lo, hi = DTYPE_RANGE[t.dtype]
        if z.size not in (1, s.size) or np.any(z < lo) or np.any(z > hi):
            raise fail(f"zero point {t.zero_point!r} outside {t.dtype} or not matching the scales")
        if t.per_channel:
            if t.axis is None or not 0 <= t.axis < len(t.shape) or t.shape[t.axis] != s.size:
                raise fail(f"per-channel scales ({s.size}) do not match axis {t.axis} of shape "
                           f"{list(t.shape)}")
        if not lo <= t.qmin <= t.qmax <= hi:
            raise fail(f"code range {t.qmin}..{t.qmax} outside {t.dtype}")
    if t.data is not None:
        if tuple(t.data.shape) != t.shape:
            raise fail(f"data shape {list(t.data.shape)} differs from shape {list(t.shape)}")
        if t.dtype in DTYPE_RANGE:
            lo, hi = DTYPE_RANGE[t.dtype]
            if t.data.dtype.kind not in "iu" or (t.data.size and (t.data.min() < lo
                                                                  or t.data.max() > hi)):
                raise fail(f"data must be integers within {t.dtype}")


def validate_graph(graph: Graph) -> None:
    """Check the graph: tensors, nodes in topological order, inputs/outputs, one torch engine."""
    for t in graph.tensors.values():
        _validate_tensor(t)
    if not graph.inputs or not graph.outputs:
        raise IRError(f"graph {graph.name!r} needs at least one input and one output")
    available = set(graph.inputs) | {k for k, t in graph.tensors.items() if t.is_const}
    for name in graph.inputs:
        if name not in graph.tensors:
            raise IRError(f"graph input {name!r} is not a tensor of the graph")
        if len(graph.tensors[name].shape) != 4:
            raise IRError(f"graph input {name!r} must be 4-D NCHW, has shape "
                          f"{list(graph.tensors[name].shape)}")
    produced: set[str] = set()
    for node in graph.nodes:
        for i in node.inputs:
            if i not in available:
                raise _fail(node, f"input {i!r} is not produced before this node")
        validate_node(graph, node)
        for o in node.outputs:
            if o in produced or o in graph.inputs or graph.tensors[o].is_const:
                raise _fail(node, f"output {o!r} is already defined")
            produced.add(o)
            available.add(o)
    for name in graph.outputs:
        if name not in available:
            raise IRError(f"graph output {name!r} is never produced")
    engines: dict[str, str] = {}
    for node in graph.nodes:
        if node.flavour in TORCH_FLAVOURS:
            engines.setdefault(node.flavour, node.name)
    if len(engines) > 1:
        detail = ", ".join(f"{n!r} is {fl}" for fl, n in sorted(engines.items()))
        raise IRError(f"graph {graph.name!r} mixes PyTorch engines ({detail}); a model runs "
                      "under one quantized engine")
