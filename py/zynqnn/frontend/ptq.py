"""``zynqnn.quantize``: zynqnn's own post-training quantization of a float ``nn.Module``.

Pipeline: trace with ``torch.fx`` -> fold BatchNorm into the preceding conv -> calibrate the
activation ranges on the calibration data (min/max, percentile, entropy or MSE) -> choose
qparams per scheme -> an IR graph the golden model runs.

Schemes (``scheme=``):

``tflite``
    int8 activations (asymmetric, or symmetric with ``symmetric=True``), int8 symmetric weights
    (per channel or per tensor), int32 bias, gemmlowp requantization (``tflite``), TFLite's ADD,
    average pooling and concatenation. A 16-bit layer takes int16 symmetric activations and int8
    weights (TFLite's 16x8 mode).
``pow2``
    power-of-two scales everywhere (Vitis AI DPU style), symmetric int8, shift requantization
    with round-half-up (``pow2``); weights round half away from zero. A 16-bit layer uses int16
    weights and activations and the ``fixed16`` requantization.
``fixed16``
    16-bit fixed point (Qm.n, a power-of-two scale per tensor) everywhere, ``fixed16``
    requantization with ``rounding`` (default ``half_up``; ``floor`` keeps the middle bits of the
    product) and saturation; 8-bit layers fall back to ``pow2``.

``q_format`` (``pow2``/``fixed16``): one fixed-point format for every tensor of its width
instead of a calibrated one per tensor, e.g. ``"Q7.8"`` (16-bit: 7 integer bits, 8 fraction
bits, scale 2^-8), as hand-written HLS flows use; ``"Q3.4"`` for the 8-bit layers. Values
outside the format saturate. Layers of the other width keep calibrated formats.

``overrides`` sets options per layer: ``{"conv1": {"bits": 16}, "last": {"bits": 16}}``; keys
are module names of the model, or ``"first"``/``"last"`` (the first/last conv or linear);
values: ``bits`` (8 or 16: the layer's input activation and weights), ``per_channel``,
``calibrator`` (of the layer's output). A layer's output takes the width its consumers need.

Fused activations: ReLU, ReLU6/Hardtanh/clamp after a conv/linear/add become the node's
activation; LeakyReLU folds into the ``pow2``/``fixed16`` requantization (slope m/2^k, e.g.
0.1 -> 26/256, 0.125 -> 1/8), and is a separate integer node (same qparams) under ``tflite``.
"""

from __future__ import annotations

import copy
import math
import operator
from collections.abc import Iterable
from typing import Any

import numpy as np

from ..ir import Graph, Node, Tensor, infer_shape
from .calibrate import CALIBRATORS, RangeStats, threshold
from .common import FrontendError, check_example_input, finish

__all__ = ["SCHEMES", "capture", "fold_bn", "quantize"]

SCHEMES = ("tflite", "pow2", "fixed16")
_PASS = {"max_pool2d", "flatten", "reshape", "pad", "upsample_nearest", "identity"}


def _torch():
    import torch

    return torch


# ---------------------------------------------------------------------------------------------
# capture: trace and fold BatchNorm


def fold_bn(gm) -> Any:
    """Fold every ``BatchNorm2d`` that directly follows a ``Conv2d`` (whose only user it is)."""
    torch = _torch()
    mods = dict(gm.named_modules())
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or not isinstance(mods.get(node.target), torch.nn.BatchNorm2d):
            continue
        src = node.args[0]
        if not (isinstance(src, torch.fx.Node) and src.op == "call_module"
                and isinstance(mods.get(src.target), torch.nn.Conv2d) and len(src.users) == 1):
            continue
        conv, bn = mods[src.target], mods[node.target]
        w, b = torch.nn.utils.fusion.fuse_conv_bn_weights(
            conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias)
        fused = copy.deepcopy(conv)
        fused.weight, fused.bias = w, b
        parent, _, attr = src.target.rpartition(".")
        setattr(gm.get_submodule(parent) if parent else gm, attr, fused)
        node.replace_all_uses_with(src)
        gm.graph.erase_node(node)
    gm.graph.lint()
    gm.recompile()
    return gm


def capture(model) -> Any:
    """A BN-folded ``torch.fx`` GraphModule of a float model (eval mode, a copy)."""
    torch = _torch()
    if not isinstance(model, torch.nn.Module):
        raise FrontendError(f"zynqnn.quantize needs a torch.nn.Module, got {type(model).__name__}")
    for m in model.modules():
        mod = type(m).__module__
        if mod.startswith(("torch.ao.nn.quantized", "torch.ao.nn.intrinsic.quantized")) or \
                "observer" in mod or "fake_quantize" in mod:
            raise FrontendError(f"{type(model).__name__} is already quantized or prepared by "
                                "torch.ao; import it with zynqnn.from_torch instead")
    float_model = copy.deepcopy(model).eval()
    try:
        gm = torch.fx.symbolic_trace(float_model)
    except Exception as exc:
        raise FrontendError(f"cannot trace {type(model).__name__} with torch.fx "
                            f"({type(exc).__name__}: {exc})") from None
    return fold_bn(gm)


# ---------------------------------------------------------------------------------------------
# classification of float FX nodes


def _pair(v):
    return list(v) if isinstance(v, (tuple, list)) else [int(v), int(v)]


