"""cocotb testbench of the post-processing lanes against ``zynqnn.numerics``.

Every requantization scheme and both leaky activations, with layers built by numerics' own
factories (``make_requant``) from random real scales and from dyadic scales (which make rounding
ties common), accumulators over the whole accumulator range plus values at rounding ties and
saturation, and random idle cycles on the input and stalls on the output. Results are compared
with ``numpy.array_equal`` against numerics' numpy forms (``Requant.apply``, then
``ops.leaky_relu_fixed`` / ``ops.leaky_relu_torch``).

The vector generators are plain functions (``layers(group, cfg, rng, rows)``) so that other
harnesses can reuse them. Knobs: ``TB_ROWS`` (accumulator rows per layer, default 64),
``TB_IDLE``, ``TB_STALL``, ``TB_SEED``. Each test logs ``compared <group>: <n>``.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles

from zynqnn.hw.config import HwConfig
from zynqnn.hw.post import LeakyFixed, LeakyTorch, PostProcLayer, copy_layer, postproc_layer
from zynqnn.numerics import make_requant, ops
from zynqnn.rtl.postproc import postproc_in_layout, postproc_out_layout
from zynqnn.sim.clocking import start
from zynqnn.sim.runner import config_from_env
from zynqnn.sim.streams import StreamSink, StreamSource

f32 = np.float32
#: Per-group counts of compared outputs, appended in the test directory.
COMPARED_FILE = "compared.txt"
I32_MIN, I32_MAX = -(2**31), 2**31 - 1

#: Test groups, one cocotb test each. ``fixed16`` runs on the 16-bit build only.
GROUPS = ("tflite", "tflite-single-rounding", "torch-fbgemm", "torch-qnnpack", "onnxruntime",
          "pow2", "fixed16", "copy", "leaky-fixed", "leaky-torch")


@dataclass
class Case:
    """One layer: its hardware constants, accumulators ``(rows, channels)`` and expected codes."""

    name: str
    layer: PostProcLayer
    acc: np.ndarray
    want: np.ndarray


# ------------------------------------------------------------------------------------------------
# accumulators


def acc_values(rng, rows, channels, bits=32, small=2000):
    """Log-uniform magnitudes over the whole ``bits``-bit range, a quarter of them small."""
    mag = rng.integers(0, bits - 1, (rows, channels))
    top = 2 ** (bits - 1)
    acc = rng.integers(-top, top, (rows, channels), dtype=np.int64) >> (bits - 1 - mag)
    acc[: max(rows // 4, 1)] = rng.integers(-small, small, (max(rows // 4, 1), channels))
    return acc


def acc_edges(channels, bits=32):
    """Accumulator rows at the extremes of the range."""
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    vals = [lo, hi, lo + 1, hi - 1, 0, 1, -1, 2**24 + 1, -(2**24) - 3, 2**24 - 1]
    return np.array([[v] * channels for v in vals], dtype=np.int64)


def _scales(rng, channels, dyadic):
    if dyadic:
        s_in = f32(2.0 ** -int(rng.integers(4, 9)))
        s_out = f32(2.0 ** -int(rng.integers(1, 6)))
        s_w = ((2 * rng.integers(1, 8, channels) - 1)
               * 2.0 ** -rng.integers(6, 12, channels)).astype(f32)
    else:
        s_in = f32(rng.uniform(1e-3, 0.05))
        s_out = f32(10 ** rng.uniform(-3, 0))
        s_w = (10 ** rng.uniform(-4, -1, channels)).astype(f32)
    return s_in, s_w, s_out


def _ties(rq_factor_acc, channels):
    return np.repeat(np.asarray(rq_factor_acc, dtype=np.int64)[:, None], channels, axis=1)


# ------------------------------------------------------------------------------------------------
# layers per group


def _tflite(rng, cfg, rows, channels, single):
    scheme = "tflite-single-rounding" if single else "tflite"
    cases = []
    for i in range(4):
        s_in, s_w, s_out = _scales(rng, channels, dyadic=i % 2 == 1)
        zp = int(rng.integers(-128, 128))
        relu = i == 2
        bias = rng.integers(-(2**20), 2**20, channels)
        rq = make_requant(scheme, s_in, s_w, s_out, zp, bias, relu=relu)
        acc = acc_values(rng, rows, channels)
        if i == 0:
            acc = np.concatenate([acc_edges(channels), acc])
        cases.append((f"{scheme} {i}", rq, acc))
    # multipliers at their limits and exact ties: 0.5 in Q31 halves x (a tie for odd x)
    for q, sh in ((1 << 30, 0), (1 << 30, -3), (2**31 - 1, 0), (2**31 - 1, -31), (1 << 30, 5),
                  ((1 << 30) + 1, -1)):
        rq = make_requant(scheme, None, None, None, 3, np.zeros(channels, dtype=np.int64),
                          multiplier=[q] * channels, shift=[sh] * channels)
        ties = np.arange(-40, 40)
        acc = np.concatenate([_ties(ties, channels), acc_values(rng, rows // 2, channels)])
        cases.append((f"{scheme} Q={q} shift={sh}", rq, acc))
    return cases


def _float_layers(rng, cfg, rows, channels, scheme):
    cases = []
    for i in range(6):
        dyadic = i % 2 == 1
        s_in, s_w, s_out = _scales(rng, channels, dyadic)
        relu = i == 2
        zp = int(rng.integers(0, 256))
        qmax = 255
        if i == 4:   # ReLU6: clamp at the code of 6.0
            relu, qmax = True, min(255, zp + int(round(6 / float(s_out))))
        per_channel = i != 3
        if scheme == "torch-fbgemm" or scheme == "torch-qnnpack":
            a = (s_in * s_w).astype(f32)
            bias = (rng.normal(0, 3, channels).astype(f32) if not dyadic else
                    (rng.integers(-5000, 5000, channels) * a / 2).astype(f32))
            if i == 5:
                bias = None
            rq = make_requant(scheme, s_in, s_w if per_channel else s_w[0], s_out, zp, bias,
                              relu=relu, qmax=qmax)
        else:
            bias = rng.integers(-(2**20), 2**20, channels)
            rq = make_requant(scheme, s_in, s_w, s_out, zp, bias, relu=relu, qmax=qmax)
        acc = np.concatenate([acc_values(rng, rows, channels), _float_ties(rq, rng, rows // 2)])
        if i == 0:
            acc = np.concatenate([acc_edges(channels), acc])
        cases.append((f"{scheme} {i}", rq, acc))
    # int32 overflow of the float result: s_out tiny (PyTorch: INT32_MIN, ORT: saturate)
    s_in, s_w, _ = _scales(rng, channels, False)
    rq = make_requant(scheme, s_in, s_w, f32(1e-9), 7,
                      None if scheme != "onnxruntime" else np.zeros(channels, dtype=np.int64))
    cases.append((f"{scheme} overflow", rq, acc_values(rng, rows, channels)))
    return cases


def _float_ties(rq, rng, rows):
    """Accumulators whose float result lands on or next to k + 1/2, and (fbgemm) ones that cancel
    the float bias exactly."""
    m = rq.M.astype(np.float64)
    if rq.scheme == "torch-fbgemm":
        b = np.zeros_like(m) if rq.bias is None else rq.bias.astype(np.float64) / \
            rq.act_times_w.astype(np.float64)
    else:
        b = np.zeros_like(m) if rq.bias_q is None else rq.bias_q.astype(np.float64)
    k = rng.integers(-300, 300, (rows, 1)) + 0.5
    acc = np.rint(k / m[None, :] - b[None, :]) + rng.integers(-1, 2, (rows, m.size))
    acc[0] = -np.rint(b)
    return np.clip(acc, I32_MIN, I32_MAX).astype(np.int64)


def _fixed_layers(rng, cfg, rows, channels, scheme):
    from zynqnn.numerics.rounding import ROUNDING_MODES

    cases = []
    acc_bits = cfg.acc_bits if scheme == "fixed16" else 32
    for i, mode in enumerate(ROUNDING_MODES):
        fp_in = int(rng.integers(2, 10))
        fp_w = rng.integers(2, 10, channels)
        fp_out = int(rng.integers(0, 10)) if i != 3 else fp_in + 12   # a left shift
        opts = {"rounding": mode}
        if i % 2 == 0:
            opts["leaky"] = (26, 8) if i % 4 == 0 else (1, 3)
        if scheme == "fixed16":
            opts["overflow"] = "wrap" if i % 3 == 1 else "saturate"
        bias = rng.integers(-1000, 1000, channels)
        rq = make_requant(scheme, 2.0**-fp_in, 2.0**-fp_w, 2.0**-fp_out, relu=i == 5,
                          bias=bias, s_bias=2.0**-(fp_in + 2), **opts)
        acc = acc_values(rng, rows, channels, bits=32) >> 4
        ties = (np.arange(-24, 24)[:, None] << rq.shift.reshape(1, -1).clip(0, 20)) // 2
        acc = np.concatenate([acc, ties.astype(np.int64)])
        cases.append((f"{scheme} {mode}", rq, acc))
        if acc_bits > 32:   # the 16-bit build's 48-bit accumulators
            cases.append((f"{scheme} {mode} 48-bit", ("wide", rq),
                          acc_values(rng, rows, channels, bits=acc_bits)))
    # the largest left shift the hardware takes (-31: the multiplier is 2^31), small values
    rq = make_requant(scheme, 2.0**-4, np.full(channels, 2.0**-3), 2.0**-38,
                      bias=rng.integers(-3, 3, channels), rounding="half_even")
    acc = np.concatenate([np.arange(-8, 8)[:, None].repeat(channels, 1),
                          acc_values(rng, rows // 2, channels, bits=20)])
    cases.append((f"{scheme} shift {int(rq.shift.min())}", rq, acc))
    return cases


def fixed_wide_reference(rq, acc):
    """``pow2``/``fixed16`` of accumulators beyond int32 (``Requant.apply`` accepts int32 only):
    the scheme's documented formula with numerics' own rounding function."""
    from zynqnn.numerics.rounding import shift_round_float

    v = acc.copy()
    if rq.bias_q is not None:
        v += rq.bias_q[None, :] << rq.bias_shift[None, :]
    sh = rq.shift[None, :]
    r = shift_round_float(v, sh, rq.rounding)
    if rq.leaky_mult is not None:
        r = np.where(v < 0, shift_round_float(v * rq.leaky_mult, sh + rq.leaky_shift,
                                              rq.rounding), r)
    r = r + rq.zp_out
    if getattr(rq, "overflow", "saturate") == "wrap":
        half = 1 << (rq.bits - 1)
        r = ((r + half) & ((1 << rq.bits) - 1)) - half
        return np.maximum(r, rq.lo) if rq.relu else r
    return np.clip(r, rq.lo, rq.hi)


def _leaky_fixed(rng, cfg, rows, channels):
    from zynqnn.numerics.rounding import ROUNDING_MODES

    cases = []
    for i, (mult, shift) in enumerate(((1, 3), (26, 8), (13, 7), (3, 1), (1000, 12), (5, 0))):
        s_in, s_w, s_out = _scales(rng, channels, dyadic=i % 2 == 1)
        rq = make_requant("tflite", s_in, s_w, s_out, int(rng.integers(-20, 20)),
                          rng.integers(-(2**16), 2**16, channels))
        act = LeakyFixed(mult, shift, ROUNDING_MODES[i % len(ROUNDING_MODES)])
        cases.append((f"leaky-fixed {mult}/2^{shift}", (rq, act),
                      acc_values(rng, rows, channels, small=50000)))
    return cases


def _leaky_torch(rng, cfg, rows, channels):
    cases = []
    slopes = (0.01, 0.1, 0.125, 26 / 256, 0.2, 0.0, -0.05, 1.5)
    for i, slope in enumerate(slopes):
        scheme = "torch-fbgemm" if i % 2 == 0 else "torch-qnnpack"
        s_in, s_w, s_conv = _scales(rng, channels, dyadic=i % 3 == 1)
        zp_c = int(rng.integers(0, 256))
        rq = make_requant(scheme, s_in, s_w, s_conv, zp_c, rng.normal(0, 3, channels).astype(f32))
        for path in ("vector", "scalar"):
            s_out = f32(s_conv * rng.uniform(0.5, 2.0)) if i % 3 != 1 else f32(s_conv * 2)
            act = LeakyTorch(float(s_conv), zp_c, float(s_out), int(rng.integers(0, 256)), slope,
                             path)
            cases.append((f"leaky-torch {scheme} slope={slope:g} {path}", (rq, act),
                          acc_values(rng, rows, channels, small=20000)))
    return cases


def _copy(rng, cfg, rows, channels):
    bits = cfg.acc_bits
    qb = cfg.operand_bits
    out = []
    for zp, lo, hi in ((0, 0, 2**qb - 1), (-5, -(2 ** (qb - 1)), 2 ** (qb - 1) - 1), (9, 9, 200)):
        acc = np.concatenate([acc_values(rng, rows, channels, bits=bits, small=300),
                              acc_edges(channels, bits)])
        out.append((f"copy zp={zp}", ("copy", zp, lo, hi), acc))
    return out


def reference(spec, acc):
    """Expected codes of ``acc`` (rows, channels) through numerics' numpy forms."""
    if isinstance(spec, tuple) and spec and spec[0] == "copy":
        _, zp, lo, hi = spec
        return np.clip(acc + zp, lo, hi)
    if isinstance(spec, tuple) and spec and spec[0] == "wide":
        return fixed_wide_reference(spec[1], acc)
    if isinstance(spec, tuple):
        rq, act = spec
        q1 = rq.apply(acc)
        if isinstance(act, LeakyFixed):
            return ops.leaky_relu_fixed(q1, rq.zp_out, act.mult, act.shift, act.rounding,
                                        qmin=rq.lo, qmax=rq.hi)
        return ops.leaky_relu_torch(q1, act.s_in, act.zp_in, act.s_out, act.zp_out,
                                    act.negative_slope, path=act.path, qmin=act.qmin,
                                    qmax=act.qmax)
    return spec.apply(acc)


