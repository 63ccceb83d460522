"""The compiler: hardware layers -> command stream + DDR image, and its performance model.

Example::

    from zynqnn.compiler import Tensor, HwConv, Network, compile_network
    prog = compile_network(Network(x, [conv]), "tiny")
    y = prog.run_golden(x_codes)          # executes the commands on zynqnn.machine.Machine
"""

from .compile import Program, Step, compile_network
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
)
from .reference import run_reference

__all__ = [
    "CompileError",
    "CompileErrors",
    "HwAdd",
    "HwLut",
    "HwConcat",
    "HwConv",
    "HwConvTranspose",
    "HwGlobalSumPool",
    "HwMaxPool",
    "HwUpsample2x",
    "HwView",
    "Network",
    "Program",
    "Step",
    "Tensor",
    "compile_network",
    "run_reference",
]
