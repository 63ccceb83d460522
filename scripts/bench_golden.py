"""Benchmark: golden-model forward pass of an int8 ResNet-18 at 224x224 vs PyTorch's own.

Builds ResNet-18 in torch (random weights and batch-norm statistics), quantizes it with torch.ao
FX (``prepare_fx`` / ``convert_fx``, fbgemm qconfig, engine pinned to fbgemm), then runs the
converted graph twice on the same input:

* PyTorch's quantized CPU inference (``torch.ops.quantized`` kernels);
* the golden model: the int weights, scales and zero points are extracted from the converted
  modules and every node is evaluated with ``zynqnn.numerics`` ops (numpy).

Prints both times, their ratio, and whether every quantized intermediate tensor and the final
output codes are identical (``array_equal`` of ``int_repr``). Exit status 1 on any mismatch.

    python scripts/bench_golden.py [--runs 5] [--hw]

``--hw`` additionally runs the golden model with the integer-only hardware form of every
requantization (slower) and checks it gives the same codes.
"""

from __future__ import annotations

import argparse
import operator
import statistics
import sys
import time
import warnings

import numpy as np
import torch
import torch.nn as nn

from zynqnn.numerics import make_requant, ops, quant

warnings.filterwarnings("ignore")


# ----------------------------------------------------------------------------------- the model


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu2 = nn.ReLU()
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                            nn.BatchNorm2d(cout))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + identity)


