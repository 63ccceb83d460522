"""YOLOv3-tiny (VOC layout), written for torch.ao FX graph mode quantization.

Layout (input H x W, both multiples of 32; channels for the default 20 classes)::

    conv3x3 3->16    maxpool 2/2     (every conv below is conv + BN + LeakyReLU
    conv3x3 16->32   maxpool 2/2      unless marked "head")
    conv3x3 32->64   maxpool 2/2
    conv3x3 64->128  maxpool 2/2
    conv3x3 128->256                  <- route: the 256-channel stride-16 feature
                     maxpool 2/2
    conv3x3 256->512 zero-pad (0,1,0,1) + maxpool 2x2 stride 1
    conv3x3 512->1024
    conv1x1 1024->256                 <- trunk
    coarse head: conv3x3 256->512, head conv1x1 512->75 (bias, no activation)   H/32 x W/32
    branch: conv1x1 256->128, nearest upsample x2, cat with the route (384 channels)
    fine head: conv3x3 384->256, head conv1x1 256->75 (bias, no activation)     H/16 x W/16

``forward`` returns ``(coarse, fine)``, darknet's order: at 416x416 the shapes are
``(N, 75, 13, 13)`` and ``(N, 75, 26, 26)``.

The x2 upsample calls ``F.interpolate(scale_factor=2, mode="nearest")``: torch.ao's native backend
config lists the functional as a quantized op sharing its input's qparams, while an
``nn.Upsample`` module would be run in float between a dequantize and a requantize. The
``nn.ZeroPad2d`` has no native backend entry at all; :func:`zynqnn.zoo.quant.quantize_fx` adds one
(see :func:`zynqnn.zoo.quant.backend_config`) so that it too stays in the integer domain.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ConvBNLeaky", "Upsample2x", "YOLOv3Tiny", "yolov3_tiny"]


class ConvBNLeaky(nn.Module):
    """Conv (no bias) + BatchNorm + LeakyReLU, 'same' padding."""

    def __init__(self, cin: int, cout: int, kernel: int, negative_slope: float) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.act = nn.LeakyReLU(negative_slope)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class Upsample2x(nn.Module):
    """Nearest-neighbour x2 upsample through ``F.interpolate`` (FX traces into the functional)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=2, mode="nearest")


class YOLOv3Tiny(nn.Module):
    """YOLOv3-tiny with ``3 * (5 + num_classes)`` output channels per head."""

    def __init__(self, num_classes: int = 20, negative_slope: float = 0.1) -> None:
        super().__init__()
        out = 3 * (5 + num_classes)
        s = negative_slope
        self.conv1 = ConvBNLeaky(3, 16, 3, s)
        self.pool1 = nn.MaxPool2d(2, 2)
        self.conv2 = ConvBNLeaky(16, 32, 3, s)
        self.pool2 = nn.MaxPool2d(2, 2)
        self.conv3 = ConvBNLeaky(32, 64, 3, s)
        self.pool3 = nn.MaxPool2d(2, 2)
        self.conv4 = ConvBNLeaky(64, 128, 3, s)
        self.pool4 = nn.MaxPool2d(2, 2)
        self.conv5 = ConvBNLeaky(128, 256, 3, s)
        self.pool5 = nn.MaxPool2d(2, 2)
        self.conv6 = ConvBNLeaky(256, 512, 3, s)
        self.pad6 = nn.ZeroPad2d((0, 1, 0, 1))
        self.pool6 = nn.MaxPool2d(2, 1)
        self.conv7 = ConvBNLeaky(512, 1024, 3, s)
        self.conv8 = ConvBNLeaky(1024, 256, 1, s)
        # coarse (stride 32) head
        self.conv9 = ConvBNLeaky(256, 512, 3, s)
        self.head32 = nn.Conv2d(512, out, 1, bias=True)
        # branch to the fine (stride 16) head
        self.conv10 = ConvBNLeaky(256, 128, 1, s)
        self.upsample = Upsample2x()
        self.conv11 = ConvBNLeaky(384, 256, 3, s)
        self.head16 = nn.Conv2d(256, out, 1, bias=True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.conv1(x))
        x = self.pool2(self.conv2(x))
        x = self.pool3(self.conv3(x))
        x = self.pool4(self.conv4(x))
        route = self.conv5(x)
        x = self.pool5(route)
        x = self.pool6(self.pad6(self.conv6(x)))
        trunk = self.conv8(self.conv7(x))
        coarse = self.head32(self.conv9(trunk))
        y = self.upsample(self.conv10(trunk))
        y = torch.cat([y, route], 1)
        fine = self.head16(self.conv11(y))
        return coarse, fine


def yolov3_tiny(num_classes: int = 20, negative_slope: float = 0.1) -> YOLOv3Tiny:
    """VOC YOLOv3-tiny; ``negative_slope=0.125`` gives the shift-friendly LeakyReLU."""
    return YOLOv3Tiny(num_classes=num_classes, negative_slope=negative_slope)
