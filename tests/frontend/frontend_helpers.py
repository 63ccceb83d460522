"""Helpers of the front-end tests: quantizing zoo models, ONNX export, comparing outputs."""

from __future__ import annotations

import numpy as np
import torch

from zynqnn import zoo
from zynqnn.zoo.ort import export_onnx, ort_quantize, ort_session  # noqa: F401 (the tests' helpers)
from zynqnn.zoo.quant import cpu_independent_qconfig_mapping, quiet_torch_ao

#: (zoo name, test input size) of the models the issue's "done when" names.
SIZES = {"resnet18": 32, "mobilenet_v2": 32, "yolov3_tiny": 64, "digits_cnn": None}


def count(record_property, case: str, what: str, n: int, bad: int) -> None:
    """Record ``n`` values compared with ``bad`` mismatches for the terminal summary."""
    record_property("frontend_count", (case, what, int(n), int(bad)))


def outputs(y) -> list[np.ndarray]:
    ys = list(y) if isinstance(y, (tuple, list)) else [y]
    return [t.detach().numpy() if isinstance(t, torch.Tensor) else np.asarray(t) for t in ys]


def compare(ref, got) -> tuple[int, int]:
    """(values compared, mismatches) of two output lists; shapes and dtypes must agree."""
    ref, got = outputs(ref), outputs(got)
    assert len(ref) == len(got)
    n = bad = 0
    for r, g in zip(ref, got, strict=True):
        assert r.shape == g.shape and g.dtype == np.float32, (r.shape, g.shape, g.dtype)
        n += g.size
        bad += int(np.count_nonzero(r != g))
    return n, bad


def inputs(name: str, count: int = 3, batch: int = 2, seed: int = 100) -> list[torch.Tensor]:
    return [zoo.example_input(name, SIZES[name], batch=batch, seed=seed + i) for i in range(count)]


def quantize_fx(name: str, engine: str, backend: str = "zynqnn"):
    """(float model, converted FX model, example input) of a zoo model, calibrated on the
    example and on every input :func:`inputs` gives."""
    model = zoo.get(name)
    x = zoo.example_input(name, SIZES[name], batch=2)
    calib = [x, *inputs(name), *inputs(name, 1, seed=7), *inputs(name, 1, seed=50)]
    with quiet_torch_ao():
        q = zoo.quantize_fx(model, x, engine=engine, calibration=calib, backend=backend,
                            qconfig_mapping=cpu_independent_qconfig_mapping(engine))
    return model, q, x


def has_avx512_vnni() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            return "avx512_vnni" in f.read()
    except OSError:  # pragma: no cover - not Linux
        return False


def max_layer_input_code(graph, x) -> int:
    """Largest activation code entering a conv/linear of ``graph`` on input ``x``."""
    env = graph.run_all(x)
    return max(int(env[n.inputs[0]].max()) for n in graph.nodes if n.op in ("conv2d", "linear"))


def fbgemm_comparable(graph, x) -> bool:
    """Whether PyTorch's fbgemm result is CPU-independent on ``x`` (or this CPU is the one the
    golden model matches): codes above 127 make fbgemm's non-VNNI kernels saturate."""
    return max_layer_input_code(graph, x) <= 127 or has_avx512_vnni()
