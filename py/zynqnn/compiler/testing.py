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
from zynqnn.hw.post import LeakyFixed, LeakyTorch
from zynqnn.numerics import gemmlowp, make_requant

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


# -------------------------------------------------------------------------------------------------
# real models through the frameworks' quantizers (tests of whole graphs against the frameworks)

#: Quantization flows of :func:`quantized_graph`: torch.ao FX on both engines, ONNX Runtime QDQ
#: (per-channel, ``reduce_range``), and zynqnn's own fixed16 (16-bit, for ``pynq_z2_int16``).
FLOWS = ("fbgemm", "qnnpack", "onnxruntime", "fixed16")


def quantized_graph(model, calib, flow: str, workdir=None):
    """``(graph, reference)`` of the float torch ``model`` quantized by ``flow`` (calibrated on
    the float tensor ``calib``, traced on its first sample). ``reference(x)`` is the framework's
    own output for float ``x`` as a list of float32 arrays: the converted torch.ao model
    (fbgemm, qnnpack), an ONNX Runtime session of the QDQ model (``workdir``: where its files
    go), or ``None`` for ``fixed16`` (zynqnn's scheme: ``graph.run`` is the reference).

    fbgemm observes activations with ``reduce_range`` (codes 0..127), as the front-end tests do:
    its int16 pair kernels on CPUs without AVX-512 VNNI then cannot saturate, so PyTorch's result
    does not depend on the CPU."""
    import torch

    import zynqnn

    x1 = calib[:1]
    if flow in ("fbgemm", "qnnpack"):
        from zynqnn import zoo
        from zynqnn.zoo.quant import cpu_independent_qconfig_mapping, quiet_torch_ao

        qmap = cpu_independent_qconfig_mapping(flow)
        with quiet_torch_ao():
            q = zoo.quantize_fx(model, x1, engine=flow, calibration=calib, qconfig_mapping=qmap)
            g = zynqnn.from_torch(q, x1, engine=flow)

        def reference(x):
            torch.backends.quantized.engine = flow
            with torch.no_grad():
                y = q(torch.as_tensor(x))
            ys = y if isinstance(y, (tuple, list)) else [y]
            return [t.numpy() for t in ys]

        return g, reference
    if flow == "onnxruntime":
        import tempfile
        from pathlib import Path

        from zynqnn.zoo.ort import export_onnx, ort_quantize, ort_session

        d = Path(workdir or tempfile.mkdtemp(prefix="zynqnn-ort-"))
        fpath = export_onnx(model, x1, d / "model.onnx")
        # the export has a batch of one: calibrate and run sample by sample
        path = ort_quantize(fpath, [c[None] for c in calib.numpy()], d / "model-qdq.onnx",
                            fmt="qdq", per_channel=True, reduce_range=True)
        sess = ort_session(path)
        g = zynqnn.from_onnx(path)

        def reference(x):
            runs = [sess.run(None, {"x": np.ascontiguousarray(s[None], dtype=np.float32)})
                    for s in x]
            return [np.concatenate(ys) for ys in zip(*runs, strict=True)]

        return g, reference
    if flow == "fixed16":
        return zynqnn.quantize(model, calib, example_input=x1, scheme="fixed16"), None
    raise ValueError(f"unknown flow {flow!r}; use one of {', '.join(FLOWS)}")


def config_of(flow: str, cfg: str) -> str:
    """The config a flow runs on: fixed16 graphs (16-bit codes) on ``pynq_z2_int16``."""
    return "pynq_z2_int16" if flow == "fixed16" else cfg


def check_graph_on_golden(g, reference, x, cfg) -> tuple:
    """Compile ``g`` for ``cfg``; ``model.run(x)`` on the golden backend (the command stream on
    ``zynqnn.machine``) must equal ``graph.run(x)`` and the framework's ``reference(x)``
    (``array_equal``, every output), also through the integer interface. Returns ``(model,
    values compared)``."""
    import zynqnn

    model = zynqnn.compile(g, cfg)
    got = model.run(x)
    got = list(got) if isinstance(got, tuple) else [got]
    want = g.run(x)
    want = list(want) if isinstance(want, tuple) else [want]
    refs = want if reference is None else reference(x)
    assert len(got) == len(want) == len(refs)
    n = 0
    for a, b, r in zip(got, want, refs, strict=True):
        assert a.shape == b.shape == r.shape and a.dtype == np.float32
        assert np.array_equal(a, b), f"{int(np.sum(a != b))} of {a.size} differ from graph.run"
        assert np.array_equal(a, r), f"{int(np.sum(a != r))} of {a.size} differ from the framework"
        n += a.size
    codes = g.quantize_input(x[:1])
    got = model.run_int(codes)
    want = g.run_int(codes)
    for a, b in zip(got if isinstance(got, tuple) else [got],
                    want if isinstance(want, tuple) else [want], strict=True):
        assert np.array_equal(a, b)
    model.program.perf()   # the bank-flag protocol holds (no deadlock, no race)
    return model, n


def check_gathered(cfg, graph, samples: int = 2, seed: int = 0, ref: bool | None = None):
    """Lower and compile the quantized IR ``graph`` for ``cfg``: the compiled program on the
    machine model and ``run_reference`` (``ref``; default: not on 16-bit builds, whose
    accumulators numerics' ``Requant.apply`` does not take), gathered by the boundary
    (``OutputInfo.gather``), equal ``graph.run_int`` on every output for random input codes;
    the bank-flag protocol holds. Returns ``(network, boundary)``."""
    from zynqnn.compiler import compile_network, run_reference
    from zynqnn.compiler.lower import lower_graph
    from zynqnn.hw.config import get_config

    cfg = get_config(cfg)
    ref = cfg.operand_bits == 8 if ref is None else ref
    net, b = lower_graph(graph, cfg)
    prog = compile_network(net, cfg)
    q = graph.tensors[graph.quant_inputs[0]]
    codes = np.random.default_rng(seed).integers(q.qmin, q.qmax + 1,
                                                 size=(samples, *q.shape[1:]))
    want = graph.run_int(codes)
    want = list(want) if isinstance(want, tuple) else [want]
    nc = b.to_network(codes)
    runs = [prog.run_golden_all(c) for c in nc]
    refs = [run_reference(net, c, cfg.operand_bits, all_outputs=True) for c in nc] if ref else []
    for k, info in enumerate(b.outputs):
        assert np.array_equal(np.stack([info.gather(o[k]) for o in runs]), want[k])
        if ref:
            assert np.array_equal(np.stack([info.gather(o[k]) for o in refs]), want[k])
    prog.perf()
    return net, b
