"""Random hardware layers with realistic constants, for tests of the compiler and of the RTL
running compiled programs."""


import numpy as np

from zynqnn.compiler import (
    HwAdd,
    HwConv,
    HwGlobalSumPool,
    HwMaxPool,
    Network,
    Tensor,
)
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


def check_compiled(net, cfg, seed=0):
    """Compile ``net`` for ``cfg``; its command stream on the machine model must equal the golden
    ops (``array_equal``) on random input codes, and the bank-flag protocol must hold (no
    deadlock, no race on banks or DDR). Returns the program."""
    from zynqnn.compiler import compile_network, run_reference

    prog = compile_network(net, cfg)
    x = codes(np.random.default_rng(seed), net.input)
    got = prog.run_golden(x)
    want = run_reference(net, x, cfg.operand_bits)
    assert got.shape == want.shape
    assert np.array_equal(got, want)
    prog.perf()
    return prog


def codes(rng, t):
    lo, hi = (-128, 128) if t.signed else (0, 256)
    return rng.integers(lo, hi, size=t.shape)


def residual_add(rng, name, a, b, semantics="torch", relu=False, path="vector",
                 single_rounding=False):
    """An :class:`HwAdd` of ``a`` and ``b`` (same shape and signedness) with random scales and a
    random output zero point: near the bottom of the code range with a ReLU (as a ReLU output's
    is), around the middle without."""
    lo = -128 if a.signed else 0
    zp = lo + int(rng.integers(0, 48) if relu else rng.integers(64, 192))
    y = Tensor(name + ".out", *a.shape, zp, a.signed)
    s_a, s_b = (float(v) for v in 10 ** rng.uniform(-2.5, -1, 2))
    s_out = float((s_a + s_b) * rng.uniform(0.6, 1.5))
    return HwAdd(name, a, b, y, semantics, s_a, s_b, s_out, relu=relu, path=path,
                 single_rounding=single_rounding)


def resnet_block(rng, channels=4, size=8, semantics="torch", classes=4, signed=None, **add_kw):
    """A residual network: stem conv3x3 -> conv3x3 (ReLU) -> conv3x3 -> add (skip from the stem,
    ReLU) -> max pool 2x2 -> global average pool -> 1x1 conv (the classifier). Signed tensors
    for TFLite unless ``signed`` says otherwise."""
    from zynqnn.compiler.layers import code_range

    signed = semantics == "tflite" if signed is None else signed
    x = tensor(rng, "x", 3, size, size, signed)
    stem = conv(rng, "stem", x, channels, 3, 1, 1, signed_out=signed)
    c1 = conv(rng, "c1", stem.output, channels, 3, 1, 1, signed_out=signed)
    lo, hi = code_range(signed, 8)
    c1.output.zero_point = lo + int(rng.integers(0, 32))
    c1.clamp = (c1.output.zero_point, hi)                                 # ReLU
    c2 = conv(rng, "c2", c1.output, channels, 3, 1, 1, signed_out=signed)
    add = residual_add(rng, "add", c2.output, stem.output, semantics, relu=True, **add_kw)
    h = size // 2
    pooled = Tensor("pool.out", channels, h, h, add.output.zero_point, signed)
    pool = HwMaxPool("pool", add.output, pooled, 2, 2)
    g = tensor(rng, "gap.out", channels, 1, 1, signed)
    mq = [gemmlowp.quantize_multiplier(rng.uniform(0.5, 2) / (h * h)) for _ in range(channels)]
    gap = HwGlobalSumPool("gap", pooled, g, [q for q, _ in mq], [s for _, s in mq],
                          rng.integers(-100, 100, size=channels))
    fc = conv(rng, "fc", g, classes, 1, signed_out=signed)
    return Network(x, [stem, c1, c2, add, pool, gap, fc])