class ResNet18(nn.Module):
    def __init__(self, num_classes=1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        layers, cin = [], 64
        for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers.append(nn.Sequential(BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)))
            cin = cout
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def smooth_images(n, seed):
    """Smooth synthetic 224x224 RGB images (low-frequency noise, ImageNet-like normalisation)."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 14, 14, generator=g)
    img = nn.functional.interpolate(low, size=(224, 224), mode="bicubic", align_corners=False)
    return ((img.clamp(0, 1) - 0.45) / 0.225).float()


def build_quantized(seed=0):
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    torch.manual_seed(seed)
    model = ResNet18().eval()
    for m in model.modules():  # random but sane batch-norm statistics
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.0)
            m.bias.data.uniform_(-0.1, 0.1)
    example = smooth_images(1, seed)
    prepared = prepare_fx(model, get_default_qconfig_mapping("fbgemm"), (example,))
    with torch.no_grad():
        prepared(smooth_images(8, seed + 1))
    return convert_fx(prepared)


# ----------------------------------------------------------------------------------- golden model


class Q:
    """A quantized activation: codes (NCHW numpy int64), scale, zero point."""

    __slots__ = ("codes", "scale", "zp")

    def __init__(self, codes, scale, zp):
        self.codes, self.scale, self.zp = codes, float(scale), int(zp)


class Golden:
    """Evaluates a converted torch.ao FX graph with zynqnn.numerics ops (no torch kernels)."""

    def __init__(self, gm, hw=False):
        self.gm = gm
        self.hw = hw
        self.mods = dict(gm.named_modules())
        self.layers = {}
        for name, m in self.mods.items():
            kind = type(m).__name__
            if kind in ("ConvReLU2d", "Conv2d") and hasattr(m, "weight") and callable(m.weight):
                self.layers[name] = self._conv_params(m, relu=kind == "ConvReLU2d")
            elif kind in ("Linear", "LinearReLU") and callable(getattr(m, "weight", None)):
                self.layers[name] = self._linear_params(m, relu=kind == "LinearReLU")

    @staticmethod
    def _weights(w):
        codes = w.int_repr().numpy().astype(np.int64)
        if w.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
            return codes, w.q_per_channel_scales().numpy(), w.q_per_channel_zero_points().numpy()
        return codes, w.q_scale(), w.q_zero_point()

    def _conv_params(self, m, relu):
        codes, s_w, zp_w = self._weights(m.weight())
        bias = None if m.bias() is None else m.bias().detach().numpy()
        return dict(w=ops.pack_weights(codes, zp_w, m.groups), s_w=s_w, bias=bias, relu=relu,
                    scale=m.scale, zp=m.zero_point, stride=m.stride, padding=m.padding,
                    dilation=m.dilation)

    def _linear_params(self, m, relu):
        codes, s_w, zp_w = self._weights(m.weight())
        bias = None if m.bias() is None else m.bias().detach().numpy()
        return dict(w=ops.pack_weights(codes, zp_w), s_w=s_w, bias=bias, relu=relu,
                    scale=m.scale, zp=m.zero_point)

    def _requant(self, p, s_in):
        key = ("rq", s_in)
        if key not in p:  # constants depend on the input scale; cache per scale
            p[key] = make_requant("torch-fbgemm", s_in, p["s_w"], p["scale"], p["zp"], p["bias"],
                                  relu=p["relu"])
        return p[key]

    def _attr(self, node):
        obj = self.gm
        for part in node.target.split("."):
            obj = getattr(obj, part)
        return obj.item() if isinstance(obj, torch.Tensor) else obj

    def run(self, x: torch.Tensor, record=None):
        env = {}

        def val(a):
            return env[a.name] if isinstance(a, torch.fx.Node) else a

        for node in self.gm.graph.nodes:
            op, tgt = node.op, node.target
            if op == "placeholder":
                out = x.numpy()
            elif op == "get_attr":
                out = self._attr(node)
            elif op == "call_function" and tgt is torch.quantize_per_tensor:
                xf, s, zp, _ = (val(a) for a in node.args)
                out = Q(quant.quantize_torch(xf, s, zp, "uint8"), s, zp)
            elif op == "call_function" and tgt in (torch.ops.quantized.add_relu,
                                                   torch.ops.quantized.add):
                a, b, s, zp = (val(v) for v in node.args)
                relu = tgt is torch.ops.quantized.add_relu
                out = Q(ops.add_torch(a.codes, a.scale, a.zp, b.codes, b.scale, b.zp, s, zp,
                                      relu=relu, hw=self.hw), s, zp)
            elif op == "call_function" and tgt is torch.flatten:
                a = val(node.args[0])
                start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
                out = Q(a.codes.reshape(a.codes.shape[:start] + (-1,)), a.scale, a.zp)
            elif op == "call_method" and tgt == "dequantize":
                a = val(node.args[0])
                out = quant.dequantize_torch(a.codes, a.scale, a.zp)
            elif op == "call_module":
                out = self._module(node, val(node.args[0]))
            elif op == "output":
                return val(node.args[0])
            elif op == "call_function" and tgt is operator.getitem:
                out = val(node.args[0])[node.args[1]]
            else:
                raise NotImplementedError(f"golden model: no op for {op} {tgt}")
            env[node.name] = out
            if record is not None and isinstance(out, Q):
                record[node.name] = out.codes
        raise RuntimeError("graph without output")

    def _module(self, node, a):
        m = self.mods[node.target]
        kind = type(m).__name__
        if node.target in self.layers and kind.startswith("Conv"):
            p = self.layers[node.target]
            acc = ops.conv2d_acc(a.codes, p["w"], a.zp, stride=p["stride"],
                                 padding=p["padding"], dilation=p["dilation"])
            rq = self._requant(p, a.scale)
            codes = rq.apply_hw(acc) if self.hw else rq.apply(acc)
            return Q(codes, p["scale"], p["zp"])
        if node.target in self.layers:
            p = self.layers[node.target]
            acc = ops.linear_acc(a.codes, p["w"], a.zp)
            rq = self._requant(p, a.scale)
            codes = rq.apply_hw(acc, axis=-1) if self.hw else rq.apply(acc, axis=-1)
            return Q(codes, p["scale"], p["zp"])
        if isinstance(m, nn.MaxPool2d):
            return Q(ops.max_pool2d(a.codes, m.kernel_size, m.stride, m.padding, m.dilation,
                                    m.ceil_mode), a.scale, a.zp)
        if isinstance(m, nn.AdaptiveAvgPool2d):
            return Q(ops.adaptive_avg_pool2d_torch(a.codes, m.output_size, a.zp, layout="nhwc"),
                     a.scale, a.zp)
        if isinstance(m, nn.ReLU):
            return Q(ops.relu(a.codes, a.zp), a.scale, a.zp)
        raise NotImplementedError(f"golden model: no op for module {kind}")


def torch_intermediates(gm, x):
    """Run the converted graph with torch, recording every quantized value's codes."""
    rec = {}

    class Rec(torch.fx.Interpreter):
        def run_node(self, n):
            out = super().run_node(n)
            if isinstance(out, torch.Tensor) and out.is_quantized:
                rec[n.name] = out.int_repr().numpy().astype(np.int64)
            return out

    out = Rec(gm).run(x)
    return out, rec


