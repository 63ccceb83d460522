"""Model definitions: shapes, sizes, seeding, and the architecture details users rely on."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from zynqnn import zoo

# (name, builder kwargs, small test size, expected output shapes for batch 2)
SMALL = [
    ("resnet18", {}, 32, [(2, 1000)]),
    ("resnet18", {"num_classes": 30, "width": 16}, 64, [(2, 30)]),
    ("mobilenet_v2", {}, 32, [(2, 1000)]),
    ("mobilenet_v2", {"num_classes": 10, "width_mult": 0.5}, 32, [(2, 10)]),
    ("yolov3_tiny", {}, 64, [(2, 75, 2, 2), (2, 75, 4, 4)]),
    (
        "yolov3_tiny",
        {"num_classes": 80, "negative_slope": 0.125},
        96,
        [(2, 255, 3, 3), (2, 255, 6, 6)],
    ),
    ("digits_cnn", {}, None, [(2, 10)]),
]


def _outputs(y):
    return list(y) if isinstance(y, tuple) else [y]


def test_registry():
    assert zoo.NAMES == ("resnet18", "mobilenet_v2", "yolov3_tiny", "digits_cnn")
    with pytest.raises(KeyError, match="unknown zoo model"):
        zoo.get("vgg16")
    with pytest.raises(ValueError, match="pretrained"):
        zoo.get("resnet18", pretrained=True)
    assert [zoo.default_size(n) for n in zoo.NAMES] == [224, 224, 416, 8]


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "yolov3_tiny", "digits_cnn"])
def test_example_input(name):
    x = zoo.example_input(name, batch=2)
    size = zoo.default_size(name)
    channels = 1 if name == "digits_cnn" else 3
    assert x.shape == (2, channels, size, size) and x.dtype == torch.float32
    assert torch.equal(x, zoo.example_input(name, batch=2))
    assert not torch.equal(x, zoo.example_input(name, batch=2, seed=1))
    if name in ("resnet18", "mobilenet_v2"):  # ImageNet-normalised
        assert -2.2 < float(x.min()) < 0 < float(x.max()) < 2.7
    else:
        assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    if name != "digits_cnn":
        assert zoo.example_input(name, size=64).shape == (1, 3, 64, 64)


def test_example_input_rejects_bad_sizes():
    with pytest.raises(ValueError):
        zoo.example_input("yolov3_tiny", size=100)
    with pytest.raises(ValueError):
        zoo.example_input("digits_cnn", size=16)


@pytest.mark.parametrize(("name", "kwargs", "size", "shapes"), SMALL)
def test_output_shapes(name, kwargs, size, shapes):
    model = zoo.get(name, **kwargs)
    assert not model.training
    with torch.no_grad():
        y = _outputs(model(zoo.example_input(name, size, batch=2)))
    assert [tuple(t.shape) for t in y] == shapes
    assert all(torch.isfinite(t).all() for t in y)


def _conv_linear_macs(model: nn.Module, x: torch.Tensor) -> int:
    macs = 0

    def hook(mod, inputs, out):
        nonlocal macs
        if isinstance(mod, nn.Conv2d):
            k = mod.kernel_size[0] * mod.kernel_size[1]
            macs += out.numel() * mod.in_channels // mod.groups * k
        else:
            macs += out.numel() * mod.in_features

    handles = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if isinstance(m, (nn.Conv2d, nn.Linear))
    ]
    with torch.no_grad():
        out = model(x)
    for h in handles:
        h.remove()
    return macs, out


@pytest.mark.parametrize(
    ("name", "params", "gmacs", "shapes"),
    [
        ("resnet18", 11_689_512, 1.814, [(1, 1000)]),
        ("mobilenet_v2", 3_504_872, 0.301, [(1, 1000)]),
        ("yolov3_tiny", 8_713_766, 2.73, [(1, 75, 13, 13), (1, 75, 26, 26)]),
    ],
)
def test_full_size_on_meta(name, params, gmacs, shapes):
    """Parameter count, MACs and output shapes at the design input size (no real compute)."""
    model = zoo.get(name, realistic_bn=False).to("meta")
    assert sum(p.numel() for p in model.parameters()) == params
    size = zoo.default_size(name)
    macs, out = _conv_linear_macs(model, torch.empty(1, 3, size, size, device="meta"))
    assert macs / 1e9 == pytest.approx(gmacs, rel=0.01)
    assert [tuple(t.shape) for t in _outputs(out)] == shapes


@pytest.mark.parametrize("name", zoo.NAMES)
def test_seeded_weights(name):
    a, b, c = zoo.get(name), zoo.get(name), zoo.get(name, seed=1)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa if sa[k].is_floating_point())
    # building a model does not disturb the caller's RNG stream
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    zoo.get(name)
    assert torch.equal(torch.rand(3), expected)


def test_realistic_batchnorm():
    model = zoo.get("resnet18", width=16)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == 20  # stem + 16 in the blocks + 3 projections
    for bn in bns:
        assert not torch.allclose(bn.running_var, torch.ones_like(bn.running_var))
        assert not torch.allclose(bn.weight, torch.ones_like(bn.weight))
        assert bn.momentum == 0.1  # restored after calibration
    plain = zoo.get("resnet18", width=16, realistic_bn=False)
    assert torch.equal(plain.bn1.running_var, torch.ones(16))


def test_resnet18_structure():
    m = zoo.resnet18(width=64)
    assert (m.conv1.kernel_size, m.conv1.stride, m.conv1.padding) == ((7, 7), (2, 2), (3, 3))
    assert (m.maxpool.kernel_size, m.maxpool.stride, m.maxpool.padding) == (3, 2, 1)
    assert [m.layer1[0].downsample, m.layer1[1].downsample] == [None, None]
    for i, width in zip((2, 3, 4), (128, 256, 512), strict=True):
        first = getattr(m, f"layer{i}")[0]
        assert first.conv1.stride == (2, 2) and first.conv2.out_channels == width
        conv, bn = first.downsample
        assert (
            conv.kernel_size == (1, 1) and conv.stride == (2, 2) and isinstance(bn, nn.BatchNorm2d)
        )
    assert isinstance(m.avgpool, nn.AdaptiveAvgPool2d) and m.fc.in_features == 512


def test_mobilenet_v2_structure():
    from zynqnn.zoo.mobilenet import InvertedResidual

    m = zoo.mobilenet_v2()
    blocks = [b for b in m.features if isinstance(b, InvertedResidual)]
    assert len(blocks) == 17
    assert sum(b.use_residual for b in blocks) == 10
    assert blocks[0].expand is None  # t = 1
    for b in blocks:
        dw = b.depthwise[0]
        assert dw.groups == dw.in_channels == dw.out_channels and dw.kernel_size == (3, 3)
        assert isinstance(b.depthwise[2], nn.ReLU6) and len(b.project) == 2  # linear bottleneck
    assert m.features[-1][0].out_channels == 1280 and m.classifier.in_features == 1280
    assert zoo.mobilenet_v2(width_mult=0.5).last_channel == 1280
    assert zoo.mobilenet_v2(width_mult=1.4).last_channel == 1792


def test_yolov3_tiny_structure():
    m = zoo.yolov3_tiny(negative_slope=0.125)
    slopes = {a.negative_slope for a in m.modules() if isinstance(a, nn.LeakyReLU)}
    assert slopes == {0.125}
    assert len([a for a in m.modules() if isinstance(a, nn.LeakyReLU)]) == 11
    assert m.pad6.padding == (0, 1, 0, 1)
    assert (m.pool6.kernel_size, m.pool6.stride) == (2, 1)
    assert m.conv8.conv.kernel_size == (1, 1) and m.conv8.conv.in_channels == 1024
    assert m.conv11.conv.in_channels == 384
    for head in (m.head32, m.head16):
        assert head.kernel_size == (1, 1) and head.bias is not None and head.out_channels == 75
    # every conv but the two heads is bias-free conv + BN + LeakyReLU
    convs = [c for c in m.modules() if isinstance(c, nn.Conv2d)]
    assert len(convs) == 13 and sum(c.bias is None for c in convs) == 11


@pytest.mark.parametrize("name", zoo.NAMES)
def test_fx_traceable(name):
    gm = torch.fx.symbolic_trace(zoo.get(name, realistic_bn=False))
    assert isinstance(gm, torch.fx.GraphModule)