def hw_layer(spec, cfg: HwConfig, channels: int) -> PostProcLayer:
    if isinstance(spec, tuple) and spec and spec[0] == "copy":
        _, zp, lo, hi = spec
        return copy_layer(cfg, zp, lo, hi, channels)
    if isinstance(spec, tuple) and spec and spec[0] == "wide":
        return postproc_layer(spec[1], cfg, None, channels)
    if isinstance(spec, tuple):
        return postproc_layer(spec[0], cfg, spec[1], channels)
    return postproc_layer(spec, cfg, None, channels)


def layers(group: str, cfg: HwConfig, rng, rows: int, channels: int) -> list[Case]:
    """The test layers of one group, with their expected results."""
    if group in ("tflite", "tflite-single-rounding"):
        raw = _tflite(rng, cfg, rows, channels, group.endswith("rounding"))
    elif group in ("torch-fbgemm", "torch-qnnpack", "onnxruntime"):
        raw = _float_layers(rng, cfg, rows, channels, group)
    elif group in ("pow2", "fixed16"):
        raw = _fixed_layers(rng, cfg, rows, channels, group)
    elif group == "copy":
        raw = _copy(rng, cfg, rows, channels)
    elif group == "leaky-fixed":
        raw = _leaky_fixed(rng, cfg, rows, channels)
    elif group == "leaky-torch":
        raw = _leaky_torch(rng, cfg, rows, channels)
    else:
        raise ValueError(f"unknown group {group!r}")
    return [Case(name, hw_layer(spec, cfg, channels), acc, reference(spec, acc))
            for name, spec, acc in raw]


