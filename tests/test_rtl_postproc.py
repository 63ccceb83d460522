"""Post-processing lanes and element-wise adder on both simulators, bit for bit with numerics.

The cocotb testbenches (``zynqnn.sim.tb_postproc``, ``zynqnn.sim.tb_eltwise``) compare every
output with ``zynqnn.numerics``; each run reports how many outputs it compared per scheme
(``record_property("compared", ...)``, printed with ``pytest -s``). One build per component,
config and simulator; several cocotb tests per build.
"""

from __future__ import annotations

import numpy as np
import pytest

from zynqnn.hw import isa
from zynqnn.hw.add import add_layer, add_params_layout
from zynqnn.hw.config import PBUF_WORD_BITS, get_config
from zynqnn.hw.post import (
    ActMode,
    LeakyFixed,
    LeakyTorch,
    act_params_layout,
    copy_layer,
    pbuf_word_layout,
    postproc_layer,
)
from zynqnn.rtl.eltwise import EltwiseAdd
from zynqnn.rtl.postproc import PostProc
from zynqnn.sim.runner import SIMULATORS, cocotb_tests, default_build_root, run

f32 = np.float32

#: The 16-bit build runs the fixed-point schemes (its reason to exist) and one int32 scheme.
POSTPROC_RUNS = [("tiny", None), ("tiny16", "test_fixed16,test_pow2,test_copy,test_tflite")]


def _compared(toplevel, cfg, sim):
    return default_build_root() / "sim" / f"{toplevel}-{cfg.config_id}-{sim}" / "compared.txt"


def _run_counted(make, toplevel, module, sim, cfg, testcase, record_property):
    path = _compared(toplevel, cfg, sim)
    path.unlink(missing_ok=True)
    run(make, toplevel, module, sim, cfg, testcase=testcase)   # raises unless all ran and passed
    counts = {}
    for line in path.read_text().splitlines():
        group, n = line.split()
        counts[group] = counts.get(group, 0) + int(n)
    record_property("compared", counts)
    print(f"\n{toplevel} {cfg.name} {sim}: compared {counts}")
    return counts


@pytest.mark.parametrize("sim", SIMULATORS)
@pytest.mark.parametrize("cfg_name,testcase", POSTPROC_RUNS)
def test_postproc(sim, cfg_name, testcase, record_property, quick_cxx):
    cfg = get_config(cfg_name)
    counts = _run_counted(lambda: PostProc(cfg), "zynqnn_postproc", "zynqnn.sim.tb_postproc",
                          sim, cfg, testcase, record_property)
    assert counts and all(n > 0 for n in counts.values())


@pytest.mark.parametrize("sim", SIMULATORS)
def test_eltwise(sim, record_property, quick_cxx):
    cfg = get_config("tiny")
    counts = _run_counted(lambda: EltwiseAdd(cfg), "zynqnn_eltwise", "zynqnn.sim.tb_eltwise",
                          sim, cfg, None, record_property)
    assert len(counts) == len(cocotb_tests("zynqnn.sim.tb_eltwise"))
    assert all(n > 0 for n in counts.values())


# ------------------------------------------------------------------------------------------------
# host side


def test_layouts():
    assert pbuf_word_layout.size == PBUF_WORD_BITS == 128
    for name in ("tiny", "pynq_z2", "tiny16"):
        cfg = get_config(name)
        assert act_params_layout(cfg).size <= 256
        assert add_params_layout(cfg).size <= 256


def test_words_every_scheme():
    from zynqnn.numerics import make_requant

    cfg = get_config("pynq_z2")
    sw = np.array([0.01, 0.002], dtype=f32)
    cases = {
        "tflite": make_requant("tflite", 0.02, sw, 0.1, -3, [100, -7]),
        "tflite-single-rounding": make_requant("tflite-single-rounding", 0.02, sw, 0.1, 0, None),
        "torch-fbgemm": make_requant("torch-fbgemm", 0.02, sw, 0.1, 3, [0.5, -0.25]),
        "torch-qnnpack": make_requant("torch-qnnpack", 0.02, sw, 0.1, 3, [0.5, -0.25]),
        "onnxruntime": make_requant("onnxruntime", 0.02, sw, 0.1, 3, [1000, -5]),
        "pow2": make_requant("pow2", 2**-6, [2**-7, 2**-8], 2**-4, bias=[1, 2], leaky=(26, 8)),
        "fixed16": make_requant("fixed16", 2**-8, [2**-8, 2**-7], 2**-8, bias=[3, 4],
                                rounding="half_even", overflow="wrap"),
    }
    for scheme, rq in cases.items():
        lay = postproc_layer(rq, get_config("tiny16") if scheme == "fixed16" else cfg)
        assert len(lay.words) == 2 and all(0 <= w < 2**PBUF_WORD_BITS for w in lay.words)
        assert lay.scheme.name.lower().replace("_", "-") == scheme
    # per-tensor fbgemm: the exact 48-bit FMA product, normalized
    rq = make_requant("torch-fbgemm", 0.02, 0.01, 0.1, 3, [0.5, -0.25])
    w = pbuf_word_layout.const({"bits": postproc_layer(rq, cfg).words[1]})
    assert w.fbgemm.b_mag >> 47 == 1 and w.fbgemm.b_neg == 1
    assert copy_layer(cfg, 5, 0, 255).scheme == isa.Scheme.COPY
    # left shifts fold into the multiplier: down to -31
    postproc_layer(make_requant("pow2", 2**-4, 2**-4, 2**-39), cfg)
    with pytest.raises(ValueError, match="left shift"):
        postproc_layer(make_requant("fixed16", 2**-4, 2**-4, 2**-40), get_config("tiny16"))