class _Op:
    """A float FX node seen as an IR-style op."""

    def __init__(self, node, kind: str, attrs: dict | None = None, inputs=None, module=None):
        self.node = node
        self.kind = kind
        self.attrs = attrs or {}
        self.inputs = inputs if inputs is not None else [a for a in node.args[:1]]
        self.module = module
        self.fused: _Op | None = None  # activation absorbed into this op
        self.absorbed = False

    @property
    def name(self) -> str:
        return self.node.target if self.node.op == "call_module" else self.node.name


def _classify(gm, node) -> _Op | None:
    torch = _torch()
    F = torch.nn.functional
    mods = dict(gm.named_modules())

    def fail(why):
        return FrontendError(f"float node {node.name!r} ({node.op} {node.target}): {why}",
                             node=node.name)

    if node.op == "call_module":
        m = mods[node.target]
        if isinstance(m, torch.nn.Conv2d):
            if m.padding_mode != "zeros" or isinstance(m.padding, str):
                raise fail("only zero padding given as numbers is supported")
            ph, pw = _pair(m.padding)
            return _Op(node, "conv2d", {"stride": list(m.stride), "padding": [ph, ph, pw, pw],
                                        "dilation": list(m.dilation), "groups": m.groups},
                       module=m)
        if isinstance(m, torch.nn.Linear):
            return _Op(node, "linear", {}, module=m)
        if isinstance(m, torch.nn.BatchNorm2d):
            raise fail("a BatchNorm that does not follow a conv cannot be folded")
        if isinstance(m, torch.nn.ReLU):
            return _Op(node, "relu")
        if isinstance(m, torch.nn.ReLU6):
            return _Op(node, "clamp", {"min": 0.0, "max": 6.0})
        if isinstance(m, torch.nn.Hardtanh):
            return _Op(node, "clamp", {"min": float(m.min_val), "max": float(m.max_val)})
        if isinstance(m, torch.nn.LeakyReLU):
            return _Op(node, "leaky_relu", {"negative_slope": float(m.negative_slope)})
        if isinstance(m, torch.nn.MaxPool2d):
            ph, pw = _pair(m.padding)
            return _Op(node, "max_pool2d", {"kernel": _pair(m.kernel_size),
                                            "stride": _pair(m.stride or m.kernel_size),
                                            "padding": [ph, ph, pw, pw],
                                            "dilation": _pair(m.dilation),
                                            "ceil_mode": bool(m.ceil_mode), "pad_value": None})
        if isinstance(m, torch.nn.AvgPool2d):
            ph, pw = _pair(m.padding)
            if m.divisor_override or (m.count_include_pad and (ph or pw)) or m.ceil_mode:
                raise fail("average pooling with count_include_pad over padding, ceil_mode or "
                           "divisor_override is not supported")
            return _Op(node, "avg_pool2d", {"kernel": _pair(m.kernel_size),
                                            "stride": _pair(m.stride or m.kernel_size),
                                            "padding": [ph, ph, pw, pw], "ceil_mode": False})
        if isinstance(m, torch.nn.AdaptiveAvgPool2d):
            return _Op(node, "adaptive", {"output_size": m.output_size})
        if isinstance(m, torch.nn.Flatten):
            return _Op(node, "flatten", {"start_dim": m.start_dim})
        if isinstance(m, (torch.nn.Identity, torch.nn.Dropout, torch.nn.Dropout2d)) or \
                type(m).__name__ in ("QuantStub", "DeQuantStub"):
            return _Op(node, "identity")
        if isinstance(m, (torch.nn.ZeroPad2d, torch.nn.ConstantPad2d)):
            if float(getattr(m, "value", 0.0)) != 0.0:
                raise fail("only zero padding is supported")
            left, right, top, bottom = m.padding
            return _Op(node, "pad", {"pads": [top, bottom, left, right]})
        if isinstance(m, torch.nn.Upsample):
            if m.mode != "nearest":
                raise fail(f"upsample mode {m.mode!r} is not supported")
            return _Op(node, "upsample_nearest")
        raise fail(f"module {type(m).__name__} is not supported")
    if node.op == "call_function":
        f = node.target
        if f in (operator.add, torch.add):
            if not all(isinstance(a, torch.fx.Node) for a in node.args[:2]):
                raise fail("only the sum of two tensors is supported")
            return _Op(node, "add", inputs=list(node.args[:2]))
        if f in (torch.cat, torch.concat):
            dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
            return _Op(node, "concat", {"axis": int(dim)}, inputs=list(node.args[0]))
        if f is torch.flatten:
            start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
            return _Op(node, "flatten", {"start_dim": int(start)})
        if f in (F.relu, torch.relu):
            return _Op(node, "relu")
        if f is F.relu6:
            return _Op(node, "clamp", {"min": 0.0, "max": 6.0})
        if f in (F.hardtanh, torch.clamp, torch.clip):
            lo = node.args[1] if len(node.args) > 1 else node.kwargs.get(
                "min_val" if f is F.hardtanh else "min", -1.0 if f is F.hardtanh else None)
            hi = node.args[2] if len(node.args) > 2 else node.kwargs.get(
                "max_val" if f is F.hardtanh else "max", 1.0 if f is F.hardtanh else None)
            return _Op(node, "clamp", {"min": lo, "max": hi})
        if f is F.leaky_relu:
            slope = node.args[1] if len(node.args) > 1 else node.kwargs.get("negative_slope",
                                                                            0.01)
            return _Op(node, "leaky_relu", {"negative_slope": float(slope)})
        if f is F.interpolate:
            mode = node.kwargs.get("mode", "nearest")
            if mode != "nearest":
                raise fail(f"interpolate mode {mode!r} is not supported")
            return _Op(node, "upsample_nearest")
        if f is F.adaptive_avg_pool2d:
            return _Op(node, "adaptive", {"output_size": node.args[1]})
        if f is F.max_pool2d:
            k = _pair(node.args[1])
            s = _pair(node.args[2] if len(node.args) > 2 and node.args[2] else k)
            p = _pair(node.args[3] if len(node.args) > 3 else 0)
            return _Op(node, "max_pool2d", {"kernel": k, "stride": s,
                                            "padding": [p[0], p[0], p[1], p[1]],
                                            "dilation": [1, 1], "ceil_mode": False,
                                            "pad_value": None})
        if f is F.pad:
            pads = list(node.args[1])
            if len(pads) != 4 or (len(node.args) > 3 and node.args[3]):
                raise fail("only 2-D zero padding is supported")
            left, right, top, bottom = pads
            return _Op(node, "pad", {"pads": [top, bottom, left, right]})
        if f in (F.dropout, F.dropout2d):
            return _Op(node, "identity")
        if f is torch.reshape:
            return _Op(node, "reshape")
        raise fail("function is not supported")
    if node.op == "call_method":
        if node.target in ("view", "reshape"):
            return _Op(node, "reshape")
        if node.target == "flatten":
            start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
            return _Op(node, "flatten", {"start_dim": int(start)})
        if node.target in ("relu", "relu_"):
            return _Op(node, "relu")
        if node.target in ("contiguous", "detach", "clone"):
            return _Op(node, "identity")
        if node.target == "size":
            return None
        raise fail("method is not supported")
    return None


