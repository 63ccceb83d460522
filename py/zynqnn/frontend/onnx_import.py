"""``from_onnx``: a quantized ONNX model (QDQ or QOperator form) -> IR graph.

The file is checked (``onnx.checker``), input shapes are fixed (``input_shapes`` for dynamic
dimensions), constant sub-graphs are folded (``onnx.reference``; ``Shape`` from static shape
inference), and every node is translated into the neutral Q/DQ graph of :mod:`.qdq`:

* QDQ form (``onnxruntime.quantization.quantize_static(quant_format=QDQ)``, per-tensor or
  per-channel): ``QuantizeLinear``/``DequantizeLinear`` and float ``Conv``, ``Gemm``,
  ``MatMul``, ``Add``, ``AveragePool``, ``GlobalAveragePool``, ``LeakyRelu``, ``Concat``,
  ``MaxPool``, ``Pad``, ``Resize`` (nearest), ``Flatten``, ``Reshape``, ``Relu``, ``Clip``,
  and the unary activations ``Sigmoid``, ``Tanh``, ``HardSigmoid``, ``HardSwish`` (lookup
  tables, see :func:`ort_lut_table`); ``Mul`` when it is ``x * Sigmoid(x)`` of one tensor
  (SiLU / Swish: a lookup table, see :func:`ort_silu_table`; any other multiply is refused);
* QOperator form: ``QLinearConv``, ``QLinearMatMul``, and com.microsoft ``QGemm``,
  ``QLinearAdd``, ``QLinearGlobalAveragePool``, ``QLinearAveragePool``, ``QLinearLeakyRelu``,
  ``QLinearConcat``, ``QLinearSigmoid``, ``QLinearMul`` are expanded to DQ -> op -> Q, so
  both forms share the pattern matcher;
* QCDQ (Brevitas): ``QuantizeLinear -> Clip -> DequantizeLinear`` narrows the code range.

Every node gets the ``onnxruntime`` flavour: the arithmetic of ONNX Runtime's CPU kernels, which
fuse DQ -> Conv -> Q into QLinearConv and so on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..ir import Graph
from .common import FrontendError, finish
from .qdq import QDQGraph, QNode, lower

__all__ = ["from_onnx", "load_onnx", "onnx_to_qdq", "ort_lut_table", "ort_silu_table"]

_ELEM = {1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32"}


def load_onnx(model: Any):
    """An ``onnx.ModelProto`` from a path, bytes or a ModelProto; errors name the file."""
    import onnx
    from google.protobuf.message import DecodeError

    if isinstance(model, onnx.ModelProto):
        return model, "<ModelProto>"
    if isinstance(model, (bytes, bytearray)):
        label = "<bytes>"
        try:
            m = onnx.load_from_string(bytes(model))
        except (DecodeError, ValueError, RuntimeError) as exc:
            raise FrontendError(f"{label}: not a valid ONNX model ({exc})") from None
    else:
        path = Path(model)
        label = path.name
        if not path.is_file():
            raise FrontendError(f"{path}: no such ONNX file", path=str(path))
        try:
            m = onnx.load(str(path))
        except (DecodeError, ValueError, RuntimeError, OSError) as exc:
            raise FrontendError(f"{label}: not a valid ONNX model: corrupt or truncated file "
                                f"({type(exc).__name__}: {exc})", path=str(path)) from None
    try:
        onnx.checker.check_model(m)
    except Exception as exc:  # ValidationError and friends
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise FrontendError(f"{label}: invalid ONNX model (truncated or corrupt?): {msg}",
                            path=label) from None
    if not m.graph.node:
        raise FrontendError(f"{label}: the ONNX graph has no nodes (truncated file?)", path=label)
    return m, label


def _attrs(node) -> dict:
    from onnx import helper

    out = {}
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        if isinstance(v, bytes):
            v = v.decode()
        out[a.name] = v
    return out


class _Adapter:
    def __init__(self, model, label: str, input_shapes: dict | tuple | None):
        self.m = model
        self.label = label
        # a bare (N, C, H, W) is the shape of the model's only input (key None)
        self.input_shapes = (dict(input_shapes or {}) if input_shapes is None
                             or isinstance(input_shapes, dict) else {None: tuple(input_shapes)})
        self.consts: dict[str, np.ndarray] = {}
        self.nodes: list[QNode] = []
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.folded: set[str] = set()     # values folded at import (not initializers)
        self.fixed_inputs: list = []
        self.counter = 0

    def fail(self, node, why: str) -> FrontendError:
        name = node.name or (node.output[0] if node.output else node.op_type)
        return FrontendError(f"ONNX node {name!r} ({node.op_type}) in {self.label}: {why}",
                             node=name, path=self.label)

    def tmp(self, base: str) -> str:
        self.counter += 1
        return f"{base}__zq{self.counter}"

    # -- set-up ----------------------------------------------------------------------------------
    def inputs(self) -> list[tuple[str, tuple[int, ...]]]:
        from onnx import numpy_helper

        g = self.m.graph
        for init in g.initializer:
            self.consts[init.name] = numpy_helper.to_array(init)
        out = []
        if None in self.input_shapes:
            names = [vi.name for vi in g.input if vi.name not in self.consts]
            if len(names) != 1:
                raise FrontendError(f"{self.label}: input_shapes="
                                    f"{self.input_shapes[None]} names no input and the model "
                                    f"has {len(names)} ({', '.join(names)}): pass "
                                    "{input name: (N, C, H, W)}", path=self.label)
            self.input_shapes[names[0]] = self.input_shapes.pop(None)
        for vi in g.input:
            if vi.name in self.consts:
                continue
            tt = vi.type.tensor_type
            if tt.elem_type != 1:
                raise FrontendError(f"{self.label}: input {vi.name!r} has element type "
                                    f"{_ELEM.get(tt.elem_type, tt.elem_type)}; zynqnn takes "
                                    "float32 inputs")
            dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else
                    (d.dim_param or "?") for d in tt.shape.dim]
            if vi.name in self.input_shapes:
                given = tuple(int(v) for v in self.input_shapes[vi.name])
                if len(given) != len(dims) or any(isinstance(d, int) and d != e
                                                  for d, e in zip(dims, given, strict=False)):
                    raise FrontendError(f"{self.label}: the shape {list(given)} given for input "
                                        f"{vi.name!r} (input_shapes, zynqnn compile "
                                        f"--input-shape) does not fit the model's {dims}")
                dims = list(given)
            if any(not isinstance(d, int) for d in dims):
                raise FrontendError(
                    f"{self.label}: input {vi.name!r} has dynamic shape {dims}; zynqnn needs "
                    f"static shapes: pass input_shapes={{{vi.name!r}: (N, C, H, W)}} (zynqnn "
                    "compile: --input-shape N,C,H,W)", path=self.label)
            if len(dims) != 4:
                raise FrontendError(f"{self.label}: input {vi.name!r} has shape {dims}; zynqnn "
                                    "takes 4-D NCHW inputs", path=self.label)
            out.append((vi.name, tuple(dims)))
        if not out:
            raise FrontendError(f"{self.label}: the model has no (non-constant) input")
        return out

    def infer_shapes(self, inputs, folded: bool = False) -> None:
        import onnx
        from onnx import numpy_helper

        self.fixed_inputs = inputs
        m = onnx.ModelProto()
        m.CopyFrom(self.m)
        if folded:   # the values folded so far become initializers, their nodes go
            keep = [n for n in m.graph.node if not (n.output and all(
                o in self.folded for o in n.output if o))]
            del m.graph.node[:]
            m.graph.node.extend(keep)
            for name in sorted(self.folded):
                m.graph.initializer.append(numpy_helper.from_array(
                    np.asarray(self.consts[name]), name))
        fixed = dict(inputs)
        for vi in m.graph.input:
            if vi.name in fixed:
                dims = vi.type.tensor_type.shape.dim
                for d, v in zip(dims, fixed[vi.name], strict=True):
                    d.Clear()
                    d.dim_value = v
        try:
            inferred = onnx.shape_inference.infer_shapes(m, strict_mode=False, data_prop=True)
        except Exception:  # best effort: shapes are only needed for Shape/Resize
            inferred = m
        for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(
                inferred.graph.output):
            dims = vi.type.tensor_type.shape.dim
            if dims and all(d.HasField("dim_value") for d in dims):
                self.shapes[vi.name] = tuple(d.dim_value for d in dims)

    def runtime_shapes(self) -> dict[str, tuple[int, ...]]:
        """The shapes of every ``Shape`` node's input, from one ONNX Runtime run of the model
        on zeros (computed once; empty when the run fails)."""
        if getattr(self, "_rt_shapes", None) is not None:
            return self._rt_shapes
        self._rt_shapes = {}
        try:
            import onnx
            import onnxruntime as ort

            m = onnx.ModelProto()
            m.CopyFrom(self.m)
            known = {o.name for o in m.graph.output}
            wanted = sorted({n.input[0] for n in m.graph.node if n.op_type == "Shape"}
                            - known - set(self.consts))
            for name in wanted:
                m.graph.output.append(onnx.ValueInfoProto(name=name))
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = 1
            opts.log_severity_level = 3
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            sess = ort.InferenceSession(m.SerializeToString(), opts,
                                        providers=["CPUExecutionProvider"])
            feeds = {name: np.zeros(shape, np.float32) for name, shape in self.fixed_inputs}
            outs = sess.run(wanted, feeds)
            self._rt_shapes = {n: tuple(int(d) for d in np.shape(v))
                               for n, v in zip(wanted, outs, strict=True)}
        except Exception:   # best effort: the Shape node is then refused as before
            pass
        return self._rt_shapes

    # -- constants -------------------------------------------------------------------------------
    def const(self, node, name: str, what: str, required: bool = True):
        if not name:
            if required:
                raise self.fail(node, f"{what} is missing")
            return None
        if name not in self.consts:
            if required:
                raise self.fail(node, f"{what} {name!r} must be a constant (dynamic "
                                      "quantization parameters are not supported)")
            return None
        return self.consts[name]

    def try_fold(self, node) -> bool:
        from onnx.reference import ReferenceEvaluator

        if node.domain not in ("", "ai.onnx"):
            return False
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            self._fold_qdq(node)  # keep the node (weights need their codes), note the value
            return False
        if node.op_type == "Shape":
            shape = self.shapes.get(node.input[0])
            if shape is None and self.folded:
                # shapes behind a Slice whose bounds came from a Shape (torch's chunk export)
                # are unknown to the first inference: again, with the folded values as constants
                self.infer_shapes(self.fixed_inputs, folded=True)
                shape = self.shapes.get(node.input[0])
            if shape is None:
                # e.g. behind com.microsoft QOperator ops, which ONNX's inference does not know
                shape = self.runtime_shapes().get(node.input[0])
            if shape is None:
                return False
            v = np.array(shape, dtype=np.int64)
            a = _attrs(node)
            start, end = a.get("start", 0), a.get("end")
            self.consts[node.output[0]] = v[start:end]
            self.folded.add(node.output[0])
            return True
        ins = [i for i in node.input if i]
        if not all(i in self.consts for i in ins):
            return False
        try:
            feeds = {i: self.consts[i] for i in ins}
            outs = ReferenceEvaluator(node).run(None, feeds)
        except Exception as exc:
            raise self.fail(node, f"cannot fold this constant computation ({exc})") from None
        for name, v in zip(node.output, outs, strict=False):
            self.consts[name] = np.asarray(v)
            self.folded.add(name)
        return True

    def _fold_qdq(self, node) -> None:
        from ..numerics import quant

        ins = [i for i in node.input if i]
        if not all(i in self.consts for i in ins) or _attrs(node).get("block_size"):
            return
        x = self.consts[ins[0]]
        s = np.asarray(self.consts[ins[1]], dtype=np.float32)
        zp = np.asarray(self.consts[ins[2]]) if len(ins) > 2 else np.zeros((), np.uint8)
        if s.size != 1 or zp.size != 1:
            return
        sv, zv = float(s.reshape(-1)[0]), int(zp.reshape(-1)[0])
        if node.op_type == "QuantizeLinear":
            codes = quant.quantize_onnxruntime(np.asarray(x, dtype=np.float32), sv, zv,
                                               _np_name(zp.dtype))
            self.consts[node.output[0]] = codes.astype(zp.dtype)
        else:
            self.consts[node.output[0]] = quant.dequantize_onnxruntime(x, sv, zv)

    # -- translation -----------------------------------------------------------------------------
    def add(self, name: str, op: str, inputs: list[str], output: str, attrs=None, source=None):
        self.nodes.append(QNode(name, op, list(inputs), [output], dict(attrs or {}), source))

    def qdq(self, node, kind: str, x: str, s: str, zp: str, out: str, axis: int | None = None,
            dtype: str | None = None, name: str | None = None):
        scale = self.const(node, s, "scale")
        sv = np.asarray(scale, dtype=np.float64).reshape(-1)
        if not np.all(np.isfinite(sv)):  # NaN would compare unequal to itself further on
            k = int(np.count_nonzero(~np.isfinite(sv)))
            what = "NaN" if np.isnan(sv).any() else "infinite"
            raise self.fail(node, f"scale {s!r} is {what}" + (
                f" ({k} of its {sv.size} values are NaN or infinite)" if sv.size > 1 else "")
                + "; a scale must be finite and > 0")
        if np.any(sv <= 0):
            k = int(np.count_nonzero(sv <= 0))
            what = "zero" if np.all(sv[sv <= 0] == 0) else "negative"
            raise self.fail(node, f"scale {s!r} is {what}" + (
                f" ({k} of its {sv.size} values are <= 0)" if sv.size > 1 else "")
                + "; a scale must be finite and > 0")
        if zp:
            zpv = self.const(node, zp, "zero point")
            dt = _np_name(zpv.dtype)
        else:
            zpv = np.zeros((), dtype=np.uint8)
            dt = dtype or "uint8"
        if dtype is not None and not zp:
            dt = dtype
        if dt not in ("uint8", "int8", "uint16", "int16", "int32"):
            raise self.fail(node, f"quantized type {dt} is not supported")
        attrs = {"scale": np.asarray(scale, dtype=np.float32).astype(np.float64),
                 "zero_point": np.asarray(zpv).astype(np.int64), "dtype": dt, "axis": axis}
        self.add(name or node.name or out, kind, [x], out, attrs, node.op_type)

    def translate(self, node) -> None:
        op = node.op_type
        a = _attrs(node)
        ins = list(node.input)
        out = node.output[0] if node.output else ""
        name = node.name or out
        if op in ("QuantizeLinear", "DequantizeLinear"):
            if a.get("block_size"):
                raise self.fail(node, "blocked quantization is not supported")
            dt = {2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32"}.get(
                a.get("output_dtype", 0))
            if op == "DequantizeLinear" and ins[0] in self.consts:
                dt = _np_name(self.consts[ins[0]].dtype)
            kind = "quantize" if op == "QuantizeLinear" else "dequantize"
            self.qdq(node, kind, ins[0], ins[1], ins[2] if len(ins) > 2 else "", out,
                     a.get("axis", 1), dt)
            return
        handler = getattr(self, "op_" + op, None)
        if handler is None:
            raise self.fail(node, "operator is not supported" + _HINTS.get(op, ""))
        handler(node, a, ins, out, name)

    # float ops (QDQ form)
    def op_Conv(self, node, a, ins, out, name):
        if len(a.get("kernel_shape", [1, 1])) != 2:
            raise self.fail(node, "only 2-D convolutions are supported")
        self.add(name, "conv2d", ins[:3], out, _conv_attrs(a), "Conv")

    def op_Gemm(self, node, a, ins, out, name):
        if a.get("transA", 0):
            raise self.fail(node, "transA=1 is not supported")
        if a.get("alpha", 1.0) != 1.0 or (len(ins) > 2 and ins[2] and a.get("beta", 1.0) != 1.0):
            raise self.fail(node, "alpha and beta must be 1")
        self.add(name, "linear", ins[:3], out, {"transpose_w": not a.get("transB", 0)}, "Gemm")

    def op_MatMul(self, node, a, ins, out, name):
        self.add(name, "linear", ins[:2], out, {"transpose_w": True}, "MatMul")

    def op_Add(self, node, a, ins, out, name):
        self.add(name, "add", ins, out, {}, "Add")

    def op_Relu(self, node, a, ins, out, name):
        self.add(name, "relu", ins, out, {}, "Relu")

    def op_Clip(self, node, a, ins, out, name):
        lo = a.get("min")
        hi = a.get("max")
        if len(ins) > 1 and ins[1]:
            lo = self.const(node, ins[1], "min").item()
        if len(ins) > 2 and ins[2]:
            hi = self.const(node, ins[2], "max").item()
        self.add(name, "clip", ins[:1], out, {"min": lo, "max": hi}, "Clip")

    def op_LeakyRelu(self, node, a, ins, out, name):
        self.add(name, "leaky_relu", ins, out, {"negative_slope": float(a.get("alpha", 0.01))},
                 "LeakyRelu")

    # unary activations: lookup tables (qdq.LUT_OPS)
    def op_Sigmoid(self, node, a, ins, out, name):
        self.add(name, "sigmoid", ins[:1], out, {}, "Sigmoid")

    def op_Tanh(self, node, a, ins, out, name):
        self.add(name, "tanh", ins[:1], out, {}, "Tanh")

    def op_HardSigmoid(self, node, a, ins, out, name):
        self.add(name, "hardsigmoid", ins[:1], out, {"alpha": float(a.get("alpha", 0.2)),
                                                     "beta": float(a.get("beta", 0.5))},
                 "HardSigmoid")

    def op_HardSwish(self, node, a, ins, out, name):
        self.add(name, "hardswish", ins[:1], out, {}, "HardSwish")

    def op_Mul(self, node, a, ins, out, name):
        # only x * Sigmoid(x) lowers (qdq._Lowering._mul); the rest is refused there by name
        self.add(name, "mul", ins[:2], out, {}, "Mul")

    def op_QLinearMul(self, node, a, ins, out, name):
        xa = self._dq(node, *ins[0:3])
        xb = self._dq(node, *ins[3:6])
        y = self.tmp(out)
        self.add(name, "mul", [xa, xb], y, {}, "QLinearMul")
        self._q(node, y, ins[6], ins[7] if len(ins) > 7 else "", out)

    @staticmethod
    def _is_silu(ins, producers) -> bool:
        """Whether ``Mul(a, b)`` is ``x * Sigmoid(x)`` (through Q/DQ pairs)."""
        def root(v, depth=0):
            n = producers.get(v)
            while n is not None and n.op_type in ("DequantizeLinear", "QuantizeLinear") \
                    and depth < 6:
                v, n, depth = n.input[0], producers.get(n.input[0]), depth + 1
            return v, n

        (va, na), (vb, nb) = root(ins[0]), root(ins[1])
        for (_, ns), (vo, _) in (((va, na), (vb, nb)), ((vb, nb), (va, na))):
            if ns is not None and ns.op_type in ("Sigmoid", "QLinearSigmoid"):
                if root(ns.input[0])[0] == vo:
                    return True
        return False

    def op_MaxPool(self, node, a, ins, out, name):
        if len(node.output) > 1 and node.output[1]:
            raise self.fail(node, "MaxPool indices output is not supported")
        if a.get("storage_order", 0):
            raise self.fail(node, "storage_order=1 is not supported")
        self.add(name, "max_pool2d", ins[:1], out, _pool_attrs(self, node, a), "MaxPool")

    def op_AveragePool(self, node, a, ins, out, name):
        at = _pool_attrs(self, node, a)
        at["count_include_pad"] = bool(a.get("count_include_pad", 0))
        self.add(name, "avg_pool2d", ins[:1], out, at, "AveragePool")

    def op_GlobalAveragePool(self, node, a, ins, out, name):
        self.add(name, "global_avg_pool", ins, out, {}, "GlobalAveragePool")

    def op_Concat(self, node, a, ins, out, name):
        self.add(name, "concat", ins, out, {"axis": int(a.get("axis", 1))}, "Concat")

    def op_Flatten(self, node, a, ins, out, name):
        self.add(name, "flatten", ins, out, {"start_dim": int(a.get("axis", 1))}, "Flatten")

    def op_Reshape(self, node, a, ins, out, name):
        shape = self.const(node, ins[1], "shape")
        self.add(name, "reshape", ins[:1], out, {"shape": [int(v) for v in shape],
                                                  "allowzero": int(a.get("allowzero", 0))},
                 "Reshape")

    def op_BatchNormalization(self, node, a, ins, out, name):
        if a.get("training_mode", 0) or len([o for o in node.output if o]) > 1:
            raise self.fail(node, "training-mode BatchNormalization is not supported")
        self.add(name, "batch_norm", ins[:5], out, {"epsilon": float(a.get("epsilon", 1e-5))},
                 "BatchNormalization")

    def op_Slice(self, node, a, ins, out, name):
        if len(ins) < 3:
            raise self.fail(node, "Slice needs constant starts and ends inputs (opset >= 10)")
        starts = [int(v) for v in np.asarray(self.const(node, ins[1], "starts")).reshape(-1)]
        ends = [int(v) for v in np.asarray(self.const(node, ins[2], "ends")).reshape(-1)]
        axes = ([int(v) for v in np.asarray(self.const(node, ins[3], "axes")).reshape(-1)]
                if len(ins) > 3 and ins[3] else list(range(len(starts))))
        steps = ([int(v) for v in np.asarray(self.const(node, ins[4], "steps")).reshape(-1)]
                 if len(ins) > 4 and ins[4] else [1] * len(starts))
        self.add(name, "slice", ins[:1], out, {"starts": starts, "ends": ends, "axes": axes,
                                                "steps": steps}, "Slice")

    def op_Split(self, node, a, ins, out, name):
        axis = int(a.get("axis", 0))
        split = a.get("split")
        if len(ins) > 1 and ins[1]:
            split = self.const(node, ins[1], "split")
        shape = self.shapes.get(ins[0])
        n = len(node.output)
        if split is None:
            if shape is None:
                raise self.fail(node, "the input's shape is unknown (needed for an even split)")
            size = shape[axis % len(shape)]
            part = -(-size // n)           # ONNX: ceil; the last part takes the rest
            split = [part] * (n - 1) + [size - part * (n - 1)]
        split = [int(v) for v in np.asarray(split).reshape(-1)]
        if len(split) != n or any(v <= 0 for v in split):
            raise self.fail(node, f"split sizes {split} for {n} outputs are not supported "
                                  "(every part must be non-empty)")
        start = 0
        for o, size in zip(node.output, split, strict=True):
            if o:
                self.add(self.tmp(name), "slice", ins[:1], o,
                         {"starts": [start], "ends": [start + size], "axes": [axis],
                          "steps": [1]}, "Split")
            start += size

    def op_Transpose(self, node, a, ins, out, name):
        perm = a.get("perm")
        if perm is None:
            raise self.fail(node, "Transpose without perm (a reversal of every axis) is not "
                                  "supported")
        self.add(name, "transpose", ins[:1], out, {"perm": [int(v) for v in perm]}, "Transpose")

    def op_Identity(self, node, a, ins, out, name):
        self.add(name, "identity", ins[:1], out, {}, node.op_type)

    op_Dropout = op_Identity

    def op_Pad(self, node, a, ins, out, name):
        if a.get("mode", "constant") != "constant":
            raise self.fail(node, f"pad mode {a.get('mode')!r} is not supported")
        pads = a.get("pads")
        if len(ins) > 1 and ins[1]:
            pads = self.const(node, ins[1], "pads")
        pads = [int(v) for v in np.asarray(pads).reshape(-1)]
        value = {"value": a.get("value", 0.0)}
        if len(ins) > 2 and ins[2]:
            v = np.asarray(self.const(node, ins[2], "pad value")).reshape(-1)[0]
            # a pad of codes (QOperator form) has an integer value: a code, not a real value
            value = {"value_code": int(v)} if v.dtype.kind in "iu" else {"value": float(v)}
        if len(ins) > 3 and ins[3]:
            axes = [int(v) % 4 for v in self.const(node, ins[3], "axes")]
            full = [0] * 8
            for i, ax in enumerate(axes):
                full[ax], full[4 + ax] = pads[i], pads[len(axes) + i]
            pads = full
        if len(pads) != 8 or any(pads[i] for i in (0, 1, 4, 5)):
            raise self.fail(node, f"pads {pads}: only spatial padding of 4-D tensors is supported")
        if any(p < 0 for p in pads):
            raise self.fail(node, f"negative pads {pads} are not supported")
        self.add(name, "pad", ins[:1], out, {"pads": [pads[2], pads[6], pads[3], pads[7]],
                                             **value}, "Pad")

    def op_Resize(self, node, a, ins, out, name):
        if a.get("mode", "nearest") != "nearest":
            raise self.fail(node, f"resize mode {a.get('mode')!r} is not supported (nearest)")
        at = {"coordinate_transformation_mode": a.get("coordinate_transformation_mode",
                                                      "half_pixel"),
              "nearest_mode": a.get("nearest_mode", "round_prefer_floor")}
        if node.op_type == "Upsample":
            at["coordinate_transformation_mode"] = "asymmetric"
            at["nearest_mode"] = "floor"
            scales = a.get("scales") or (self.const(node, ins[1], "scales") if len(ins) > 1
                                         else None)
            at["scales"] = [float(v) for v in np.asarray(scales).reshape(-1)]
        elif len(ins) > 3 and ins[3]:
            at["sizes"] = [int(v) for v in self.const(node, ins[3], "sizes")]
        elif len(ins) > 2 and ins[2]:
            at["scales"] = [float(v) for v in self.const(node, ins[2], "scales")]
        else:
            raise self.fail(node, "resize needs constant scales or sizes")
        if a.get("axes") is not None:
            raise self.fail(node, "resize with axes is not supported")
        self.add(name, "upsample_nearest", ins[:1], out, at, node.op_type)

    op_Upsample = op_Resize

    # QOperator form: expand to DQ -> op -> Q
    def _dq(self, node, x, s, zp, axis=1, dtype=None):
        t = self.tmp(x or node.name)
        self.qdq(node, "dequantize", x, s, zp, t, axis, dtype, name=self.tmp(node.name + "_dq"))
        return t

    def _q(self, node, y, s, zp, out):
        self.qdq(node, "quantize", y, s, zp, out, name=self.tmp((node.name or out) + "_q"))

    def op_QLinearConv(self, node, a, ins, out, name):
        x = self._dq(node, *ins[0:3])
        w = self._dq(node, ins[3], ins[4], ins[5], axis=0)
        args = [x, w]
        if len(ins) > 8 and ins[8]:
            args.append(self._bias(node, ins[8]))
        y = self.tmp(out)
        self.add(name, "conv2d", args, y, _conv_attrs(a), "QLinearConv")
        self._q(node, y, ins[6], ins[7], out)

    def _bias(self, node, b: str) -> str:
        codes = self.const(node, b, "bias")
        t = self.tmp(b)
        self.add(self.tmp(node.name + "_bias"), "dequantize", [b], t,
                 {"scale": np.ones(()), "zero_point": np.zeros((), dtype=np.int64),
                  "dtype": _np_name(codes.dtype), "axis": 0}, node.op_type)
        return t

    def op_QLinearMatMul(self, node, a, ins, out, name):
        x = self._dq(node, *ins[0:3])
        w = self._dq(node, ins[3], ins[4], ins[5], axis=1)
        y = self.tmp(out)
        self.add(name, "linear", [x, w], y, {"transpose_w": True}, "QLinearMatMul")
        self._q(node, y, ins[6], ins[7], out)

    def op_QGemm(self, node, a, ins, out, name):
        if a.get("transA", 0) or a.get("alpha", 1.0) != 1.0:
            raise self.fail(node, "transA and alpha != 1 are not supported")
        if len(ins) < 9 or not ins[7]:
            raise self.fail(node, "a float output (no y_scale) is not supported")
        x = self._dq(node, *ins[0:3])
        trans_b = a.get("transB", 0)
        w = self._dq(node, ins[3], ins[4], ins[5], axis=0 if trans_b else 1)
        args = [x, w] + ([self._bias(node, ins[6])] if ins[6] else [])
        y = self.tmp(out)
        self.add(name, "linear", args, y, {"transpose_w": not trans_b}, "QGemm")
        self._q(node, y, ins[7], ins[8] if len(ins) > 8 else "", out)

    def op_QLinearAdd(self, node, a, ins, out, name):
        x = self._dq(node, *ins[0:3])
        z = self._dq(node, *ins[3:6])
        y = self.tmp(out)
        self.add(name, "add", [x, z], y, {}, "QLinearAdd")
        self._q(node, y, ins[6], ins[7] if len(ins) > 7 else "", out)

    def _unary_qop(self, node, ins, out, name, op, attrs):
        if attrs.pop("channels_last", 0):
            raise self.fail(node, "channels_last=1 is not supported")
        x = self._dq(node, *ins[0:3])
        y = self.tmp(out)
        self.add(name, op, [x], y, attrs, node.op_type)
        self._q(node, y, ins[3], ins[4] if len(ins) > 4 else "", out)

    def op_QLinearGlobalAveragePool(self, node, a, ins, out, name):
        self._unary_qop(node, ins, out, name, "global_avg_pool",
                        {"channels_last": a.get("channels_last", 0)})

    def op_QLinearAveragePool(self, node, a, ins, out, name):
        at = _pool_attrs(self, node, a)
        at["count_include_pad"] = bool(a.get("count_include_pad", 0))
        at["channels_last"] = a.get("channels_last", 0)
        self._unary_qop(node, ins, out, name, "avg_pool2d", at)

    def op_QLinearLeakyRelu(self, node, a, ins, out, name):
        self._unary_qop(node, ins, out, name, "leaky_relu",
                        {"negative_slope": float(a.get("alpha", 0.01))})

    def op_QLinearSigmoid(self, node, a, ins, out, name):
        self._unary_qop(node, ins, out, name, "sigmoid", {})

    def op_QLinearConcat(self, node, a, ins, out, name):
        xs = []
        for i in range(2, len(ins), 3):
            xs.append(self._dq(node, ins[i], ins[i + 1], ins[i + 2]))
        y = self.tmp(out)
        self.add(name, "concat", xs, y, {"axis": int(a.get("axis", 1))}, "QLinearConcat")
        self._q(node, y, ins[0], ins[1], out)

    # -- driver ----------------------------------------------------------------------------------
    def run(self) -> QDQGraph:
        inputs = self.inputs()
        ops = {n.op_type for n in self.m.graph.node}
        if not ops & {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul",
                      "QGemm", "QLinearAdd"}:
            raise FrontendError(f"{self.label}: the model is not quantized (no QuantizeLinear, "
                                "DequantizeLinear or QLinear* operator); quantize it first, e.g. "
                                "with onnxruntime.quantization.quantize_static", path=self.label)
        self.infer_shapes(inputs)
        for node in self.m.graph.node:
            if self.try_fold(node):
                continue
            self.translate(node)
        outputs = [o.name for o in self.m.graph.output]
        for o in outputs:
            if o in self.consts:
                raise FrontendError(f"{self.label}: output {o!r} is a constant")
        return QDQGraph(self.nodes, self.consts, inputs, outputs,
                        name=Path(self.label).stem or "onnx", kind="ONNX", where=self.label,
                        lut_table=self.lut_table, mul_table=self.mul_table)

    def lut_table(self, qnode, x, y):
        try:
            return ort_lut_table(qnode.op, qnode.attrs, qnode.source, x, y)
        except ValueError as e:
            raise FrontendError(f"ONNX node {qnode.name!r} ({qnode.source}): {e}",
                                node=qnode.name) from None

    def mul_table(self, mul, sigmoid, x, s, y, s_first):
        try:
            return ort_silu_table(x, s, y, s_first, sigmoid.source == "QLinearSigmoid",
                                  mul.source == "QLinearMul")
        except ValueError as e:
            raise FrontendError(f"ONNX node {mul.name!r} ({mul.source}): {e}",
                                node=mul.name) from None


_ONNX_ACT = {"sigmoid": "Sigmoid", "tanh": "Tanh", "hardsigmoid": "HardSigmoid",
             "hardswish": "HardSwish"}


def ort_lut_table(op: str, attrs: dict, source: str | None, x, y) -> list[int]:
    """The 256 output codes ONNX Runtime computes for every input code (entry ``t``: the code
    whose byte is ``t``) of a unary activation from ``x``'s to ``y``'s qparams (IR tensors).

    A one-node model of the same form runs in a one-thread CPU session: ``QLinearSigmoid``
    (com.microsoft; ONNX Runtime builds a lookup table itself) for the QOperator form, else
    ``DequantizeLinear -> op -> QuantizeLinear`` (which ONNX Runtime's optimizer fuses as it
    does in the model, e.g. into QLinearSigmoid). It runs once on all 256 codes and once on
    each code alone; a result that depends on the element's position raises ValueError."""
    from onnx import TensorProto, helper

    elem = {"uint8": TensorProto.UINT8, "int8": TensorProto.INT8}
    if x.dtype not in elem or y.dtype not in elem:
        raise ValueError(f"a lookup table needs 8-bit codes ({x.dtype} -> {y.dtype})")
    inits = [
        helper.make_tensor("xs", TensorProto.FLOAT, [], [float(np.float32(x.scale))]),
        helper.make_tensor("xz", elem[x.dtype], [], [int(x.zero_point)]),
        helper.make_tensor("ys", TensorProto.FLOAT, [], [float(np.float32(y.scale))]),
        helper.make_tensor("yz", elem[y.dtype], [], [int(y.zero_point)]),
    ]
    opsets = [helper.make_opsetid("", 17)]
    if source == "QLinearSigmoid":
        nodes = [helper.make_node("QLinearSigmoid", ["x", "xs", "xz", "ys", "yz"], ["y"],
                                  domain="com.microsoft")]
        opsets.append(helper.make_opsetid("com.microsoft", 1))
    else:
        extra = {k: float(v) for k, v in attrs.items()} if op == "hardsigmoid" else {}
        nodes = [helper.make_node("DequantizeLinear", ["x", "xs", "xz"], ["xf"]),
                 helper.make_node(_ONNX_ACT[op], ["xf"], ["yf"], **extra),
                 helper.make_node("QuantizeLinear", ["yf", "ys", "yz"], ["y"])]
    return _ort_table(nodes, inits, opsets, x.dtype, y.dtype, _ONNX_ACT[op])


