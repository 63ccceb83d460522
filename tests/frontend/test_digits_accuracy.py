"""Digits CNN, held-out split: float vs int8 through the IR (golden model), goal within 1 point.

PTQ with torch.ao FX (fbgemm and qnnpack) imported by from_torch, zynqnn.quantize (int8, tflite
scheme, min/max), and QAT (zynqnn.qat_finetune, fbgemm). Each quantized accuracy is computed by
``graph.run`` and the graph's outputs are checked against the framework's on the whole split.
"""

from __future__ import annotations

import numpy as np
import torch
from frontend_helpers import count, fbgemm_comparable

import zynqnn
from zynqnn import zoo
from zynqnn.zoo import digits
from zynqnn.zoo.quant import quiet_torch_ao

MAX_DROP = 1.0  # points


def _acc(graph, x, y) -> float:
    return 100.0 * float(np.mean(graph.run(x).argmax(1) == y.numpy()))


def _check_equal(graph, qmodel, x, engine, label, record_property):
    if engine == "fbgemm" and not fbgemm_comparable(graph, x.numpy()):
        return
    with torch.no_grad():
        ref = qmodel(x).numpy()
    out = graph.run(x)
    count(record_property, label, "run(x) outputs, held-out split", out.size,
          int(np.count_nonzero(out != ref)))
    assert np.array_equal(out, ref)


def test_digits_accuracy(digits_model, digits_data, record_property):
    x_tr, y_tr, x_te, y_te = digits_data
    float_acc = digits.accuracy(digits_model, x_te, y_te)
    results = {"float32 (PyTorch)": float_acc}
    calib = x_tr[:512]
    for engine in zoo.ENGINES:
        with quiet_torch_ao():
            q = zoo.quantize_fx(digits_model, x_tr[:1], engine, calib)
        g = zynqnn.from_torch(q, x_te[:2])
        results[f"int8 PTQ torch.ao FX {engine}"] = _acc(g, x_te, y_te)
        _check_equal(g, q, x_te, engine, f"digits PTQ FX {engine}", record_property)
    g = zynqnn.quantize(digits_model, calib)
    results["int8 zynqnn.quantize (tflite, minmax)"] = _acc(g, x_te, y_te)
    g, q = zynqnn.qat_finetune(digits_model, (x_tr, y_tr), x_te[:2], engine="fbgemm", epochs=2)
    results["int8 QAT fbgemm (2 epochs)"] = _acc(g, x_te, y_te)
    _check_equal(g, q, x_te, "fbgemm", "digits QAT fbgemm", record_property)
    for label, acc in results.items():
        record_property("frontend_accuracy", (label, acc))
    assert float_acc >= 95.0
    for label, acc in results.items():
        assert acc >= float_acc - MAX_DROP, (label, acc, float_acc)