# ---------------------------------------------------------------------------------------------
# qparams


def _f32(v: float) -> float:
    return float(np.float32(v))


def _fix_pos(maxabs: float, bits: int) -> int:
    qmax = 2 ** (bits - 1) - 1
    maxabs = max(maxabs, 1e-12)
    return int(math.floor(math.log2(qmax / maxabs)))


class _Plan:
    """Options after defaults and per-layer overrides."""

    def __init__(self, scheme: str, per_channel: bool, symmetric: bool, calibrator: str,
                 rounding: str, percentile: float, q_format: str | None = None):
        self.scheme = scheme
        self.q_format = _parse_q_format(q_format, scheme)   # None or (bits, fraction bits)
        self.per_channel = per_channel
        self.symmetric = symmetric or scheme != "tflite"
        self.calibrator = calibrator
        self.rounding = rounding
        self.percentile = percentile
        self.bits = 16 if scheme == "fixed16" else 8
        self.bias_correction = False

    def fraction_bits(self, maxabs: float, bits: int) -> int:
        """A power-of-two tensor's fraction bits: the global ``q_format``'s for its width,
        else the calibrated position of ``maxabs``."""
        if self.q_format is not None and self.q_format[0] == bits:
            return self.q_format[1]
        return _fix_pos(maxabs, bits)

    def flavour(self, bits: int) -> str:
        if self.scheme == "tflite":
            return "tflite"
        return "fixed16" if bits == 16 else "pow2"

    def activation(self, lo: float, hi: float, bits: int) -> tuple[str, float, int]:
        """(dtype, scale, zero point) of an activation with range lo..hi."""
        dtype = "int16" if bits == 16 else "int8"
        qmin, qmax = (-32768, 32767) if bits == 16 else (-128, 127)
        if self.scheme != "tflite":
            return dtype, 2.0 ** -self.fraction_bits(max(abs(lo), abs(hi)), bits), 0
        if self.symmetric or bits == 16:
            return dtype, _f32(max(abs(lo), abs(hi), 1e-8) / qmax), 0
        scale = _f32(max(hi - lo, 1e-8) / (qmax - qmin))
        zp = int(np.clip(round(qmin - lo / scale), qmin, qmax))
        return dtype, scale, zp


def _parse_q_format(q_format: str | None, scheme: str) -> tuple[int, int] | None:
    """``"Q7.8"`` -> ``(16, 8)``: the width (sign + integer + fraction bits) and fraction bits."""
    if q_format is None:
        return None
    if scheme == "tflite":
        raise FrontendError("q_format applies to the power-of-two schemes (pow2, fixed16), "
                            "not tflite")
    import re

    m = re.fullmatch(r"Q(\d+)\.(\d+)", str(q_format).strip())
    width = None if m is None else 1 + int(m.group(1)) + int(m.group(2))
    if width not in (8, 16):
        raise FrontendError(f"q_format {q_format!r}: 'Qm.n' with 1 + m + n = 8 or 16 bits "
                            "(e.g. 'Q7.8' for 16-bit, 'Q3.4' for 8-bit tensors)")
    return width, int(m.group(2))


