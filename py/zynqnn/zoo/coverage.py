"""Model coverage: real architectures through every quantization flow, imported, compiled and run
bit-exact on the golden model of the accelerator (``make coverage``, docs/coverage.md).

Each architecture is a small but faithful PyTorch definition (torchvision is not a dependency;
:data:`ARCHS` lists them) with seeded random weights and a realistic BatchNorm state (random
affine parameters, running statistics measured on random smooth images with
:func:`zynqnn.zoo.calibrate_bn`). Each goes through each flow of :data:`FLOWS`:

``fbgemm``, ``qnnpack``
    torch.ao FX post-training quantization (:func:`zynqnn.zoo.quantize_fx`, the CPU-independent
    qconfig of :func:`zynqnn.zoo.quant.cpu_independent_qconfig_mapping`), :func:`zynqnn.from_torch`.
``ort-qdq``
    ONNX Runtime ``quantize_static``, QDQ, per-channel weights, ``reduce_range=True``
    (``zynqnn.compiler.testing.quantized_graph(..., "onnxruntime")``), :func:`zynqnn.from_onnx`.
``ort-qdq-pt``
    the same, per-tensor weights and full 8-bit weights (no ``reduce_range``).
``ort-qop``
    ONNX Runtime QOperator format (QLinearConv, ...), per-channel, ``reduce_range=True``.

A cell's stages: quantize (the framework) -> import (the front end builds the graph) -> compile
(``zynqnn.compile(graph, "pynq_z2")``) -> run on the golden backend, compared ``array_equal`` with
``graph.run`` and with the framework's own quantized output (torch.ao's converted model, the
ONNX Runtime session), and through the integer interface. :func:`run_cell` gives one
:class:`Cell`; :func:`build_table` the whole :class:`Table`.
"""

from __future__ import annotations

import re
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .mobilenet import make_divisible

__all__ = ["ARCHS", "FLOWS", "Arch", "Cell", "Table", "build_model", "build_table",
           "inputs", "run_cell"]


# =================================================================================================
# architectures


def _cbr(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act: type | None = nn.ReLU,
         eps: float = 1e-5) -> nn.Sequential:
    """Conv (no bias, 'same' padding) + BatchNorm + activation (None: no activation)."""
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout, eps=eps)]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


# --- LeNet-5 ------------------------------------------------------------------------------------

class LeNet5(nn.Module):
    """LeNet-5 on 32x32 grey images: C1 conv5x5 6, S2 pool, C3 conv5x5 16, S4 pool, C5 120,
    F6 84, output 10. ``classic=True``: tanh and average pooling (LeCun 1998, with a full C3
    connection table and a linear output layer); otherwise ReLU and max pooling (the form of most
    PyTorch ports)."""

    def __init__(self, num_classes: int = 10, classic: bool = False) -> None:
        super().__init__()
        act = nn.Tanh if classic else nn.ReLU
        pool = nn.AvgPool2d if classic else nn.MaxPool2d
        self.features = nn.Sequential(
            nn.Conv2d(1, 6, 5), act(), pool(2, 2),
            nn.Conv2d(6, 16, 5), act(), pool(2, 2))
        self.classifier = nn.Sequential(
            nn.Linear(16 * 5 * 5, 120), act(), nn.Linear(120, 84), act(),
            nn.Linear(84, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


# --- VGG-11-BN ----------------------------------------------------------------------------------

VGG11 = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


class VGG(nn.Module):
    """VGG with BatchNorm (configuration A = VGG-11), widths divided by ``div``. At 32x32 the
    last feature map is 1x1, so the classifier (two hidden layers, dropout omitted in eval form)
    takes it flat: torchvision's 7x7 adaptive pool in front would only replicate the one pixel."""

    def __init__(self, cfg: Sequence = VGG11, div: int = 4, num_classes: int = 10,
                 hidden: int = 512) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                cout = int(v) // div
                layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout),
                           nn.ReLU(inplace=True)]
                cin = cout
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Linear(cin, hidden), nn.ReLU(True), nn.Linear(hidden, hidden), nn.ReLU(True),
            nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


# --- MobileNetV3-Small --------------------------------------------------------------------------

