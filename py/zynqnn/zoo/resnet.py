"""ResNet-18 (BasicBlock variant), written for torch.ao FX graph mode quantization.

Every Conv2d is followed directly by its BatchNorm2d (so ``prepare_fx`` folds them), the residual
join is a plain ``+`` followed by an ``nn.ReLU`` module (FX fuses the pair into a quantized
``add_relu``) and the head is ``AdaptiveAvgPool2d(1)`` -> ``torch.flatten`` -> ``nn.Linear``.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["BasicBlock", "ResNet18", "resnet18"]


def _conv_bn(cin: int, cout: int, kernel: int, stride: int) -> tuple[nn.Conv2d, nn.BatchNorm2d]:
    conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False)
    return conv, nn.BatchNorm2d(cout)


class BasicBlock(nn.Module):
    """Two 3x3 conv + BN, identity or 1x1-projection shortcut, add, ReLU."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1, self.bn1 = _conv_bn(cin, cout, 3, stride)
        self.relu1 = nn.ReLU()
        self.conv2, self.bn2 = _conv_bn(cout, cout, 3, 1)
        self.downsample: nn.Sequential | None = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(*_conv_bn(cin, cout, 1, stride))
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        y = self.relu1(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.relu2(y + shortcut)


class ResNet18(nn.Module):
    """ResNet-18: 7x7/2 stem, 3x3/2 max-pool, 4 stages x 2 BasicBlocks, global pool, FC."""

    def __init__(self, num_classes: int = 1000, width: int = 64) -> None:
        super().__init__()
        if width < 1:
            raise ValueError(f"width must be positive, got {width}")
        widths = [width, 2 * width, 4 * width, 8 * width]
        self.conv1, self.bn1 = _conv_bn(3, width, 7, 2)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        cin = width
        for i, cout in enumerate(widths):
            stride = 1 if i == 0 else 2
            stage = nn.Sequential(BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1))
            setattr(self, f"layer{i + 1}", stage)
            cin = cout
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        x = self.layer4(x)
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


def resnet18(num_classes: int = 1000, width: int = 64) -> ResNet18:
    """ResNet-18 with stage widths ``width * (1, 2, 4, 8)`` (64 is the standard network)."""
    return ResNet18(num_classes=num_classes, width=width)
