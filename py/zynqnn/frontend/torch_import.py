"""``from_torch``: a torch.ao quantized model (FX or eager mode) -> IR graph.

Accepted models:

* FX graph mode: the ``GraphModule`` from ``convert_fx`` (post-training or QAT), with torch's
  native backend config or the zoo's ``"zynqnn"`` one (which keeps ``ZeroPad2d``/``Upsample`` on
  quantized tensors). Native configs leave some ops in float between ``dequantize`` and
  ``quantize_per_tensor``; those islands are imported when the float op commutes with
  quantization (zero padding, nearest upsampling, max pooling, ReLU, clamps, flatten/reshape,
  identity): ``dequantize -> op -> quantize`` becomes ``requantize`` + the op on codes, exactly.
* Eager mode: a converted model with ``QuantStub``/``DeQuantStub`` (``Quantize``/``DeQuantize``
  modules), fused ``ConvReLU2d``/``LinearReLU``, ``FloatFunctional`` adds; it is traced with
  ``torch.fx`` (quantized modules are leaves), so ``forward`` must be traceable.

The model is run once on ``example_input`` (torch.fx ``Interpreter``): the recorded tensors give
every shape, output scale/zero point and memory layout (channels-last or contiguous, which
selects PyTorch's kernel path). Afterwards the IR is run on the same input and compared with
PyTorch tensor by tensor (``verify=True``); the first difference raises :class:`FrontendError`
naming the node.

Engines: convs and linears run the engine their weights were packed under (at ``convert``), all
other quantized ops the engine selected when the model runs. Both must be the same: pass
``engine=`` only to assert it; :func:`packing_engine` probes each packed layer, and a layer
packed under another engine than the selected one is reported as mixed engines.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..ir import Graph, Node, Tensor
from ..ir.execute import run_all
from ..ir.kernels import torch_vector_block
from ..numerics import make_requant
from .common import (
    FrontendError,
    check_example_input,
    compare_codes,
    finish,
    measure_channel_map,
)

__all__ = ["from_torch", "packing_engine", "ENGINE_FLAVOURS"]

#: quantized engine -> node flavour
ENGINE_FLAVOURS = {"fbgemm": "torch-fbgemm", "qnnpack": "torch-qnnpack"}
_QDTYPES = {"quint8": "uint8", "qint8": "int8", "qint32": "int32"}


# ---------------------------------------------------------------------------------------------
# values flowing through the importer


@dataclass
class QVal:
    """A quantized IR tensor."""

    name: str


@dataclass
class FloatIn:
    """A float graph input (only a quantize may consume it)."""

    name: str


@dataclass
class FloatView:
    """A dequantized tensor, possibly followed by float ops that commute with quantization.

    ``ops``: pending ``(ir_op, attrs, out_shape)`` applied to the codes when the value is
    quantized again (after a requantize) or reaches an output (before a dequantize).
    """

    q: str
    ops: list[tuple[str, dict, tuple[int, ...]]] = field(default_factory=list)
    float_clamps: bool = False  # a float clamp is pending: exact only when requantized
    #: a float function applied first (``(name, callable)``: SiLU left in float by torch.ao):
    #: exact only when requantized, as a lookup table of the codes
    fn: tuple | None = None


@dataclass
class Const:
    value: Any


def _is(obj: Any, *names: str) -> bool:
    return type(obj).__name__ in names


def _torch():
    import torch

    return torch


class _Recorder:
    """Runs the GraphModule on the example input and keeps every node's output."""

    def __init__(self, gm, inputs):
        torch = _torch()
        values: dict[str, Any] = {}

        class Rec(torch.fx.Interpreter):
            def run_node(self, n):
                out = super().run_node(n)
                values[n.name] = out
                return out

        with torch.no_grad():
            self.output = Rec(gm).run(*inputs)
        self.values = values


def _layout(t) -> str:
    torch = _torch()
    if t.dim() == 2:
        return "nc"
    if t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last):
        return "nhwc"
    return "nchw"


def _qdtype(t) -> str:
    name = str(t.dtype).replace("torch.", "")
    if name not in _QDTYPES:
        raise ValueError(name)
    return _QDTYPES[name]


