"""A framework-neutral Q/DQ graph and the pattern matcher that lowers it to the IR.

Importers of "quantize/dequantize" models (ONNX QDQ and QOperator, and later PyTorch pt2e and
Brevitas QCDQ) translate their graph into a :class:`QDQGraph`: neutral ops with IR-style
attributes, working on *float* values, plus explicit ``quantize`` / ``dequantize`` nodes whose
qparams are constants. :func:`lower` then recognises the patterns a quantized runtime executes
as integer kernels:

=======================================  ===================================================
pattern                                  IR
=======================================  ===================================================
float input -> quantize                  ``quantize``
DQ(a) [, DQ(b) ...] -> op -> Q           the integer op (``conv2d``, ``linear``, ``add``,
                                         ``avg_pool2d``, ``global_avg_pool``,
                                         ``leaky_relu``, ``concat``) with Q's qparams
DQ(q) -> c1 -> ... -> ck -> Q            ``requantize`` (if qparams differ) + c1..ck on codes,
                                         where ci commute with quantization (max pool, zero pad,
                                         nearest upsample, ReLU, clamp, flatten/reshape)
Q -> clip(int bounds) -> DQ  (QCDQ)      ``clamp`` on codes (narrow ranges, Brevitas)
op on codes (MaxPool of uint8 ...)       the op on codes
DQ(q) -> act -> Q                        ``lut`` (act: ``sigmoid``, ``tanh``, ``hardsigmoid``,
                                         ``hardswish``): the table from ``lut_table``
DQ(q), DQ(sigmoid(q)) -> mul -> Q        ``lut`` (``silu``: SiLU / Swish as ONNX exports it,
                                         either operand order): the table from ``mul_table``
DQ(q) -> graph output                    ``dequantize``
=======================================  ===================================================

Weights and biases are ``dequantize`` nodes on integer constants. Anything else (a float op
whose output is not re-quantized, a weight that is not quantized, an op that does not commute
with quantization between DQ and Q) raises :class:`~zynqnn.frontend.FrontendError` naming the
node.

Neutral ops (``QNode.op``) and attributes:

* ``quantize`` / ``dequantize``: ``scale``, ``zero_point`` (scalars or 1-D), ``dtype``,
  ``axis``;
* compute (float in, re-quantized out): ``conv2d`` (x, w[, b]; ``stride``, ``padding``
  [t, b, l, r] or ``auto_pad``, ``dilation``, ``groups``), ``linear`` (x, w[, b];
  ``transpose_w``: the weight is (C, K)), ``add``, ``avg_pool2d`` (``kernel``, ``stride``,
  ``padding``, ``ceil_mode``, ``count_include_pad``), ``global_avg_pool``, ``leaky_relu``
  (``negative_slope``), ``concat`` (``axis``), ``sigmoid``, ``tanh``, ``hardsigmoid``
  (``alpha``, ``beta``), ``hardswish``, ``mul`` (two inputs; only ``x * sigmoid(x)`` of one
  quantized tensor lowers, to a ``lut``; any other multiply is refused naming the node);
* commuting: ``max_pool2d`` (``kernel``, ``stride``, ``padding``, ``dilation``, ``ceil_mode``),
  ``pad`` (``pads`` [t, b, l, r], ``value`` float or ``value_code`` on codes),
  ``upsample_nearest`` (``scale``, or ONNX ``scales``/``sizes`` + resize modes checked to be a
  plain repeat), ``flatten`` (``start_dim``), ``reshape`` (``shape``, ONNX 0/-1 rules),
  ``relu``, ``clip`` (``min``, ``max``; on codes when its input is quantized), ``identity``.

A pt2e importer maps ``quantized_decomposed.quantize_per_tensor`` / ``dequantize_per_tensor``
/ ``..._per_channel`` to ``quantize`` / ``dequantize`` and ``aten.conv2d`` / ``aten.linear``
/ ``aten.add`` / ``aten.max_pool2d`` ... to the ops above, then calls ``lower(qg, flavour)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..ir import Graph, IRError, Node, Tensor, infer_shape
from ..numerics import quant
from .common import FrontendError

__all__ = ["QDQGraph", "QNode", "lower", "COMMUTING", "COMPUTE"]

#: Unary activations that become a ``lut`` node: their 256-entry table comes from the
#: importer's ``QDQGraph.lut_table`` (the framework's own arithmetic on every code).
LUT_OPS = ("sigmoid", "tanh", "hardsigmoid", "hardswish")
COMPUTE = ("conv2d", "linear", "add", "avg_pool2d", "global_avg_pool", "leaky_relu", "concat",
           "batch_norm", "mul", *LUT_OPS)
COMMUTING = ("max_pool2d", "pad", "upsample_nearest", "flatten", "reshape", "relu", "clip",
             "identity", "slice", "transpose")


@dataclass
class QNode:
    """One neutral op: ``inputs``/``outputs`` are value names ("" = absent optional input)."""

    name: str
    op: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)
    source: str | None = None  # the framework's op type, for messages (IR source: the name)


@dataclass
class QDQGraph:
    """Nodes in topological order, constants, float inputs with static shapes, outputs."""

    nodes: list[QNode]
    consts: dict[str, np.ndarray]
    inputs: list[tuple[str, tuple[int, ...]]]
    outputs: list[str]
    name: str = "graph"
    kind: str = "model"  # for messages, e.g. "ONNX"
    where: str | None = None  # the file, for messages ("... in m.onnx: ...")
    #: ``lut_table(node, x, y) -> 256 codes``: the table of a unary activation (``LUT_OPS``)
    #: from input tensor ``x`` to output qparams ``y`` (IR tensors), as the framework computes
    #: it; None: such activations are refused.
    lut_table: Any = None
    #: ``mul_table(mul, sigmoid, x, s, y, s_first) -> 256 codes``: the table of ``x * s`` where
    #: ``s`` is the output of the lookup table of ``sigmoid(x)`` (QNodes ``mul`` and
    #: ``sigmoid``; IR tensors ``x``, ``s`` and the output ``y``; ``s_first``: ``s`` is the
    #: multiply's first operand), as the framework computes the pair on every code of ``x``;
    #: None: refused.
    mul_table: Any = None


# -- values during lowering ---------------------------------------------------------------------


@dataclass
class _FloatIn:
    name: str


@dataclass
class _Q:
    name: str  # IR tensor


@dataclass
class _DQ:
    q: str
    ops: list[tuple[str, dict, tuple[int, ...]]] = field(default_factory=list)


@dataclass
class _QConst:
    codes: np.ndarray
    scale: Any
    zero_point: Any
    axis: int | None
    dtype: str


@dataclass
class _DQConst(_QConst):
    pass


@dataclass
class _Const:
    value: np.ndarray


@dataclass
class _Pending:
    node: QNode
    args: list[Any]


def _scalar(v):
    a = np.asarray(v)
    return a.item() if a.size == 1 else a


_NP_DTYPE = {np.dtype(np.uint8): "uint8", np.dtype(np.int8): "int8",
             np.dtype(np.uint16): "uint16", np.dtype(np.int16): "int16",
             np.dtype(np.int32): "int32"}


class _Lowering:
    def __init__(self, qg: QDQGraph, flavour: str):
        self.qg = qg
        self.flavour = flavour
        self.g = Graph(qg.name)
        self.vals: dict[str, Any] = {}
        self.uses: dict[str, int] = {}
        #: IR tensor of a lookup table's output -> (its QNode, its input IR tensor)
        self.lut_src: dict[str, tuple[QNode, str]] = {}
        #: sigmoid tables a SiLU table replaced: dropped at the end when nothing else reads them
        self.fused: list[str] = []
        for n in qg.nodes:
            for i in n.inputs:
                if i:
                    self.uses[i] = self.uses.get(i, 0) + 1

    def fail(self, node: QNode, why: str) -> FrontendError:
        src = f" ({node.source})" if node.source and node.source != node.op else ""
        where = f" in {self.qg.where}" if self.qg.where else ""
        return FrontendError(f"{self.qg.kind} node {node.name!r}{src}{where}: {why}",
                             node=node.name, path=self.qg.where)

    # -- values ----------------------------------------------------------------------------------
    def val(self, node: QNode, name: str):
        if not name:
            return None
        if name in self.vals:
            return self.vals[name]
        if name in self.qg.consts:
            return _Const(np.asarray(self.qg.consts[name]))
        raise self.fail(node, f"input {name!r} is never produced")

    def tensor(self, q: _Q) -> Tensor:
        return self.g.tensors[q.name]

    def new_tensor(self, base: str, shape, dtype: str, scale, zp, layout="nchw", qmin=None,
                   qmax=None) -> _Q:
        name = self.g.unique_name(base)
        self.g.add_tensor(Tensor(name, tuple(shape), dtype, scale, zp,
                                 layout=layout if len(shape) == 4 else "nc", qmin=qmin,
                                 qmax=qmax))
        return _Q(name)

    def emit(self, node: QNode, op: str, inputs: list[str], out: str, attrs: dict | None = None,
             flavour: Any = "default") -> None:
        fl = self.flavour if flavour in ("default", None) else flavour  # every node knows it
        self.g.add_node(Node(self.g.unique_name(node.name), op, inputs, [out], fl,
                             dict(attrs or {}), node.name))

    def const_tensor(self, base: str, c: _QConst, data: np.ndarray | None = None,
                     float_data: bool = False) -> str:
        name = self.g.unique_name(base)
        if float_data:
            self.g.add_tensor(Tensor(name, data.shape, "float32", layout="any", data=data))
            return name
        codes = np.asarray(c.codes if data is None else data).astype(np.int64)
        per_channel = np.ndim(c.scale) == 1 and np.size(c.scale) > 1
        self.g.add_tensor(Tensor(
            name, codes.shape, c.dtype,
            np.asarray(c.scale, dtype=np.float64) if per_channel else float(np.asarray(
                c.scale).reshape(-1)[0]),
            np.asarray(c.zero_point, dtype=np.int64).reshape(-1) if per_channel else int(
                np.asarray(c.zero_point).reshape(-1)[0]),
            axis=(c.axis if per_channel else None), layout="any", data=codes))
        return name

    # -- the walk --------------------------------------------------------------------------------
    def run(self) -> Graph:
        for name, shape in self.qg.inputs:
            t = self.g.unique_name(name)
            self.g.add_tensor(Tensor(t, shape, "float32", layout="nchw"))
            self.g.inputs.append(t)
            self.vals[name] = _FloatIn(t)
        for node in self.qg.nodes:
            handler = getattr(self, "op_" + node.op, None)
            if handler is None:
                if node.op in COMPUTE:
                    handler = self.compute
                elif node.op in COMMUTING:
                    handler = self.commuting
                else:
                    raise self.fail(node, f"operator {node.source or node.op!r} is not supported")
            self.vals[node.outputs[0]] = handler(node)
        for name in self.qg.outputs:
            self.output(name)
        for name in self.fused:
            if name not in self.g.outputs and not self.g.consumers(name):
                self.g.nodes.remove(self.g.producer(name))
                del self.g.tensors[name]
                self.g.invalidate()
        return self.g

    def output(self, name: str) -> None:
        v = self.vals.get(name)
        node = QNode(name, "output", [name], [])
        if isinstance(v, _DQ):
            q = self.apply_pending(node, v)
            t = self.tensor(q)
            out = self.g.unique_name(name)
            self.g.add_tensor(Tensor(out, t.shape, "float32", layout=t.layout))
            self.emit(QNode(name + "_dequantize", "dequantize", [], []), "dequantize",
                      [q.name], out)
            self.g.outputs.append(out)
        elif isinstance(v, _Q):
            self.g.outputs.append(v.name)
        elif isinstance(v, _Pending):
            raise self.fail(v.node, "its output is a graph output in float: the layer is not "
                                    "quantized (zynqnn needs quantized outputs, dequantized)")
        else:
            raise FrontendError(f"{self.qg.kind} output {name!r} is not a quantized tensor")

    # -- quantize / dequantize -------------------------------------------------------------------
    def _qparams(self, node: QNode):
        a = node.attrs
        s = np.asarray(a["scale"], dtype=np.float64)
        if not np.all(np.isfinite(s)):  # NaN compares unequal to itself: say so here
            raise self.fail(node, f"the scale is {'NaN' if np.isnan(s).any() else 'infinite'} "
                                  f"({int(np.count_nonzero(~np.isfinite(s)))} of {s.size} "
                                  "values); a scale must be finite and > 0")
        if np.any(s <= 0):
            raise self.fail(node, f"the scale is {'zero' if np.all(s[s <= 0] == 0) else 'negative'}"
                                  f" ({int(np.count_nonzero(s <= 0))} of {s.size} values); a "
                                  "scale must be finite and > 0")
        return _scalar(a["scale"]), _scalar(a["zero_point"]), a["dtype"], a.get("axis")

    def op_quantize(self, node: QNode):
        scale, zp, dtype, axis = self._qparams(node)
        v = self.val(node, node.inputs[0])
        per_channel = np.ndim(scale) > 0
        if isinstance(v, _Const):
            x = np.asarray(v.value, dtype=np.float32)
            if per_channel:
                ax = (axis or 0) % x.ndim
                shp = [1] * x.ndim
                shp[ax] = -1
                codes = np.stack([quant.quantize_onnxruntime(
                    np.take(x, i, axis=ax), float(np.asarray(scale)[i]),
                    int(np.asarray(zp)[i]), dtype) for i in range(x.shape[ax])], axis=ax)
            else:
                codes = quant.quantize_onnxruntime(x, scale, zp, dtype)
            return _QConst(codes, scale, zp, axis, dtype)
        if per_channel:
            raise self.fail(node, "per-channel quantization of activations is not supported")
        if isinstance(v, _FloatIn):
            q = self.new_tensor(node.outputs[0], self.g.tensors[v.name].shape, dtype, scale, zp)
            self.emit(node, "quantize", [v.name], q.name)
            return q
        if isinstance(v, _Pending):
            return self.emit_compute(node, v, scale, zp, dtype)
        if isinstance(v, _DQ):
            return self.requantize(node, v, scale, zp, dtype)
        if isinstance(v, _Q):
            raise self.fail(node, "quantizes an already quantized tensor")
        raise self.fail(node, f"cannot quantize this input ({type(v).__name__})")

    def op_dequantize(self, node: QNode):
        scale, zp, dtype, axis = self._qparams(node)
        v = self.val(node, node.inputs[0])
        if isinstance(v, _Const):
            codes = np.asarray(v.value)
            if codes.dtype.kind not in "iu":
                raise self.fail(node, f"dequantizes a {codes.dtype} constant")
            return _DQConst(codes.astype(np.int64), scale, zp, axis,
                            _NP_DTYPE.get(codes.dtype, dtype))
        if isinstance(v, _QConst):
            return _DQConst(v.codes, v.scale, v.zero_point, v.axis, v.dtype)
        if isinstance(v, _Q):
            t = self.tensor(v)
            if np.ndim(scale) > 0 or float(scale) != t.scale or int(zp) != t.zero_point:
                raise self.fail(node, f"dequantizes {t.name!r} with other qparams "
                                      f"(s={scale}, zp={zp}) than it was quantized with "
                                      f"(s={t.scale}, zp={t.zero_point})")
            return _DQ(v.name)
        raise self.fail(node, f"dequantizes a value that is not quantized ({type(v).__name__})")

    def requantize(self, node: QNode, v: _DQ, scale, zp, dtype) -> _Q:
        if v.ops and v.ops[0][0] == "slice":
            # a part of a split, quantized on its own: the slice first, then its rescaling
            first = self.apply_pending(node, _DQ(v.q, v.ops[:1]))
            v = _DQ(first.name, v.ops[1:])
        src = self.g.tensors[v.q]
        cur = _Q(v.q)
        if not (src.dtype == dtype and src.scale == float(scale) and src.zero_point == int(zp)):
            cur = self.new_tensor(node.outputs[0] + "_requantize", src.shape, dtype, scale, zp,
                                  layout=src.layout)
            self.emit(node, "requantize", [v.q], cur.name)
        return self.apply_pending(node, _DQ(cur.name, v.ops))

    def apply_pending(self, node: QNode, v: _DQ) -> _Q:
        cur = _Q(v.q)
        for op, attrs, shape in v.ops:
            src = self.tensor(cur)
            attrs = dict(attrs)
            if op == "pad":
                val = attrs.pop("value_float", 0.0)
                attrs["value"] = self._code(src, val)
            if op == "clamp":
                attrs = {"lo": None if attrs["min"] is None else self._code(src, attrs["min"]),
                         "hi": None if attrs["max"] is None else self._code(src, attrs["max"])}
            out = self.new_tensor(f"{node.name}_{op}", shape, src.dtype, src.scale,
                                  src.zero_point, layout=src.layout)
            self.emit(node, op, [cur.name], out.name, attrs,
                      flavour=self.flavour if op == "clamp" else None)
            cur = out
        return cur

    def _code(self, t: Tensor, value: float) -> int:
        from ..ir.kernels import quantize

        return int(quantize(self.flavour, np.array([value], dtype=np.float32), t.scale,
                            t.zero_point, t.dtype, t.qmin, t.qmax)[0])

    # -- commuting ops ---------------------------------------------------------------------------
    def commuting(self, node: QNode):
        v = self.val(node, node.inputs[0])
        op, attrs = node.op, dict(node.attrs)
        if op == "identity":
            return v
        if isinstance(v, _Pending) and v.node.op == "batch_norm" and op == "relu":
            # DQ -> BatchNormalization -> Relu -> Q: the Relu is part of the measured map
            bn = QNode(v.node.name, v.node.op, v.node.inputs, v.node.outputs,
                       {**v.node.attrs, "relu": True}, v.node.source)
            return _Pending(bn, v.args)
        if isinstance(v, _Pending):
            raise self.fail(node, f"follows {v.node.name!r} ({v.node.source or v.node.op}) "
                                  "whose float output is not quantized first; the runtime runs "
                                  "that layer in float")
        if op == "clip" and isinstance(v, _Q):  # QCDQ: a clamp of the codes themselves
            return self.int_op(node, v, "clamp", {"lo": _int_or_none(attrs.get("min")),
                                                  "hi": _int_or_none(attrs.get("max"))})
        if isinstance(v, _Q):
            ir_op, ir_attrs = self.ir_commuting(node, op, attrs, self.tensor(v).shape,
                                                self.tensor(v))
            return self.int_op(node, v, ir_op, ir_attrs)
        if isinstance(v, _DQ):
            shape = v.ops[-1][2] if v.ops else self.g.tensors[v.q].shape
            ir_op, ir_attrs = self.ir_commuting(node, op, attrs, shape, None)
            try:
                out_shape = infer_shape(ir_op, {**ir_attrs, "value": 0},
                                        [Tensor("x", shape, "float32")], node.name)
            except IRError as exc:
                raise self.fail(node, str(exc)) from None
            return _DQ(v.q, v.ops + [(ir_op, ir_attrs, out_shape)])
        raise self.fail(node, f"{op} of a value that is not a quantized tensor")

    def ir_commuting(self, node: QNode, op: str, a: dict, shape, t: Tensor | None):
        """(ir_op, attrs) of a commuting op; ``t``: the quantized input (None: float view)."""
        if op == "relu":
            return "relu", {}
        if op == "clip":
            if t is not None:
                return "clamp", {"lo": self._code(t, a["min"]) if a.get("min") is not None
                                 else None,
                                 "hi": self._code(t, a["max"]) if a.get("max") is not None
                                 else None}
            return "clamp", {"min": a.get("min"), "max": a.get("max")}
        if op == "max_pool2d":
            return "max_pool2d", {**_pool_attrs(self, node, a, shape), "pad_value": None}
        if op == "pad":
            if t is not None:
                code = a["value_code"] if "value_code" in a else self._code(t, a.get("value", 0.0))
                return "pad", {"pads": a["pads"], "value": int(code)}
            if "value_code" in a:
                raise self.fail(node, "an integer pad value on a float tensor")
            return "pad", {"pads": a["pads"], "value_float": float(a.get("value", 0.0))}
        if op == "upsample_nearest":
            return "upsample_nearest", {"scale": _upsample_factors(self, node, a, shape)}
        if op == "flatten":
            start = int(a.get("start_dim", 1))
            if start != 1 and len(shape) == 4:
                new = (int(np.prod(shape[:start])), int(np.prod(shape[start:])))
                return "reshape", {"shape": list(new)}
            return "flatten", {"start_dim": start}
        if op == "reshape":
            return "reshape", {"shape": _onnx_reshape(self, node, shape, a["shape"],
                                                      a.get("allowzero", 0))}
        if op == "transpose":
            return "transpose", {"perm": [int(p) for p in a["perm"]]}
        if op == "slice":
            return "slice", _slice_attrs(self, node, a, shape)
        raise self.fail(node, f"operator {op!r} is not supported")

    def int_op(self, node: QNode, v: _Q, op: str, attrs: dict) -> _Q:
        t = self.tensor(v)
        try:
            shape = infer_shape(op, attrs, [t], node.name)
        except IRError as exc:
            raise self.fail(node, str(exc)) from None
        out = self.new_tensor(node.outputs[0], shape, t.dtype, t.scale, t.zero_point,
                              layout=t.layout, qmin=t.qmin, qmax=t.qmax)
        self.emit(node, op, [v.name], out.name, attrs,
                  flavour=self.flavour if op in ("clamp",) else None)
        return out

    # -- compute ops -----------------------------------------------------------------------------
    def _batch_norm(self, qnode: QNode, p: _Pending, scale, zp, dtype) -> _Q:
        """DQ -> BatchNormalization [-> Relu] -> Q, which ONNX Runtime runs in float: measured
        as a per-channel code table on every input code (``batch_norm``)."""
        node, args = p.node, p.args
        if self.flavour != "onnxruntime":
            raise self.fail(node, f"a stand-alone BatchNorm in the {self.flavour} flavour is not "
                                  "supported")
        x = self._act(node, args[0])
        xt = self.tensor(x)
        if len(xt.shape) != 4 or len(args) < 5:
            raise self.fail(node, "BatchNormalization of a 4-D map with scale, B, mean and var")
        params = [_float_param(self, node, a, w) for a, w in
                  zip(args[1:5], ("scale", "B", "mean", "var"), strict=True)]
        from .onnx_import import measure_batch_norm

        try:
            table = measure_batch_norm(xt.shape, xt.dtype, float(xt.scale), int(xt.zero_point),
                                       params, float(node.attrs.get("epsilon", 1e-5)),
                                       bool(node.attrs.get("relu", False)), float(scale),
                                       int(zp), dtype)
        except ValueError as exc:
            raise self.fail(node, f"ONNX Runtime's BatchNormalization: {exc}; not "
                                  "reproduced") from None
        out = self.new_tensor(qnode.outputs[0], xt.shape, dtype, scale, zp)
        lo = xt.qmin - (0 if xt.dtype == "uint8" else -128)
        self.emit(node, "batch_norm", [x.name], out.name,
                  {"table": table[:, lo:lo + xt.qmax - xt.qmin + 1].tolist(),
                   "in_lo": int(xt.qmin), "relu": bool(node.attrs.get("relu", False))})
        return out

    def _mul(self, qnode: QNode, p: _Pending, scale, zp, dtype) -> _Q:
        """``DQ(x) * DQ(sigmoid table of x) -> Q`` (SiLU / Swish as ONNX exports it, either
        operand order): both operands derive from x's code, so the product's code is a function
        of that code alone, a ``lut`` whose table the framework computes (``mul_table``). Any
        other multiply is refused: the hardware has no multiplier for two activations."""
        node, args = p.node, p.args
        what = ("the hardware has no multiplier for two activations (only x * Sigmoid(x) of "
                "one tensor, SiLU / Swish, maps: to a lookup table); ")
        if len(args) != 2:
            raise self.fail(node, f"a multiply of {len(args)} inputs is not supported")
        if any(isinstance(a, (_Const, _DQConst, _QConst)) for a in args):
            raise self.fail(node, "a multiply by a constant is not supported: " + what
                            + "fold the constant into the neighbouring convolution's weights "
                              "before quantizing")
        xs = [self._act(node, v, f"input {i}") for i, v in enumerate(args)]
        ts = [self.tensor(x) for x in xs]
        for i, j in ((0, 1), (1, 0)):
            src = self.lut_src.get(xs[i].name)
            if src is not None and src[0].op == "sigmoid" and src[1] == xs[j].name:
                break
        else:
            if ts[0].shape != ts[1].shape:
                raise self.fail(node, f"a broadcast multiply {list(ts[0].shape)} x "
                                      f"{list(ts[1].shape)} (a squeeze-and-excitation or "
                                      "attention gate) is not supported: " + what
                                + "split the model before this node and run the gate on the "
                                  "host")
            raise self.fail(node, "element-wise multiply of two activations is not supported: "
                            + what + "split the model before this node and run the multiply "
                                     "on the host")
        x, s = xs[j], xs[i]
        xt, st = ts[j], ts[i]
        if xt.dtype not in ("uint8", "int8") or dtype not in ("uint8", "int8"):
            raise self.fail(node, f"x * Sigmoid(x) as a lookup table needs 8-bit codes "
                                  f"({xt.dtype} -> {dtype})")
        if self.qg.mul_table is None:
            raise self.fail(node, "element-wise multiply is not supported: " + what
                            + "no table builder for this framework's x * Sigmoid(x)")
        out = self.new_tensor(qnode.outputs[0], xt.shape, dtype, scale, zp, layout=xt.layout)
        table = self.qg.mul_table(node, src[0], xt, st, self.tensor(out), i == 0)
        self.emit(node, "lut", [x.name], out.name, {"table": [int(v) for v in table],
                                                    "function": "silu"})
        self.fused.append(s.name)
        return out

    def compute(self, node: QNode):
        args = [self.val(node, i) for i in node.inputs]
        for i, a in enumerate(args):
            if isinstance(a, _Pending):
                raise self.fail(node, f"input {node.inputs[i]!r} is the float output of "
                                      f"{a.node.name!r}, not re-quantized")
        return _Pending(node, args)

    def _act(self, node: QNode, v, what="input") -> _Q:
        if isinstance(v, _DQ):
            if v.ops:
                raise self.fail(node, f"{what} went through float ops "
                                      f"({', '.join(o for o, _, _ in v.ops)}) after dequantize "
                                      "and is not quantized again")
            return _Q(v.q)
        if isinstance(v, (_FloatIn, _Const)):
            raise self.fail(node, f"{what} is not quantized (no DequantizeLinear in front)")
        raise self.fail(node, f"{what} is not a dequantized activation ({type(v).__name__})")

    def _weight(self, node: QNode, v, what="weight") -> _DQConst:
        if isinstance(v, _DQConst):
            return v
        if isinstance(v, _Const):
            raise self.fail(node, f"{what} is a float constant, not quantized")
        raise self.fail(node, f"{what} must be a dequantized constant ({type(v).__name__})")

    def emit_compute(self, qnode: QNode, p: _Pending, scale, zp, dtype) -> _Q:
        node, args, op = p.node, p.args, p.node.op
        a = node.attrs
        if op in ("conv2d", "linear"):
            x = self._act(node, args[0])
            xt = self.tensor(x)
            w = self._weight(node, args[1])
            codes = np.asarray(w.codes)
            axis = w.axis
            if op == "linear" and a.get("transpose_w"):
                codes = codes.T
                axis = None if axis is None else 1 - (axis % 2)
            per_channel = np.size(w.scale) > 1
            if per_channel and (axis or 0) % codes.ndim != 0:
                raise self.fail(node, "per-channel weights must be quantized per output channel")
            wq = _DQConst(codes, w.scale, w.zero_point, 0 if per_channel else None, w.dtype)
            w_name = self.const_tensor(f"{node.name}.weight", wq)
            ins = [x.name, w_name]
            if len(args) > 2 and args[2] is not None:
                b = self._weight(node, args[2], "bias")
                if self.flavour.startswith("torch"):
                    bf = quant.dequantize_onnxruntime(b.codes, np.asarray(b.scale), 0) \
                        if np.size(b.scale) == 1 else (b.codes * np.asarray(b.scale)).astype(
                            np.float32)
                    ins.append(self.const_tensor(f"{node.name}.bias", b, bf, float_data=True))
                else:
                    if b.dtype != "int32":
                        raise self.fail(node, f"bias must be int32 codes, is {b.dtype}")
                    ins.append(self.const_tensor(f"{node.name}.bias", _DQConst(
                        b.codes.reshape(-1), b.scale, np.zeros(np.shape(b.scale), np.int64), 0,
                        "int32")))
            attrs = {"requant": {"scheme": self.flavour}, "activation": "none", "clamp": None}
            if op == "conv2d":
                attrs.update(_conv_attrs(self, node, a, xt.shape, codes.shape))
            try:
                shape = infer_shape(op, attrs, [xt, self.g.tensors[w_name]], node.name)
            except IRError as exc:
                raise self.fail(node, str(exc)) from None
            out = self.new_tensor(qnode.outputs[0], shape, dtype, scale, zp)
            self.emit(node, op, ins, out.name, attrs)
            return out
        if op == "batch_norm":
            return self._batch_norm(qnode, p, scale, zp, dtype)
        if op in LUT_OPS:
            x = self._act(node, args[0])
            xt = self.tensor(x)
            out = self.new_tensor(qnode.outputs[0], xt.shape, dtype, scale, zp, layout=xt.layout)
            if xt.dtype not in ("uint8", "int8") or dtype not in ("uint8", "int8"):
                raise self.fail(node, f"a lookup table needs 8-bit codes ({xt.dtype} -> {dtype})")
            if self.qg.lut_table is None:
                raise self.fail(node, "no table builder for this framework's activations")
            table = self.qg.lut_table(node, xt, self.tensor(out))
            self.emit(node, "lut", [x.name], out.name, {"table": [int(v) for v in table],
                                                        "function": op})
            self.lut_src[out.name] = (node, x.name)
            return out
        if op == "mul":
            return self._mul(qnode, p, scale, zp, dtype)
        if op == "concat":
            xs = [self._act(node, v, f"input {i}") for i, v in enumerate(args)]
            ts = [self.tensor(x) for x in xs]
            attrs = {"axis": int(a.get("axis", 1)) % len(ts[0].shape)}
        else:
            xs = [self._act(node, v, f"input {i}") for i, v in enumerate(args) if v is not None]
            ts = [self.tensor(x) for x in xs]
            if op == "add":
                if len(xs) != 2:
                    raise self.fail(node, "add needs two quantized inputs")
                attrs = {"relu": False}
            elif op == "avg_pool2d":
                attrs = {**_pool_attrs(self, node, a, ts[0].shape),
                         "count_include_pad": bool(a.get("count_include_pad", False))}
            elif op == "leaky_relu":
                attrs = {"negative_slope": float(a.get("negative_slope", 0.01))}
            else:
                attrs = {}
        try:
            shape = infer_shape(op, attrs, ts, node.name)
        except IRError as exc:
            raise self.fail(node, str(exc)) from None
        out = self.new_tensor(qnode.outputs[0], shape, dtype, scale, zp)
        self.emit(node, op, [x.name for x in xs], out.name, attrs)
        return out


def _float_param(low: _Lowering, node: QNode, v, what: str) -> np.ndarray:
    """A BatchNorm parameter as the float32 values the runtime computes with (a constant, or
    a dequantized constant: ``(codes - zp) * scale`` as DequantizeLinear does)."""
    if isinstance(v, _Const):
        return np.asarray(v.value, dtype=np.float32).reshape(-1)
    if isinstance(v, _DQConst):
        codes = np.asarray(v.codes).reshape(-1)
        s = np.asarray(v.scale, dtype=np.float32).reshape(-1)
        z = np.asarray(v.zero_point).reshape(-1)
        if s.size == 1:
            return quant.dequantize_onnxruntime(codes, float(s[0]), int(z[0]))
        return np.array([quant.dequantize_onnxruntime(codes[i:i + 1], float(s[i]), int(z[i]))[0]
                         for i in range(codes.size)], dtype=np.float32)
    raise low.fail(node, f"{what} must be a constant")


def _int_or_none(v):
    if v is None:
        return None
    return int(np.asarray(v).reshape(-1)[0])


def _auto_pads(size, k, s, d, mode):
    out = -(-size // s)
    total = max(0, (out - 1) * s + d * (k - 1) + 1 - size)
    small, big = total // 2, total - total // 2
    return (small, big) if mode == "SAME_UPPER" else (big, small)


def _resolve_padding(low: _Lowering, node: QNode, a: dict, shape, kernel, stride, dilation):
    mode = a.get("auto_pad", "NOTSET")
    if mode in ("NOTSET", "", None):
        p = a.get("padding", [0, 0, 0, 0])
        return [int(v) for v in p]
    if mode == "VALID":
        return [0, 0, 0, 0]
    if mode in ("SAME_UPPER", "SAME_LOWER"):
        t, b = _auto_pads(shape[2], kernel[0], stride[0], dilation[0], mode)
        lf, r = _auto_pads(shape[3], kernel[1], stride[1], dilation[1], mode)
        return [t, b, lf, r]
    raise low.fail(node, f"auto_pad {mode!r} is not supported")


def _conv_attrs(low: _Lowering, node: QNode, a: dict, xshape, wshape) -> dict:
    stride = list(a.get("stride", [1, 1]))
    dilation = list(a.get("dilation", [1, 1]))
    pads = _resolve_padding(low, node, a, xshape, wshape[2:], stride, dilation)
    return {"stride": stride, "padding": pads, "dilation": dilation,
            "groups": int(a.get("groups", 1))}


def _pool_attrs(low: _Lowering, node: QNode, a: dict, shape) -> dict:
    kernel = list(a["kernel"])
    stride = list(a.get("stride") or kernel)
    dilation = list(a.get("dilation", [1, 1]))
    pads = _resolve_padding(low, node, a, shape, kernel, stride, dilation)
    out = {"kernel": kernel, "stride": stride, "padding": pads,
           "ceil_mode": bool(a.get("ceil_mode", False))}
    if node.op == "max_pool2d":
        out["dilation"] = dilation
    elif dilation != [1, 1]:
        raise low.fail(node, "dilated average pooling is not supported")
    return out


def _upsample_factors(low: _Lowering, node: QNode, a: dict, shape) -> list[int]:
    """Integer factors of a nearest resize; ONNX Resize attributes are checked to be a repeat."""
    if "scale" in a:
        return [int(v) for v in a["scale"]]
    if len(shape) != 4:
        raise low.fail(node, f"resize of a {len(shape)}-D tensor is not supported")
    if "sizes" in a:
        sizes = list(a["sizes"])
        if sizes[:2] != list(shape[:2]):
            raise low.fail(node, "resize of the batch or channel axis is not supported")
        out = sizes[2:]
    else:
        sc = list(a["scales"])
        if sc[:2] != [1.0, 1.0]:
            raise low.fail(node, "resize of the batch or channel axis is not supported")
        out = [int(np.floor(shape[i] * sc[i])) for i in (2, 3)]
    factors = []
    for size, o in zip(shape[2:], out, strict=True):
        if o % size:
            raise low.fail(node, f"resize {size} -> {o} is not an integer upsampling")
        f = o // size
        idx = _nearest_index(size, o, f, a.get("coordinate_transformation_mode", "half_pixel"),
                             a.get("nearest_mode", "round_prefer_floor"))
        if idx is None or not np.array_equal(idx, np.arange(o) // f):
            raise low.fail(node, "this nearest-resize mode is not a plain repeat of pixels")
        factors.append(f)
    return factors


def _nearest_index(n_in: int, n_out: int, fac: int, ctm: str, nearest: str):
    """Source index of each output position of an ONNX nearest Resize (None: unsupported)."""
    o = np.arange(n_out, dtype=np.float64)
    if ctm == "asymmetric":
        x = o / fac
    elif ctm in ("half_pixel", "pytorch_half_pixel"):
        x = (o + 0.5) / fac - 0.5
    elif ctm == "align_corners":
        x = o * (n_in - 1) / (n_out - 1) if n_out > 1 else np.zeros_like(o)
    elif ctm == "tf_half_pixel_for_nn":
        x = (o + 0.5) / fac
    else:
        return None
    if nearest == "floor":
        i = np.floor(x)
    elif nearest == "ceil":
        i = np.ceil(x)
    elif nearest == "round_prefer_floor":
        i = np.where(x - np.floor(x) == 0.5, np.floor(x), np.round(x))
    elif nearest == "round_prefer_ceil":
        i = np.where(x - np.floor(x) == 0.5, np.ceil(x), np.round(x))
    else:
        return None
    return np.clip(i, 0, n_in - 1).astype(np.int64)


def _slice_attrs(low: _Lowering, node: QNode, a: dict, shape) -> dict:
    """ONNX Slice's starts / ends / axes / steps on ``shape`` as one IR slice (one axis cut,
    step 1; starts and ends clamped as ONNX clamps them)."""
    cut = []
    for st, en, ax, sp in zip(a["starts"], a["ends"], a["axes"], a["steps"], strict=True):
        ax %= len(shape)
        size = shape[ax]
        if sp != 1:
            raise low.fail(node, f"a slice with step {sp} is not supported (step 1 only)")
        st = min(max(st + size if st < 0 else st, 0), size)
        en = min(max(en + size if en < 0 else en, 0), size)
        if (st, en) != (0, size):
            cut.append((ax, st, en))
    if not cut:
        return {"axis": 1 if len(shape) > 1 else 0, "start": 0, "end": shape[1 if len(shape) > 1
                                                                           else 0]}
    if len(cut) > 1:
        raise low.fail(node, f"a slice of several axes {[c[0] for c in cut]} is not supported "
                             "(one axis at a time)")
    ax, st, en = cut[0]
    if en <= st:
        raise low.fail(node, f"an empty slice ({st}:{en} of axis {ax})")
    return {"axis": ax, "start": st, "end": en}


def _onnx_reshape(low: _Lowering, node: QNode, shape, target, allowzero) -> list[int]:
    target = [int(v) for v in np.asarray(target).reshape(-1)]
    out = []
    for i, d in enumerate(target):
        if d == 0 and not allowzero:
            if i >= len(shape):
                raise low.fail(node, f"reshape target {target} copies a missing dimension")
            out.append(int(shape[i]))
        else:
            out.append(d)
    return out


def lower(qg: QDQGraph, flavour: str) -> Graph:
    """Lower a neutral Q/DQ graph to an IR graph whose nodes have ``flavour`` (not validated)."""
    return _Lowering(qg, flavour).run()
