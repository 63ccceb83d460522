"""zynqnn's quantized graph IR.

A :class:`Graph` holds :class:`Tensor` values (static NCHW shape, dtype uint8/int8/int16/int32/
float32, scale(s), zero point(s), per-channel axis, memory layout, constant data) and
:class:`Node` operations in topological order, each with the *flavour* of framework arithmetic
it reproduces (``torch-fbgemm``, ``torch-qnnpack``, ``onnxruntime``, ``tflite``, ``pow2``,
``fixed16``). The ops are those of the golden model (:mod:`zynqnn.numerics`), listed in
:mod:`zynqnn.ir.opdefs`. Example::

    g = zynqnn.from_torch(qmodel, x)        # or from_onnx(path), zynqnn.quantize(model, data)
    g.validate()                            # IRError naming the node and the reason
    y = g.run(x)                            # float in, float out, bit-exact with the framework
    codes = g.run_int(g.quantize_input(x))  # integer interface
    g.save("model.zqg"); g2 = zynqnn.ir.load("model.zqg")

Conv/linear nodes carry their requantization as ``attrs["requant"] = {"scheme": ..., options}``;
:func:`node_requant` builds the :class:`~zynqnn.numerics.Requant` (what the hardware is loaded
with, ``.constants()``) and :func:`effective_clamp` the output clamp after fused activations.
"""

from .core import (
    DTYPE_RANGE,
    DTYPES,
    FLAVOURS,
    LAYOUTS,
    TORCH_FLAVOURS,
    ZYNQNN_FLAVOURS,
    Graph,
    IRError,
    Node,
    Tensor,
    topological_order,
)
from .execute import effective_clamp, node_requant
from .opdefs import OPS, infer_shape
from .serialize import FORMAT, VERSION, GraphFileError, load, save

__all__ = [
    "DTYPES",
    "DTYPE_RANGE",
    "FLAVOURS",
    "FORMAT",
    "Graph",
    "GraphFileError",
    "IRError",
    "LAYOUTS",
    "Node",
    "OPS",
    "TORCH_FLAVOURS",
    "Tensor",
    "VERSION",
    "ZYNQNN_FLAVOURS",
    "effective_clamp",
    "infer_shape",
    "load",
    "node_requant",
    "save",
    "topological_order",
]