class TorchImporter:
    """Builds the IR from a traced quantized model (see module docstring)."""

    def __init__(self, gm, inputs, engine: str, name: str):
        self.gm = gm
        self.inputs = inputs
        self.engine = engine
        self.flavour = ENGINE_FLAVOURS[engine]
        self.modules = dict(gm.named_modules())
        self.graph = Graph(name)
        self.vals: dict[str, Any] = {}
        self.block = torch_vector_block()
        self.torch_ref: dict[str, Any] = {}  # IR tensor -> torch tensor recorded on the example
        self.rec: _Recorder | None = None
        #: FX node -> the IR node name kept for the first node it emits: the module's qualified
        #: name (``fc``, ``layer1.0.conv1``) or the FX node's name (``add_relu_1``). Node names
        #: are unique among the nodes; a tensor keeps the FX node's name (``fc`` too).
        self.node_names: dict[str, str] = {}
        self.used_node_names: set[str] = set()

    # -- helpers ---------------------------------------------------------------------------------
    def fail(self, node, why: str) -> FrontendError:
        target = node.target if isinstance(node.target, str) else getattr(
            node.target, "__name__", str(node.target))
        return FrontendError(f"torch node {node.name!r} ({node.op} {target}): {why}",
                             node=node.name)

    def recorded(self, node):
        return self.rec.values[node.name]

    def new_q(self, node, t, suffix: str = "") -> QVal:
        """An IR tensor for the recorded quantized torch tensor ``t``."""
        torch = _torch()
        if not isinstance(t, torch.Tensor) or not t.is_quantized:
            raise self.fail(node, "expected a quantized output")
        if t.qscheme() not in (torch.per_tensor_affine, torch.per_tensor_symmetric):
            raise self.fail(node, f"activations quantized {t.qscheme()} are not supported "
                                  "(per-tensor only)")
        name = self.graph.unique_name(node.name + suffix)
        try:
            dtype = _qdtype(t)
        except ValueError:
            raise self.fail(node, f"quantized dtype {t.dtype} is not supported") from None
        self.graph.add_tensor(Tensor(name, tuple(t.shape), dtype, float(t.q_scale()),
                                     int(t.q_zero_point()), layout=_layout(t)))
        self.torch_ref[name] = t
        return QVal(name)

    def emit(self, node_name: str, op: str, inputs: list[str], out: str,
             flavour: str | None = "default", attrs: dict | None = None,
             source: str | None = None) -> None:
        fl = self.flavour if flavour in ("default", None) else flavour  # every node knows it
        name = self.node_names.pop(node_name, None) or self.node_name(node_name)
        self.graph.add_node(Node(name, op, inputs, [out], fl, dict(attrs or {}), source))

    def node_name(self, base: str) -> str:
        """An IR node name not used by another node yet, derived from ``base``."""
        name, i = base, 1
        while name in self.used_node_names:
            name = f"{base}_{i}"
            i += 1
        self.used_node_names.add(name)
        return name

    def arg(self, a):
        torch = _torch()
        if isinstance(a, torch.fx.Node):
            return self.vals[a.name]
        if isinstance(a, (list, tuple)):
            return [self.arg(x) for x in a]
        return Const(a)

    def const(self, node, a, what: str):
        v = self.arg(a)
        if isinstance(v, Const):
            v = v.value
        torch = _torch()
        if isinstance(v, torch.Tensor):
            return v.item() if v.numel() == 1 else v
        if isinstance(v, (QVal, FloatIn, FloatView)):
            raise self.fail(node, f"{what} must be a constant")
        return v

    def qin(self, node, idx: int = 0) -> QVal:
        a = node.args[idx] if idx < len(node.args) else None
        v = self.arg(a)
        if isinstance(v, QVal):
            return v
        if isinstance(v, FloatIn):
            raise self.fail(node, "runs on the float input before any quantize (the model is not "
                                  "quantized at its input: add a QuantStub or use convert_fx)")
        if isinstance(v, FloatView):
            raise self.fail(node, "runs in float between dequantize and quantize; only ops that "
                                  "commute with quantization (pad, upsample, max pool, ReLU, "
                                  "clamp, reshape) can stay in float there")
        raise self.fail(node, f"expected a quantized tensor input, got {type(v).__name__}")

    def tensor(self, v: QVal) -> Tensor:
        return self.graph.tensors[v.name]

    # -- the walk --------------------------------------------------------------------------------
    def run(self) -> Graph:
        torch = _torch()
        self.rec = _Recorder(self.gm, self.inputs)
        placeholders = [n for n in self.gm.graph.nodes if n.op == "placeholder"]
        if len(placeholders) != len(self.inputs):
            raise FrontendError(f"the model takes {len(placeholders)} inputs, example_input "
                                f"has {len(self.inputs)}")
        for n, x in zip(placeholders, self.inputs, strict=True):
            name = self.graph.unique_name(n.name)
            self.graph.add_tensor(Tensor(name, tuple(x.shape), "float32", layout="nchw"))
            self.graph.inputs.append(name)
            self.vals[n.name] = FloatIn(name)
        for node in self.gm.graph.nodes:
            if node.op == "placeholder":
                continue
            if node.op == "output":
                self.output(node)
                break
            handler = {"get_attr": self.get_attr, "call_module": self.call_module,
                       "call_function": self.call_function,
                       "call_method": self.call_method}[node.op]
            if node.op != "get_attr":  # the IR node is named after the module (or FX node)
                self.node_names[node.name] = self.node_name(
                    node.target if node.op == "call_module" else node.name)
            self.vals[node.name] = handler(node)
            self.used_node_names.discard(self.node_names.pop(node.name, None))  # none emitted
        self.graph.meta.update({
            "framework": "torch", "torch_version": torch.__version__, "engine": self.engine,
            "cpu_capability": str(torch.backends.cpu.get_cpu_capability()),
            "importer": "from_torch",
        })
        return self.graph

    def get_attr(self, node):
        obj = self.gm
        for part in node.target.split("."):
            obj = getattr(obj, part)
        return Const(obj)

    def output(self, node):
        torch = _torch()
        flat: list[Any] = []

        def collect(a):
            if isinstance(a, (tuple, list)):
                for x in a:
                    collect(x)
            elif isinstance(a, dict):
                for x in a.values():
                    collect(x)
            elif isinstance(a, torch.fx.Node):
                flat.append(a)
            else:
                raise self.fail(node, f"output {a!r} is not a tensor")

        collect(node.args[0])
        for a in flat:
            v = self.vals[a.name]
            if isinstance(v, FloatView):
                if v.fn is not None:
                    raise self.fail(a, f"a float {v.fn[0]} between dequantize and the output is "
                                       "not representable on codes")
                if v.float_clamps:
                    raise self.fail(a, "a float clamp between dequantize and the output is not "
                                       "representable on codes")
                q = self.apply_pending(a, v)
                name = self.graph.unique_name(a.name + "_out")
                qt = self.tensor(q)
                self.graph.add_tensor(Tensor(name, qt.shape, "float32", layout=qt.layout))
                self.emit(a.name, "dequantize", [q.name], name)
                self.torch_ref[name] = self.recorded(a)
                self.graph.outputs.append(name)
            elif isinstance(v, QVal):
                self.graph.outputs.append(v.name)
            elif isinstance(v, FloatIn):
                raise self.fail(a, "the float input is returned unchanged")
            else:
                raise self.fail(a, f"output of type {type(v).__name__} is not supported")

    def apply_pending(self, node, v: FloatView) -> QVal:
        cur = QVal(v.q)
        for op, attrs, shape in v.ops:
            src = self.tensor(cur)
            name = self.graph.unique_name(f"{node.name}_{op}")
            self.graph.add_tensor(Tensor(name, shape, src.dtype, src.scale, src.zero_point,
                                         layout=src.layout))
            attrs = dict(attrs)
            if op == "pad" and attrs.get("value") == "zp":
                attrs["value"] = src.zero_point
            if op == "clamp_f":
                op, attrs = "clamp", self._float_clamp_codes(src, attrs)
            self.emit(node.name, op, [cur.name], name, flavour=None if op != "clamp"
                      else self.flavour, attrs=attrs)
            cur = QVal(name)
        return cur

    def _float_clamp_codes(self, t: Tensor, attrs: dict) -> dict:
        """A float clamp followed by a requantize is a code clamp at the quantized bounds."""
        from ..ir.kernels import quantize

        def q(v, default):
            if v is None:
                return default
            return int(quantize(self.flavour, np.array([v], dtype=np.float32), t.scale,
                                t.zero_point, t.dtype, t.qmin, t.qmax)[0])

        return {"lo": q(attrs.get("min"), None), "hi": q(attrs.get("max"), None)}

    # -- quantize / dequantize -------------------------------------------------------------------
    def quantize(self, node, src, out_t):
        torch = _torch()
        if not isinstance(out_t, torch.Tensor) or not out_t.is_quantized:
            raise self.fail(node, "quantize did not return a quantized tensor")
        if isinstance(src, FloatIn):
            q = self.new_q(node, out_t)
            self.emit(node.name, "quantize", [src.name], q.name)
            return q
        if isinstance(src, FloatView):
            return self.requantize_view(node, src, out_t)
        if isinstance(src, QVal):
            raise self.fail(node, "quantizes an already quantized tensor")
        raise self.fail(node, f"cannot quantize a {type(src).__name__}")

    def requantize_view(self, node, src: FloatView, out_t) -> QVal:
        """``quantize(dequantize(q) -> float ops)``: requantize q, then the ops on codes."""
        st = self.graph.tensors[src.q]
        try:
            dtype = _qdtype(out_t)
        except ValueError:
            raise self.fail(node, f"quantized dtype {out_t.dtype} is not supported") from None
        orig = src.q
        cur = QVal(src.q)
        ops = list(src.ops)
        if ops and ops[0][0] == "slice":
            # a part of a split done in float, quantized on its own (FX: dequantize -> chunk ->
            # quantize_per_tensor per part): the slice first, then the rescaling of that part
            cur = self.apply_pending(node, FloatView(src.q, ops[:1]))
            ops = ops[1:]
            st = self.graph.tensors[cur.name]
            src = FloatView(cur.name, ops, src.float_clamps, src.fn)
        target = Tensor("?", st.shape, dtype, float(out_t.q_scale()), int(out_t.q_zero_point()))
        if src.fn is not None:
            # quantize(fn(dequantize(q))): a function of the code q, as torch computes it
            torch = _torch()
            fname, fn = src.fn
            qdt = out_t.dtype

            def table_fn(qx):
                return torch.quantize_per_tensor(fn(qx.dequantize()), float(out_t.q_scale()),
                                                 int(out_t.q_zero_point()), qdt)

            name = self.graph.unique_name(f"{node.name}_{fname}")
            self.graph.add_tensor(Tensor(name, st.shape, dtype, target.scale, target.zero_point,
                                         layout=st.layout))
            self.emit(node.name, "lut", [src.q], name,
                      attrs=self._lut_attrs(node, st, table_fn, fname, out_t))
            cur = QVal(name)
        elif not st.same_qparams(target):
            name = self.graph.unique_name(node.name + "_requantize")
            self.graph.add_tensor(Tensor(name, st.shape, dtype, target.scale, target.zero_point,
                                         layout=st.layout))
            self.emit(node.name, "requantize", [src.q], name)
            cur = QVal(name)
        res = self.apply_pending(node, FloatView(cur.name, src.ops))
        if src.fn is not None and res.name == cur.name:
            self.tensor(res).layout = _layout(out_t)
            self.torch_ref[res.name] = out_t
            return res
        if res.name != orig:
            self.tensor(res).layout = _layout(out_t)
            self.torch_ref[res.name] = out_t
        return res

    # -- unary activations as lookup tables -------------------------------------------------------
    def _lut_attrs(self, node, src: Tensor, fn, fname: str, want) -> dict:
        """``lut`` attributes: ``fn`` (quantized tensor -> quantized tensor, torch's own op) run
        on a tensor holding the 256 codes of ``src``'s dtype and qparams (PyTorch's vector
        kernel), and on each code alone (its scalar tail); ``want``: a recorded output whose
        qparams the result must have."""
        torch = _torch()
        if src.dtype not in ("uint8", "int8"):
            raise self.fail(node, f"a lookup table needs an 8-bit input, not {src.dtype}")
        raw = np.arange(256)
        codes = raw if src.dtype == "uint8" else np.where(raw >= 128, raw - 256, raw)
        tdt = torch.uint8 if src.dtype == "uint8" else torch.int8

        def qt(c):
            return torch._make_per_tensor_quantized_tensor(
                torch.tensor(c, dtype=tdt), float(src.scale), int(src.zero_point))

        prev = torch.backends.quantized.engine
        try:
            torch.backends.quantized.engine = self.engine
            with torch.no_grad():
                y = fn(qt(codes))
                scalar = [fn(qt(codes[i:i + 1])) for i in range(256)]
        except Exception as e:    # noqa: BLE001 - torch's own refusal, with its message
            raise self.fail(node, f"{fname} on the 256 input codes failed in torch: "
                                  f"{type(e).__name__}: {e}") from None
        finally:
            torch.backends.quantized.engine = prev
        if not (y.is_quantized and y.dtype == want.dtype
                and float(y.q_scale()) == float(want.q_scale())
                and int(y.q_zero_point()) == int(want.q_zero_point())):
            raise self.fail(node, f"{fname} on the 256 codes gives other qparams than the model "
                                  "(the table would not be the model's)")
        table = [int(v) for v in y.int_repr().numpy()]
        attrs = {"table": table, "function": fname}
        stab = [int(v.int_repr().numpy()[0]) for v in scalar]
        if stab != table:
            attrs.update(scalar_table=stab, vector_block=self.block)
        return attrs

    def lut(self, node, fn, fname: str, src=None):
        """A unary activation: on codes (torch's quantized op ``fn``) a ``lut`` node; on a
        dequantized value ``fn`` is queued (a float function, see :class:`FloatView`)."""
        src = self.arg(node.args[0]) if src is None else src
        if isinstance(src, FloatView):
            if src.ops or src.fn is not None:
                raise self.fail(node, f"float {fname} after other float ops between dequantize "
                                      "and quantize is not supported")
            return FloatView(src.q, [], src.float_clamps, (fname, fn))
        if not isinstance(src, QVal):
            self.qin(node)
        out_t = self.recorded(node)
        attrs = self._lut_attrs(node, self.tensor(src), fn, fname, out_t)
        q = self.new_q(node, out_t)
        self.emit(node.name, "lut", [src.name], q.name, attrs=attrs,
                  source=node.target if isinstance(node.target, str) else None)
        return q

    def dequantize(self, node, src):
        if isinstance(src, QVal):
            return FloatView(src.name)
        if isinstance(src, FloatView):
            return src
        raise self.fail(node, "dequantizes a value that is not quantized")

    # -- generic unary ops on codes --------------------------------------------------------------
    def unary(self, node, op: str, attrs: dict, src=None, flavour: str | None = "default",
              float_ok: bool = True, float_clamp: dict | None = None):
        """``op`` on a quantized input; on a FloatView the op is queued (it commutes)."""
        src = self.arg(node.args[0]) if src is None else src
        out_t = self.recorded(node)
        if isinstance(src, FloatView):
            if not float_ok:
                raise self.fail(node, "runs in float between dequantize and quantize and does "
                                      "not commute with quantization")
            shape = tuple(out_t.shape)
            if float_clamp is not None:
                return FloatView(src.q, src.ops + [("clamp_f", float_clamp, shape)], True, src.fn)
            return FloatView(src.q, src.ops + [(op, attrs, shape)], src.float_clamps, src.fn)
        if not isinstance(src, QVal):
            self.qin(node)
        q = self.new_q(node, out_t)
        self.emit(node.name, op, [src.name], q.name, flavour=flavour, attrs=attrs,
                  source=node.target if isinstance(node.target, str) else None)
        return q

    def passthrough(self, node, src=None):
        src = self.arg(node.args[0]) if src is None else src
        if isinstance(src, QVal):
            out_t = self.recorded(node)
            if _layout(out_t) != self.tensor(src).layout:
                return self.unary(node, "reshape", {"shape": list(out_t.shape)}, src,
                                  flavour=None)
        return src

    # -- modules ---------------------------------------------------------------------------------
    def call_module(self, node):
        torch = _torch()
        m = self.modules[node.target]
        cls = type(m)
        mod = cls.__module__
        if "observer" in mod or "fake_quantize" in mod or _is(m, "QuantStub", "DeQuantStub"):
            raise self.fail(node, f"{cls.__name__} found: the model is prepared but not "
                                  "converted (call convert_fx / torch.ao.quantization.convert)")
        if mod.startswith("torch.ao.nn.quantized.dynamic") or "dynamic" in mod.split("."):
            raise self.fail(node, "dynamically quantized modules keep float activations; "
                                  "zynqnn needs static quantization")
        if _is(m, "Quantize"):
            src = self.arg(node.args[0])
            return self.quantize(node, src, self.recorded(node))
        if _is(m, "DeQuantize"):
            return self.dequantize(node, self.arg(node.args[0]))
        if _is(m, "Conv2d", "ConvReLU2d") and mod.startswith(("torch.ao.nn.quantized",
                                                              "torch.ao.nn.intrinsic.quantized")):
            return self.conv(node, m, relu=_is(m, "ConvReLU2d"))
        if _is(m, "Linear", "LinearReLU") and mod.startswith(("torch.ao.nn.quantized",
                                                              "torch.ao.nn.intrinsic.quantized")):
            return self.linear(node, m, relu=_is(m, "LinearReLU"))
        if _is(m, "ConvTranspose2d") and mod.startswith("torch.ao.nn.quantized"):
            return self.conv_transpose(node, m)
        if mod.startswith(("torch.ao.nn.quantized", "torch.ao.nn.intrinsic.quantized")):
            if _is(m, "LeakyReLU"):
                return self.unary(node, "leaky_relu", {"negative_slope": float(m.negative_slope),
                                                       "vector_block": self.block},
                                  float_ok=False)
            if _is(m, "ReLU6"):
                return self.clamp_like(node, "relu6", 0.0, 6.0)
            if _is(m, "BatchNorm2d", "BNReLU2d"):
                return self.batch_norm(node, m)
            if _is(m, "Hardswish", "Sigmoid", "Tanh", "Hardsigmoid", "SiLU"):
                return self.lut(node, m, cls.__name__.lower())
            if _is(m, "Dropout"):
                # Eager convert swaps nn.Dropout for the quantized one: identity in eval.
                return self.passthrough(node)
            if _is(m, "QFunctional", "FloatFunctional"):
                raise self.fail(node, "QFunctional must be called through its methods")
            raise self.fail(node, f"quantized module {cls.__name__} is not supported")
        if isinstance(m, (torch.nn.Identity, torch.nn.Dropout, torch.nn.Dropout2d)):
            return self.passthrough(node)
        if isinstance(m, torch.nn.MaxPool2d):
            return self.maxpool(node, m.kernel_size, m.stride, m.padding, m.dilation,
                                m.ceil_mode)
        if isinstance(m, torch.nn.AvgPool2d):
            return self.avgpool(node, m.kernel_size, m.stride, m.padding, m.ceil_mode,
                                m.count_include_pad, m.divisor_override)
        if isinstance(m, torch.nn.AdaptiveAvgPool2d):
            return self.adaptive(node)
        if isinstance(m, torch.nn.ReLU):
            return self.unary(node, "relu", {}, flavour=None)
        if isinstance(m, torch.nn.ReLU6):
            return self.clamp_like(node, "relu6", 0.0, 6.0)
        if isinstance(m, torch.nn.Hardtanh):
            return self.clamp_like(node, "hardtanh", float(m.min_val), float(m.max_val))
        if isinstance(m, torch.nn.LeakyReLU):
            return self.unary(node, "leaky_relu", {"negative_slope": float(m.negative_slope),
                                                   "vector_block": self.block}, float_ok=False)
        if isinstance(m, (torch.nn.Tanh, torch.nn.Sigmoid, torch.nn.Hardsigmoid,
                          torch.nn.Hardswish, torch.nn.SiLU)):
            return self.lut(node, m, cls.__name__.lower())
        if isinstance(m, torch.nn.Flatten):
            if m.end_dim not in (-1, 3):
                return self.reshape(node)
            return self.unary(node, "flatten", {"start_dim": int(m.start_dim)}, flavour=None)
        if isinstance(m, (torch.nn.ZeroPad2d, torch.nn.ConstantPad2d)):
            return self.pad(node, list(m.padding), float(getattr(m, "value", 0.0)))
        if isinstance(m, torch.nn.Upsample):
            if m.mode not in ("nearest", "nearest-exact"):
                raise self.fail(node, f"upsample mode {m.mode!r} is not supported "
                                      "(nearest only)")
            return self.upsample(node)
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear, torch.nn.BatchNorm2d)):
            raise self.fail(node, f"float {cls.__name__} found: this layer is not quantized "
                                  "(the model is not fully quantized)")
        raise self.fail(node, f"module {cls.__name__} is not supported")

    def _weights(self, node, m, name: str):
        torch = _torch()
        w = m.weight()
        data = w.int_repr().numpy().astype(np.int64)
        dtype = _qdtype(w)
        if w.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
            if w.q_per_channel_axis() != 0:
                raise self.fail(node, "per-channel weights must be quantized along axis 0")
            t = Tensor(name, data.shape, dtype, w.q_per_channel_scales().numpy().astype(float),
                       w.q_per_channel_zero_points().numpy().astype(np.int64), axis=0,
                       layout="any", data=data)
        elif w.qscheme() in (torch.per_tensor_affine, torch.per_tensor_symmetric):
            t = Tensor(name, data.shape, dtype, float(w.q_scale()), int(w.q_zero_point()),
                       layout="any", data=data)
        else:
            raise self.fail(node, f"weight quantization {w.qscheme()} is not supported")
        s = np.atleast_1d(np.asarray(t.scale, dtype=np.float64))
        if not np.all(np.isfinite(s) & (s > 0)):
            i = int(np.argmax(~(np.isfinite(s) & (s > 0))))
            raise self.fail(node, f"weight {name!r} has scale {float(s[i])!r}"
                                  + (f" (channel {i} of {s.size})" if s.size > 1 else "")
                                  + "; a scale must be finite and > 0")
        self.graph.add_tensor(t)
        b = m.bias()
        bias = None
        if b is not None:
            bias = self.graph.unique_name(name.rsplit(".", 1)[0] + ".bias")
            bd = b.detach().float().numpy()
            self.graph.add_tensor(Tensor(bias, bd.shape, "float32", layout="any", data=bd))
        return t.name, bias

    def conv(self, node, m, relu: bool):
        x = self.qin(node)
        if m.padding_mode != "zeros":
            raise self.fail(node, f"padding_mode {m.padding_mode!r} is not supported")
        if len(m.kernel_size) != 2:
            raise self.fail(node, "only 2-D convolutions are supported")
        out_t = self.recorded(node)
        q = self.new_q(node, out_t)
        w, b = self._weights(node, m, self.graph.unique_name(f"{node.target}.weight"))
        ph, pw = m.padding if isinstance(m.padding, tuple) else (m.padding, m.padding)
        if isinstance(m.padding, str):
            raise self.fail(node, f"string padding {m.padding!r} is not supported")
        attrs = {"stride": list(m.stride), "padding": [ph, ph, pw, pw],
                 "dilation": list(m.dilation), "groups": int(m.groups),
                 "requant": {"scheme": self.flavour},
                 "activation": "relu" if relu else "none", "clamp": None}
        ins = [x.name, w] + ([b] if b else [])
        self.emit(node.name, "conv2d", ins, q.name, attrs=attrs, source=node.target)
        return q

    def conv_transpose(self, node, m):
        """A quantized ``ConvTranspose2d``: PyTorch requantizes its exact integer sums as its
        conv does (fbgemm, qnnpack), so the IR's ``conv_transpose2d`` with the engine's
        requantization is the framework's arithmetic; except fbgemm's direct transposed kernel
        (below), which is refused."""
        torch = _torch()
        x = self.qin(node)
        if m.padding_mode != "zeros":
            raise self.fail(node, f"padding_mode {m.padding_mode!r} is not supported")
        if len(m.kernel_size) != 2:
            raise self.fail(node, "only 2-D transposed convolutions are supported")
        w = m.weight()
        if w.qscheme() not in (torch.per_tensor_affine, torch.per_tensor_symmetric):
            raise self.fail(node, f"ConvTranspose2d weights quantized {w.qscheme()} are not "
                                  "supported (per-tensor only, torch.ao's default for "
                                  "ConvTranspose2d)")
        cin, cout = m.in_channels, m.out_channels
        kh, kw = m.kernel_size
        if (self.engine == "fbgemm" and m.groups == 1 and cin % 8 == 0 and cout % 8 == 0
                and all(s in (1, 2) for s in m.stride) and kh == 2 and kw <= 6
                and all(d == 1 for d in m.dilation) and all(p == 0 for p in m.padding)):
            # fbgemm's takeDirectConvPath: its AVX2 direct transposed-convolution kernel
            version = torch.__version__.split("+")[0]
            why = (f"steps the input rows by 1 instead of {m.stride[0]} (torch {version}: its "
                   "output is not the layer's transposed convolution, and its last rows hold "
                   "the bias alone)" if m.stride[0] != 1 else
                   f"computes with weights that the module's weight() does not return (torch "
                   f"{version}: unpacking that kernel's packed weights gives other values), so "
                   "they cannot be read")
            raise self.fail(node, f"PyTorch's fbgemm engine runs this ConvTranspose2d (kernel "
                                  f"{kh}x{kw}, stride {list(m.stride)}, {cin} -> {cout} "
                                  "channels, no padding) in fbgemm's direct transposed-"
                                  f"convolution kernel, which {why}; zynqnn does not reproduce "
                                  "it. Quantize with the qnnpack engine, which computes the "
                                  "layer as defined")
        out_t = self.recorded(node)
        q = self.new_q(node, out_t)
        wname, b = self._weights(node, m, self.graph.unique_name(f"{node.target}.weight"))
        ph, pw = m.padding
        attrs = {"stride": list(m.stride), "padding": [ph, ph, pw, pw],
                 "output_padding": list(m.output_padding), "dilation": list(m.dilation),
                 "groups": int(m.groups), "requant": {"scheme": self.flavour},
                 "activation": "none", "clamp": None}
        self.emit(node.name, "conv_transpose2d", [x.name, wname] + ([b] if b else []), q.name,
                  attrs=attrs, source=node.target)
        return q

    def linear(self, node, m, relu: bool):
        x = self.qin(node)
        if len(self.tensor(x).shape) != 2:
            raise self.fail(node, f"linear input must be 2-D, has shape "
                                  f"{list(self.tensor(x).shape)}")
        q = self.new_q(node, self.recorded(node))
        w, b = self._weights(node, m, self.graph.unique_name(f"{node.target}.weight"))
        attrs = {"requant": {"scheme": self.flavour}, "activation": "relu" if relu else "none",
                 "clamp": None}
        self.emit(node.name, "linear", [x.name, w] + ([b] if b else []), q.name, attrs=attrs,
                  source=node.target)
        return q

    def clamp_like(self, node, op: str, lo: float | None, hi: float | None, src=None):
        src = self.arg(node.args[0]) if src is None else src
        if isinstance(src, QVal) and self.engine == "qnnpack":
            t = self.tensor(src)
            if t.layout == "nhwc" and len(t.shape) == 4 and t.shape[1] > 1 and \
                    t.shape[2] * t.shape[3] > 1:
                raise self.fail(node, "PyTorch's qnnpack clamp scrambles channels-last input "
                                      "(torch 2.13); apply zynqnn.zoo.quant.fix_qnnpack_clamp to "
                                      "the converted model (zoo.quantize_fx does) and import again")
        if op == "clamp" and (lo is None or hi is None) and self.engine == "qnnpack":
            raise self.fail(node, "qnnpack's quantized clamp needs both bounds")
        # relu6 is hardtanh(0, 6); clamp is hardtanh with optional bounds: both quantize their
        # bounds with the input's qparams (quantize_val) and clamp the codes
        attrs = {} if op == "relu6" else {"min_val": lo, "max_val": hi}
        op = "relu6" if op == "relu6" else "hardtanh"
        return self.unary(node, op, attrs, src, float_clamp={"min": lo, "max": hi})

    def maxpool(self, node, k, s, p, d, ceil):
        def pair(v):
            return list(v) if isinstance(v, (tuple, list)) else [v, v]

        s = k if s is None or s == [] else s
        ph, pw = pair(p)
        attrs = {"kernel": pair(k), "stride": pair(s), "padding": [ph, ph, pw, pw],
                 "dilation": pair(d), "ceil_mode": bool(ceil), "pad_value": None}
        return self.unary(node, "max_pool2d", attrs, flavour=None)

    def avgpool(self, node, k, s, p, ceil, cip, dov):
        def pair(v):
            return list(v) if isinstance(v, (tuple, list)) else [v, v]

        s = k if s is None or s == [] else s
        ph, pw = pair(p)
        attrs = {"kernel": pair(k), "stride": pair(s), "padding": [ph, ph, pw, pw],
                 "ceil_mode": bool(ceil), "count_include_pad": bool(cip),
                 "divisor_override": dov, "vector_width": 16 if self.block == 128 else 8}
        return self.unary(node, "avg_pool2d", attrs, float_ok=False)

    def adaptive(self, node):
        out_t = self.recorded(node)
        return self.unary(node, "adaptive_avg_pool2d",
                          {"output_size": list(out_t.shape[2:]), "vector_width": 8},
                          float_ok=False)

    def batch_norm(self, node, m):
        """A stand-alone quantized BatchNorm2d / BNReLU2d (DenseNet's pre-activation layers):
        PyTorch's kernel maps each channel's input code to an output code. The map is measured
        here with the module itself on maps of the recorded input's shape, qparams and memory
        layout holding every input code in every channel, at two arrangements of the codes over
        the pixels: equal results mean the kernel does not depend on the position, and the
        table (``batch_norm`` op) is the framework's arithmetic on every code."""
        torch = _torch()
        src = self.qin(node)
        x_t = self.rec.values[node.args[0].name]
        t = self.tensor(src)
        n, c, h, w = x_t.shape

        def run(xs):
            qx = torch._make_per_tensor_quantized_tensor(
                torch.from_numpy(xs.astype(np.uint8 if t.dtype == "uint8" else np.int8)),
                float(t.scale), int(t.zero_point))
            if _layout(x_t) == "nhwc":
                qx = qx.contiguous(memory_format=torch.channels_last)
            with torch.no_grad():
                return m(qx).int_repr().numpy()

        try:
            table = measure_channel_map(run, (n, c, h, w), t.qmin, t.qmax)
        except ValueError as exc:
            raise self.fail(node, f"PyTorch's quantized BatchNorm: {exc}; not reproduced") \
                from None
        q = self.new_q(node, self.recorded(node))
        self.emit(node.name, "batch_norm", [src.name], q.name,
                  attrs={"table": table.tolist(), "in_lo": int(t.qmin),
                         "relu": _is(m, "BNReLU2d")}, source=node.target)
        return q

    def mean(self, node):
        """``x.mean([2, 3])`` (ShuffleNetV2's head) of a quantized map: under qnnpack PyTorch
        runs qnnpack's global average pooling with the input's qparams, the same codes as
        ``adaptive_avg_pool2d(x, 1)`` (checked on 300 random maps, and by the import check);
        fbgemm's quantized mean takes another formula, not reproduced."""
        src = self.arg(node.args[0])
        a = _bind(node, ["input", "dim", "keepdim"], {"dim": None, "keepdim": False})
        shape = self._shape_of(node, src)
        dims = a["dim"] if isinstance(a["dim"], (list, tuple)) else [a["dim"]]
        if len(shape) != 4 or a["dim"] is None or sorted(int(d) % 4 for d in dims) != [2, 3]:
            raise self.fail(node, f"mean over {a['dim']!r}: only the mean over the spatial "
                                  "axes [2, 3] of a 4-D map is supported (global average "
                                  "pooling)")
        if not isinstance(src, QVal):
            raise self.fail(node, "mean of a float tensor: the op is not quantized")
        if self.engine != "qnnpack":
            raise self.fail(node, f"quantized mean under {self.engine} is not supported (its "
                                  "arithmetic differs from average pooling); use "
                                  "nn.AdaptiveAvgPool2d(1) and flatten, or the qnnpack engine")
        t = self.tensor(src)
        n, c = shape[0], shape[1]
        pooled = self.graph.unique_name(node.name + "_pool")
        self.graph.add_tensor(Tensor(pooled, (n, c, 1, 1), t.dtype, t.scale, t.zero_point,
                                     layout=t.layout))
        self.emit(node.name, "adaptive_avg_pool2d", [src.name], pooled,
                  attrs={"output_size": [1, 1], "vector_width": 8}, source="mean")
        if a["keepdim"]:
            self.torch_ref[pooled] = self.recorded(node)
            return QVal(pooled)
        q = self.new_q(node, self.recorded(node))
        self.emit(node.name, "flatten", [pooled], q.name, flavour=None,
                  attrs={"start_dim": 1})
        return q

    def pad(self, node, pads, value: float):
        if len(pads) == 2:
            pads = pads * 2
        if len(pads) != 4 or any(p < 0 for p in pads):
            raise self.fail(node, f"padding {pads} is not supported (4 non-negative values)")
        if value != 0.0:
            raise self.fail(node, f"padding with {value} is not supported (zero padding only)")
        left, right, top, bottom = (int(v) for v in pads)
        src = self.arg(node.args[0])
        value_code = "zp" if isinstance(src, FloatView) else self.tensor(self.qin(node)).zero_point
        return self.unary(node, "pad", {"pads": [top, bottom, left, right], "value": value_code},
                          src=src, flavour=None)

    def upsample(self, node, src=None):
        src = self.arg(node.args[0]) if src is None else src
        out_t = self.recorded(node)
        if isinstance(src, QVal):
            in_shape = self.tensor(src).shape
        elif isinstance(src, FloatView):
            in_shape = src.ops[-1][2] if src.ops else self.graph.tensors[src.q].shape
        else:
            raise self.fail(node, "upsamples a tensor that is not quantized")
        oh, ow = out_t.shape[2], out_t.shape[3]
        if oh % in_shape[2] or ow % in_shape[3]:
            raise self.fail(node, f"upsampling {list(in_shape)} -> {list(out_t.shape)} is not "
                                  "an integer factor")
        return self.unary(node, "upsample_nearest",
                          {"scale": [oh // in_shape[2], ow // in_shape[3]]}, src, flavour=None)

    def reshape(self, node, src=None):
        out_t = self.recorded(node)
        return self.unary(node, "reshape", {"shape": list(out_t.shape)}, src, flavour=None)

    # -- functions and methods -------------------------------------------------------------------
    def call_function(self, node):
        torch = _torch()
        F = torch.nn.functional
        f = node.target
        qops = torch.ops.quantized
        if f is torch.quantize_per_tensor:
            return self.quantize(node, self.arg(node.args[0]), self.recorded(node))
        if f in (torch.quantize_per_channel, torch.quantize_per_tensor_dynamic):
            raise self.fail(node, "per-channel or dynamic activation quantization is not "
                                  "supported")
        if f in (qops.add, qops.add_relu):
            return self.add(node, relu=f is qops.add_relu)
        if f in (torch.cat, torch.concat, qops.cat):
            return self.cat(node)
        if f is torch.flatten:
            start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
            end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
            if end not in (-1, 3):
                return self.reshape(node)
            return self.unary(node, "flatten", {"start_dim": int(start)}, flavour=None)
        if f in (torch.reshape,):
            return self.reshape(node)
        if f is F.interpolate:
            mode = node.kwargs.get("mode", node.args[3] if len(node.args) > 3 else "nearest")
            if mode not in ("nearest", "nearest-exact"):
                raise self.fail(node, f"interpolate mode {mode!r} is not supported")
            return self.upsample(node)
        if f in (F.relu, torch.relu):
            return self.unary(node, "relu", {}, flavour=None)
        if f is F.relu6:
            return self.clamp_like(node, "relu6", 0.0, 6.0)
        if f in (F.hardtanh, F.hardtanh_):
            lo = node.args[1] if len(node.args) > 1 else node.kwargs.get("min_val", -1.0)
            hi = node.args[2] if len(node.args) > 2 else node.kwargs.get("max_val", 1.0)
            return self.clamp_like(node, "hardtanh", float(lo), float(hi))
        if f in (torch.clamp, torch.clip):
            lo = node.args[1] if len(node.args) > 1 else node.kwargs.get("min")
            hi = node.args[2] if len(node.args) > 2 else node.kwargs.get("max")
            return self.clamp_like(node, "clamp", lo, hi)
        if f is F.max_pool2d:
            a = _bind(node, ["input", "kernel_size", "stride", "padding", "dilation",
                             "ceil_mode"], {"stride": None, "padding": 0, "dilation": 1,
                                            "ceil_mode": False})
            return self.maxpool(node, a["kernel_size"], a["stride"], a["padding"],
                                a["dilation"], a["ceil_mode"])
        if f is F.avg_pool2d:
            a = _bind(node, ["input", "kernel_size", "stride", "padding", "ceil_mode",
                             "count_include_pad", "divisor_override"],
                      {"stride": None, "padding": 0, "ceil_mode": False,
                       "count_include_pad": True, "divisor_override": None})
            return self.avgpool(node, a["kernel_size"], a["stride"], a["padding"],
                                a["ceil_mode"], a["count_include_pad"], a["divisor_override"])
        if f is F.adaptive_avg_pool2d:
            return self.adaptive(node)
        if f is F.pad:
            a = _bind(node, ["input", "pad", "mode", "value"], {"mode": "constant",
                                                                 "value": None})
            if a["mode"] != "constant":
                raise self.fail(node, f"pad mode {a['mode']!r} is not supported")
            return self.pad(node, list(a["pad"]), float(a["value"] or 0.0))
        if f in (F.dropout, F.dropout2d):
            return self.passthrough(node)
        if f is F.leaky_relu:
            slope = node.args[1] if len(node.args) > 1 else node.kwargs.get(
                "negative_slope", 0.01)
            return self.unary(node, "leaky_relu", {"negative_slope": float(slope),
                                                   "vector_block": self.block}, float_ok=False)
        luts = {torch.sigmoid: "sigmoid", F.sigmoid: "sigmoid", torch.tanh: "tanh",
                F.tanh: "tanh", F.hardsigmoid: "hardsigmoid", F.hardswish: "hardswish",
                F.silu: "silu"}
        if f in luts and len(node.args) == 1 and set(node.kwargs) <= {"inplace"}:
            return self.lut(node, f, luts[f])     # (inplace or not: the same codes)
        if f is qops.hardswish:
            a = _bind(node, ["input", "output_scale", "output_zero_point"], {})
            s_out = float(self.const(node, a["output_scale"], "output_scale"))
            zp_out = int(self.const(node, a["output_zero_point"], "output_zero_point"))
            return self.lut(node, lambda q: qops.hardswish(q, s_out, zp_out), "hardswish")
        if f is operator.getitem:
            v = self.arg(node.args[0])
            if isinstance(v, Const):
                return Const(v.value[node.args[1]])
            if isinstance(v, list):
                return v[node.args[1]]
            if isinstance(v, (QVal, FloatView)):
                return self.index(node, v, node.args[1])
            raise self.fail(node, "indexing a tensor is not supported")
        if f in _CONST_ARITH and node.args and all(
                isinstance(self.arg(a), Const) for a in node.args):
            # shape arithmetic on x.size() (channel_shuffle: channels // groups)
            return Const(f(*(self.arg(a).value for a in node.args)))
        if f in (torch.chunk, torch.split, torch.tensor_split):
            return self.split(node)
        if f in (torch.transpose, torch.swapaxes, torch.permute):
            return self.transpose(node)
        if f in (operator.add, torch.add, operator.mul, torch.mul, qops.mul, qops.add_scalar,
                 qops.mul_relu, qops.mul_scalar):
            raise self.fail(node, "this arithmetic is not supported (quantized add of two "
                                  "tensors only; float arithmetic means the op is not quantized)")
        raise self.fail(node, "function is not supported")

    def call_method(self, node):
        m = node.target
        if m == "dequantize":
            return self.dequantize(node, self.arg(node.args[0]))
        if m in ("contiguous", "detach", "clone"):
            return self.passthrough(node)
        if m == "size":
            return Const(self.recorded(node))
        if m == "flatten":
            start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
            end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
            if end not in (-1, 3):
                return self.reshape(node)
            return self.unary(node, "flatten", {"start_dim": int(start)}, flavour=None)
        if m in ("view", "reshape"):
            return self.reshape(node)
        if m in ("chunk", "split", "tensor_split"):
            return self.split(node)
        if m == "mean":
            return self.mean(node)
        if m in ("transpose", "swapaxes", "permute"):
            return self.transpose(node)
        if m in ("relu", "relu_"):
            return self.unary(node, "relu", {}, flavour=None)
        if m in ("sigmoid", "tanh") and len(node.args) == 1 and not node.kwargs:
            torch = _torch()
            return self.lut(node, getattr(torch, m), m)
        if m in ("clamp", "clip", "clamp_", "clip_"):
            lo = node.args[1] if len(node.args) > 1 else node.kwargs.get("min")
            hi = node.args[2] if len(node.args) > 2 else node.kwargs.get("max")
            return self.clamp_like(node, "clamp", lo, hi)
        raise self.fail(node, "method is not supported")

    def _shape_of(self, node, v) -> tuple[int, ...]:
        if isinstance(v, QVal):
            return self.tensor(v).shape
        if isinstance(v, FloatView):
            return v.ops[-1][2] if v.ops else self.graph.tensors[v.q].shape
        raise self.fail(node, f"expected a quantized tensor, got {type(v).__name__}")

    def _slice(self, node, src, axis: int, start: int, end: int, out_t, i: int | None):
        """One part of ``src`` along ``axis``: an IR ``slice`` (queued on a FloatView)."""
        attrs = {"axis": int(axis), "start": int(start), "end": int(end)}
        if isinstance(src, FloatView):
            return FloatView(src.q, src.ops + [("slice", attrs, tuple(out_t.shape))],
                             src.float_clamps, src.fn)
        q = self.new_q(node, out_t, "" if i is None else f"_{i}")
        self.emit(node.name, "slice", [src.name], q.name, flavour=None, attrs=attrs,
                  source=node.target if isinstance(node.target, str) else None)
        return q

    def split(self, node):
        """``chunk`` / ``split`` / ``tensor_split``: the parts PyTorch returned, each a
        ``slice`` of consecutive indices (their sizes are read from the recorded outputs)."""
        src = self.arg(node.args[0])
        shape = self._shape_of(node, src)
        a = _bind(node, ["input", "sections", "dim"], {"dim": 0})
        dim = int(a["dim"]) % len(shape)
        parts = self.recorded(node)
        out, start = [], 0
        for i, t in enumerate(parts):
            size = int(t.shape[dim])
            if size == 0:
                raise self.fail(node, f"part {i} is empty")
            out.append(self._slice(node, src, dim, start, start + size, t, i))
            start += size
        return out

    def index(self, node, src, key):
        """``x[:, a:b]`` (basic slicing with step 1 on one axis; the others whole)."""
        shape = self._shape_of(node, src)
        key = key if isinstance(key, tuple) else (key,)
        if any(k is Ellipsis for k in key):
            i = key.index(Ellipsis)
            key = key[:i] + (slice(None),) * (len(shape) - len(key) + 1) + key[i + 1:]
        if len(key) > len(shape) or not all(isinstance(k, slice) for k in key):
            raise self.fail(node, f"indexing with {key!r} is not supported (only slices such "
                                  "as x[:, a:b])")
        cut = []
        for axis, k in enumerate(key):
            start, stop, step = k.indices(shape[axis])
            if (start, stop, step) != (0, shape[axis], 1):
                cut.append((axis, start, stop, step))
        if not cut:
            return src
        if len(cut) > 1 or cut[0][3] != 1 or cut[0][2] <= cut[0][1]:
            raise self.fail(node, f"indexing with {key!r} is not supported (one axis, step 1, "
                                  "not empty)")
        axis, start, stop, _ = cut[0]
        return self._slice(node, src, axis, start, stop, self.recorded(node), None)

    def transpose(self, node):
        src = self.arg(node.args[0])
        rank = len(self._shape_of(node, src))
        if node.target in ("permute",) or node.target is getattr(_torch(), "permute", None):
            dims = node.args[1:] if len(node.args) > 2 else node.args[1]
            perm = [int(d) % rank for d in (dims if not isinstance(dims, int) else [dims])]
        else:
            a = _bind(node, ["input", "dim0", "dim1"], {})
            d0, d1 = int(a["dim0"]) % rank, int(a["dim1"]) % rank
            perm = list(range(rank))
            perm[d0], perm[d1] = perm[d1], perm[d0]
        return self.unary(node, "transpose", {"perm": perm}, src, flavour=None)

    def add(self, node, relu: bool):
        a = self.qin(node, 0)
        b = self.qin(node, 1)
        ta, tb = self.tensor(a), self.tensor(b)
        if ta.shape != tb.shape:
            raise self.fail(node, f"add of shapes {list(ta.shape)} and {list(tb.shape)} "
                                  "(broadcasting) is not supported")
        q = self.new_q(node, self.recorded(node))
        attrs = {"relu": relu}
        if self.flavour == "torch-fbgemm":
            attrs["vector_block"] = self.block
        self.emit(node.name, "add", [a.name, b.name], q.name, attrs=attrs)
        return q

    def cat(self, node):
        xs = node.args[0] if node.args else node.kwargs.get("tensors")
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
        ins = []
        for x in xs:
            v = self.arg(x)
            if not isinstance(v, QVal):
                raise self.fail(node, "concatenates a tensor that is not quantized")
            ins.append(v.name)
        q = self.new_q(node, self.recorded(node))
        rank = len(self.tensor(q).shape)
        self.emit(node.name, "concat", ins, q.name, attrs={"axis": int(dim) % rank})
        return q


#: Python arithmetic on constants (the shape arithmetic of x.size()).
_CONST_ARITH = (operator.floordiv, operator.mul, operator.add, operator.sub, operator.mod,
                operator.truediv, operator.neg)


def _bind(node, names: list[str], defaults: dict) -> dict:
    out = dict(defaults)
    for n, a in zip(names, node.args, strict=False):
        out[n] = a
    out.update(node.kwargs)
    return out


def _trace(model):
    torch = _torch()
    if isinstance(model, torch.fx.GraphModule):
        return model
    try:
        return torch.fx.symbolic_trace(model)
    except Exception as exc:  # tracing errors come in many types
        raise FrontendError(f"cannot trace {type(model).__name__} with torch.fx "
                            f"({type(exc).__name__}: {exc}); from_torch needs a converted FX "
                            "GraphModule or an FX-traceable eager model") from None


def _is_quantized_model(gm) -> bool:
    torch = _torch()
    for n in gm.graph.nodes:
        if n.op == "call_function" and n.target is torch.quantize_per_tensor:
            return True
    for m in gm.modules():
        mod = type(m).__module__
        if mod.startswith(("torch.ao.nn.quantized", "torch.ao.nn.intrinsic.quantized")) or \
                "observer" in mod or "fake_quantize" in mod or _is(m, "QuantStub"):
            return True
    return False


def packing_engine(m) -> str | None:
    """The engine a quantized Conv2d/Linear/ConvTranspose2d's weights were packed under (None:
    undecidable).

    The packed kernels are probed with an input at the zero point (zero accumulators) and an
    input scale that brings the bias to a few accumulator units, with a small output scale:
    fbgemm adds the float bias, qnnpack rounds it to int32 first, so the codes tell them apart
    unless every bias is a whole number of units. The module is not modified.
    """
    torch = _torch()
    from ..numerics import make_requant

    try:
        w, b = m.weight(), m.bias()
    except Exception:
        return None
    if b is None or not torch.any(b != 0):
        return None
    per_channel = w.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric)
    transposed = _is(m, "ConvTranspose2d")
    if transposed and per_channel:
        return None
    sw = (w.q_per_channel_scales().numpy() if per_channel
          else np.full(b.shape[0], w.q_scale()))
    if not (np.all(np.isfinite(sw)) and np.all(sw > 0)):
        return None  # the weight's own check names it (a probe scale from the bias would not)
    bias = b.detach().float().numpy()
    s_in = float(np.max(np.abs(bias) / sw) / 4)
    if not (s_in > 0 and np.isfinite(s_in)):
        return None
    s_out = float((s_in * sw).min() / 16)
    try:
        with torch.no_grad():
            if transposed:
                x = torch.quantize_per_tensor(torch.zeros(1, w.shape[0], 1, 1), s_in, 0,
                                              torch.quint8)
                y = torch.ops.quantized.conv_transpose2d(x, m._packed_params, s_out, 128)
                axis = 1
            elif w.dim() == 4:
                x = torch.quantize_per_tensor(
                    torch.zeros(1, w.shape[1] * m.groups, *m.kernel_size), s_in, 0, torch.quint8)
                y = torch.ops.quantized.conv2d(x, m._packed_params, s_out, 128)
                axis = 1
            else:
                x = torch.quantize_per_tensor(torch.zeros(1, w.shape[1]), s_in, 0, torch.quint8)
                y = torch.ops.quantized.linear(x, m._packed_params._packed_params, s_out, 128)
                axis = -1
    except Exception:  # a module layout this probe does not know
        return None
    got = y.int_repr().numpy().astype(np.int64)
    acc = np.zeros_like(got)
    found = []
    for eng in ("fbgemm", "qnnpack"):
        rq = make_requant(f"torch-{eng}", s_in, sw if per_channel else float(sw[0]), s_out, 128,
                          bias)
        if np.array_equal(rq.apply(acc, axis=axis), got):
            found.append(eng)
    return found[0] if len(found) == 1 else None


def _check_packing(gm, engine: str) -> None:
    """Raise when a conv/linear was packed under another engine than the one selected."""
    for name, m in gm.named_modules():
        if not (_is(m, "Conv2d", "ConvReLU2d", "Linear", "LinearReLU", "ConvTranspose2d")
                and type(m).__module__
                .startswith(("torch.ao.nn.quantized", "torch.ao.nn.intrinsic.quantized"))):
            continue
        packed = packing_engine(m)
        if packed is not None and packed != engine:
            raise FrontendError(
                f"mixed engines: {type(m).__name__} {name!r} was packed (converted) under "
                f"{packed} but torch.backends.quantized.engine is {engine!r}; the model's convs "
                f"would run {packed} arithmetic and its other quantized ops {engine}'s. Select "
                "one engine for convert and import", node=name)


def _verify(imp: TorchImporter) -> dict[str, int]:
    """Run the IR on the example input and compare every recorded tensor with PyTorch."""
    g = imp.graph
    env = run_all(g, imp.inputs)
    compared = mismatched = 0
    for node in g.nodes:
        out = node.outputs[0]
        ref = imp.torch_ref.get(out)
        if ref is None:
            continue
        want = (ref.int_repr().numpy().astype(np.int64) if ref.is_quantized
                else ref.detach().numpy())
        bad, n = compare_codes(env[out], want)  # codes, or the dequantized float outputs
        compared += n
        if bad:
            mismatched += bad
            raise FrontendError(_mismatch_message(imp, node, bad, n, env), node=node.name)
    return {"compared": compared, "mismatched": mismatched}


def _mismatch_message(imp: TorchImporter, node: Node, bad: int, n: int, env) -> str:
    msg = (f"torch node {node.source or node.name!r} ({node.op}, {node.flavour}): {bad} of {n} "
           "values differ from PyTorch on the example input")
    if node.op in ("conv2d", "linear"):
        other = {"torch-fbgemm": "torch-qnnpack", "torch-qnnpack": "torch-fbgemm"}[node.flavour]
        g = imp.graph
        x, w = g.tensors[node.inputs[0]], g.tensors[node.inputs[1]]
        out = g.tensors[node.outputs[0]]
        bias = g.tensors[node.inputs[2]].data if len(node.inputs) > 2 else None
        try:
            rq = make_requant(other, x.scale, w.scale, out.scale, out.zero_point, bias,
                              out.qmin, out.qmax, relu=node.attrs.get("activation") == "relu")
            from ..numerics import ops

            if node.op == "conv2d":
                acc = ops.conv2d_acc(env[x.name], w.data, x.zero_point, w.zero_point,
                                     node.attrs["stride"], node.attrs["padding"],
                                     node.attrs["dilation"], node.attrs["groups"])
                y = rq.apply(acc, axis=1)
            else:
                y = rq.apply(ops.linear_acc(env[x.name], w.data, x.zero_point, w.zero_point),
                             axis=-1)
            ref = imp.torch_ref[out.name].int_repr().numpy()
            if np.array_equal(y, ref):
                return (msg + f"; they equal the {other} arithmetic: mixed engines (the weights "
                        f"were packed under {other.split('-')[1]} but the model runs under "
                        f"{imp.engine}); convert and run the model under one engine")
        except Exception:  # the diagnosis is best effort
            pass
    if imp.engine == "fbgemm" and node.op in ("conv2d", "linear"):
        xin = env[node.inputs[0]]
        if xin.size and int(xin.max()) > 127:
            return msg + (f"; its input codes reach {int(xin.max())} > 127: on CPUs without "
                          "AVX-512 VNNI fbgemm's non-depthwise kernels add products in "
                          "saturating int16 pairs (vpmaddubsw), which the golden model does not "
                          "reproduce (it models the depthwise kernels' pairs); keep activations "
                          "in reduce_range (0..127) by calibrating on representative data")
    return msg + ("; was the model converted under another quantized engine than the one "
                  f"selected now ({imp.engine})?")


def from_torch(model: Any, example_input: Any, *, engine: str | None = None,
               verify: bool = True, name: str | None = None) -> Graph:
    """Import a torch.ao quantized model (FX ``convert_fx`` output or converted eager model).

    ``example_input``: a float32 NCHW tensor (or a tuple, one per model input); it fixes the
    static shapes and is used to check the import. ``engine``: ``"fbgemm"`` or ``"qnnpack"``,
    default ``torch.backends.quantized.engine`` (which must be set to it). ``verify``: run the
    IR on ``example_input`` and require every tensor to equal PyTorch's. ``name``: the graph's
    name (default: the model's class name, ``GraphModule`` for convert_fx output). Nodes are named
    after their modules (``conv1``, ``layer1.0.conv1``) or FX nodes (``add_relu_1``).
    Returns a validated :class:`~zynqnn.ir.Graph`; ``graph.meta["verified"]`` holds the counts.
    """
    torch = _torch()
    inputs = check_example_input(example_input)
    if not isinstance(model, torch.nn.Module):
        raise FrontendError(f"from_torch needs a torch.nn.Module, got {type(model).__name__}")
    model.eval()
    gm = _trace(model)
    if not _is_quantized_model(gm):
        raise FrontendError(
            f"{type(model).__name__} is not quantized (no quantize_per_tensor, QuantStub or "
            "quantized module): quantize it with torch.ao (prepare_fx/convert_fx, or eager "
            "prepare/convert) or use zynqnn.quantize")
    for path, m in gm.named_modules():  # not `name`: the graph is named after the model
        mod = type(m).__module__
        if "observer" in mod or "fake_quantize" in mod:
            raise FrontendError(f"{type(model).__name__} is prepared but not converted "
                                f"({type(m).__name__} at {path!r}): call convert_fx / "
                                "torch.ao.quantization.convert first", node=path)
    current = torch.backends.quantized.engine
    eng = engine or current
    if eng not in ENGINE_FLAVOURS:
        raise FrontendError(
            f"quantized engine {eng!r} is not supported: use 'fbgemm' or 'qnnpack' "
            "(the default 'x86' engine may route convs to oneDNN, whose arithmetic differs; set "
            "torch.backends.quantized.engine = 'fbgemm' before converting)")
    if eng != current:
        raise FrontendError(
            f"mixed engines: engine={eng!r} was requested but torch.backends.quantized.engine is "
            f"{current!r}; convs run the engine they were packed under and the other quantized "
            "ops the engine selected at run time, so select one engine for convert and import")
    _check_packing(gm, eng)
    imp = TorchImporter(gm, inputs, eng, name or type(model).__name__)
    try:
        graph = imp.run()
    except FrontendError:
        raise
    except RuntimeError as exc:
        raise FrontendError(f"running {type(model).__name__} on example_input failed: "
                            f"{exc}") from None
    finish(graph, "torch")
    if verify:
        graph.meta["verified"] = _verify(imp)
    return graph

