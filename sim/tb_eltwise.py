"""cocotb testbench of the element-wise adder against ``zynqnn.numerics.ops``.

Each framework's add (``add_torch`` vector and scalar paths, with and without ReLU;
``add_qnnpack``; ``add_onnxruntime``; ``add_tflite`` in both rounding variants) on layers with
random real scales and with powers of two (which make rounding ties common), random code pairs
plus the extremes and the zero points, with random idle cycles on both inputs and stalls on the
output. Results are compared with ``numpy.array_equal`` against numerics' numpy forms.

Knobs: ``TB_PAIRS`` (code pairs per layer, default 384), ``TB_IDLE``, ``TB_STALL``, ``TB_SEED``.
Each test logs ``compared <group>: <n>``.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles

from zynqnn.hw.add import AddLayer, add_layer
from zynqnn.hw.config import HwConfig
from zynqnn.numerics import ops
from zynqnn.rtl.eltwise import eltwise_in_layout, eltwise_out_layout
from zynqnn.sim.clocking import start
from zynqnn.sim.runner import config_from_env
from zynqnn.sim.streams import StreamSink, StreamSource

f32 = np.float32
#: Per-group counts of compared outputs, appended in the test directory.
COMPARED_FILE = "compared.txt"

GROUPS = ("torch-vector", "torch-scalar", "qnnpack", "onnxruntime", "tflite",
          "tflite-single-rounding")


@dataclass
class AddCase:
    name: str
    layer: AddLayer
    a: np.ndarray
    b: np.ndarray
    want: np.ndarray


def _scales(rng, dyadic, lo=2e-3, hi=0.2):
    if dyadic:
        return tuple(f32(2.0 ** -int(rng.integers(2, 8))) for _ in range(3))
    return tuple(f32(v) for v in rng.uniform(lo, hi, 3))


def _codes(rng, n, qmin, qmax, zps):
    """Random codes plus the range ends and the zero points, in random order."""
    extra = np.array([qmin, qmax, *zps, qmin + 1, qmax - 1], dtype=np.int64)
    v = np.concatenate([rng.integers(qmin, qmax + 1, n - extra.size), extra])
    return rng.permutation(v)


def add_cases(group: str, cfg: HwConfig, rng, pairs: int) -> list[AddCase]:
    out = []
    for i in range(6):
        dyadic = i % 2 == 1
        sa, sb, so = _scales(rng, dyadic)
        if group.startswith("tflite"):
            if cfg.operand_bits == 16 and i >= 3:
                qmin, qmax = -(2**15), 2**15 - 1
            else:
                qmin, qmax = -128, 127
        elif group == "onnxruntime" and i >= 4:
            qmin, qmax = -128, 127
        else:
            qmin, qmax = 0, 255
        zpa, zpb, zpo = (int(v) for v in rng.integers(qmin, qmax + 1, 3))
        relu = group in ("torch-vector", "torch-scalar", "qnnpack") and i in (2, 5)
        a = _codes(rng, pairs, qmin, qmax, (zpa, zpb, zpo))
        b = _codes(rng, pairs, qmin, qmax, (zpb, zpa, zpo))
        args = (a, sa, zpa, b, sb, zpb, so, zpo)
        if group.startswith("torch"):
            path = group.split("-")[1]
            want = ops.add_torch(*args, relu=relu, path=path, qmin=qmin, qmax=qmax)
            lay = add_layer("torch", cfg, sa, zpa, sb, zpb, so, zpo, relu, qmin, qmax, path=path)
        elif group == "qnnpack":
            want = ops.add_qnnpack(*args, relu=relu)
            lay = add_layer("qnnpack", cfg, sa, zpa, sb, zpb, so, zpo, relu, qmin, qmax)
        elif group == "onnxruntime":
            want = ops.add_onnxruntime(*args, qmin=qmin, qmax=qmax)
            lay = add_layer("onnxruntime", cfg, sa, zpa, sb, zpb, so, zpo, False, qmin, qmax)
        else:
            single = group.endswith("rounding")
            ls = 15 if qmax > 127 else 20
            want = ops.add_tflite(*args, qmin=qmin, qmax=qmax, left_shift=ls,
                                  single_rounding=single)
            lay = add_layer("tflite", cfg, sa, zpa, sb, zpb, so, zpo, False, qmin, qmax,
                            left_shift=ls, single_rounding=single)
        out.append(AddCase(f"{group} {i} ({'dyadic' if dyadic else 'random'} scales"
                           f"{', relu' if relu else ''})", lay, a, b, want))
    return out


def _env(name, default, kind=float):
    return kind(os.environ.get(name, default))


async def _run_group(dut, group):
    cfg = config_from_env()
    lanes = len(dut.a__payload) // eltwise_in_layout(cfg, 1).size
    seed = _env("TB_SEED", 11, int) + GROUPS.index(group)
    rng = np.random.default_rng(seed)
    idle, stall = _env("TB_IDLE", 0.2), _env("TB_STALL", 0.2)
    pairs = _env("TB_PAIRS", 384, int)
    pairs -= pairs % lanes
    dut.a__valid.value = 0
    dut.b__valid.value = 0
    dut.o__ready.value = 0
    await start(dut)
    qmask = (1 << cfg.signed_operand_bits) - 1
    inl = eltwise_in_layout(cfg, lanes)
    total = 0
    for k, case in enumerate(add_cases(group, cfg, rng, pairs)):
        lay = case.layer
        dut.params.value = lay.params
        dut.zp_out.value = lay.zp_out & qmask
        dut.clamp_min.value = lay.clamp_min & qmask
        dut.clamp_max.value = lay.clamp_max & qmask
        words_a = [[int(v) for v in case.a[j:j + lanes]] for j in range(0, pairs, lanes)]
        words_b = [[int(v) for v in case.b[j:j + lanes]] for j in range(0, pairs, lanes)]
        src_a = StreamSource(dut, "a", dut.clk, inl, idle, random.Random(seed * 100 + k))
        src_b = StreamSource(dut, "b", dut.clk, inl, idle, random.Random(seed * 100 + k + 30))
        sink = StreamSink(dut, "o", dut.clk, eltwise_out_layout(cfg, lanes), stall,
                          random.Random(seed * 100 + k + 60))
        cocotb.start_soon(src_a.send(words_a))
        cocotb.start_soon(src_b.send(words_b))
        got = await sink.recv(len(words_a), timeout_cycles=20 * len(words_a) + 400)
        got = np.array([list(v) for v in got], dtype=np.int64).reshape(-1)
        if not np.array_equal(got, case.want):
            bad = np.flatnonzero(got != case.want)
            j = bad[0]
            raise AssertionError(
                f"{case.name}: {bad.size} of {got.size} differ; first: a={case.a[j]} "
                f"b={case.b[j]}: got {got[j]}, want {case.want[j]}")
        total += got.size
        await ClockCycles(dut.clk, 2)
    dut._log.info("compared %s: %d", group, total)
    with open(COMPARED_FILE, "a") as f:   # in the build directory, read by the launcher
        f.write(f"{group} {total}\n")


@cocotb.test()
async def test_torch_vector(dut):
    await _run_group(dut, "torch-vector")


@cocotb.test()
async def test_torch_scalar(dut):
    await _run_group(dut, "torch-scalar")


@cocotb.test()
async def test_qnnpack(dut):
    await _run_group(dut, "qnnpack")


@cocotb.test()
async def test_onnxruntime(dut):
    await _run_group(dut, "onnxruntime")


@cocotb.test()
async def test_tflite(dut):
    await _run_group(dut, "tflite")


@cocotb.test()
async def test_tflite_single_rounding(dut):
    await _run_group(dut, "tflite-single-rounding")