def items(case: Case, lanes: int) -> list[dict]:
    """Stream payloads: ``lanes`` consecutive channels of a row per transfer."""
    rows, channels = case.acc.shape
    assert channels % lanes == 0
    out = []
    for r in range(rows):
        for c0 in range(0, channels, lanes):
            out.append({"acc": [int(v) for v in case.acc[r, c0:c0 + lanes]],
                        "word": [{"bits": case.layer.words[c]} for c in range(c0, c0 + lanes)]})
    return out


# ------------------------------------------------------------------------------------------------
# cocotb


def _env(name, default, kind=float):
    return kind(os.environ.get(name, default))


async def _run_group(dut, group):
    cfg = config_from_env()
    lanes = len(dut.i__payload) // postproc_in_layout(cfg, 1).size
    seed = _env("TB_SEED", 5, int) + GROUPS.index(group)
    rng = np.random.default_rng(seed)
    idle, stall = _env("TB_IDLE", 0.2), _env("TB_STALL", 0.2)
    channels = 2 * lanes
    dut.i__valid.value = 0
    dut.o__ready.value = 0
    await start(dut)
    qmask = (1 << cfg.signed_operand_bits) - 1
    total = 0
    for k, case in enumerate(layers(group, cfg, rng, _env("TB_ROWS", 64, int), channels)):
        lay = case.layer
        dut.scheme.value = int(lay.scheme)
        dut.zp_out.value = lay.zp_out & qmask
        dut.clamp_min.value = lay.clamp_min & qmask
        dut.clamp_max.value = lay.clamp_max & qmask
        dut.act.value = lay.act
        payloads = items(case, lanes)
        src = StreamSource(dut, "i", dut.clk, postproc_in_layout(cfg, lanes), idle,
                           random.Random(seed * 100 + k))
        sink = StreamSink(dut, "o", dut.clk, postproc_out_layout(cfg, lanes), stall,
                          random.Random(seed * 100 + k + 50))
        cocotb.start_soon(src.send(payloads))
        got = await sink.recv(len(payloads), timeout_cycles=20 * len(payloads) + 400)
        got = np.array([list(v) for v in got], dtype=np.int64).reshape(case.want.shape)
        if not np.array_equal(got, case.want):
            bad = np.argwhere(got != case.want)
            r, c = bad[0]
            raise AssertionError(
                f"{case.name}: {len(bad)} of {got.size} differ; first: acc {case.acc[r, c]} "
                f"channel {c}: got {got[r, c]}, want {case.want[r, c]}")
        total += got.size
        await ClockCycles(dut.clk, 2)
    dut._log.info("compared %s: %d", group, total)
    with open(COMPARED_FILE, "a") as f:   # in the build directory, read by the launcher
        f.write(f"{group} {total}\n")


