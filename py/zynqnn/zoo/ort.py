"""ONNX Runtime side of the zoo: export a float model to ONNX, quantize it with ONNX Runtime's
static (QDQ or QOperator) quantizer, and open a deterministic single-thread session.

Used by the ``zynqnn`` command line and the whole-network scripts; the front-end tests compare
``from_onnx`` graphs with the sessions opened here.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["export_onnx", "ort_quantize", "ort_session", "input_name"]


def export_onnx(model: Any, x: Any, path: Path, n_outputs: int | None = None) -> Path:
    """Export ``model`` traced on the tensor ``x`` (TorchScript exporter, opset 17) with the
    input named ``x`` and the outputs ``y0``, ``y1``, ...; returns ``path``."""
    import torch

    if n_outputs is None:
        with torch.no_grad():
            y = model(x)
        n_outputs = len(y) if isinstance(y, (tuple, list)) else 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), str(path), dynamo=False, input_names=["x"],
                          output_names=[f"y{i}" for i in range(n_outputs)], opset_version=17)
    return Path(path)


def input_name(path: Path) -> str:
    """Name of the one graph input of the ONNX file at ``path`` that is not an initializer."""
    import onnx

    m = onnx.load(str(path))
    inits = {i.name for i in m.graph.initializer}
    names = [i.name for i in m.graph.input if i.name not in inits]
    if len(names) != 1:
        raise ValueError(f"{path}: expected one input, found {len(names)} ({', '.join(names)})")
    return names[0]


def ort_quantize(float_path: Path, calib: Sequence[np.ndarray], out: Path, *, fmt: str = "qdq",
                 per_channel: bool = True, reduce_range: bool = False) -> Path:
    """Quantize the float ONNX model at ``float_path`` with ONNX Runtime's ``quantize_static``
    (uint8 activations, int8 weights), calibrated on the batches ``calib``; returns ``out``.

    ``reduce_range=True`` gives 7-bit weights, which MLAS's saturating int16-pair kernels on
    CPUs without AVX-512 VNNI cannot overflow."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    if fmt not in ("qdq", "qop"):
        raise ValueError(f"fmt={fmt!r}: use 'qdq' or 'qop' (QOperator)")
    name = input_name(float_path)
    batches = [np.ascontiguousarray(c, dtype=np.float32) for c in calib]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{name: c} for c in batches])

        def get_next(self):
            return next(self.it, None)

    logging.getLogger().setLevel(logging.ERROR)
    quantize_static(str(float_path), str(out), Reader(),
                    quant_format=QuantFormat.QDQ if fmt == "qdq" else QuantFormat.QOperator,
                    per_channel=per_channel, reduce_range=reduce_range,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return Path(out)


def ort_session(path: Path):
    """A CPU session with one thread (so results never depend on the machine's thread count)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