def ort_silu_table(x, s, y, s_first: bool, sigmoid_qop: bool, mul_qop: bool) -> list[int]:
    """The 256 output codes ONNX Runtime computes for every code of ``x`` (entry ``t``: the
    code whose byte is ``t``) of ``x * Sigmoid(x)``: SiLU / Swish as ONNX exports it, a
    Sigmoid whose output is quantized with ``s``'s qparams, times ``x``, quantized with ``y``'s
    (IR tensors; ``s_first``: the sigmoid is the multiply's first operand).

    A model of exactly that node pair runs in a one-thread CPU session: com.microsoft
    ``QLinearSigmoid`` and ``QLinearMul`` where the model has them (``sigmoid_qop``,
    ``mul_qop``), else ``DequantizeLinear -> Sigmoid -> QuantizeLinear`` and
    ``DequantizeLinear``s -> ``Mul`` -> ``QuantizeLinear``, one DequantizeLinear of ``x`` feeding
    both, as ``quantize_static`` writes them (ONNX Runtime's optimizer fuses these into
    QLinearSigmoid and QLinearMul, as in the whole model). It runs on all 256 codes at once
    and on each code alone; a result that depends on the element's position raises
    ValueError."""
    from onnx import TensorProto, helper

    elem = {"uint8": TensorProto.UINT8, "int8": TensorProto.INT8}
    for t in (x, s, y):
        if t.dtype not in elem:
            raise ValueError(f"a lookup table needs 8-bit codes ({x.dtype} * {s.dtype} -> "
                             f"{y.dtype})")
    inits = []
    for tag, t in (("x", x), ("s", s), ("y", y)):
        inits += [helper.make_tensor(tag + "s", TensorProto.FLOAT, [], [float(np.float32(
                      t.scale))]),
                  helper.make_tensor(tag + "z", elem[t.dtype], [], [int(t.zero_point)])]
    opsets = [helper.make_opsetid("", 17)]
    ms = "com.microsoft"
    if sigmoid_qop or mul_qop:
        opsets.append(helper.make_opsetid(ms, 1))
    nodes = []
    if not (sigmoid_qop and mul_qop):
        nodes.append(helper.make_node("DequantizeLinear", ["x", "xs", "xz"], ["xf"]))
    if sigmoid_qop:
        nodes.append(helper.make_node("QLinearSigmoid", ["x", "xs", "xz", "ss", "sz"], ["sq"],
                                      domain=ms))
    else:
        nodes += [helper.make_node("Sigmoid", ["xf"], ["sf"]),
                  helper.make_node("QuantizeLinear", ["sf", "ss", "sz"], ["sq"])]
    if mul_qop:
        a, b = ["x", "xs", "xz"], ["sq", "ss", "sz"]
        nodes.append(helper.make_node("QLinearMul", (b + a if s_first else a + b)
                                      + ["ys", "yz"], ["y"], domain=ms))
    else:
        nodes += [helper.make_node("DequantizeLinear", ["sq", "ss", "sz"], ["sd"]),
                  helper.make_node("Mul", ["sd", "xf"] if s_first else ["xf", "sd"], ["yf"]),
                  helper.make_node("QuantizeLinear", ["yf", "ys", "yz"], ["y"])]
    return _ort_table(nodes, inits, opsets, x.dtype, y.dtype, "x * Sigmoid(x)")


