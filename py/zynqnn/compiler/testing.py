"""Random hardware layers with realistic constants, for tests of the compiler and of the RTL
running compiled programs."""


import numpy as np

from zynqnn.compiler import HwConv, Tensor
from zynqnn.numerics import gemmlowp, make_requant
from zynqnn.rtl.postproc import LeakyFixed, LeakyTorch

#: Requantization schemes of the 8-bit builds (fixed16 needs the 16-bit build's operands).
SCHEMES_8BIT = ("tflite", "tflite-single-rounding", "torch-fbgemm", "torch-qnnpack",
                "onnxruntime", "pow2")


def random_requant(rng, channels, scheme=None, gain=None):
    """A random Requant in ``scheme`` (random if None) with a random clamp (ReLU, ReLU6) and
    activation (fixed-point or PyTorch leaky ReLU, or none): ``(requant, act)``.

    ``gain``: the multiplier ``s_in * s_w / s_out`` (default random in 1e-4 .. 3e-2).
    """
    scheme = scheme or str(rng.choice(SCHEMES_8BIT))
    relu = bool(rng.random() < 0.3)
    act = None
    if scheme == "pow2":
        fp_w = rng.integers(6, 11, channels)
        leaky = (26, 8) if rng.random() < 0.3 else None
        rq = make_requant("pow2", 2.0**-4, 2.0 ** -fp_w, 2.0 ** -int(rng.integers(0, 3)),
                          bias=rng.integers(-2**10, 2**10, channels), relu=relu, leaky=leaky)
        return rq, act
    gain = 10 ** rng.uniform(-4, -1.5) if gain is None else gain
    s_in = 0.02
    s_w = (0.005 * 2 ** rng.uniform(-1, 1, channels)).astype(np.float32)
    s_out = float(s_in * s_w.mean() / gain)
    signed_out = scheme.startswith("tflite")
    zp = int(rng.integers(-128, 128) if signed_out else rng.integers(0, 256))
    if scheme.startswith("torch"):
        bias = rng.normal(0, 1, channels) * s_in * s_w * 2000
    else:
        bias = rng.integers(-5000, 5000, channels)
    qmax = None
    if not signed_out and rng.random() < 0.2:       # ReLU6 as a clamp
        qmax = min(255, zp + round(6 / s_out))
    rq = make_requant(scheme, s_in, s_w, s_out, zp, bias, qmax=qmax, relu=relu)
    r = rng.random()
    if r < 0.25:
        act = LeakyFixed(*((1, 3) if rng.random() < 0.5 else (26, 8)))
    elif r < 0.5 and not signed_out:
        act = LeakyTorch(s_out, zp, s_out * 2 ** rng.uniform(-1, 1), int(rng.integers(0, 256)),
                         0.1, path="scalar" if rng.random() < 0.3 else "vector")
    return rq, act


def out_zero_point(rq, act):
    """Zero point of a layer's output codes."""
    return act.zp_out if isinstance(act, LeakyTorch) else rq.zp_out


def out_signed(rq):
    return rq.scheme.startswith("tflite") or rq.scheme in ("pow2", "fixed16")


def tensor(rng, name, c, h, w, signed=False):
    zp = int(rng.integers(-20, 20)) if signed else int(rng.integers(0, 256))
    return Tensor(name, c, h, w, zp, signed)


def conv(rng, name, x, cout, k, stride=1, pad=0, signed_out=False):
    from zynqnn.compiler.layers import norm_padding

    pt, pb, pl, pr = norm_padding(pad)
    oh = (x.height + pt + pb - k) // stride + 1
    ow = (x.width + pl + pr - k) // stride + 1
    y = tensor(rng, name + ".out", cout, oh, ow, signed_out)
    mq = [gemmlowp.quantize_multiplier(10 ** rng.uniform(-4, -2)) for _ in range(cout)]
    return HwConv(name, x, y, rng.integers(-127, 128, size=(cout, x.channels, k, k)),
                  rng.integers(-5000, 5000, size=cout), [q for q, _ in mq], [s for _, s in mq],
                  stride=stride, padding=pad)


def conv_rq(rng, name, x, cout, k, stride=1, pad=0, scheme=None):
    """A conv layer in a random requantization scheme with a random activation."""
    from zynqnn.compiler.layers import norm_padding

    pt, pb, pl, pr = norm_padding(pad)
    oh = (x.height + pt + pb - k) // stride + 1
    ow = (x.width + pl + pr - k) // stride + 1
    rq, act = random_requant(rng, cout, scheme)
    y = Tensor(name + ".out", cout, oh, ow, out_zero_point(rq, act), out_signed(rq))
    return HwConv(name, x, y, rng.integers(-127, 128, size=(cout, x.channels, k, k)),
                  stride=stride, padding=pad, requant=rq, act=act)


def codes(rng, t):
    lo, hi = (-128, 128) if t.signed else (0, 256)
    return rng.integers(lo, hi, size=t.shape)
