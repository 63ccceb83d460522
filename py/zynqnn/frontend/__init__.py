"""Front end: from a user's PyTorch or ONNX model to a quantized graph that reproduces it.

* :func:`from_torch` - torch.ao quantized models (FX ``convert_fx``, both engines and backend
  configs; eager mode with Quant/DeQuantStub and fused modules);
* :func:`from_onnx` - ONNX QDQ (``quantize_static``, per-tensor/per-channel), QOperator, QCDQ;
* :func:`quantize` - zynqnn's own PTQ of a float ``nn.Module`` (``tflite``/``pow2``/``fixed16``);
* :func:`qat_finetune` - torch.ao QAT fine-tuning, then :func:`from_torch`.

The Q/DQ pattern matcher shared by the ONNX importer (and future pt2e / Brevitas importers)
is :mod:`zynqnn.frontend.qdq`. Errors are :class:`FrontendError` naming the node or file.
"""

from .common import FrontendError
from .onnx_import import from_onnx
from .ptq import quantize
from .qat import qat_finetune
from .torch_import import from_torch

__all__ = ["FrontendError", "from_onnx", "from_torch", "qat_finetune", "quantize"]
