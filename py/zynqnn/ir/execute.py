"""Run an IR graph with the golden model (:mod:`zynqnn.numerics`), node by node.

Every node is evaluated in its flavour's arithmetic: conv/linear by exact integer accumulation
(``torch-fbgemm`` depthwise convs that PyTorch runs in fbgemm's depthwise kernel: with that
kernel's int16 pair saturation) and the node's :class:`~zynqnn.numerics.Requant`, element-wise
ops and pooling by the framework's own formula (and, for PyTorch, its kernel path:
channels-last or contiguous, vector body or scalar tail). Shapes are static except the batch:
``run`` accepts any leading size.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..numerics import make_requant, ops
from . import kernels as K
from .core import Graph, IRError, Node, Tensor

__all__ = ["node_requant", "quantize_input", "run", "run_all", "run_int", "effective_clamp",
           "fbgemm_saturates"]

_TFLITE_LIKE = ("tflite", "pow2", "fixed16")
f32 = np.float32


def _as_array(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _requant_options(node: Node) -> tuple[str, dict]:
    rq = dict(node.attrs["requant"])
    scheme = rq.pop("scheme")
    if "leaky" in rq and rq["leaky"] is not None:
        rq["leaky"] = tuple(rq["leaky"])
    return scheme, rq


def node_requant(graph: Graph, node: Node):
    """The :class:`~zynqnn.numerics.Requant` of a conv2d/linear node (built once, cached)."""
    key = ("requant", node.name)
    if key not in graph._cache:
        x, w = graph.tensors[node.inputs[0]], graph.tensors[node.inputs[1]]
        out = graph.tensors[node.outputs[0]]
        bias = graph.tensors[node.inputs[2]].data if len(node.inputs) > 2 else None
        scheme, options = _requant_options(node)
        try:
            graph._cache[key] = make_requant(
                scheme, x.scale, w.scale, out.scale, out.zero_point, bias, out.qmin, out.qmax,
                relu=node.attrs.get("activation") == "relu", **options)
        except ValueError as exc:
            raise IRError(f"node {node.name!r} ({node.op}): {exc}") from None
    return graph._cache[key]


def effective_clamp(graph: Graph, node: Node) -> tuple[int, int]:
    """The output clamp of a conv2d/linear node: requantizer bounds and fused activation."""
    rq = node_requant(graph, node)
    lo, hi = rq.lo, rq.hi
    c = node.attrs.get("clamp")
    if c is not None:
        lo, hi = max(lo, int(c[0])), min(hi, int(c[1]))
    return lo, hi


def _packed(graph: Graph, node: Node, groups: int = 1):
    key = ("packed", node.name)
    if key not in graph._cache:
        w = graph.tensors[node.inputs[1]]
        graph._cache[key] = ops.pack_weights(w.data, w.zero_point, groups)
    return graph._cache[key]


def _requantize_acc(rq, acc: np.ndarray, axis: int, hw: bool) -> np.ndarray:
    """``rq.apply[_hw](acc)``; shift schemes also take accumulators beyond int32.

    The int16 build accumulates in 48 bits; ``Requant`` checks for int32 accumulators, so for
    ``pow2``/``fixed16`` the same datapath (bias alignment, rounding shift, clamp) is applied
    to the wider values through the requantizer's own steps.
    """
    if rq.scheme in ("pow2", "fixed16") and acc.size and (
            acc.min() < -(2**31) or acc.max() > 2**31 - 1):
        from ..numerics.rounding import shift_round, shift_round_float

        v = rq._v(acc, axis)
        r = rq._shifted(v, rq._b(rq.shift, acc, axis), shift_round if hw else shift_round_float)
        return rq._finish(r)
    return rq.apply_hw(acc, axis=axis) if hw else rq.apply(acc, axis=axis)


def _clip(node: Node, y: np.ndarray) -> np.ndarray:
    c = node.attrs.get("clamp")
    if c is None:
        return y
    return np.clip(y, int(c[0]), int(c[1]))


# ---------------------------------------------------------------------------------------------
# kernels: (graph, node, input values, input tensors, output tensor, hw) -> value


def _quantize(g, n, v, ins, out, hw):
    return K.quantize(n.flavour, v[0], out.scale, out.zero_point, out.dtype, out.qmin, out.qmax,
                      n.attrs.get("rounding"), n.attrs.get("overflow"))


def _dequantize(g, n, v, ins, out, hw):
    return K.dequantize(n.flavour, v[0], ins[0].scale, ins[0].zero_point)


def _requantize(g, n, v, ins, out, hw):
    if ins[0].same_qparams(out):
        return v[0]
    return K.requantize(n.flavour, v[0], ins[0].scale, ins[0].zero_point, out.scale,
                        out.zero_point, out.dtype, out.qmin, out.qmax)


def fbgemm_saturates(graph: Graph, node: Node) -> bool:
    """Whether a conv2d node runs in fbgemm's depthwise kernel, whose int16 pair sums saturate
    (``torch-fbgemm`` flavour; :func:`zynqnn.numerics.ops.fbgemm_depthwise_path`)."""
    if node.op != "conv2d" or node.flavour != "torch-fbgemm":
        return False
    a = node.attrs
    x, w = graph.tensors[node.inputs[0]], graph.tensors[node.inputs[1]]
    k, _, kh, kw = w.shape
    return ops.fbgemm_depthwise_path(x.shape[1], k, int(a.get("groups", 1)), (kh, kw),
                                     a["stride"], a["padding"], a.get("dilation", 1))


def _conv2d(g, n, v, ins, out, hw):
    a = n.attrs
    groups = int(a.get("groups", 1))
    key = ("fbgemm_dw", n.name)
    if key not in g._cache:
        g._cache[key] = fbgemm_saturates(g, n)
    acc = ops.conv2d_acc(v[0], _packed(g, n, groups), ins[0].zero_point, stride=a["stride"],
                         padding=a["padding"], dilation=a.get("dilation", 1),
                         saturate_pairs=g._cache[key])
    return _clip(n, _requantize_acc(node_requant(g, n), acc, 1, hw))


def _conv_transpose2d(g, n, v, ins, out, hw):
    a, w = n.attrs, ins[1]
    acc = K.conv_transpose2d_acc(v[0], w.data, ins[0].zero_point, int(w.zero_point),
                                 a["stride"], a["padding"], a.get("output_padding", [0, 0]),
                                 a.get("dilation", [1, 1]), int(a.get("groups", 1)))
    return _clip(n, _requantize_acc(node_requant(g, n), acc, 1, hw))


def _linear(g, n, v, ins, out, hw):
    acc = ops.linear_acc(v[0], _packed(g, n), ins[0].zero_point)
    return _clip(n, _requantize_acc(node_requant(g, n), acc, -1, hw))


def _max_pool2d(g, n, v, ins, out, hw):
    a = n.attrs
    return ops.max_pool2d(v[0], a["kernel"], a.get("stride"), a.get("padding", 0),
                          a.get("dilation", 1), a.get("ceil_mode", False), a.get("pad_value"))


def _avg_pool2d(g, n, v, ins, out, hw):
    a, x, fl = n.attrs, ins[0], n.flavour
    kernel, stride, padding = a["kernel"], a.get("stride"), a.get("padding", 0)
    if fl == "torch-qnnpack" and not a.get("ceil_mode", False) and x.dtype == "uint8":
        return K.avg_pool2d_qnnpack(v[0], kernel, x.scale, x.zero_point, stride, padding)
    if fl in ("torch-fbgemm", "torch-qnnpack"):
        return ops.avg_pool2d_torch(
            v[0], kernel, x.zero_point, stride, padding, a.get("ceil_mode", False),
            a.get("count_include_pad", True), a.get("divisor_override"),
            layout="nhwc" if x.layout == "nhwc" else "nchw",
            vector_width=a.get("vector_width", 16), qmin=x.qmin, qmax=x.qmax)
    if fl == "onnxruntime":
        return ops.avg_pool2d_onnxruntime(
            v[0], kernel, x.scale, x.zero_point, out.scale, out.zero_point, stride, padding,
            a.get("count_include_pad", False), qmin=out.qmin, qmax=out.qmax)
    return ops.avg_pool2d_tflite(v[0], kernel, stride, padding, act_min=out.qmin,
                                 act_max=out.qmax)


def _adaptive(g, n, v, ins, out, hw):
    x = ins[0]
    oh, ow = n.attrs["output_size"]
    h, w = x.shape[2], x.shape[3]
    if (n.flavour == "torch-qnnpack" and x.dtype == "uint8" and (h, w) != (oh, ow)
            and h % oh == 0 and w % ow == 0):
        k = (h // oh, w // ow)
        return K.avg_pool2d_qnnpack(v[0], k, x.scale, x.zero_point, k, 0)
    return ops.adaptive_avg_pool2d_torch(v[0], (oh, ow), x.zero_point,
                                         layout="nhwc" if x.layout == "nhwc" else "nchw",
                                         vector_width=n.attrs.get("vector_width", 8),
                                         qmin=x.qmin, qmax=x.qmax)


def _global_avg_pool(g, n, v, ins, out, hw):
    x = ins[0]
    if n.flavour == "onnxruntime":
        return ops.global_avg_pool_onnxruntime(v[0], x.scale, x.zero_point, out.scale,
                                               out.zero_point, qmin=out.qmin, qmax=out.qmax)
    return ops.avg_pool2d_tflite(v[0], (x.shape[2], x.shape[3]), act_min=out.qmin,
                                 act_max=out.qmax)


def _add(g, n, v, ins, out, hw):
    a, b = ins
    fl = n.flavour
    relu = bool(n.attrs.get("relu", False))
    args = (a.scale, a.zero_point)
    if fl == "torch-fbgemm":
        def fn(qa, qb, path):
            return ops.add_torch(qa, a.scale, a.zero_point, qb, b.scale, b.zero_point, out.scale,
                                 out.zero_point, relu=relu, path=path, hw=hw, qmin=out.qmin,
                                 qmax=out.qmax)

        block = n.attrs.get("vector_block", K.torch_vector_block())
        return K.torch_elementwise(fn, [v[0], v[1]], a.layout, block)
    if fl == "torch-qnnpack":
        return ops.add_qnnpack(v[0], *args, v[1], b.scale, b.zero_point, out.scale,
                               out.zero_point, relu=relu, qmin=out.qmin, qmax=out.qmax)
    if fl == "onnxruntime":
        y = ops.add_onnxruntime(v[0], *args, v[1], b.scale, b.zero_point, out.scale,
                                out.zero_point, qmin=out.qmin, qmax=out.qmax, hw=hw)
    else:
        ls = n.attrs.get("left_shift", 15 if out.dtype.endswith("16") else 20)
        y = ops.add_tflite(v[0], *args, v[1], b.scale, b.zero_point, out.scale, out.zero_point,
                           qmin=out.qmin, qmax=out.qmax, left_shift=ls)
    return np.maximum(y, out.zero_point) if relu else y


def _relu(g, n, v, ins, out, hw):
    return ops.relu(v[0], ins[0].zero_point)


def _bounds(n: Node, x: Tensor, lo_f: float | None, hi_f: float | None) -> tuple[int, int]:
    def q(val, default):
        if val is None:
            return default
        if n.flavour in ("torch-fbgemm", "torch-qnnpack"):
            from ..numerics.quant import torch_quantize_val

            inv = f32(f32(1) / f32(x.scale))
            return int(torch_quantize_val(f32(val), inv, x.zero_point, x.qmin, x.qmax))
        return int(K.quantize(n.flavour, np.array([val], dtype=f32), x.scale, x.zero_point,
                              x.dtype, x.qmin, x.qmax)[0])

    return q(lo_f, x.qmin), q(hi_f, x.qmax)


def _hardtanh(g, n, v, ins, out, hw):
    if n.op == "relu6":
        lo_f, hi_f = 0.0, 6.0
    else:
        lo_f, hi_f = n.attrs.get("min_val", -1.0), n.attrs.get("max_val", 1.0)
    lo, hi = _bounds(n, ins[0], lo_f, hi_f)
    return np.minimum(np.maximum(v[0], lo), hi)


def _clamp(g, n, v, ins, out, hw):
    lo, hi = n.attrs.get("lo"), n.attrs.get("hi")
    y = v[0]
    if lo is not None:
        y = np.maximum(y, int(lo))
    if hi is not None:
        y = np.minimum(y, int(hi))
    return y


def _leaky_relu(g, n, v, ins, out, hw):
    x, fl, a = ins[0], n.flavour, n.attrs
    if fl in ("torch-fbgemm", "torch-qnnpack"):
        slope = a["negative_slope"]

        def fn(q, path):
            return ops.leaky_relu_torch(q, x.scale, x.zero_point, out.scale, out.zero_point,
                                        slope, path=path, qmin=out.qmin, qmax=out.qmax)

        block = a.get("vector_block", K.torch_vector_block())
        return K.torch_elementwise(fn, [v[0]], x.layout, block)
    if fl == "onnxruntime":
        return K.leaky_relu_onnxruntime(v[0], x.scale, x.zero_point, out.scale, out.zero_point,
                                        a["negative_slope"], qmin=x.qmin, qmax=x.qmax)
    return ops.leaky_relu_fixed(v[0], x.zero_point, a["mult"], a["shift"],
                                a.get("rounding", "half_up"), qmin=out.qmin, qmax=out.qmax)


def _upsample(g, n, v, ins, out, hw):
    fh, fw = n.attrs["scale"]
    return np.repeat(np.repeat(v[0], fh, axis=2), fw, axis=3)


def _concat(g, n, v, ins, out, hw):
    axis = int(n.attrs.get("axis", 1))
    if all(t.same_qparams(out) for t in ins):
        return np.concatenate(v, axis=axis)
    scales = [t.scale for t in ins]
    zps = [t.zero_point for t in ins]
    fl = n.flavour
    if fl in ("torch-fbgemm", "torch-qnnpack"):
        nhwc = axis % 4 == 1 and all(len(t.shape) == 4 and t.layout == "nhwc" for t in ins)
        return ops.concat_torch(v, scales, zps, out.scale, out.zero_point, axis=axis,
                                path="nhwc" if nhwc else "generic", qmin=out.qmin, qmax=out.qmax)
    if fl == "onnxruntime":
        return ops.concat_onnxruntime(v, scales, zps, out.scale, out.zero_point, axis=axis,
                                      qmin=out.qmin, qmax=out.qmax)
    return ops.concat_tflite(v, scales, zps, out.scale, out.zero_point, axis=axis,
                             qmin=out.qmin, qmax=out.qmax)


def _flatten(g, n, v, ins, out, hw):
    start = int(n.attrs.get("start_dim", 1))
    return v[0].reshape(v[0].shape[:start] + (-1,))


def _reshape(g, n, v, ins, out, hw):
    shape = list(n.attrs["shape"])
    if shape and shape[0] != -1 and v[0].shape[0] != ins[0].shape[0]:
        shape[0] = v[0].shape[0]  # another batch size than the graph's
    return v[0].reshape(shape)


def _pad(g, n, v, ins, out, hw):
    value = n.attrs.get("value")
    return ops.pad2d(v[0], n.attrs["pads"], ins[0].zero_point if value is None else value)


def _slice(g, n, v, ins, out, hw):
    a = n.attrs
    idx = [slice(None)] * v[0].ndim
    idx[int(a["axis"])] = slice(int(a["start"]), int(a["end"]))
    return v[0][tuple(idx)]


def shuffle_perm(channels: int, groups: int) -> np.ndarray:
    """Input channel of each output channel of a channel shuffle with ``groups`` groups."""
    i = np.arange(channels)
    return (i % groups) * (channels // groups) + i // groups


def _channel_shuffle(g, n, v, ins, out, hw):
    x = v[0]
    return x[:, shuffle_perm(x.shape[1], int(n.attrs["groups"]))]


def _transpose(g, n, v, ins, out, hw):
    return np.transpose(v[0], list(n.attrs["perm"]))


def _batch_norm(g, n, v, ins, out, hw):
    key = ("bn_table", n.name)
    if key not in g._cache:
        g._cache[key] = np.asarray(n.attrs["table"], dtype=np.int64)
    table = g._cache[key]
    x = v[0]
    idx = np.clip(x - int(n.attrs["in_lo"]), 0, table.shape[1] - 1)
    ch = np.arange(x.shape[1]).reshape(1, -1, 1, 1)
    return table[ch, idx]
def _lut(g, n, v, ins, out, hw):
    a = n.attrs
    table = np.asarray(a["table"], dtype=np.int64)
    if "scalar_table" in a:
        tables = {"vector": table, "scalar": np.asarray(a["scalar_table"], dtype=np.int64)}

        def fn(q, path):
            return tables[path][np.asarray(q, dtype=np.int64) & 0xFF]

        block = int(a.get("vector_block", K.torch_vector_block()) or 0)
        return K.torch_elementwise(fn, [v[0]], ins[0].layout, block)
    return table[np.asarray(v[0], dtype=np.int64) & 0xFF]


KERNELS = {
    "quantize": _quantize,
    "dequantize": _dequantize,
    "requantize": _requantize,
    "conv2d": _conv2d,
    "conv_transpose2d": _conv_transpose2d,
    "linear": _linear,
    "max_pool2d": _max_pool2d,
    "avg_pool2d": _avg_pool2d,
    "adaptive_avg_pool2d": _adaptive,
    "global_avg_pool": _global_avg_pool,
    "add": _add,
    "relu": _relu,
    "relu6": _hardtanh,
    "hardtanh": _hardtanh,
    "clamp": _clamp,
    "leaky_relu": _leaky_relu,
    "upsample_nearest": _upsample,
    "concat": _concat,
    "flatten": _flatten,
    "reshape": _reshape,
    "pad": _pad,
    "slice": _slice,
    "channel_shuffle": _channel_shuffle,
    "transpose": _transpose,
    "batch_norm": _batch_norm,
    "lut": _lut,
}


# ---------------------------------------------------------------------------------------------
# drivers


def _check_input(graph: Graph, name: str, x: Any, integer: bool) -> np.ndarray:
    t = graph.tensors[name]
    x = _as_array(x)
    if integer:
        if x.dtype.kind not in "iu":
            raise IRError(f"input {name!r} must be integer codes, got dtype {x.dtype}")
        x = x.astype(np.int64)
    else:
        if x.dtype.kind != "f":
            raise IRError(f"input {name!r} must be float32, got dtype {x.dtype}")
        x = x.astype(np.float32)
    if x.ndim != len(t.shape) or tuple(x.shape[1:]) != t.shape[1:]:
        raise IRError(f"input {name!r} must have shape (N, {', '.join(map(str, t.shape[1:]))}), "
                      f"got {list(x.shape)}")
    return x


def _evaluate(graph: Graph, env: dict[str, np.ndarray], hw: bool, start: int = 0
              ) -> dict[str, np.ndarray]:
    consts = graph._cache.get("_consts")
    if consts is None:
        consts = {k: t.data for k, t in graph.tensors.items() if t.is_const}
        graph._cache["_consts"] = consts
    for node in graph.nodes[start:]:
        if node.outputs[0] in env:
            continue
        vals = []
        for i in node.inputs:
            if i in env:
                vals.append(env[i])
            elif i in consts:
                vals.append(consts[i])
            else:
                raise IRError(f"node {node.name!r}: input {i!r} has no value")
        ins = [graph.tensors[i] for i in node.inputs]
        out = graph.tensors[node.outputs[0]]
        try:
            env[node.outputs[0]] = KERNELS[node.op](graph, node, vals, ins, out, hw)
        except KeyError:
            raise IRError(f"node {node.name!r}: no kernel for op {node.op!r}") from None
    return env


def _inputs(graph: Graph, values: Sequence[Any], names: list[str], integer: bool) -> dict:
    if len(values) == 1 and isinstance(values[0], (tuple, list)) and len(names) > 1:
        values = values[0]
    if len(values) != len(names):
        raise IRError(f"graph {graph.name!r} takes {len(names)} input(s), got {len(values)}")
    return {n: _check_input(graph, n, v, integer) if n in graph.inputs else
            _as_array(v).astype(np.int64) for n, v in zip(names, values, strict=True)}


def _result(vals: list[np.ndarray]) -> Any:
    return vals[0] if len(vals) == 1 else tuple(vals)


def run_all(graph: Graph, inputs: Sequence[Any], hw: bool = False) -> dict[str, np.ndarray]:
    env = _inputs(graph, inputs, graph.inputs, integer=False)
    return _evaluate(graph, env, hw)


def run(graph: Graph, inputs: Sequence[Any], hw: bool = False) -> Any:
    env = run_all(graph, inputs, hw)
    return _result([env[o] for o in graph.outputs])


def run_int(graph: Graph, codes: Sequence[Any], hw: bool = False) -> Any:
    names = graph.quant_inputs
    if len(codes) == 1 and isinstance(codes[0], (tuple, list)) and len(names) > 1:
        codes = codes[0]
    if len(codes) != len(names):
        raise IRError(f"graph {graph.name!r} takes {len(names)} input(s), got {len(codes)}")
    env = {}
    for name, c in zip(names, codes, strict=True):
        t = graph.tensors[name]
        c = _as_array(c)
        if c.dtype.kind not in "iu":
            raise IRError(f"run_int: input {name!r} must be integer codes, got dtype {c.dtype}")
        c = c.astype(np.int64)
        if c.ndim != len(t.shape) or tuple(c.shape[1:]) != t.shape[1:]:
            raise IRError(f"run_int: input {name!r} must have shape (N, "
                          f"{', '.join(map(str, t.shape[1:]))}), got {list(c.shape)}")
        if c.size and (c.min() < t.qmin or c.max() > t.qmax):
            raise IRError(f"run_int: input {name!r} holds codes outside {t.qmin}..{t.qmax}")
        env[name] = c
    env = _evaluate(graph, env, hw)
    return _result([env[o] for o in graph.quant_outputs])


def quantize_input(graph: Graph, x: Any, index: int = 0) -> np.ndarray:
    name = graph.inputs[index]
    q = graph.quant_inputs[index]
    node = graph.producer(q)
    xv = _check_input(graph, name, x, integer=False)
    out = graph.tensors[q]
    return _quantize(graph, node, [xv], [graph.tensors[name]], out, False)