def timed(fn, runs):
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7, help="timed runs of the golden model "
                    "(each interleaved with 10 PyTorch runs)")
    ap.add_argument("--hw", action="store_true", help="also check the hardware-form path")
    args = ap.parse_args(argv)

    torch.backends.quantized.engine = "fbgemm"
    t0 = time.perf_counter()
    gm = build_quantized()
    x = smooth_images(1, 123)
    print(f"built and quantized ResNet-18 (FX, fbgemm) in {time.perf_counter() - t0:.1f} s; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, numpy {np.__version__}")

    golden = Golden(gm)
    gold_rec = {}
    with torch.no_grad():
        gm(x)  # warm-up
        golden.run(x, gold_rec)  # warm-up (and builds the per-layer constants)
        _, torch_rec = torch_intermediates(gm, x)
        # interleaved timing: the machine is shared, so both see the same background load
        t_torch_all, t_gold_all = [], []
        for _ in range(args.runs):
            t_torch_all += timed(lambda: gm(x), 10)[1]
            t_gold_all += timed(lambda: golden.run(x), 1)[1]
    t_torch = statistics.median(t_torch_all)
    t_gold = statistics.median(t_gold_all)

    names = [n for n in torch_rec if n in gold_rec]
    bad = [n for n in names if not np.array_equal(torch_rec[n], gold_rec[n])]
    final = [n.name for n in gm.graph.nodes if n.op == "call_module"][-1]
    n_codes = sum(torch_rec[n].size for n in names)
    print(f"quantized tensors compared: {len(names)} ({n_codes:,} codes); "
          f"mismatching tensors: {len(bad)}")
    for n in bad[:5]:
        d = torch_rec[n] != gold_rec[n]
        print(f"  {n}: {int(d.sum())} of {d.size} codes differ")
    final_ok = np.array_equal(torch_rec[final], gold_rec[final])
    print(f"final output ({final}) int_repr equal: {final_ok}")
    print(f"PyTorch quantized inference: {1e3 * t_torch:8.1f} ms (median of {len(t_torch_all)}; "
          f"min {1e3 * min(t_torch_all):.1f} ms)")
    print(f"golden model (numpy form):   {1e3 * t_gold:8.1f} ms (median of {len(t_gold_all)}; "
          f"min {1e3 * min(t_gold_all):.1f} ms)")
    print(f"ratio golden / PyTorch:      {t_gold / t_torch:8.1f}x")
    ok = final_ok and not bad
    if args.hw:
        hw_rec = {}
        t_hw, _ = timed(lambda: Golden(gm, hw=True).run(x, hw_rec), 1)
        hw_ok = all(np.array_equal(hw_rec[n], gold_rec[n]) for n in gold_rec)
        print(f"golden model (hardware form): {1e3 * t_hw:7.1f} ms; equal to numpy form: {hw_ok}")
        ok = ok and hw_ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