def _ort_table(nodes, inits, opsets, x_dtype: str, y_dtype: str, what: str) -> list[int]:
    """Run the model of ``nodes`` (input ``x``, output ``y``, 1-D) in a one-thread CPU session
    on all 256 codes, and on each alone; the output codes, or ValueError when they depend on
    the element's position."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    elem = {"uint8": TensorProto.UINT8, "int8": TensorProto.INT8}
    npdt = {"uint8": np.uint8, "int8": np.int8}
    graph = helper.make_graph(nodes, "lut", [helper.make_tensor_value_info("x", elem[x_dtype],
                                                                            ["n"])],
                              [helper.make_tensor_value_info("y", elem[y_dtype], ["n"])], inits)
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8          # what ONNX Runtime reads (onnx may write a newer one)
    onnx.checker.check_model(model)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])
    codes = np.arange(256, dtype=np.uint8).view(npdt[x_dtype])
    table = sess.run(None, {"x": codes})[0].astype(np.int64)
    alone = np.array([sess.run(None, {"x": codes[i:i + 1]})[0][0] for i in range(256)],
                     dtype=np.int64)
    if not np.array_equal(table, alone):
        bad = np.flatnonzero(table != alone)
        raise ValueError(f"ONNX Runtime's {what} gives other codes for {bad.size} inputs (e.g. "
                         f"code {int(codes[bad[0]])}) depending on their position in the "
                         "tensor: no single table reproduces it")
    return [int(v) for v in table]


#: What a user can do about some unsupported operators (appended to the message).
_HINTS = {
    "ConvTranspose": (": ONNX Runtime's CPU provider has no integer ConvTranspose (neither a "
                      "QDQ fusion nor a QOperator kernel): it runs the node in float between "
                      "DequantizeLinear and QuantizeLinear, a float GEMM and col2im whose "
                      "summation order zynqnn does not reproduce. Quantize the PyTorch model "
                      "with torch.ao (qnnpack) instead, whose quantized ConvTranspose2d is "
                      "integer and maps, or replace a ConvTranspose2d(k, stride=k) by "
                      "nn.Upsample(scale_factor=k) and a Conv2d before exporting"),
    "ReduceMean": (": ONNX Runtime runs it in float between DequantizeLinear and QuantizeLinear "
                   "(a float sum whose order zynqnn does not reproduce); for a mean over the "
                   "spatial axes use GlobalAveragePool (nn.AdaptiveAvgPool2d(1) + flatten in "
                   "PyTorch), which ONNX Runtime quantizes"),
}


def _np_name(dt) -> str:
    return {"uint8": "uint8", "int8": "int8", "uint16": "uint16", "int16": "int16",
            "int32": "int32", "float32": "float32"}.get(np.dtype(dt).name, np.dtype(dt).name)


def _conv_attrs(a: dict) -> dict:
    p = list(a.get("pads", [0, 0, 0, 0]))
    out = {"stride": list(a.get("strides", [1, 1])),
           "padding": [p[0], p[2], p[1], p[3]],
           "dilation": list(a.get("dilations", [1, 1])), "groups": int(a.get("group", 1))}
    if a.get("auto_pad", "NOTSET") not in ("NOTSET", ""):
        out["auto_pad"] = a["auto_pad"]
    return out


def _pool_attrs(ad: _Adapter, node, a: dict) -> dict:
    k = list(a["kernel_shape"])
    if len(k) != 2:
        raise ad.fail(node, "only 2-D pooling is supported")
    p = list(a.get("pads", [0, 0, 0, 0]))
    out = {"kernel": k, "stride": list(a.get("strides", k)), "padding": [p[0], p[2], p[1], p[3]],
           "dilation": list(a.get("dilations", [1, 1])),
           "ceil_mode": bool(a.get("ceil_mode", 0))}
    if a.get("auto_pad", "NOTSET") not in ("NOTSET", ""):
        out["auto_pad"] = a["auto_pad"]
    return out


def measure_batch_norm(x_shape, x_dtype: str, s_in: float, zp_in: int, params: list,
                       epsilon: float, relu: bool, s_out: float, zp_out: int,
                       out_dtype: str) -> np.ndarray:
    """ONNX Runtime's ``DequantizeLinear -> BatchNormalization [-> Relu] -> QuantizeLinear``
    as a per-channel code table (``measure_channel_map``): a model of just these nodes, with
    the BatchNorm's float parameters ``params`` (scale, B, mean, var) as initializers, run in
    a one-thread session on every input code of every channel."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from .common import measure_channel_map

    elem = {"uint8": TensorProto.UINT8, "int8": TensorProto.INT8}
    npdt = {"uint8": np.uint8, "int8": np.int8}
    inits = [numpy_helper.from_array(np.asarray(s_in, np.float32), "s_in"),
             numpy_helper.from_array(np.asarray(zp_in, npdt[x_dtype]), "zp_in"),
             numpy_helper.from_array(np.asarray(s_out, np.float32), "s_out"),
             numpy_helper.from_array(np.asarray(zp_out, npdt[out_dtype]), "zp_out")]
    names = ["scale", "B", "mean", "var"]
    inits += [numpy_helper.from_array(np.asarray(p, np.float32), nm)
              for p, nm in zip(params, names, strict=True)]
    nodes = [helper.make_node("DequantizeLinear", ["x", "s_in", "zp_in"], ["xf"]),
             helper.make_node("BatchNormalization", ["xf"] + names, ["bn"], epsilon=epsilon)]
    last = "bn"
    if relu:
        nodes.append(helper.make_node("Relu", ["bn"], ["bnr"]))
        last = "bnr"
    nodes.append(helper.make_node("QuantizeLinear", [last, "s_out", "zp_out"], ["y"]))
    g = helper.make_graph(nodes, "bn", [helper.make_tensor_value_info(
        "x", elem[x_dtype], list(x_shape))], [helper.make_tensor_value_info(
            "y", elem[out_dtype], list(x_shape))], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = min(m.ir_version, 9)
    onnx.checker.check_model(m)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    sess = ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    lo, hi = (0, 255) if x_dtype == "uint8" else (-128, 127)
    return measure_channel_map(
        lambda xs: sess.run(None, {"x": xs.astype(npdt[x_dtype])})[0], x_shape, lo, hi)


#: Operators whose translation takes only one form: ``x * Sigmoid(x)`` (SiLU / Swish) of the
#: multiplies; every other Mul is refused when the graph is lowered.
_MULS = {"Mul": (0, 1), "QLinearMul": (0, 3)}


def unsupported_nodes(model: Any) -> list[tuple[str, str]]:
    """``(node name, op type)`` of every node of an ONNX model (float or quantized) the
    importer has no translation for, all at once. Nodes computing constants only (from
    initializers, ``Constant`` or ``Shape``) are folded at import and do not count."""
    m, _ = load_onnx(model)
    const = {i.name for i in m.graph.initializer} | {""}
    producers = {o: n for n in m.graph.node for o in n.output}
    out = []
    for node in m.graph.node:
        if node.op_type in ("Constant", "Shape") or (
                node.op_type not in ("QuantizeLinear", "DequantizeLinear")
                and all(i in const for i in node.input)):
            const.update(node.output)
            continue
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        mul = _MULS.get(node.op_type)
        if (node.domain not in ("", "ai.onnx") or not hasattr(_Adapter, "op_" + node.op_type)
                or (mul is not None and not (len(node.input) > mul[1] and _Adapter._is_silu(
                    [node.input[mul[0]], node.input[mul[1]]], producers)))):
            out.append((node.name or (node.output[0] if node.output else node.op_type),
                        node.op_type))
    return out


def onnx_to_qdq(model: Any, input_shapes: dict | tuple | None = None) -> QDQGraph:
    """The neutral Q/DQ graph of an ONNX model (see :mod:`.qdq`)."""
    m, label = load_onnx(model)
    return _Adapter(m, label, input_shapes).run()


def from_onnx(model: Any, *, input_shapes: dict | tuple | None = None, name: str | None = None,
              verify: Any = False) -> Graph:
    """Import a quantized ONNX model (path, bytes or ``onnx.ModelProto``).

    ``input_shapes``: ``{input name: (N, C, H, W)}`` for inputs with dynamic dimensions (or
    just ``(N, C, H, W)`` for a model with one input; ``zynqnn compile --input-shape``).
    ``verify``: an input array (or True for a random normal one) to run through ONNX Runtime
    and the IR; any difference of the outputs raises :class:`FrontendError`.
    Returns a validated :class:`~zynqnn.ir.Graph` whose nodes have the ``onnxruntime`` flavour.
    """
    import onnxruntime

    m, label = load_onnx(model)
    qg = _Adapter(m, label, input_shapes).run()
    graph = lower(qg, "onnxruntime")
    if name:
        graph.name = name
    opset = {o.domain or "ai.onnx": o.version for o in m.opset_import}
    graph.meta.update({"framework": "onnx", "onnxruntime_version": onnxruntime.__version__,
                       "opset": opset, "source_file": label, "importer": "from_onnx"})
    finish(graph, "ONNX")
    if verify is not False and verify is not None:
        graph.meta["verified"] = verify_onnx(graph, m, verify)
    return graph


def verify_onnx(graph: Graph, model, x: Any = True) -> dict[str, int]:
    """Compare the IR with ONNX Runtime on ``x`` (True: a seeded random normal input)."""
    import onnxruntime as ort

    shape = graph.tensors[graph.inputs[0]].shape
    if x is True:
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    x = np.asarray(x, dtype=np.float32)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])
    ref = sess.run(None, {sess.get_inputs()[0].name: x})
    out = graph.run(x)
    out = out if isinstance(out, tuple) else (out,)
    compared = bad = 0
    for r, o in zip(ref, out, strict=True):
        compared += o.size
        bad += int(np.count_nonzero(np.asarray(r) != o)) if r.shape == o.shape else o.size
    if bad:
        raise FrontendError(f"{graph.name}: {bad} of {compared} output values differ from ONNX "
                            "Runtime on the verification input")
    return {"compared": compared, "mismatched": 0}