class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation: global average pool -> 1x1 conv -> ``act`` -> 1x1 conv ->
    ``gate`` -> ``scale * x`` (torchvision's ``SqueezeExcitation``)."""

    def __init__(self, c: int, squeeze: int, act: type = nn.ReLU,
                 gate: type = nn.Hardsigmoid) -> None:
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(c, squeeze, 1)
        self.act = act()
        self.fc2 = nn.Conv2d(squeeze, c, 1)
        self.gate = gate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.gate(self.fc2(self.act(self.fc1(self.avgpool(x)))))
        return scale * x


class InvertedResidualV3(nn.Module):
    """MobileNetV3 block: 1x1 expand (if wider), kxk depthwise, SE on the expanded tensor,
    1x1 project, residual when the shape is kept."""

    def __init__(self, cin: int, k: int, exp: int, cout: int, se: bool, act: type,
                 stride: int) -> None:
        super().__init__()
        eps = 0.001
        self.use_residual = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if exp != cin:
            layers.append(_cbr(cin, exp, 1, act=act, eps=eps))
        layers.append(_cbr(exp, exp, k, stride, groups=exp, act=act, eps=eps))
        if se:
            layers.append(SqueezeExcite(exp, make_divisible(exp // 4, 8)))
        layers.append(_cbr(exp, cout, 1, act=None, eps=eps))
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.use_residual else y


#: MobileNetV3-Small: (kernel, expanded, out, SE, activation, stride).
V3_SMALL = (
    (3, 16, 16, True, "RE", 2), (3, 72, 24, False, "RE", 2), (3, 88, 24, False, "RE", 1),
    (5, 96, 40, True, "HS", 2), (5, 240, 40, True, "HS", 1), (5, 240, 40, True, "HS", 1),
    (5, 120, 48, True, "HS", 1), (5, 144, 48, True, "HS", 1), (5, 288, 96, True, "HS", 2),
    (5, 576, 96, True, "HS", 1), (5, 576, 96, True, "HS", 1),
)


class MobileNetV3Small(nn.Module):
    """MobileNetV3-Small (torchvision's layout: HardSwish, HardSigmoid SE gates, SE multiply);
    channels scaled by ``width_mult``. ``hswish`` replaces every HardSwish (e.g. ``nn.ReLU``:
    the structure without the activation)."""

    def __init__(self, num_classes: int = 10, width_mult: float = 1.0,
                 hswish: type = nn.Hardswish) -> None:
        super().__init__()

        def w(c: int) -> int:
            return make_divisible(c * width_mult, 8)

        acts = {"RE": nn.ReLU, "HS": hswish}
        cin = w(16)
        layers: list[nn.Module] = [_cbr(3, cin, 3, 2, act=hswish, eps=0.001)]
        for k, exp, cout, se, act, s in V3_SMALL:
            layers.append(InvertedResidualV3(cin, k, w(exp), w(cout), se, acts[act], s))
            cin = w(cout)
        last = 6 * cin
        layers.append(_cbr(cin, last, 1, act=hswish, eps=0.001))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Linear(last, w(1024)), hswish(),
                                        nn.Linear(w(1024), num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


# --- EfficientNet-B0 ----------------------------------------------------------------------------

class MBConv(nn.Module):
    """EfficientNet's MBConv: 1x1 expand + SiLU (ratio > 1), kxk depthwise + SiLU, SE (SiLU,
    sigmoid gate, squeeze to a quarter of the block's input channels), 1x1 project, residual
    (stochastic depth is the identity in eval mode)."""

    def __init__(self, cin: int, cout: int, k: int, stride: int, ratio: int) -> None:
        super().__init__()
        eps = 0.001
        exp = cin * ratio
        self.use_residual = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if exp != cin:
            layers.append(_cbr(cin, exp, 1, act=nn.SiLU, eps=eps))
        layers.append(_cbr(exp, exp, k, stride, groups=exp, act=nn.SiLU, eps=eps))
        layers.append(SqueezeExcite(exp, max(1, cin // 4), act=nn.SiLU, gate=nn.Sigmoid))
        layers.append(_cbr(exp, cout, 1, act=None, eps=eps))
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return y + x if self.use_residual else y


#: EfficientNet-B0 stages: (expand ratio, kernel, stride, in, out, repeats).
B0 = ((1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 2), (6, 3, 2, 40, 80, 3),
      (6, 5, 1, 80, 112, 3), (6, 5, 2, 112, 192, 4), (6, 3, 1, 192, 320, 1))


class EfficientNetB0(nn.Module):
    """EfficientNet-B0's block stack (stem, the 16 MBConv blocks of B0, 1x1 head conv, pool,
    linear) with channels scaled by ``width_mult``."""

    def __init__(self, num_classes: int = 10, width_mult: float = 1.0) -> None:
        super().__init__()

        def w(c: int) -> int:
            return make_divisible(c * width_mult, 8)

        eps = 0.001
        layers: list[nn.Module] = [_cbr(3, w(32), 3, 2, act=nn.SiLU, eps=eps)]
        for ratio, k, s, cin, cout, n in B0:
            for i in range(n):
                layers.append(MBConv(w(cin) if i == 0 else w(cout), w(cout), k,
                                     s if i == 0 else 1, ratio))
        last = 4 * w(320)
        layers.append(_cbr(w(320), last, 1, act=nn.SiLU, eps=eps))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(last, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


# --- SqueezeNet 1.1 -----------------------------------------------------------------------------

class Fire(nn.Module):
    """Fire module: 1x1 squeeze + ReLU, then the concat of a 1x1 and a 3x3 expand (+ ReLU)."""

    def __init__(self, cin: int, squeeze: int, e1: int, e3: int) -> None:
        super().__init__()
        self.squeeze = nn.Conv2d(cin, squeeze, 1)
        self.squeeze_act = nn.ReLU(inplace=True)
        self.expand1x1 = nn.Conv2d(squeeze, e1, 1)
        self.expand1x1_act = nn.ReLU(inplace=True)
        self.expand3x3 = nn.Conv2d(squeeze, e3, 3, padding=1)
        self.expand3x3_act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.squeeze_act(self.squeeze(x))
        return torch.cat([self.expand1x1_act(self.expand1x1(x)),
                          self.expand3x3_act(self.expand3x3(x))], 1)


class SqueezeNet11(nn.Module):
    """SqueezeNet 1.1 (no BatchNorm; max pools 3x3/2 with ``ceil_mode``; a 1x1 conv classifier
    + ReLU + global average pool)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, 3, 2), nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, ceil_mode=True), Fire(64, 16, 64, 64), Fire(128, 16, 64, 64),
            nn.MaxPool2d(3, 2, ceil_mode=True), Fire(128, 32, 128, 128), Fire(256, 32, 128, 128),
            nn.MaxPool2d(3, 2, ceil_mode=True), Fire(256, 48, 192, 192),
            Fire(384, 48, 192, 192), Fire(384, 64, 256, 256), Fire(512, 64, 256, 256))
        self.classifier = nn.Sequential(nn.Conv2d(512, num_classes, 1), nn.ReLU(inplace=True),
                                        nn.AdaptiveAvgPool2d(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.classifier(self.features(x)), 1)


# --- ShuffleNetV2 -------------------------------------------------------------------------------

def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Reshape to (N, groups, C / groups, H, W), swap the two channel axes, flatten back."""
    batch, channels, height, width = x.size()
    x = x.view(batch, groups, channels // groups, height, width)
    x = torch.transpose(x, 1, 2).contiguous()
    return x.view(batch, channels, height, width)


class ShuffleUnit(nn.Module):
    """ShuffleNetV2 unit: stride 1 splits the channels in halves (``chunk``), transforms one,
    concatenates; stride 2 transforms the input in two branches and concatenates; then a channel
    shuffle of two groups."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        half = cout // 2
        if stride > 1:
            self.branch1 = nn.Sequential(_cbr(cin, cin, 3, stride, groups=cin, act=None),
                                         _cbr(cin, half, 1))
        else:
            self.branch1 = nn.Sequential()
        c2 = cin if stride > 1 else half
        self.branch2 = nn.Sequential(_cbr(c2, half, 1),
                                     _cbr(half, half, 3, stride, groups=half, act=None),
                                     _cbr(half, half, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return channel_shuffle(out, 2)


class ShuffleNetV2(nn.Module):
    """ShuffleNetV2 (x0.5 widths by default: 24, 48, 96, 192, 1024; 4 / 8 / 4 units)."""

    def __init__(self, num_classes: int = 10,
                 widths: Sequence[int] = (24, 48, 96, 192, 1024),
                 repeats: Sequence[int] = (4, 8, 4)) -> None:
        super().__init__()
        self.conv1 = _cbr(3, widths[0], 3, 2)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = widths[0]
        for i, (n, cout) in enumerate(zip(repeats, widths[1:4], strict=True)):
            units = [ShuffleUnit(cin, cout, 2)] + [ShuffleUnit(cout, cout, 1)
                                                    for _ in range(n - 1)]
            setattr(self, f"stage{i + 2}", nn.Sequential(*units))
            cin = cout
        self.conv5 = _cbr(cin, widths[-1], 1)
        self.fc = nn.Linear(widths[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.conv1(x))
        x = self.stage4(self.stage3(self.stage2(x)))
        x = self.conv5(x).mean([2, 3])
        return self.fc(x)


# --- GoogLeNet (Inception v1) -------------------------------------------------------------------

class Inception(nn.Module):
    """Inception v1 block: concat of 1x1; 1x1 -> 3x3; 1x1 -> 3x3 (torchvision's "5x5" branch);
    3x3 max pool stride 1 (``ceil_mode``) -> 1x1. Every conv is conv + BN + ReLU."""

    def __init__(self, cin: int, c1: int, r3: int, c3: int, r5: int, c5: int, pp: int) -> None:
        super().__init__()
        eps = 0.001
        self.branch1 = _cbr(cin, c1, 1, eps=eps)
        self.branch2 = nn.Sequential(_cbr(cin, r3, 1, eps=eps), _cbr(r3, c3, 3, eps=eps))
        self.branch3 = nn.Sequential(_cbr(cin, r5, 1, eps=eps), _cbr(r5, c5, 3, eps=eps))
        self.branch4 = nn.Sequential(nn.MaxPool2d(3, 1, 1, ceil_mode=True),
                                     _cbr(cin, pp, 1, eps=eps))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class GoogLeNetStem(nn.Module):
    """GoogLeNet's first stages (stem, inception 3a, 3b, pool, 4a), widths divided by ``div``,
    then global average pool and a linear classifier (auxiliary heads are training-only)."""

    def __init__(self, num_classes: int = 10, div: int = 4) -> None:
        super().__init__()
        eps = 0.001

        def d(*cs: int) -> list[int]:
            return [max(4, c // div) for c in cs]

        self.conv1 = _cbr(3, *d(64), 7, 2, eps=eps)
        self.maxpool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = _cbr(*d(64, 64), 1, eps=eps)
        self.conv3 = _cbr(*d(64, 192), 3, eps=eps)
        self.maxpool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.inception3a = Inception(*d(192, 64, 96, 128, 16, 32, 32))
        self.inception3b = Inception(*d(256, 128, 128, 192, 32, 96, 64))
        self.maxpool3 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.inception4a = Inception(*d(480, 192, 96, 208, 16, 48, 64))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(*d(512), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool1(self.conv1(x))
        x = self.maxpool2(self.conv3(self.conv2(x)))
        x = self.inception3b(self.inception3a(x))
        x = self.inception4a(self.maxpool3(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))


# --- DenseNet -----------------------------------------------------------------------------------

class DenseLayer(nn.Module):
    """Pre-activation bottleneck: BN -> ReLU -> 1x1 conv (bn_size * growth) -> BN -> ReLU ->
    3x3 conv (growth), on the concat of every earlier feature map of the block."""

    def __init__(self, cin: int, growth: int, bn_size: int) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(cin)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(cin, bn_size * growth, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(bn_size * growth)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(bn_size * growth, growth, 3, padding=1, bias=False)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = torch.cat(features, 1)
        return self.conv2(self.relu2(self.norm2(self.conv1(self.relu1(self.norm1(x))))))


class DenseBlock(nn.ModuleDict):
    def __init__(self, n: int, cin: int, growth: int, bn_size: int) -> None:
        super().__init__()
        for i in range(n):
            self.add_module(f"denselayer{i + 1}", DenseLayer(cin + i * growth, growth, bn_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features, 1)


class DenseNet(nn.Module):
    """DenseNet-BC (DenseNet-121's layout: 7x7 stem, 3x3 max pool, dense blocks joined by
    transitions BN -> ReLU -> 1x1 conv (half the channels) -> AvgPool2d(2), final BN + ReLU,
    global pool, linear), with fewer and thinner layers by default."""

    def __init__(self, num_classes: int = 10, growth: int = 12, blocks: Sequence[int] = (4, 4),
                 init: int = 24, bn_size: int = 4) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, init, 7, 2, 3, bias=False), nn.BatchNorm2d(init),
                                   nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)]
        c = init
        for i, n in enumerate(blocks):
            layers.append(DenseBlock(n, c, growth, bn_size))
            c += n * growth
            if i != len(blocks) - 1:
                layers += [nn.BatchNorm2d(c), nn.ReLU(inplace=True),
                           nn.Conv2d(c, c // 2, 1, bias=False), nn.AvgPool2d(2, 2)]
                c //= 2
        layers += [nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


# --- YOLOv8n ------------------------------------------------------------------------------------

def _conv(cin: int, cout: int, k: int = 1, s: int = 1, act: type = nn.SiLU) -> nn.Sequential:
    """Ultralytics' Conv: conv (no bias) + BN (eps 1e-3) + SiLU (or ``act``)."""
    return _cbr(cin, cout, k, s, act=act, eps=0.001)


class Bottleneck(nn.Module):
    def __init__(self, c: int, shortcut: bool, act: type = nn.SiLU) -> None:
        super().__init__()
        self.cv1 = _conv(c, c, 3, act=act)
        self.cv2 = _conv(c, c, 3, act=act)
        self.add = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C2f(nn.Module):
    """CSP bottleneck with two convs: 1x1 conv, ``chunk`` in halves, n bottlenecks chained on the
    second half, concat of every intermediate, 1x1 conv."""

    def __init__(self, cin: int, cout: int, n: int = 1, shortcut: bool = False,
                 act: type = nn.SiLU) -> None:
        super().__init__()
        self.c = cout // 2
        self.cv1 = _conv(cin, 2 * self.c, 1, act=act)
        self.cv2 = _conv((2 + n) * self.c, cout, 1, act=act)
        self.m = nn.ModuleList(Bottleneck(self.c, shortcut, act) for _ in range(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Ultralytics writes list(self.cv1(x).chunk(2, 1)), which torch.fx cannot trace (a Proxy
        # cannot be iterated); unpacking the two halves is the same computation and traces.
        a, b = self.cv1(x).chunk(2, 1)
        y = [a, b]
        for m in self.m:
            y.append(m(y[-1]))
        return self.cv2(torch.cat(y, 1))


class SPPF(nn.Module):
    """Spatial pyramid pooling, fast: 1x1 conv, three chained 5x5 stride-1 max pools, concat of
    the four, 1x1 conv."""

    def __init__(self, cin: int, cout: int, k: int = 5, act: type = nn.SiLU) -> None:
        super().__init__()
        c = cin // 2
        self.cv1 = _conv(cin, c, 1, act=act)
        self.cv2 = _conv(4 * c, cout, 1, act=act)
        self.m = nn.MaxPool2d(k, 1, k // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = [self.cv1(x)]
        for _ in range(3):
            y.append(self.m(y[-1]))
        return self.cv2(torch.cat(y, 1))


class YOLOv8n(nn.Module):
    """YOLOv8n (width 0.25, depth 0.33): backbone with C2f stages and SPPF, PAN neck with
    ``nn.Upsample`` (nearest, x2) and concats, decoupled heads per stride 8 / 16 / 32 returning
    ``cat(box regression (4 x 16 DFL bins), class scores)``; the DFL decode and the box
    arithmetic are post-processing and not part of the network here. ``act`` replaces SiLU
    (``nn.ReLU``: the ReLU variant some NPU deployments train)."""

    def __init__(self, num_classes: int = 80, act: type = nn.SiLU) -> None:
        super().__init__()
        a = act
        self.b0 = _conv(3, 16, 3, 2, a)
        self.b1 = _conv(16, 32, 3, 2, a)
        self.b2 = C2f(32, 32, 1, True, a)
        self.b3 = _conv(32, 64, 3, 2, a)
        self.b4 = C2f(64, 64, 2, True, a)
        self.b5 = _conv(64, 128, 3, 2, a)
        self.b6 = C2f(128, 128, 2, True, a)
        self.b7 = _conv(128, 256, 3, 2, a)
        self.b8 = C2f(256, 256, 1, True, a)
        self.b9 = SPPF(256, 256, 5, a)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.h12 = C2f(384, 128, act=a)
        self.h15 = C2f(192, 64, act=a)
        self.h16 = _conv(64, 64, 3, 2, a)
        self.h18 = C2f(192, 128, act=a)
        self.h19 = _conv(128, 128, 3, 2, a)
        self.h21 = C2f(384, 256, act=a)
        chs = (64, 128, 256)
        c2, c3 = max(16, chs[0] // 4, 64), max(chs[0], min(num_classes, 100))
        self.box = nn.ModuleList(nn.Sequential(_conv(c, c2, 3, act=a), _conv(c2, c2, 3, act=a),
                                               nn.Conv2d(c2, 64, 1)) for c in chs)
        self.cls = nn.ModuleList(nn.Sequential(_conv(c, c3, 3, act=a), _conv(c3, c3, 3, act=a),
                                               nn.Conv2d(c3, num_classes, 1)) for c in chs)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        p3 = self.b4(self.b3(self.b2(self.b1(self.b0(x)))))
        p4 = self.b6(self.b5(p3))
        p5 = self.b9(self.b8(self.b7(p4)))
        n4 = self.h12(torch.cat([self.up(p5), p4], 1))
        n3 = self.h15(torch.cat([self.up(n4), p3], 1))
        n4 = self.h18(torch.cat([self.h16(n3), n4], 1))
        n5 = self.h21(torch.cat([self.h19(n4), p5], 1))
        return tuple(torch.cat([b(f), c(f)], 1)
                     for f, b, c in zip((n3, n4, n5), self.box, self.cls, strict=True))


# --- U-Net --------------------------------------------------------------------------------------

class UNet(nn.Module):
    """U-Net: double 3x3 conv + BN + ReLU per level, 2x2 max pool down, ConvTranspose2d 2x2
    stride 2 up, concat with the skip, 1x1 conv to the class maps."""

    def __init__(self, num_classes: int = 2, base: int = 16, depth: int = 3) -> None:
        super().__init__()

        def double(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(_cbr(cin, cout, 3), _cbr(cout, cout, 3))

        chs = [base * 2 ** i for i in range(depth + 1)]
        self.inc = double(3, chs[0])
        self.pool = nn.MaxPool2d(2)
        self.down = nn.ModuleList(double(chs[i], chs[i + 1]) for i in range(depth))
        self.upconv = nn.ModuleList(nn.ConvTranspose2d(chs[i + 1], chs[i], 2, 2)
                                    for i in reversed(range(depth)))
        self.updouble = nn.ModuleList(double(2 * chs[i], chs[i]) for i in reversed(range(depth)))
        self.outc = nn.Conv2d(chs[0], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.inc(x)]
        for d in self.down:
            skips.append(d(self.pool(skips[-1])))
        x = skips.pop()
        for up, dbl in zip(self.upconv, self.updouble, strict=True):
            x = dbl(torch.cat([skips.pop(), up(x)], 1))
        return self.outc(x)


# =================================================================================================
# the table


@dataclass(frozen=True)
class Arch:
    """An architecture of the table: ``build()`` the float model (random weights, BN state still
    torch's default), its input ``channels``, default ``size`` (a multiple of ``multiple``;
    ``fixed``: the only size it takes) and input ``norm`` (``imagenet``-normalised or ``unit``
    0..1 images)."""

    name: str
    title: str
    build: Callable[[], nn.Module]
    size: int = 32
    channels: int = 3
    multiple: int = 1
    norm: str = "imagenet"
    fixed: bool = False
    zoo: str | None = None      # built by zynqnn.zoo.get(zoo, ...) instead of build()
    zoo_kwargs: dict = field(default_factory=dict)


def _zoo_arch(name: str, title: str, zoo_name: str, size: int, multiple: int = 1,
              norm: str = "imagenet", **kw) -> Arch:
    return Arch(name, title, lambda: None, size, multiple=multiple, norm=norm, zoo=zoo_name,
                zoo_kwargs=kw)


ARCHS: dict[str, Arch] = {a.name: a for a in (
    Arch("lenet5", "LeNet-5 (ReLU, max pool)", LeNet5, 32, channels=1, norm="unit", fixed=True),
    Arch("lenet5_tanh", "LeNet-5 classic (tanh, avg pool)", lambda: LeNet5(classic=True), 32,
         channels=1, norm="unit", fixed=True),
    Arch("vgg11_bn", "VGG-11-BN (width/4)", VGG, 32),
    _zoo_arch("resnet18", "ResNet-18 (width 32)", "resnet18", 32, width=32, num_classes=10),
    _zoo_arch("mobilenet_v2", "MobileNetV2 (x0.5)", "mobilenet_v2", 32, width_mult=0.5,
              num_classes=10),
    Arch("mobilenet_v3_small", "MobileNetV3-Small (x0.5)",
         lambda: MobileNetV3Small(width_mult=0.5), 32),
    Arch("mobilenet_v3_small_relu", "MobileNetV3-Small, HardSwish -> ReLU",
         lambda: MobileNetV3Small(width_mult=0.5, hswish=nn.ReLU), 32),
    Arch("efficientnet_b0", "EfficientNet-B0 blocks (x0.5)",
         lambda: EfficientNetB0(width_mult=0.5), 32),
    Arch("squeezenet1_1", "SqueezeNet 1.1", SqueezeNet11, 64),
    Arch("shufflenet_v2", "ShuffleNetV2 x0.5", ShuffleNetV2, 32),
    Arch("googlenet", "GoogLeNet to 4a (width/4)", GoogLeNetStem, 32),
    Arch("densenet", "DenseNet-BC (k=12, 4+4)", DenseNet, 32),
    _zoo_arch("yolov3_tiny", "YOLOv3-tiny", "yolov3_tiny", 64, multiple=32, norm="unit"),
    Arch("yolov8n", "YOLOv8n", YOLOv8n, 64, multiple=32, norm="unit"),
    Arch("yolov8n_relu", "YOLOv8n, SiLU -> ReLU", lambda: YOLOv8n(act=nn.ReLU), 64, multiple=32,
         norm="unit"),
    Arch("unet", "U-Net (base 16, depth 3)", UNet, 64, multiple=8, norm="unit"),
)}

#: Flow names, in table order, with what the column means.
FLOWS: dict[str, str] = {
    "fbgemm": "torch.ao FX, fbgemm engine (per-channel weights, 7-bit activations)",
    "qnnpack": "torch.ao FX, qnnpack engine (per-tensor weights)",
    "ort-qdq": "ONNX Runtime QDQ, per-channel, reduce_range",
    "ort-qdq-pt": "ONNX Runtime QDQ, per-tensor, full-range weights",
    "ort-qop": "ONNX Runtime QOperator, per-channel, reduce_range",
}


def arch_size(arch: Arch, size: int | None) -> int:
    """The input size of ``arch``: its default, or ``size`` rounded up to its multiple (LeNet-5
    is always 32x32: its classifier takes a 16 x 5 x 5 map)."""
    if size is None or arch.fixed:
        return arch.size
    m = arch.multiple
    return max(m, -(-int(size) // m) * m)


def inputs(arch: Arch, size: int, batch: int, seed: int) -> torch.Tensor:
    """Smooth random images for ``arch`` (grey = the mean of the colour channels)."""
    from . import IMAGENET_MEAN, IMAGENET_STD, _smooth_images

    img = _smooth_images(batch, size, torch.Generator().manual_seed(seed))
    if arch.channels == 1:
        img = img.mean(1, keepdim=True)
    if arch.norm == "imagenet":
        img = (img - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(
            IMAGENET_STD).view(1, 3, 1, 1)
    return img.contiguous()


def build_model(arch: Arch, seed: int = 0, size: int | None = None) -> nn.Module:
    """``arch`` in eval mode with weights drawn from ``seed``; every BatchNorm with random affine
    parameters (gamma 0.5..1.5, beta ~ N(0, 0.1)) and running statistics measured on random
    images (:func:`zynqnn.zoo.calibrate_bn`)."""
    from . import calibrate_bn, get

    if arch.zoo is not None:
        return get(arch.zoo, seed, **arch.zoo_kwargs)
    size = arch_size(arch, size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = arch.build()
    gen = torch.Generator().manual_seed(seed + 1)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in bns:
        m.weight.data = torch.rand(m.num_features, generator=gen) + 0.5
        m.bias.data = 0.1 * torch.randn(m.num_features, generator=gen)
    if bns:
        calibrate_bn(model, [inputs(arch, size, 4, seed + 100 + i) for i in range(2)])
    return model.eval()


@dataclass
class Cell:
    """One architecture x flow: ``status`` is ``exact``, ``differs``, ``import`` (refused at
    import), ``compile`` (refused at compile), ``framework`` (the framework's quantizer or
    exporter failed) or ``crash`` (an unexpected exception: a bug); ``text`` the table's entry,
    ``detail`` the full message, ``seconds`` the cell's time."""

    arch: str
    flow: str
    status: str
    text: str
    detail: str = ""
    seconds: float = 0.0


def _short(msg: str, n: int = 70) -> str:
    msg = " ".join(str(msg).split())
    return msg if len(msg) <= n else msg[: n - 3] + "..."


#: ``<kind> node 'name' (op or source)[ in file]: why`` (the front ends' refusals)
_NODE = re.compile(r"^.*?\bnode '[^']*'(?: \(([^)]*)\))?(?: in \S+)?: (.*)$")


def _reason(exc: BaseException) -> str:
    """The short reason of a refusal: the op and why, without the node's name and the file."""
    msg = str(exc).strip()
    msg = msg.splitlines()[0] if msg else type(exc).__name__
    m = _NODE.match(msg)
    if m:
        what, why = m.group(1) or "", m.group(2)
        if what.startswith("call_module") and "module" in why:
            msg = why                            # "module Tanh is not supported"
        elif what:
            what = re.sub(r"^(call_function|call_method) ", "", what)
            msg = f"{what}: {why}"
        else:
            msg = why
    return _short(msg)


class _Stage:
    """Which stage a cell is in (for classifying an exception)."""

    def __init__(self) -> None:
        self.name = "setup"


def _torch_flow(model: nn.Module, calib: torch.Tensor, engine: str, stage: _Stage):
    import zynqnn

    from .quant import cpu_independent_qconfig_mapping, quantize_fx, quiet_torch_ao

    x1 = calib[:1]
    stage.name = "quantize"
    with quiet_torch_ao():
        q = quantize_fx(model, x1, engine=engine, calibration=calib,
                        qconfig_mapping=cpu_independent_qconfig_mapping(engine))
        with torch.no_grad():
            q(x1)   # the converted model must run in torch itself (else a framework failure)
        stage.name = "import"
        g = zynqnn.from_torch(q, x1, engine=engine)

    def reference(x: np.ndarray) -> list[np.ndarray]:
        torch.backends.quantized.engine = engine
        with torch.no_grad():
            y = q(torch.as_tensor(x))
        return [t.numpy() for t in (y if isinstance(y, (tuple, list)) else [y])]

    return g, reference


def _ort_flow(fpath: Path, calib: torch.Tensor, flow: str, workdir: Path, stage: _Stage):
    import zynqnn

    from .ort import ort_quantize, ort_session

    fmt, per_channel, reduce_range = {"ort-qdq": ("qdq", True, True),
                                      "ort-qdq-pt": ("qdq", False, False),
                                      "ort-qop": ("qop", True, True)}[flow]
    stage.name = "quantize"
    # the export has a batch of one: calibrate and run sample by sample
    path = ort_quantize(fpath, [c[None] for c in calib.numpy()], workdir / f"model-{flow}.onnx",
                        fmt=fmt, per_channel=per_channel, reduce_range=reduce_range)
    sess = ort_session(path)
    stage.name = "import"
    g = zynqnn.from_onnx(path)

    def reference(x: np.ndarray) -> list[np.ndarray]:
        runs = [sess.run(None, {"x": np.ascontiguousarray(s[None], dtype=np.float32)}) for s in x]
        return [np.concatenate(ys) for ys in zip(*runs, strict=True)]

    return g, reference


def _as_list(y) -> list:
    return list(y) if isinstance(y, (tuple, list)) else [y]


def _check(model, g, reference, x: np.ndarray) -> Cell:
    """Golden run of the compiled ``model`` against ``graph.run`` and the framework."""
    got = _as_list(model.run(x))
    want = _as_list(g.run(x))
    refs = _as_list(reference(x))
    if not len(got) == len(want) == len(refs):
        raise AssertionError(f"{len(got)} outputs, graph.run {len(want)}, framework {len(refs)}")
    n = bad_ref = bad_graph = 0
    for a, b, r in zip(got, want, refs, strict=True):
        if not a.shape == b.shape == r.shape:
            raise AssertionError(f"output shapes {a.shape}, graph.run {b.shape}, "
                                 f"framework {r.shape}")
        n += a.size
        bad_graph += int(np.count_nonzero(a != b))
        bad_ref += int(np.count_nonzero(a != r))
    codes = g.quantize_input(x[:1])
    bad_int = sum(int(np.count_nonzero(a != b)) for a, b in
                  zip(_as_list(model.run_int(codes)), _as_list(g.run_int(codes)), strict=True))
    model.program.perf()   # the bank-flag protocol holds (no deadlock, no race)
    if bad_ref == bad_graph == bad_int == 0:
        return Cell("", "", "exact", "exact", f"{n} values equal")
    extra = []
    if bad_graph:
        extra.append(f"graph.run: {bad_graph}")
    if bad_int:
        extra.append(f"run_int: {bad_int}")
    text = f"differs ({bad_ref} of {n})" + (f" [{', '.join(extra)}]" if extra else "")
    return Cell("", "", "differs", text,
                f"golden vs framework {bad_ref} of {n}, vs graph.run {bad_graph}, "
                f"integer interface {bad_int}")


def run_cell(arch: Arch, flow: str, model: nn.Module, calib: torch.Tensor, x: np.ndarray,
             workdir: Path, onnx_path: Callable[[], Path] | None = None,
             config: str = "pynq_z2") -> Cell:
    """One cell: quantize ``model`` (calibrated on ``calib``) with ``flow``, import, compile for
    ``config``, run ``x`` on the golden backend and compare. Never raises (but for
    KeyboardInterrupt): a failure is the cell's result."""
    import zynqnn
    from zynqnn.compiler.layers import CompileError, CompileErrors
    from zynqnn.frontend.common import FrontendError
    from zynqnn.ir import IRError

    t0 = time.time()
    stage = _Stage()
    try:
        if flow in ("fbgemm", "qnnpack"):
            g, reference = _torch_flow(model, calib, flow, stage)
        elif flow in FLOWS:
            stage.name = "export"
            fpath = onnx_path() if onnx_path is not None else _export(model, calib, workdir)
            g, reference = _ort_flow(fpath, calib, flow, workdir, stage)
        else:
            raise ValueError(f"unknown flow {flow!r}; use one of {', '.join(FLOWS)}")
        stage.name = "compile"
        compiled = zynqnn.compile(g, config)
        stage.name = "run"
        cell = _check(compiled, g, reference, x)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001 - every failure is the cell's result
        cell = _failure(stage.name, exc, (FrontendError, IRError), CompileError, CompileErrors)
    cell.arch, cell.flow, cell.seconds = arch.name, flow, time.time() - t0
    return cell


def _failure(stage: str, exc: BaseException, refusals: tuple, compile_error: type,
             compile_errors: type) -> Cell:
    full = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    if stage == "import" and isinstance(exc, refusals + (compile_error,)):
        return Cell("", "", "import", f"refused at import: {_reason(exc)}", full)
    if stage == "compile" and isinstance(exc, compile_error):
        errs = exc.errors if isinstance(exc, compile_errors) else [exc]
        return Cell("", "", "compile",
                    f"refused at compile: {len(errs)} node{'s' if len(errs) != 1 else ''}: "
                    f"{_reason(errs[0])}", full)
    if stage in ("export", "quantize"):
        return Cell("", "", "framework",
                    f"{stage} failed: {type(exc).__name__}: {_short(str(exc), 50)}", full)
    tb = traceback.extract_tb(exc.__traceback__)
    where = f" ({Path(tb[-1].filename).name}:{tb[-1].lineno})" if tb else ""
    text = f"crash at {stage}: {type(exc).__name__}: {_short(str(exc), 60)}"
    return Cell("", "", "crash", text, full + where)


def _export(model: nn.Module, calib: torch.Tensor, workdir: Path) -> Path:
    from .ort import export_onnx

    return export_onnx(model, calib[:1], workdir / "model.onnx")


@dataclass
class Table:
    """Cells of architectures x flows, in run order."""

    archs: list[str]
    flows: list[str]
    size: int | None
    cells: dict[tuple[str, str], Cell] = field(default_factory=dict)
    build_seconds: dict[str, float] = field(default_factory=dict)
    defs: dict[str, Arch] = field(default_factory=dict)   # architectures not in ARCHS

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for c in self.cells.values():
            out[c.status] = out.get(c.status, 0) + 1
        return out

    def summary(self) -> str:
        c = self.counts()
        n = len(self.cells)
        parts = [f"exact: {c.get('exact', 0)} of {n} cells"]
        for key, what in (("differs", "differ"), ("import", "refused at import"),
                          ("compile", "refused at compile"), ("framework", "framework failed"),
                          ("crash", "crashed")):
            if c.get(key):
                parts.append(f"{what}: {c[key]}")
        return "; ".join(parts)

    def rows(self) -> list[list[str]]:
        rows = []
        for a in self.archs:
            arch = self.defs.get(a) or ARCHS[a]
            row = [f"{arch.title} {arch_size(arch, self.size)}x{arch_size(arch, self.size)}"]
            for f in self.flows:
                c = self.cells.get((a, f))
                row.append("-" if c is None else f"{c.text} ({c.seconds:.0f} s)")
            rows.append(row)
        return rows

    def text(self) -> str:
        """Plain-text table: one block per architecture (cells are too long for a grid)."""
        lines = []
        w = max(len(f) for f in self.flows)
        for row in self.rows():
            lines.append(row[0])
            lines += [f"  {f:<{w}}  {cell}" for f, cell in zip(self.flows, row[1:], strict=True)]
        lines.append(self.summary())
        return "\n".join(lines)

    def markdown(self) -> str:
        head = ["architecture (input)"] + [f"`{f}`" for f in self.flows]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for row in self.rows():
            lines.append("| " + " | ".join(c.replace("|", "/") for c in row) + " |")
        lines += ["", self.summary() + "."]
        return "\n".join(lines)

    def problems(self) -> list[Cell]:
        return [c for c in self.cells.values() if c.status in ("crash", "framework")]


def build_table(names: Iterable[str | Arch] | None = None, flows: Iterable[str] | None = None,
                size: int | None = None, *, seed: int = 0, calib_batches: int = 4,
                samples: int = 1, config: str = "pynq_z2",
                on_cell: Callable[[Cell], None] | None = None) -> Table:
    """Run every architecture of ``names`` (names in :data:`ARCHS` or :class:`Arch` objects;
    default: all of :data:`ARCHS`) through every flow of
    ``flows`` (default: all of :data:`FLOWS`); calibrated on ``calib_batches`` random images,
    checked on ``samples`` others. ``on_cell`` is called after each cell (progress output)."""
    archs = {}
    for n in (list(ARCHS) if names is None else list(names)):
        if isinstance(n, Arch):
            archs[n.name] = n
        elif n in ARCHS:
            archs[n] = ARCHS[n]
        else:
            raise KeyError(f"unknown architecture {n!r}; known: {', '.join(ARCHS)}")
    names = list(archs)
    flows = list(FLOWS) if flows is None else list(flows)
    for f in flows:
        if f not in FLOWS:
            raise KeyError(f"unknown flow {f!r}; known: {', '.join(FLOWS)}")
    table = Table(names, flows, size, defs=archs)
    engine = torch.backends.quantized.engine
    try:
        for name in names:
            arch = archs[name]
            s = arch_size(arch, size)
            t0 = time.time()
            try:
                model = build_model(arch, seed, s)
                calib = inputs(arch, s, calib_batches, seed + 1000)
                x = inputs(arch, s, samples, seed + 2000).numpy()
            except Exception as exc:  # noqa: BLE001
                for f in flows:
                    cell = Cell(name, f, "crash", f"crash at build: {type(exc).__name__}: "
                                f"{_short(str(exc), 60)}", repr(exc))
                    table.cells[(name, f)] = cell
                    if on_cell:
                        on_cell(cell)
                continue
            table.build_seconds[name] = time.time() - t0
            with tempfile.TemporaryDirectory(prefix=f"zynqnn-coverage-{name}-") as d:
                wd = Path(d)
                exported: list[Path] = []

                def onnx_path(model=model, calib=calib, wd=wd, exported=exported) -> Path:
                    if not exported:
                        exported.append(_export(model, calib, wd))
                    return exported[0]

                for f in flows:
                    cell = run_cell(arch, f, model, calib, x, wd, onnx_path, config)
                    table.cells[(name, f)] = cell
                    if on_cell:
                        on_cell(cell)
    finally:
        torch.backends.quantized.engine = engine
    return table

