"""Model zoo: networks users arrive with, as PyTorch modules that torch.ao FX can quantize.

Example::

    from zynqnn import zoo
    model = zoo.get("resnet18", width=16, num_classes=10)   # seeded random weights, eval mode
    x = zoo.example_input("resnet18", size=32)
    qmodel = zoo.quantize_fx(model, x, engine="qnnpack")
    digits = zoo.digits.pretrained()                         # trained on real data, cached

Names (:data:`NAMES`): ``resnet18``, ``mobilenet_v2``, ``yolov3_tiny``, ``digits_cnn``.

Random-weight models get a realistic BatchNorm state: the affine parameters are drawn at random
(gamma in 0.5..1.5, beta ~ N(0, 0.1)) and the running statistics are measured on a few
smooth random images, as if the network had been trained. So activations stay in a sane range at
every depth, BN folding is not a no-op, and int8 quantization behaves as on a trained network.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from . import digits, quant
from .digits import digits_cnn
from .mobilenet import mobilenet_v2
from .quant import ENGINES, backend_config, op_summary, qat_finetune, quantize_fx
from .resnet import resnet18
from .yolo import yolov3_tiny

__all__ = [
    "ENGINES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "NAMES",
    "backend_config",
    "calibrate_bn",
    "default_size",
    "digits",
    "digits_cnn",
    "example_input",
    "get",
    "mobilenet_v2",
    "op_summary",
    "qat_finetune",
    "quant",
    "quantize_fx",
    "resnet18",
    "yolov3_tiny",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "resnet18": resnet18,
    "mobilenet_v2": mobilenet_v2,
    "yolov3_tiny": yolov3_tiny,
    "digits_cnn": digits_cnn,
}
NAMES: tuple[str, ...] = tuple(_BUILDERS)

#: name -> (default input size, input normalisation, BN calibration size)
_INPUTS: dict[str, tuple[int, str, int]] = {
    "resnet18": (224, "imagenet", 64),
    "mobilenet_v2": (224, "imagenet", 64),
    "yolov3_tiny": (416, "unit", 96),
    "digits_cnn": (8, "digits", 8),
}


def _check(name: str) -> None:
    if name not in _BUILDERS:
        raise KeyError(f"unknown zoo model {name!r}; known: {', '.join(NAMES)}")


def default_size(name: str) -> int:
    """The input height = width the network was designed for."""
    _check(name)
    return _INPUTS[name][0]


def _smooth_images(batch: int, size: int, gen: torch.Generator) -> torch.Tensor:
    """Natural-ish RGB images in 0..1: coarse random colour fields, upsampled, plus fine noise."""
    coarse = max(2, size // 8)
    base = torch.rand(batch, 3, coarse, coarse, generator=gen)
    img = F.interpolate(base, size=(size, size), mode="bilinear", align_corners=False)
    img = img + 0.08 * torch.randn(batch, 3, size, size, generator=gen)
    return img.clamp_(0.0, 1.0)


def example_input(
    name: str, size: int | None = None, batch: int = 1, seed: int = 0
) -> torch.Tensor:
    """A float32 NCHW input for ``name``.

    ``resnet18`` / ``mobilenet_v2``: smooth random RGB images normalised with the ImageNet mean/std
    (values about -2..2.6), default 224x224. ``yolov3_tiny``: the same images in 0..1, default
    416x416 (``size`` must be a multiple of 32). ``digits_cnn``: real held-out digit images
    (``1 x 8 x 8``, 0..1), picked by ``seed``; ``size`` must be None or 8.
    """
    _check(name)
    default, norm, _ = _INPUTS[name]
    size = default if size is None else int(size)
    gen = torch.Generator().manual_seed(seed)
    if norm == "digits":
        if size != 8:
            raise ValueError("digits_cnn takes 8x8 inputs")
        x_test = digits.load_data()[2]
        return x_test[torch.randperm(len(x_test), generator=gen)[:batch]].clone()
    if name == "yolov3_tiny" and size % 32:
        raise ValueError(f"yolov3_tiny needs a multiple of 32 as input size, got {size}")
    img = _smooth_images(batch, size, gen)
    if norm == "imagenet":
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        img = (img - mean) / std
    return img.contiguous()


@torch.no_grad()
def calibrate_bn(model: nn.Module, batches: list[torch.Tensor]) -> nn.Module:
    """Set every BatchNorm's running mean/var to the exact average over ``batches``; eval mode."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative moving average
    model.train()
    try:
        for x in batches:
            model(x)
    finally:
        for bn, momentum in zip(bns, momenta, strict=True):
            bn.momentum = momentum
        model.eval()
    return model


def get(
    name: str,
    seed: int = 0,
    *,
    pretrained: bool = False,
    realistic_bn: bool = True,
    **kwargs,
) -> nn.Module:
    """Build zoo model ``name`` in eval mode with random weights drawn from ``seed``.

    ``kwargs`` go to the builder (``num_classes``, ``width``, ``width_mult``,
    ``negative_slope``). ``pretrained=True`` is only available for ``digits_cnn`` (trained on the
    real data, see :func:`zynqnn.zoo.digits.pretrained`). ``realistic_bn=False`` keeps torch's
    default BatchNorm state (identity).
    """
    _check(name)
    if pretrained:
        if name != "digits_cnn":
            raise ValueError(f"no pretrained weights for {name!r} (only digits_cnn)")
        if kwargs:
            raise TypeError(f"pretrained digits_cnn takes no builder arguments, got {kwargs}")
        return digits.pretrained()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _BUILDERS[name](**kwargs)
        has_bn = any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
        if realistic_bn and has_bn:
            gen = torch.Generator().manual_seed(seed + 1)
            for m in model.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.weight.data = torch.rand(m.num_features, generator=gen) + 0.5
                    m.bias.data = 0.1 * torch.randn(m.num_features, generator=gen)
            calib_size = _INPUTS[name][2]
            calibrate_bn(
                model,
                [example_input(name, calib_size, batch=4, seed=seed + 100 + i) for i in range(2)],
            )
    return model.eval()