def _weights(plan: _Plan, w: np.ndarray, per_channel: bool, bits: int):
    """(codes, scale, dtype) of a weight tensor (symmetric, channel axis 0)."""
    wb = 16 if (bits == 16 and plan.scheme != "tflite") else 8
    qmax = 2 ** (wb - 1) - 1
    axes = tuple(range(1, w.ndim))
    maxabs = np.abs(w).max(axis=axes) if per_channel else np.array([np.abs(w).max()])
    maxabs = np.maximum(maxabs, 1e-12)
    shape = (-1,) + (1,) * (w.ndim - 1)
    if plan.scheme == "tflite":
        scale = (maxabs / qmax).astype(np.float32).astype(np.float64)
        s = scale.reshape(shape) if per_channel else scale[0]
        codes = np.clip(_round_away(w / s), -qmax, qmax)  # narrow range, TFLite's weights
    else:
        fp = np.array([plan.fraction_bits(m, wb) for m in maxabs])
        scale = 2.0 ** -fp.astype(np.float64)
        s = scale.reshape(shape) if per_channel else scale[0]
        codes = np.clip(_round_away(w / s), -qmax - 1, qmax)
    dtype = "int16" if wb == 16 else "int8"
    return codes.astype(np.int64), (scale if per_channel else float(scale[0])), dtype


def _round_away(x):
    x = np.asarray(x, dtype=np.float64)
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


# ---------------------------------------------------------------------------------------------
# the builder


