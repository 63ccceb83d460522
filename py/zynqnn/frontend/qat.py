"""Quantization-aware fine-tuning with torch.ao, handed to :func:`from_torch`.

Builds on :func:`zynqnn.zoo.quant.qat_finetune` (``prepare_qat_fx``, fake quantization, BN and
observer freezing, ``convert_fx``) and imports the converted model::

    graph, qmodel = zynqnn.qat_finetune(model, (x_train, y_train), x_train[:1],
                                        engine="fbgemm", epochs=3, lr=1e-3)
    graph.run(x_test)  # == qmodel(x_test), value for value
"""

from __future__ import annotations

from typing import Any

from ..ir import Graph
from .common import check_example_input
from .torch_import import from_torch

__all__ = ["qat_finetune"]


def qat_finetune(model: Any, train_data: Any, example_input: Any, *, engine: str = "fbgemm",
                 epochs: int = 3, lr: float = 1e-3, verify: bool = True,
                 **kwargs: Any) -> tuple[Graph, Any]:
    """Fine-tune ``model`` with fake quantization, convert, and import it.

    ``train_data``: ``(x, y)`` tensors or an iterable of ``(x, y)`` batches; ``example_input``
    fixes the graph's shapes; ``kwargs`` go to :func:`zynqnn.zoo.quant.qat_finetune`
    (``batch_size``, ``momentum``, ``loss_fn``, ``freeze_bn_epoch``, ``freeze_observer_epoch``,
    ``qconfig_mapping``, ``backend``, ``seed``). Sets ``torch.backends.quantized.engine``.
    Returns ``(graph, quantized torch model)``.
    """
    from ..zoo.quant import qat_finetune as zoo_qat

    (x,) = check_example_input(example_input)
    qmodel = zoo_qat(model, train_data, engine, epochs, lr, example_inputs=(x,), **kwargs)
    graph = from_torch(qmodel, x, engine=engine, verify=verify,
                       name=f"{type(model).__name__}-qat")
    graph.meta["qat"] = {"epochs": epochs, "lr": lr, "engine": engine}
    return graph, qmodel
