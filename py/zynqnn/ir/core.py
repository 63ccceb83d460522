"""The quantized graph IR: tensors, nodes and the graph that holds them.

A :class:`Graph` is a list of :class:`Node` objects in topological order over named
:class:`Tensor` objects. Every tensor has a static shape, a dtype, and, when quantized, its scale,
zero point and (per-channel) axis; constants (weights, biases) carry their data. Every node names
the framework whose arithmetic it reproduces (its *flavour*); :mod:`zynqnn.ir.opdefs` lists the
ops, their attributes and their rules, and :meth:`Graph.validate` checks a graph against them.
:mod:`zynqnn.ir.execute` runs a graph with the golden model (:mod:`zynqnn.numerics`).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "DTYPES",
    "DTYPE_RANGE",
    "FLAVOURS",
    "LAYOUTS",
    "TORCH_FLAVOURS",
    "ZYNQNN_FLAVOURS",
    "Graph",
    "IRError",
    "Node",
    "Tensor",
]

#: Element types of IR tensors.
DTYPES: tuple[str, ...] = ("uint8", "int8", "uint16", "int16", "int32", "float32")
#: Code range of each integer dtype.
DTYPE_RANGE: dict[str, tuple[int, int]] = {
    "uint8": (0, 255),
    "int8": (-128, 127),
    "uint16": (0, 65535),
    "int16": (-32768, 32767),
    "int32": (-(2**31), 2**31 - 1),
}
#: Memory order of the framework's tensor (drives which kernel path a framework takes):
#: ``nchw`` contiguous, ``nhwc`` channels-last, ``nc`` 2-D, ``any`` for constants.
LAYOUTS: tuple[str, ...] = ("nchw", "nhwc", "nc", "any")
#: The PyTorch engines.
TORCH_FLAVOURS: tuple[str, ...] = ("torch-fbgemm", "torch-qnnpack")
#: zynqnn's own schemes (chosen by :func:`zynqnn.quantize`).
ZYNQNN_FLAVOURS: tuple[str, ...] = ("tflite", "pow2", "fixed16")
#: Whose arithmetic a node reproduces.
FLAVOURS: tuple[str, ...] = TORCH_FLAVOURS + ("onnxruntime",) + ZYNQNN_FLAVOURS


class IRError(ValueError):
    """An IR graph is malformed; the message names the node or tensor and the reason."""


@dataclass
class Tensor:
    """A value of the graph.

    ``shape`` is static (activations NCHW, linear activations ``(N, C)``); ``dtype`` one of
    :data:`DTYPES`. Quantized tensors (integer dtypes) have ``scale`` and ``zero_point``: scalars,
    or 1-D arrays along ``axis`` for per-channel quantization (weights). ``qmin``/``qmax``
    narrow the code range (default: the dtype's). ``layout`` is the memory order the framework
    kept the tensor in. Constants hold ``data`` (numpy, the tensor's dtype as int64/float32).
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    scale: float | np.ndarray | None = None
    zero_point: int | np.ndarray | None = None
    axis: int | None = None
    layout: str = "nchw"
    data: np.ndarray | None = None
    qmin: int | None = None
    qmax: int | None = None

    def __post_init__(self) -> None:
        self.shape = tuple(int(d) for d in self.shape)
        if self.scale is not None:
            s = np.asarray(self.scale, dtype=np.float64)
            self.scale = float(s) if s.ndim == 0 else s.reshape(-1)
        if self.zero_point is not None:
            z = np.asarray(self.zero_point)
            self.zero_point = int(z) if z.ndim == 0 else z.astype(np.int64).reshape(-1)
        if self.dtype in DTYPE_RANGE:
            lo, hi = DTYPE_RANGE[self.dtype]
            self.qmin = lo if self.qmin is None else int(self.qmin)
            self.qmax = hi if self.qmax is None else int(self.qmax)

    @property
    def is_float(self) -> bool:
        return self.dtype == "float32"

    @property
    def is_quantized(self) -> bool:
        return self.dtype in DTYPE_RANGE and self.scale is not None

    @property
    def is_const(self) -> bool:
        return self.data is not None

    @property
    def per_channel(self) -> bool:
        return isinstance(self.scale, np.ndarray)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def qparams(self) -> tuple[Any, Any]:
        """``(scale, zero_point)``."""
        return self.scale, self.zero_point

    def same_qparams(self, other: Tensor) -> bool:
        """Same dtype, scale and zero point (per-tensor)."""
        return (
            self.dtype == other.dtype
            and not self.per_channel
            and not other.per_channel
            and self.scale == other.scale
            and self.zero_point == other.zero_point
        )

    def describe(self) -> str:
        q = ""
        if self.is_quantized:
            if self.per_channel:
                q = f" per-channel(axis={self.axis}, {len(self.scale)})"
            else:
                q = f" s={self.scale:.6g} zp={self.zero_point}"
        return f"{self.dtype}{list(self.shape)}{q}"


@dataclass
class Node:
    """One operation: ``op`` (see :mod:`zynqnn.ir.opdefs`) on named input tensors.

    ``flavour`` is the framework whose arithmetic the node reproduces (one of :data:`FLAVOURS`,
    or None for ops that only move codes). ``attrs`` holds JSON-able values. ``source`` names the
    framework node/module the node was imported from (for messages and error reports).
    """

    name: str
    op: str
    inputs: list[str]
    outputs: list[str]
    flavour: str | None = None
    attrs: dict[str, Any] = field(default_factory=dict)
    source: str | None = None

    def __str__(self) -> str:
        fl = f" [{self.flavour}]" if self.flavour else ""
        return f"{self.name}: {self.op}{fl}({', '.join(self.inputs)}) -> {', '.join(self.outputs)}"


class Graph:
    """A quantized inference graph.

    Build with :meth:`add_tensor` / :meth:`add_node` (nodes in topological order), set
    :attr:`inputs` / :attr:`outputs`, then :meth:`validate`. Run with :meth:`run` (float in,
    float out, exactly as the framework), :meth:`run_int` (codes in, codes out) or
    :meth:`run_all` (every tensor). Save with :meth:`save`, load with :func:`zynqnn.ir.load`.
    """

    def __init__(self, name: str = "graph") -> None:
        self.name = name
        self.tensors: dict[str, Tensor] = {}
        self.nodes: list[Node] = []
        self.inputs: list[str] = []
        self.outputs: list[str] = []
        self.meta: dict[str, Any] = {}
        self._cache: dict[Any, Any] = {}

    # -- construction ----------------------------------------------------------------------------
    def add_tensor(self, tensor: Tensor) -> Tensor:
        if tensor.name in self.tensors:
            raise IRError(f"tensor {tensor.name!r} is defined twice")
        self.tensors[tensor.name] = tensor
        self._cache.clear()
        return tensor

    def add_node(self, node: Node) -> Node:
        if any(n.name == node.name for n in self.nodes):
            raise IRError(f"node {node.name!r} is defined twice")
        self.nodes.append(node)
        self._cache.clear()
        return node

    def unique_name(self, base: str) -> str:
        """A tensor/node name not used yet, derived from ``base``."""
        used = self._cache.setdefault("_names", set(self.tensors) | {n.name for n in self.nodes})
        name, i = base, 1
        while name in used:
            name = f"{base}_{i}"
            i += 1
        used.add(name)
        return name

    def invalidate(self) -> None:
        """Forget cached run-time state (packed weights, requantizers) after editing the graph."""
        self._cache.clear()

    # -- queries ---------------------------------------------------------------------------------
    def tensor(self, name: str) -> Tensor:
        try:
            return self.tensors[name]
        except KeyError:
            raise IRError(f"no tensor named {name!r}") from None

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise IRError(f"no node named {name!r}")

    def producer(self, tensor: str) -> Node | None:
        prod = self._cache.get("_producer")
        if prod is None:
            prod = {o: n for n in self.nodes for o in n.outputs}
            self._cache["_producer"] = prod
        return prod.get(tensor)

    def consumers(self, tensor: str) -> list[Node]:
        cons = self._cache.get("_consumers")
        if cons is None:
            cons = {}
            for n in self.nodes:
                for i in n.inputs:
                    cons.setdefault(i, []).append(n)
            self._cache["_consumers"] = cons
        return list(cons.get(tensor, []))

    def constants(self) -> dict[str, Tensor]:
        return {k: t for k, t in self.tensors.items() if t.is_const}

    @property
    def quant_inputs(self) -> list[str]:
        """The integer interface: the codes each float input is quantized to (for run_int)."""
        names = []
        for name in self.inputs:
            t = self.tensors[name]
            if not t.is_float:
                names.append(name)
                continue
            qs = [n for n in self.consumers(name) if n.op == "quantize"]
            if len(qs) != 1 or len(self.consumers(name)) != 1:
                raise IRError(f"input {name!r} must feed exactly one quantize node for run_int")
            names.append(qs[0].outputs[0])
        return names

    @property
    def quant_outputs(self) -> list[str]:
        """The codes each output is dequantized from (outputs without dequantize: themselves)."""
        names = []
        for name in self.outputs:
            p = self.producer(name)
            names.append(p.inputs[0] if p is not None and p.op == "dequantize" else name)
        return names

    def flavours(self) -> set[str]:
        return {n.flavour for n in self.nodes if n.flavour}

    def ops(self) -> dict[str, int]:
        """Count of each op."""
        out: dict[str, int] = {}
        for n in self.nodes:
            out[n.op] = out.get(n.op, 0) + 1
        return dict(sorted(out.items()))

    # -- checks and execution (implemented in sibling modules) ----------------------------------
    def validate(self) -> Graph:
        """Check every node and tensor; raises :class:`IRError` naming the culprit. Returns self."""
        from .opdefs import validate_graph

        validate_graph(self)
        return self

    def run(self, *inputs: Any, hw: bool = False) -> Any:
        """Float32 NCHW inputs -> float32 outputs, computed by the golden model.

        Inputs are quantized exactly as the framework quantizes them and outputs dequantized as
        it dequantizes. One output: an array; several: a tuple. ``hw=True`` uses the integer-only
        hardware form of every requantization (same result).
        """
        from .execute import run

        return run(self, inputs, hw=hw)

    def run_int(self, *codes: Any, hw: bool = False) -> Any:
        """Integer codes in (the quantized inputs), integer codes out (before dequantization)."""
        from .execute import run_int

        return run_int(self, codes, hw=hw)

    def run_all(self, *inputs: Any, hw: bool = False) -> dict[str, np.ndarray]:
        """Every tensor's value (codes as int64, floats as float32) for float inputs."""
        from .execute import run_all

        return run_all(self, inputs, hw=hw)

    def quantize_input(self, x: Any, index: int = 0) -> np.ndarray:
        """The codes input ``index`` is quantized to (the framework's own quantizer)."""
        from .execute import quantize_input

        return quantize_input(self, x, index)

    def save(self, path: Any) -> None:
        """Write the graph to ``path`` (a zip of JSON + .npy arrays, see :mod:`.serialize`)."""
        from .serialize import save

        save(self, path)

    def copy(self) -> Graph:
        g = Graph(self.name)
        g.tensors = {k: dataclasses.replace(t) for k, t in self.tensors.items()}
        g.nodes = [copy.deepcopy(n) for n in self.nodes]
        g.inputs, g.outputs = list(self.inputs), list(self.outputs)
        g.meta = copy.deepcopy(self.meta)
        return g

    def summary(self) -> str:
        """A readable listing: one line per node with its output tensor."""
        lines = [f"graph {self.name!r}: {len(self.nodes)} nodes, flavours "
                 f"{', '.join(sorted(self.flavours())) or '-'}"]
        for name in self.inputs:
            lines.append(f"  input  {name}: {self.tensors[name].describe()}")
        for n in self.nodes:
            outs = ", ".join(f"{o}: {self.tensors[o].describe()}" for o in n.outputs)
            fl = f"[{n.flavour}]" if n.flavour else ""
            lines.append(f"  {n.op:<20s}{fl:<16s} {n.name} -> {outs}")
        for name in self.outputs:
            lines.append(f"  output {name}: {self.tensors[name].describe()}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<zynqnn.ir.Graph {self.name!r}: {len(self.nodes)} nodes, ops {self.ops()}>"


def topological_order(nodes: Sequence[Node], available: Iterable[str]) -> list[Node]:
    """Order ``nodes`` so that every input is produced before use (stable where possible)."""
    ready = set(available)
    pending = list(nodes)
    out: list[Node] = []
    while pending:
        progress = False
        rest = []
        for n in pending:
            if all(i in ready for i in n.inputs):
                out.append(n)
                ready.update(n.outputs)
                progress = True
            else:
                rest.append(n)
        if not progress:
            missing = {i for n in rest for i in n.inputs if i not in ready}
            raise IRError(f"node {rest[0].name!r}: inputs {sorted(missing)} are never produced "
                          "(cycle or missing producer)")
        pending = rest
    return out
