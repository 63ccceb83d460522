"""Random hardware layers with realistic constants, for tests of the compiler and of the RTL
running compiled programs."""


from zynqnn.compiler import HwConv, Tensor
from zynqnn.numerics import gemmlowp


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


def codes(rng, t):
    lo, hi = (-128, 128) if t.signed else (0, 256)
    return rng.integers(lo, hi, size=t.shape)