class _Builder:
    def __init__(self, gm, plan: _Plan, overrides: dict, example, name: str):
        self.gm = gm
        self.plan = plan
        self.overrides = overrides
        self.example = example
        self.graph = Graph(name)
        self.ops: dict[str, _Op] = {}
        self.order: list[_Op] = []
        self.stats: dict[str, RangeStats] = {}
        #: fx name -> (per-channel sums, count) of the float values (bias correction)
        self.sums: dict[str, tuple] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.vals: dict[str, str] = {}  # fx node -> IR tensor
        self.bits: dict[str, int] = {}  # fx node -> activation bits

    # -- analysis --------------------------------------------------------------------------------
    def analyse(self) -> None:
        for node in self.gm.graph.nodes:
            op = _classify(self.gm, node)
            if op is not None:
                self.ops[node.name] = op
                self.order.append(op)
        # fuse activations into the conv/linear/add they follow
        for op in self.order:
            if op.kind not in ("conv2d", "linear", "add") or len(op.node.users) != 1:
                continue
            (user,) = op.node.users
            act = self.ops.get(user.name)
            if act is None or act.kind not in ("relu", "clamp", "leaky_relu"):
                continue
            if act.kind == "leaky_relu" and (self.plan.scheme == "tflite" or op.kind == "add"):
                continue
            op.fused, act.absorbed = act, True
        layers = [op for op in self.order if op.kind in ("conv2d", "linear")]
        if not layers:
            raise FrontendError("the model has no conv or linear layer to quantize")
        names = {op.name for op in layers}
        opts: dict[str, dict] = {}
        for key, val in self.overrides.items():
            target = {"first": layers[0].name, "last": layers[-1].name}.get(key, key)
            if target not in names:
                raise FrontendError(f"override {key!r}: no conv or linear layer of that name "
                                    f"(layers: {', '.join(sorted(names))})")
            bad = set(val) - {"bits", "per_channel", "calibrator"}
            if bad:
                raise FrontendError(f"override {key!r}: unknown option(s) {sorted(bad)}")
            if val.get("bits", 8) not in (8, 16):
                raise FrontendError(f"override {key!r}: bits must be 8 or 16")
            opts.setdefault(target, {}).update(val)
        for op in layers:
            op.attrs["_opts"] = opts.get(op.name, {})
        self._assign_bits()

    def _assign_bits(self) -> None:
        torch = _torch()
        default = self.plan.bits
        for op in self.order:
            self.bits[op.node.name] = default
        for n in self.gm.graph.nodes:
            if n.op == "placeholder":
                self.bits[n.name] = default

        same_qparams = _PASS | {"relu", "clamp", "avg_pool2d", "adaptive", "leaky_relu"}

        def mark(value, bits):
            if not isinstance(value, torch.fx.Node) or self.bits.get(value.name) == bits:
                return
            self.bits[value.name] = bits
            op = self.ops.get(value.name)
            if op is not None and not op.absorbed and op.kind in same_qparams:
                mark(op.inputs[0], bits)

        for op in self.order:
            if op.kind in ("conv2d", "linear"):
                b = op.attrs["_opts"].get("bits", default)
                op.attrs["_bits"] = b
                if b != default:
                    mark(op.inputs[0], b)
        # a 16-bit layer whose output is a graph output keeps 16 bits there
        out_node = next(n for n in self.gm.graph.nodes if n.op == "output")
        for a in _flat(out_node.args[0]):
            src = self._compute_source(a)
            if src is not None and src.attrs.get("_bits", default) != default:
                mark(a, src.attrs["_bits"])

    def _compute_source(self, value):
        torch = _torch()
        while isinstance(value, torch.fx.Node):
            op = self.ops.get(value.name)
            if op is None:
                return None
            if op.kind in ("conv2d", "linear"):
                return op
            if op.absorbed:
                value = op.node.args[0]
                continue
            if op.kind in _PASS or op.kind in ("relu", "clamp", "avg_pool2d", "adaptive"):
                value = op.inputs[0]
                continue
            return None
        return None

    # -- calibration -----------------------------------------------------------------------------
    def calibrate(self, batches: list[tuple]) -> None:
        torch = _torch()
        stats = self.stats
        shapes = self.shapes
        sums, plan = self.sums, self.plan
        methods = {self.plan.calibrator} | {op.attrs["_opts"].get("calibrator")
                                            for op in self.order
                                            if "_opts" in op.attrs} - {None}
        for m in methods:
            if m not in CALIBRATORS:
                raise FrontendError(f"unknown calibrator {m!r}; use one of "
                                    f"{', '.join(CALIBRATORS)}")

        class Rec(torch.fx.Interpreter):
            hist = False

            def run_node(self, n):
                out = super().run_node(n)
                if isinstance(out, torch.Tensor) and out.is_floating_point():
                    a = out.detach().numpy()
                    st = stats.setdefault(n.name, RangeStats())
                    if self.hist:
                        st.observe_hist(a)
                    else:
                        st.observe(a)
                        if plan.bias_correction and a.ndim in (2, 4):
                            per = a.astype(np.float64).sum(axis=(0, 2, 3) if a.ndim == 4
                                                           else (0,))
                            count = a.size // a.shape[1]
                            prev = sums.get(n.name)
                            sums[n.name] = (per, count) if prev is None else (
                                prev[0] + per, prev[1] + count)
                return out

        from ..progress import Bar

        rec = Rec(self.gm)
        passes = 2 if methods - {"minmax"} else 1
        images = sum(len(b[0]) for b in batches)
        with torch.no_grad(), Bar(passes * images, f"calibrating {self.graph.name} ("
                                  f"{', '.join(sorted(methods))}, {passes} pass(es) over "
                                  f"{images} images)", "images") as bar:
            for b in batches:
                rec.run(*b)
                bar.update(len(b[0]))
            if methods - {"minmax"}:
                for st in stats.values():
                    st.start_histogram()
                rec.hist = True
                for b in batches:
                    rec.run(*b)
                    bar.update(len(b[0]))

            class Shapes(torch.fx.Interpreter):
                def run_node(self, n):
                    out = super().run_node(n)
                    if isinstance(out, torch.Tensor):
                        shapes[n.name] = tuple(out.shape)
                    return out

            Shapes(self.gm).run(*self.example)

    def range_of(self, fx_name: str, calibrator: str | None = None) -> tuple[float, float]:
        st = self.stats.get(fx_name)
        if st is not None and st.nonfinite and not (np.isfinite(st.lo) and np.isfinite(st.hi)):
            inputs = {n.name for n in self.gm.graph.nodes if n.op == "placeholder"}
            whose = ("the calibration data" if fx_name in inputs else
                     "its calibration values (NaN or infinite weights or calibration data "
                     "upstream?)")
            raise FrontendError(f"float node {fx_name!r}: no finite range to calibrate: "
                                f"{st.nonfinite} of the {st.count} values of {whose} are NaN "
                                "or infinite", node=fx_name)
        if st is None or not st.seen:
            raise FrontendError(f"float node {fx_name!r}: no calibration statistics")
        levels = 2 ** (self.bits.get(fx_name, 8) - 1) - 1
        return threshold(st, calibrator or self.plan.calibrator, levels, self.plan.percentile)

    # -- emission --------------------------------------------------------------------------------
    def qtensor(self, fx_name: str, shape, calibrator=None, like: str | None = None,
                base: str | None = None) -> str:
        name = self.graph.unique_name(base or fx_name)
        if like is not None:
            t = self.graph.tensors[like]
            self.graph.add_tensor(Tensor(name, tuple(shape), t.dtype, t.scale, t.zero_point,
                                         layout="nchw" if len(shape) == 4 else "nc"))
            return name
        bits = self.bits.get(fx_name, self.plan.bits)
        lo, hi = self.range_of(fx_name, calibrator)
        dtype, scale, zp = self.plan.activation(lo, hi, bits)
        self.graph.add_tensor(Tensor(name, tuple(shape), dtype, scale, zp,
                                     layout="nchw" if len(shape) == 4 else "nc"))
        return name

    def emit(self, op: _Op, ir_op: str, inputs: list[str], out: str, attrs: dict,
             flavour: str | None) -> None:
        self.graph.add_node(Node(self.graph.unique_name(op.node.name), ir_op, inputs, [out],
                                 flavour, attrs, op.name))

    def inp(self, op: _Op, i: int = 0) -> str:
        torch = _torch()
        a = op.inputs[i]
        if not isinstance(a, torch.fx.Node) or a.name not in self.vals:
            raise FrontendError(f"float node {op.node.name!r}: input {i} is not a tensor the "
                                "quantized graph computes")
        return self.vals[a.name]

    def build(self) -> Graph:
        torch = _torch()
        g = self.graph
        for n in self.gm.graph.nodes:
            if n.op == "placeholder":
                shape = self.shapes[n.name]
                fin = g.unique_name(n.name)
                g.add_tensor(Tensor(fin, shape, "float32"))
                g.inputs.append(fin)
                q = self.qtensor(n.name, shape, base=n.name + "_q")
                fl = self.plan.flavour(self.bits[n.name])
                g.add_node(Node(g.unique_name(n.name + "_quantize"), "quantize", [fin], [q], fl,
                                {"rounding": "half_up"} if fl != "tflite" else {}, n.name))
                self.vals[n.name] = q
            elif n.op == "output":
                for a in _flat(n.args[0]):
                    if not isinstance(a, torch.fx.Node) or a.name not in self.vals:
                        raise FrontendError(f"output {a!r} is not a computed tensor")
                    q = self.vals[a.name]
                    t = g.tensors[q]
                    out = g.unique_name(a.name + "_out")
                    g.add_tensor(Tensor(out, t.shape, "float32", layout=t.layout))
                    g.add_node(Node(g.unique_name(a.name + "_dequantize"), "dequantize", [q],
                                    [out], self.plan.flavour(16 if t.dtype == "int16" else 8)))
                    g.outputs.append(out)
            elif n.name in self.ops:
                op = self.ops[n.name]
                if op.absorbed:
                    self.vals[n.name] = self.vals[op.node.args[0].name]
                    continue
                self.vals[n.name] = self.lower(op)
        return g

    def _flavour_of(self, tensor: str) -> str:
        return self.plan.flavour(16 if self.graph.tensors[tensor].dtype == "int16" else 8)

    def lower(self, op: _Op) -> str:
        k = op.kind
        shape = self.shapes[op.node.name]
        if k in ("conv2d", "linear"):
            return self.lower_layer(op)
        x = self.inp(op)
        fl = self._flavour_of(x)
        if k == "identity":
            return x
        if k == "add":
            out_fx = op.fused.node.name if op.fused else op.node.name
            y = self.qtensor(out_fx, shape)
            relu = op.fused is not None and op.fused.kind == "relu"
            self.emit(op, "add", [x, self.inp(op, 1)], y, {"relu": relu}, self._flavour_of(y))
            if op.fused is not None and not relu:
                return self.activation(op, op.fused, y)
            return y
        if k == "concat":
            ins = [self.inp(op, i) for i in range(len(op.inputs))]
            y = self.qtensor(op.node.name, shape)
            axis = op.attrs["axis"] % len(shape)
            self.emit(op, "concat", ins, y, {"axis": axis}, self._flavour_of(y))
            return y
        if k == "relu" or k == "clamp" or k == "leaky_relu":
            return self.activation(None, op, x)
        if k == "adaptive":
            t = self.graph.tensors[x]
            oh, ow = shape[2], shape[3]
            if (oh, ow) == (1, 1):
                y = self.qtensor(op.node.name, shape, like=x)
                self.emit(op, "global_avg_pool", [x], y, {}, fl)
                return y
            h, w = t.shape[2], t.shape[3]
            if h % oh or w % ow:
                raise FrontendError(f"float node {op.node.name!r}: adaptive pooling "
                                    f"{h}x{w} -> {oh}x{ow} is not a plain average pooling")
            attrs = {"kernel": [h // oh, w // ow], "stride": [h // oh, w // ow],
                     "padding": [0, 0, 0, 0], "ceil_mode": False}
            y = self.qtensor(op.node.name, shape, like=x)
            self.emit(op, "avg_pool2d", [x], y, attrs, fl)
            return y
        if k == "avg_pool2d":
            y = self.qtensor(op.node.name, shape, like=x)
            self.emit(op, "avg_pool2d", [x], y, dict(op.attrs), fl)
            return y
        if k == "upsample_nearest":
            t = self.graph.tensors[x]
            if shape[2] % t.shape[2] or shape[3] % t.shape[3]:
                raise FrontendError(f"float node {op.node.name!r}: not an integer upsampling")
            attrs = {"scale": [shape[2] // t.shape[2], shape[3] // t.shape[3]]}
        elif k == "pad":
            attrs = {"pads": op.attrs["pads"], "value": self.graph.tensors[x].zero_point}
        elif k == "reshape":
            attrs = {"shape": list(shape)}
        else:
            attrs = {key: v for key, v in op.attrs.items() if not key.startswith("_")}
        y = self.qtensor(op.node.name, shape, like=x)
        try:
            infer_shape(k, attrs, [self.graph.tensors[x]], op.node.name)
        except ValueError as exc:
            raise FrontendError(f"float node {op.node.name!r}: {exc}") from None
        self.emit(op, k, [x], y, attrs, fl)
        return y

    def activation(self, owner: _Op | None, act: _Op, x: str) -> str:
        """A standalone activation on codes (ReLU, clamp, tflite LeakyReLU): same qparams."""
        t = self.graph.tensors[x]
        fl = self._flavour_of(x)
        y = self.qtensor(act.node.name, t.shape, like=x)
        if act.kind == "relu":
            self.emit(act, "relu", [x], y, {}, fl)
        elif act.kind == "clamp":
            lo = act.attrs.get("min")
            hi = act.attrs.get("max")
            self.emit(act, "clamp", [x], y, {"lo": self._code(t, lo), "hi": self._code(t, hi)},
                      fl)
        else:
            m, k = _slope(act.attrs["negative_slope"])
            self.emit(act, "leaky_relu", [x], y, {"negative_slope": act.attrs["negative_slope"],
                                                  "mult": m, "shift": k,
                                                  "rounding": "half_up"}, fl)
        return y

    def _code(self, t: Tensor, v) -> int | None:
        if v is None:
            return None
        from ..ir.kernels import quantize

        fl = self.plan.flavour(16 if t.dtype == "int16" else 8)
        return int(quantize(fl, np.array([v], dtype=np.float32), t.scale, t.zero_point, t.dtype,
                            t.qmin, t.qmax)[0])

    def lower_layer(self, op: _Op) -> str:
        g = self.graph
        m = op.module
        x = self.inp(op)
        xt = g.tensors[x]
        opts = op.attrs["_opts"]
        bits = op.attrs["_bits"]
        per_channel = opts.get("per_channel", self.plan.per_channel)
        w = m.weight.detach().double().numpy()
        if not np.all(np.isfinite(w)):
            raise FrontendError(f"float node {op.node.name!r}: the weight holds "
                                f"{int(np.count_nonzero(~np.isfinite(w)))} NaN or infinite "
                                f"values (of {w.size})", node=op.node.name)
        codes, s_w, wdtype = _weights(self.plan, w, per_channel, bits)
        wname = g.unique_name(f"{op.name}.weight")
        g.add_tensor(Tensor(wname, codes.shape, wdtype, s_w, np.zeros(len(s_w), np.int64)
                            if per_channel else 0, axis=0 if per_channel else None,
                            layout="any", data=codes))
        wf = g.unique_name(f"{op.name}.weight_float")
        g.add_tensor(Tensor(wf, w.shape, "float32", layout="any", data=w.astype(np.float32)))
        act = op.fused
        out_fx = act.node.name if act is not None else op.node.name
        shape = self.shapes[op.node.name]
        y = self.qtensor(out_fx, shape, opts.get("calibrator"))
        yt = g.tensors[y]
        scheme = ("tflite" if self.plan.scheme == "tflite" else
                  ("fixed16" if bits == 16 else "pow2"))
        requant: dict[str, Any] = {"scheme": scheme}
        s_in = xt.scale
        sw = np.atleast_1d(np.asarray(s_w, dtype=np.float64))
        ins = [x, wname]
        attrs: dict[str, Any] = {}
        if m.bias is not None:
            b = m.bias.detach().double().numpy()
            bname = g.unique_name(f"{op.name}.bias")
            bf = g.unique_name(f"{op.name}.bias_float")
            g.add_tensor(Tensor(bf, b.shape, "float32", layout="any", data=b.astype(np.float32)))
            attrs["float_bias"] = bf
            if self.plan.bias_correction:
                b = b + self._bias_correction(op, w, codes, s_w)
            s_acc = np.broadcast_to(np.float64(s_in) * sw, b.shape)
            if scheme == "tflite":
                bq = np.clip(_round_away(b / s_acc), -(2**31), 2**31 - 1).astype(np.int64)
            else:
                bq = _round_away(b / s_acc)
                extra = 0
                while np.abs(bq).max() > 2**31 - 1:  # lower the bias precision until it fits
                    extra += 1
                    bq = _round_away(b / (s_acc * 2.0**extra))
                if extra:
                    requant["s_bias"] = list((s_acc * 2.0**extra).tolist())
                bq = bq.astype(np.int64)
            g.add_tensor(Tensor(bname, bq.shape, "int32", np.asarray(s_acc, dtype=np.float64)
                                if np.size(s_acc) > 1 else float(np.asarray(s_acc).reshape(-1)[0]),
                                np.zeros(bq.shape, np.int64) if np.size(s_acc) > 1 else 0,
                                axis=0 if np.size(s_acc) > 1 else None, layout="any", data=bq))
            ins.append(bname)
        if scheme != "tflite":
            requant["rounding"] = self.plan.rounding
        activation, clamp = "none", None
        if act is not None:
            if act.kind == "relu":
                activation = "relu"
            elif act.kind == "clamp":
                activation = "clamp"
                lo, hi = act.attrs.get("min"), act.attrs.get("max")
                clamp = [self._code(yt, lo) if lo is not None else yt.qmin,
                         self._code(yt, hi) if hi is not None else yt.qmax]
                if act.attrs.get("min") == 0.0 and act.attrs.get("max") == 6.0:
                    activation = "relu6"
            else:
                activation = "leaky"
                requant["leaky"] = list(_slope(act.attrs["negative_slope"]))
                attrs["negative_slope"] = act.attrs["negative_slope"]
        attrs.update({"requant": requant, "activation": activation, "clamp": clamp,
                      "float_weight": wf})
        if op.kind == "conv2d":
            attrs.update({k: v for k, v in op.attrs.items() if not k.startswith("_")})
        self.emit(op, op.kind, ins, y, attrs, scheme)
        return y


    def _bias_correction(self, op: _Op, w: np.ndarray, codes: np.ndarray, s_w) -> np.ndarray:
        """The expected output error of the quantized weights, ``(W - Wq) . E[x]`` per output
        channel, over the calibration data's per-channel input means (padding, where the input
        is zero, ignored): added to the bias, it cancels the mean shift weight rounding gives."""
        src = op.inputs[0]
        got = self.sums.get(getattr(src, "name", None))
        if got is None:
            return np.zeros(w.shape[0])
        mean = got[0] / max(got[1], 1)
        shape = (-1,) + (1,) * (w.ndim - 1)
        wq = codes * (np.asarray(s_w, dtype=np.float64).reshape(shape) if np.ndim(s_w) and
                      np.size(s_w) > 1 else float(np.asarray(s_w).reshape(-1)[0]))
        err = (w - wq).reshape(w.shape[0], w.shape[1], -1).sum(axis=2)   # (K, C or 1)
        if err.shape[1] == 1 and mean.size == w.shape[0] and w.shape[0] > 1:   # depthwise
            return err[:, 0] * mean
        if err.shape[1] != mean.size:
            return np.zeros(w.shape[0])   # e.g. a linear layer after a flatten
        return err @ mean


def _slope(slope: float) -> tuple[int, int]:
    """``(m, k)`` with ``m / 2**k`` closest to ``slope`` (k <= 8, reduced)."""
    m = int(round(slope * 256))
    k = 8
    while k > 0 and m % 2 == 0 and m:
        m //= 2
        k -= 1
    return m, k


def _flat(a) -> list:
    if isinstance(a, (tuple, list)):
        return [y for x in a for y in _flat(x)]
    if isinstance(a, dict):
        return [y for x in a.values() for y in _flat(x)]
    return [a]


def _batches(data: Any, batch_size: int) -> list[tuple]:
    torch = _torch()
    if data is None:
        raise FrontendError("zynqnn.quantize needs calibration data (a tensor of samples or an "
                            "iterable of batches)")
    if isinstance(data, np.ndarray):
        data = torch.from_numpy(data)
    if isinstance(data, torch.Tensor):
        if data.numel() == 0 or data.dim() == 0 or len(data) == 0:
            raise FrontendError("calibration data is empty")
        return [(c.float(),) for c in torch.split(data, batch_size)]
    out = []
    for b in data if isinstance(data, Iterable) else []:
        if isinstance(b, (tuple, list)):
            b = b[0]  # (x, y) pairs: the inputs
        if isinstance(b, np.ndarray):
            b = torch.from_numpy(b)
        if not isinstance(b, torch.Tensor):
            raise FrontendError(f"calibration batch of type {type(b).__name__} is not a tensor")
        out.append((b.float(),))
    if not out:
        raise FrontendError("calibration data is empty (no batches)")
    return out


def quantize(model: Any, calibration_data: Any, *, example_input: Any = None,
             scheme: str = "tflite", per_channel: bool = True, symmetric: bool = False,
             calibrator: str = "minmax", percentile: float = 99.99,
             overrides: dict | None = None, rounding: str = "half_up", batch_size: int = 64,
             name: str | None = None, q_format: str | None = None,
             equalize: bool = False, bias_correction: bool = False) -> Graph:
    """Post-training quantization of a float model by zynqnn (see the module docstring).

    ``calibration_data``: a float tensor of samples (N, C, H, W), split into ``batch_size``
    batches, or an iterable of batches (tensors or ``(x, y)`` pairs). ``example_input`` fixes
    the graph's static shapes (default: the first calibration sample). ``scheme``: ``tflite``,
    ``pow2`` or ``fixed16``; ``calibrator``: ``minmax``, ``percentile``, ``entropy``, ``mse``;
    ``q_format``: one fixed-point format such as ``"Q7.8"`` for every tensor of its width
    (power-of-two schemes; see the module docstring); ``equalize``: cross-layer equalization
    of the folded float weights first (:mod:`zynqnn.frontend.equalize`; helps per-tensor
    weights most); ``bias_correction``: each conv/linear bias absorbs its quantized weights'
    expected error over the calibration data's input means. Returns a validated IR graph
    (conv/linear nodes keep their float weights, equalized if asked, for error reports).
    """
    if scheme not in SCHEMES:
        raise FrontendError(f"unknown scheme {scheme!r}; use one of {', '.join(SCHEMES)}")
    if calibrator not in CALIBRATORS:
        raise FrontendError(f"unknown calibrator {calibrator!r}; use one of "
                            f"{', '.join(CALIBRATORS)}")
    if symmetric is False and scheme != "tflite":
        symmetric = True  # power-of-two schemes are symmetric
    batches = _batches(calibration_data, batch_size)
    example = check_example_input(example_input if example_input is not None
                                  else batches[0][0][:1])
    gm = capture(model)
    pairs = 0
    if equalize:
        from .equalize import equalize as cross_layer_equalize

        pairs = cross_layer_equalize(gm)
    plan = _Plan(scheme, per_channel, symmetric, calibrator, rounding, percentile, q_format)
    plan.bias_correction = bool(bias_correction)
    b = _Builder(gm, plan, dict(overrides or {}), example, name or type(model).__name__)
    b.analyse()
    try:
        b.calibrate(batches)
    except RuntimeError as exc:
        raise FrontendError(f"running {type(model).__name__} on the calibration data failed: "
                            f"{exc}") from None
    graph = b.build()
    graph.meta.update({"framework": "zynqnn", "importer": "zynqnn.quantize", "scheme": scheme,
                       "calibrator": calibrator, "per_channel": per_channel,
                       "q_format": q_format, "equalized_pairs": pairs,
                       "bias_correction": bool(bias_correction),
                       "symmetric": plan.symmetric, "overrides": {k: dict(v) for k, v in
                                                                  (overrides or {}).items()}})
    return finish(graph, "zynqnn.quantize")
