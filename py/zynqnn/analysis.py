"""Per-layer quantization error: float vs quantized, tensor by tensor.

:func:`layer_errors` runs a graph on an input twice: with the golden model (the codes the
framework / hardware compute) and as its *float shadow*, the same graph evaluated in float32
with PyTorch ops (conv with the float weights when the graph keeps them, otherwise the
dequantized weights; float ReLU, pooling, add ...). For every quantized tensor it reports

* SQNR (dB): ``10 log10(sum(ref^2) / sum((ref - deq)^2))`` of the dequantized codes ``deq``
  against the float reference ``ref`` (errors accumulate from the input on);
* max abs error: ``max |ref - deq|``;
* identical: the share of codes equal to the float reference quantized with the tensor's own
  qparams (100 % = no error beyond the grid).

A conv/linear/add whose output grid starts at its zero point (no negative codes) is taken to
end in a ReLU in the float reference: ONNX Runtime's quantizer removes such ReLUs because the
clamp at the zero point is the ReLU.

:func:`attach_float_weights` gives an imported graph the float weights of the model it came
from (BN folded), so that weight quantization counts too. ``LayerErrors.table()`` prints a
table, ``LayerErrors.plot(path)`` draws a PNG (matplotlib, Agg backend).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .ir import Graph, Node, Tensor
from .ir import kernels as K

__all__ = ["LayerError", "LayerErrors", "Sensitivities", "Sensitivity", "attach_float_weights",
           "ellipsize", "float_shadow", "layer_errors", "sensitivity"]


@dataclass
class LayerError:
    name: str
    op: str
    tensor: str
    dtype: str
    scale: float
    sqnr_db: float
    max_abs: float
    identical: float  # share, 0..1
    values: int


def ellipsize(name: str, width: int) -> str:
    """``name`` in at most ``width`` characters: a longer one keeps its start and its end (the
    layer's own part) around an ellipsis, ``features.1…conv.0.0``."""
    if len(name) <= width:
        return name
    tail = (width - 1) // 2
    return name[:width - 1 - tail] + "\u2026" + name[len(name) - tail:]


class LayerErrors(list):
    """A list of :class:`LayerError` rows with a table and a plot."""

    title = "per-layer quantization error"
    #: Characters of a layer name on the plot's axis (a longer one is ellipsized).
    label_chars = 28

    def table(self) -> str:
        head = f"{'layer':<32} {'op':<18} {'dtype':<6} {'SQNR dB':>8} {'max |err|':>10} " \
               f"{'identical':>9}"
        lines = [self.title, head, "-" * len(head)]
        for r in self:
            sq = "inf" if math.isinf(r.sqnr_db) else f"{r.sqnr_db:8.2f}"
            lines.append(f"{ellipsize(r.name, 32):<32} {r.op:<18} {r.dtype:<6} {sq:>8} "
                         f"{r.max_abs:10.4g} {100 * r.identical:8.2f}%")
        return "\n".join(lines)

    def figure(self) -> Any:
        """The plot as a matplotlib ``Figure`` (no pyplot state): SQNR bars and the max error
        line per layer; the title on top, the legend in a row of its own under it, the layer
        names slanted under the axis (ellipsized beyond :attr:`label_chars` characters)."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        names = [ellipsize(r.name, self.label_chars) for r in self]
        sq = [min(r.sqnr_db, 100.0) for r in self]
        err = [max(r.max_abs, 1e-12) for r in self]
        longest = max((len(n) for n in names), default=0)
        fig = Figure(figsize=(max(6.4, 0.3 * len(self) + 2.5), 4.2 + 0.055 * longest),
                     layout="constrained")
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        x = np.arange(len(self))
        bars = ax.bar(x, sq, color="#4878a8")
        ax.set_ylabel("SQNR (dB, capped at 100)")
        ax.set_xticks(x, names, rotation=55, ha="right", rotation_mode="anchor", fontsize=8)
        ax.set_xlim(-0.6, len(self) - 0.4)
        ax2 = ax.twinx()
        (line,) = ax2.plot(x, err, "o-", color="#c44e52")
        ax2.set_yscale("log")
        ax2.set_ylabel("max |error| (log)")
        # the legend in a row of its own right above the axes, the title above the legend
        ax2.legend([bars, line], ["SQNR (dB, left axis)", "max |error| (right axis)"],
                   loc="lower center", bbox_to_anchor=(0.5, 1.0), ncols=2, fontsize=8,
                   frameon=False, borderaxespad=0.2)
        ax.set_title(self.title, pad=22)
        return fig

    def plot(self, path: Any) -> Path:
        """Write :meth:`figure` as a PNG; returns the path."""
        path = Path(path)
        self.figure().savefig(path, dpi=110)
        return path


def _flavour(graph: Graph, node: Node) -> str:
    if node.flavour:
        return node.flavour
    fls = sorted(graph.flavours())
    return fls[0] if fls else "onnxruntime"


def _float_weight(graph: Graph, node: Node, dequantized: bool = False) -> np.ndarray:
    """The node's float weights (attached by the quantizer or :func:`attach_float_weights`);
    its dequantized weight codes when there are none, or with ``dequantized``."""
    name = node.attrs.get("float_weight")
    if name and not dequantized:
        return graph.tensors[name].data.astype(np.float32)
    w = graph.tensors[node.inputs[1]]
    s = np.asarray(w.scale, dtype=np.float64)
    z = np.asarray(w.zero_point, dtype=np.float64)
    shape = (-1,) + (1,) * (w.data.ndim - 1)
    if s.ndim:
        s, z = s.reshape(shape), z.reshape(shape)
    return ((w.data - z) * s).astype(np.float32)


def _float_bias(graph: Graph, node: Node) -> np.ndarray | None:
    name = node.attrs.get("float_bias")
    if name:
        return graph.tensors[name].data.astype(np.float32)
    if len(node.inputs) < 3:
        return None
    b = graph.tensors[node.inputs[2]]
    if b.is_float:
        return b.data.astype(np.float32)
    x, w = graph.tensors[node.inputs[0]], graph.tensors[node.inputs[1]]
    return (b.data * (np.float64(x.scale) * np.asarray(w.scale, dtype=np.float64))).astype(
        np.float32)


def _deq_bound(t: Tensor, code) -> float | None:
    if code is None:
        return None
    return float((int(code) - int(t.zero_point)) * float(t.scale))


def float_shadow(graph: Graph, x: Any, quantized: frozenset = frozenset()
                 ) -> dict[str, np.ndarray]:
    """Every tensor of ``graph`` computed in float32 (the unquantized reference). Nodes named
    in ``quantized`` are quantized in it: dequantized weight codes, and their output rounded
    to its own grid (quantize, dequantize) - the rest stays float (per-node sensitivity)."""
    import torch
    import torch.nn.functional as F

    xs = x if isinstance(x, (tuple, list)) else (x,)
    env: dict[str, torch.Tensor] = {}
    for name, v in zip(graph.inputs, xs, strict=True):
        env[name] = torch.as_tensor(np.asarray(v, dtype=np.float32))

    def pad4(t, p, value=0.0):
        top, bottom, left, right = p
        return F.pad(t, (left, right, top, bottom), value=value) if any(p) else t

    with torch.no_grad():
        for n in graph.nodes:
            a = n.attrs
            ins = [env[i] if i in env else None for i in n.inputs]
            v = ins[0]
            out_t = graph.tensors[n.outputs[0]]
            op = n.op
            if op in ("quantize", "dequantize", "requantize"):
                y = v
            elif op == "conv2d":
                w = torch.from_numpy(_float_weight(graph, n, n.name in quantized))
                b = _float_bias(graph, n)
                y = F.conv2d(pad4(v, a["padding"]), w, None if b is None else torch.from_numpy(b),
                             a["stride"], 0, a.get("dilation", 1), a.get("groups", 1))
            elif op == "conv_transpose2d":
                w = torch.from_numpy(_float_weight(graph, n, n.name in quantized))
                b = _float_bias(graph, n)
                top, bottom, left, right = a["padding"]
                oph, opw = a.get("output_padding", [0, 0])
                full = F.conv_transpose2d(v, w, None, a["stride"], 0, 0, a.get("groups", 1),
                                          a.get("dilation", 1))
                oh = full.shape[2] - top - bottom + oph
                ow = full.shape[3] - left - right + opw
                # rows/columns past the full output (output_padding) hold the bias alone
                full = F.pad(full, (0, max(0, left + ow - full.shape[3]),
                                    0, max(0, top + oh - full.shape[2])))
                y = full[:, :, top:top + oh, left:left + ow]
                if b is not None:
                    y = y + torch.from_numpy(b).reshape(1, -1, 1, 1)
            elif op == "lut":
                # no float function is kept: the table on the input's grid
                t = graph.tensors[n.inputs[0]]
                table = torch.as_tensor(np.asarray(a["table"], dtype=np.float32))
                qv = torch.clamp(torch.round(v / t.scale) + t.zero_point, t.qmin, t.qmax)
                y = (table[(qv.long() & 0xFF)] - out_t.zero_point) * out_t.scale
            elif op == "linear":
                b = _float_bias(graph, n)
                y = F.linear(v, torch.from_numpy(_float_weight(graph, n, n.name in quantized)),
                             None if b is None else torch.from_numpy(b))
            elif op == "max_pool2d":
                fill = -math.inf if a.get("pad_value") is None else 0.0
                y = F.max_pool2d(pad4(v, a.get("padding", [0] * 4), fill), a["kernel"],
                                 a.get("stride"), 0, a.get("dilation", 1), a.get("ceil_mode",
                                                                                 False))
            elif op == "avg_pool2d":
                p = a.get("padding", [0, 0, 0, 0])
                if p[0] == p[1] and p[2] == p[3]:
                    y = F.avg_pool2d(v, a["kernel"], a.get("stride"), (p[0], p[2]),
                                     a.get("ceil_mode", False), a.get("count_include_pad", True))
                else:
                    y = F.avg_pool2d(pad4(v, p), a["kernel"], a.get("stride"))
            elif op == "adaptive_avg_pool2d":
                y = F.adaptive_avg_pool2d(v, a["output_size"])
            elif op == "global_avg_pool":
                y = v.mean(dim=(2, 3), keepdim=True)
            elif op == "add":
                y = ins[0] + ins[1]
                if a.get("relu"):
                    y = F.relu(y)
            elif op == "relu":
                y = F.relu(v)
            elif op == "relu6":
                y = v.clamp(0.0, 6.0)
            elif op == "hardtanh":
                y = v.clamp(a.get("min_val", -1.0), a.get("max_val", 1.0))
            elif op == "clamp":
                t = graph.tensors[n.inputs[0]]
                y = v.clamp(_deq_bound(t, a.get("lo")), _deq_bound(t, a.get("hi")))
            elif op == "leaky_relu":
                y = F.leaky_relu(v, a["negative_slope"])
            elif op == "upsample_nearest":
                fh, fw = a["scale"]
                y = v.repeat_interleave(fh, 2).repeat_interleave(fw, 3)
            elif op == "concat":
                y = torch.cat(ins, a.get("axis", 1))
            elif op == "flatten":
                y = torch.flatten(v, a.get("start_dim", 1))
            elif op == "reshape":
                shape = list(a["shape"])
                shape[0] = v.shape[0]
                y = v.reshape(shape)
            elif op == "slice":
                y = v.narrow(int(a["axis"]), int(a["start"]), int(a["end"]) - int(a["start"]))
            elif op == "channel_shuffle":
                from .ir.execute import shuffle_perm

                y = v[:, torch.as_tensor(shuffle_perm(v.shape[1], int(a["groups"])))]
            elif op == "transpose":
                y = v.permute(*a["perm"])
            elif op == "batch_norm":
                # no float parameters are kept: the measured code map on the input's grid
                t = graph.tensors[n.inputs[0]]
                table = torch.as_tensor(np.asarray(a["table"], dtype=np.float32))
                qv = torch.clamp(torch.round(v / t.scale) + t.zero_point, t.qmin, t.qmax)
                idx = (qv - a["in_lo"]).long()
                ch = torch.arange(v.shape[1]).reshape(1, -1, 1, 1).expand_as(idx)
                y = (table[ch, idx] - out_t.zero_point) * out_t.scale
            elif op == "pad":
                t = graph.tensors[n.inputs[0]]
                val = a.get("value")
                y = pad4(v, a["pads"], 0.0 if val is None else _deq_bound(t, val))
            else:
                raise ValueError(f"float shadow: no float form of op {op!r}")
            if op in ("conv2d", "linear", "add") and out_t.zero_point == out_t.qmin and \
                    a.get("activation", "none") == "none":
                # the output grid has no negative values: quantizers (ONNX Runtime's) drop a
                # ReLU there because the clamp at the zero point is the ReLU
                y = F.relu(y)
            if op in ("conv2d", "linear"):
                act = a.get("activation", "none")
                if act == "relu":
                    y = F.relu(y)
                elif act == "relu6":
                    y = y.clamp(0.0, 6.0)
                elif act == "leaky":
                    m, k = a["requant"]["leaky"]
                    y = F.leaky_relu(y, a.get("negative_slope", m / 2**k))
                elif act == "clamp" and a.get("clamp") is not None:
                    y = y.clamp(_deq_bound(out_t, a["clamp"][0]), _deq_bound(out_t, a["clamp"][1]))
            if n.name in quantized and out_t.is_quantized:
                fl = _flavour(graph, n)
                q = K.quantize(fl, y.float().numpy(), out_t.scale, out_t.zero_point, out_t.dtype,
                               out_t.qmin, out_t.qmax)
                y = torch.from_numpy(np.asarray(K.dequantize(fl, q, out_t.scale,
                                                             out_t.zero_point), np.float32))
            env[n.outputs[0]] = y.float()
    return {k: v.numpy() for k, v in env.items()}


@dataclass
class Sensitivity:
    name: str
    op: str
    sqnr_db: float   # of the graph's outputs with only this node quantized


class Sensitivities(list):
    """:class:`Sensitivity` rows, most sensitive (lowest SQNR) first, with a table."""

    title = "per-node sensitivity"

    def table(self) -> str:
        head = f"{'node (only it quantized)':<40} {'op':<18} {'output SQNR dB':>14}"
        lines = [self.title, head, "-" * len(head)]
        for r in self:
            sq = "inf" if math.isinf(r.sqnr_db) else f"{r.sqnr_db:14.2f}"
            lines.append(f"{ellipsize(r.name, 40):<40} {r.op:<18} {sq:>14}")
        return "\n".join(lines)


def _sqnr(ref: np.ndarray, got: np.ndarray) -> float:
    noise = float(np.sum((ref.astype(np.float64) - got) ** 2))
    sig = float(np.sum(ref.astype(np.float64) ** 2))
    return math.inf if noise == 0 else (10 * math.log10(sig / noise) if sig > 0 else -math.inf)


def sensitivity(graph: Graph, x: Any, ops=("conv2d", "linear", "add")) -> Sensitivities:
    """For each node of ``ops`` with a quantized output: the SQNR of the graph's outputs
    (float shadow) when only that node is quantized (its weights and its output), against the
    all-float shadow. The lowest figures name the nodes to keep wider (``overrides``) or to
    look at first."""
    xs = x if isinstance(x, (tuple, list)) else (x,)
    xs = [np.asarray(v.detach().numpy() if hasattr(v, "detach") else v, dtype=np.float32)
          for v in xs]
    outs = [graph.producer(o).inputs[0] if graph.producer(o) is not None
            and graph.producer(o).op == "dequantize" else o for o in graph.outputs]
    ref = float_shadow(graph, xs)
    rows = Sensitivities()
    rows.title = f"per-node sensitivity of {graph.name!r} (output SQNR, only that node quantized)"
    for n in graph.nodes:
        if n.op not in ops or not graph.tensors[n.outputs[0]].is_quantized:
            continue
        got = float_shadow(graph, xs, frozenset({n.name}))
        sq = _sqnr(np.concatenate([ref[o].reshape(-1) for o in outs]),
                   np.concatenate([got[o].reshape(-1) for o in outs]))
        rows.append(Sensitivity(n.source or n.name, n.op, sq))
    rows.sort(key=lambda r: r.sqnr_db)
    return rows


def layer_errors(graph: Graph, x: Any) -> LayerErrors:
    """Float vs quantized error of every quantized tensor of ``graph`` on input ``x``."""
    xs = x if isinstance(x, (tuple, list)) else (x,)
    xs = [np.asarray(v.detach().numpy() if hasattr(v, "detach") else v, dtype=np.float32)
          for v in xs]
    codes = graph.run_all(*xs)
    ref = float_shadow(graph, xs)
    rows = LayerErrors()
    rows.title = f"per-layer quantization error of {graph.name!r}"
    for n in graph.nodes:
        out = n.outputs[0]
        t = graph.tensors[out]
        if not t.is_quantized or n.op in ("flatten", "reshape"):
            continue
        fl = _flavour(graph, n)
        r = ref[out].astype(np.float64)
        deq = K.dequantize(fl, codes[out], t.scale, t.zero_point).astype(np.float64)
        noise = float(np.sum((r - deq) ** 2))
        sig = float(np.sum(r**2))
        sqnr = math.inf if noise == 0 else (10 * math.log10(sig / noise) if sig > 0 else -math.inf)
        q = K.quantize(fl, r.astype(np.float32), t.scale, t.zero_point, t.dtype, t.qmin, t.qmax)
        rows.append(LayerError(n.source or n.name, n.op, out, t.dtype, float(t.scale), sqnr,
                               float(np.abs(r - deq).max()) if r.size else 0.0,
                               float(np.mean(q == codes[out])) if r.size else 1.0, int(r.size)))
    return rows


def attach_float_weights(graph: Graph, float_model: Any) -> int:
    """Give conv/linear nodes the float weights of ``float_model`` (BN folded), by name.

    ``float_model``: the ``nn.Module`` a torch graph was quantized from (nodes are matched by
    module name), or the float ONNX model (path or ModelProto) of an ONNX graph (matched by
    node name). Returns the number of layers that got float weights.
    """
    weights = _torch_weights(float_model) if hasattr(float_model, "named_modules") else \
        _onnx_weights(float_model)
    count = 0
    for n in graph.nodes:
        if n.op not in ("conv2d", "linear"):
            continue
        key = n.source if n.source in weights else n.name
        if key not in weights:
            continue
        w, b = weights[key]
        if tuple(w.shape) != graph.tensors[n.inputs[1]].shape:
            continue
        wn = graph.unique_name(f"{n.name}.weight_float")
        graph.add_tensor(Tensor(wn, w.shape, "float32", layout="any", data=w.astype(np.float32)))
        n.attrs["float_weight"] = wn
        if b is not None:
            bn = graph.unique_name(f"{n.name}.bias_float")
            graph.add_tensor(Tensor(bn, b.shape, "float32", layout="any",
                                    data=b.astype(np.float32)))
            n.attrs["float_bias"] = bn
        count += 1
    graph.invalidate()
    return count


def _torch_weights(model) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    import torch

    from .frontend.ptq import capture

    gm = capture(model)
    out = {}
    for name, m in gm.named_modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            b = None if m.bias is None else m.bias.detach().numpy()
            out[name] = (m.weight.detach().numpy(), b)
    return out


def _onnx_weights(model) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    from onnx import numpy_helper

    from .frontend.onnx_import import load_onnx

    m, _ = load_onnx(model)
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    out = {}
    for node in m.graph.node:
        if node.op_type in ("Conv", "Gemm", "MatMul") and len(node.input) > 1 and \
                node.input[1] in inits:
            w = inits[node.input[1]]
            if node.op_type == "MatMul" or (node.op_type == "Gemm" and not any(
                    a.name == "transB" and a.i for a in node.attribute)):
                w = w.T
            b = inits.get(node.input[2]) if len(node.input) > 2 else None
            out[node.name] = (w, b)
    return out