@cocotb.test()
async def test_tflite(dut):
    await _run_group(dut, "tflite")


@cocotb.test()
async def test_tflite_single_rounding(dut):
    await _run_group(dut, "tflite-single-rounding")


@cocotb.test()
async def test_torch_fbgemm(dut):
    await _run_group(dut, "torch-fbgemm")


@cocotb.test()
async def test_torch_qnnpack(dut):
    await _run_group(dut, "torch-qnnpack")


@cocotb.test()
async def test_onnxruntime(dut):
    await _run_group(dut, "onnxruntime")


@cocotb.test()
async def test_pow2(dut):
    await _run_group(dut, "pow2")


@cocotb.test()
async def test_fixed16(dut):
    """Qm.n fixed point: runs on the 16-bit build (48-bit accumulators)."""
    from zynqnn.sim.runner import config_from_env

    if config_from_env().operand_bits != 16:
        dut._log.info("compared fixed16: 0 (16-bit build only)")
        return
    await _run_group(dut, "fixed16")


@cocotb.test()
async def test_copy(dut):
    await _run_group(dut, "copy")


@cocotb.test()
async def test_leaky_fixed(dut):
    await _run_group(dut, "leaky-fixed")


@cocotb.test()
async def test_leaky_torch(dut):
    await _run_group(dut, "leaky-torch")