def test_activation_constants():
    from zynqnn.numerics import make_requant

    cfg = get_config("tiny")
    rq = make_requant("torch-fbgemm", 0.02, 0.01, 0.05, 100, [0.5])
    lay = postproc_layer(rq, cfg, LeakyTorch(0.05, 100, 0.04, 30, 0.1))
    act = act_params_layout(cfg).from_bits(lay.act)
    assert act.mode == ActMode.LEAKY_TORCH and (act.zp_mid, act.lo_mid, act.hi_mid) == (100, 0, 255)
    assert (lay.zp_out, lay.clamp_min, lay.clamp_max) == (30, 0, 255)
    with pytest.raises(ValueError, match="zp_in"):
        postproc_layer(rq, cfg, LeakyTorch(0.05, 99, 0.04, 30, 0.1))
    with pytest.raises(ValueError, match="float scheme"):
        postproc_layer(make_requant("tflite", 0.02, 0.01, 0.05, 0), cfg,
                       LeakyTorch(0.05, 0, 0.04, 0, 0.1))
    lay = postproc_layer(make_requant("tflite", 0.02, 0.01, 0.05, -4), cfg, LeakyFixed(26, 8))
    assert (lay.zp_out, lay.clamp_min, lay.clamp_max) == (-4, -128, 127)
    with pytest.raises(ValueError, match="slope"):
        postproc_layer(make_requant("tflite", 0.02, 0.01, 0.05, 0), cfg, LeakyFixed(1, 31))


def test_add_constants():
    cfg = get_config("tiny")
    lay = add_layer("torch", cfg, 0.05, 10, 0.02, 200, 0.06, 7, relu=True)
    assert (lay.zp_out, lay.clamp_min, lay.clamp_max) == (7, 7, 255)
    lay = add_layer("onnxruntime", cfg, 0.05, 10, 0.02, 200, 0.06, 7)
    assert (lay.clamp_min, lay.clamp_max) == (0, 255)
    with pytest.raises(ValueError, match="qnnpack"):
        add_layer("qnnpack", cfg, 1.0, 0, 1e-6, 0, 1e-6, 0)
    with pytest.raises(ValueError, match="semantics"):
        add_layer("caffe", cfg, 0.1, 0, 0.1, 0, 0.1, 0)


@pytest.mark.filterwarnings("ignore:.*quantized tensor creation functions")
@pytest.mark.parametrize("engine", ["fbgemm", "qnnpack"])
def test_leaky_relu_torch_engines(engine, record_property):
    """numerics' quantized leaky_relu (the hardware's reference) is engine independent: torch
    runs the same arithmetic on fbgemm and qnnpack (vector body and scalar tail)."""
    torch = pytest.importorskip("torch")
    from zynqnn.numerics import ops

    rng = np.random.default_rng(4)
    old = torch.backends.quantized.engine
    total = 0
    try:
        torch.backends.quantized.engine = engine
        for i in range(24):
            n = 128 * 8 if i % 2 == 0 else 40
            s_in, s_out = (float(f32(10 ** rng.uniform(-3, -1))) for _ in range(2))
            zpi, zpo = (int(v) for v in rng.integers(0, 256, 2))
            slope = (0.01, 0.1, 0.125, 26 / 256)[i % 4]
            x = rng.integers(0, 256, n)
            qx = torch._make_per_tensor_quantized_tensor(
                torch.from_numpy(x.astype(np.uint8)), s_in, zpi)
            got = torch.ao.nn.quantized.LeakyReLU(s_out, zpo, slope)(qx)
            got = got.int_repr().numpy().astype(np.int64)
            path = "vector" if n % 128 == 0 else "scalar"
            want = ops.leaky_relu_torch(x, s_in, zpi, s_out, zpo, slope, path=path)
            assert np.array_equal(got, want), f"{engine} {path} slope {slope}"
            total += n
    finally:
        torch.backends.quantized.engine = old
    record_property("compared", {f"leaky_relu {engine}": total})
