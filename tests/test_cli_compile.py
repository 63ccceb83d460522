"""The ``zynqnn compile / run / report / verilog`` commands, in process (``zynqnn.cli.main``):
outputs equal the graph's, the report's sections, help texts, and every user error ends with
exit status 1 and one line ``zynqnn <command>: error: ...`` (no traceback)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest

import zynqnn
from zynqnn import cli
from zynqnn.hw.config import get_config

warnings.filterwarnings("ignore", message=r".*torch\.ao\.quantization.*deprecated.*")


def _cache_dir(tmp_path_factory):
    """One weight cache for all xdist workers of the run (their base temp's parent)."""
    base = tmp_path_factory.getbasetemp()
    return (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "zynqnn-cache"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A shared weight cache (one digits training per run), a work directory, and the digits
    program compiled by the CLI with its held-out images."""
    from zynqnn.zoo import digits

    work = tmp_path_factory.mktemp("cli")
    with digits.shared_cache(_cache_dir(tmp_path_factory)):
        x = digits.load_data()[2].numpy()
        np.save(work / "x.npy", x[:6])
        yield work, x


def run(capsys, *argv):
    """(exit status, stdout, stderr) of ``zynqnn argv``."""
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def fails(capsys, command, *argv, match):
    code, out, err = run(capsys, command, *argv)
    assert code == 1, (out, err)
    assert err.startswith(f"zynqnn {command}: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    import re

    assert re.search(match, err), err
    return err


def _digits_graph(engine):
    """The graph the compile command builds for ``digits`` (same calibration)."""
    import argparse

    return cli._zoo_graph(argparse.Namespace(model="digits", engine=engine, size=None, calib=64,
                                             seed=0))[0]


@pytest.mark.parametrize("engine", ["fbgemm", "qnnpack"])
def test_compile_and_run_digits(env, capsys, engine):
    work, x = env
    prog = work / f"digits-{engine}.zqp"
    code, out, err = run(capsys, "compile", "digits", "-o", prog, "--engine", engine)
    assert code == 0, err
    assert f"compiled digits_cnn-{engine} for pynq_z2 (16x16i8-" in out
    assert "5 layers" in out and f"wrote {prog}" in out
    g = _digits_graph(engine)
    code, out, err = run(capsys, "run", prog, "--input", work / "x.npy", "--output",
                         work / "y.npy")
    assert code == 0, err
    assert f"wrote {work / 'y.npy'}: float32 [6, 10] (golden)" in out
    y = np.load(work / "y.npy")
    assert np.array_equal(y, g.run(x[:6]))
    # one C x H x W sample, and integer codes in and out
    np.save(work / "x1.npy", x[0])
    assert run(capsys, "run", prog, "-i", work / "x1.npy", "-o", work / "y1.npy")[0] == 0
    assert np.array_equal(np.load(work / "y1.npy"), g.run(x[:1]))
    np.save(work / "c.npy", g.quantize_input(x[:3]))
    code, out, _ = run(capsys, "run", prog, "-i", work / "c.npy", "-o", work / "q.npy",
                       "--codes", "--config", "pynq_z2")
    assert code == 0 and "int64 [3, 10]" in out
    assert np.array_equal(np.load(work / "q.npy"), g.run_int(g.quantize_input(x[:3])))


def test_compile_graph_file_for_another_config(env, capsys):
    from test_program import tiny_graph

    work, _ = env
    g = tiny_graph()
    g.save(work / "tiny.zqg")
    code, out, err = run(capsys, "compile", work / "tiny.zqg", "-o", work / "tiny.zqp",
                         "--config", "tiny")
    assert code == 0, err
    assert "for tiny (4x4i8-" in out
    xs = np.random.default_rng(0).normal(size=(3, 4, 8, 8)).astype(np.float32)
    np.save(work / "tx.npy", xs)
    assert run(capsys, "run", work / "tiny.zqp", "-i", work / "tx.npy", "-o",
               work / "ty.npy")[0] == 0
    assert np.array_equal(np.load(work / "ty.npy"), g.run(xs))
    fails(capsys, "run", work / "tiny.zqp", "-i", work / "tx.npy", "-o", work / "ty.npy",
          "--config", "pynq_z2",
          match=r"tiny.zqp: compiled for config tiny \(4x4i8-\w+\), not pynq_z2")


def test_compile_onnx(env, capsys):
    """A QDQ model from ONNX Runtime's quantize_static (the float digits model exported)."""
    import torch

    from zynqnn.zoo import digits
    from zynqnn.zoo.ort import export_onnx, ort_quantize

    work, x = env
    model = digits.pretrained()
    export_onnx(model, torch.from_numpy(x[:1]), work / "digits.onnx")
    qdq = ort_quantize(work / "digits.onnx", [x[i:i + 1] for i in range(64)],
                       work / "digits_qdq.onnx")
    fails(capsys, "compile", work / "digits.onnx", "-o", work / "f.zqp",
          match=r"digits.onnx: a float ONNX model; quantize it first")
    fails(capsys, "compile", qdq, "-o", work / "f.zqp", "--engine", "tflite",
          match="--engine applies to zoo models only")
    code, out, err = run(capsys, "compile", qdq, "-o", work / "onnx.zqp")
    assert code == 0, err
    g = zynqnn.from_onnx(qdq)
    assert run(capsys, "run", work / "onnx.zqp", "-i", work / "x.npy", "-o",
               work / "oy.npy")[0] == 0
    assert np.array_equal(np.load(work / "oy.npy"), g.run(x[:6]))


def test_report(env, capsys, tmp_path):
    work, _ = env
    prog = work / "rep.zqp"
    assert run(capsys, "compile", "digits", "-o", prog)[0] == 0
    code, out, err = run(capsys, "report", prog, "--clock-mhz", "142.857", "--ddr-gbps", "1.0",
                         "--build", tmp_path)
    assert code == 0, err
    for text in ("performance model: config pynq_z2", "142.857 MHz, DDR 1 GB/s", "conv2",
                 "estimated latency", "frames/s", "run `make synth CONFIG=pynq_z2`"):
        assert text in out, (text, out)
    assert "conv2_1" not in out   # layers are named after the modules (conv2)
    from zynqnn.synth import Resources, format_report, write_outputs

    cfg = get_config("pynq_z2")
    r = Resources("zynqnn_top", dsp=128, config="pynq_z2", config_id=cfg.config_id)
    _, res = write_outputs(r, tmp_path)
    code, out, _ = run(capsys, "report", prog, "--build", tmp_path)
    assert code == 0 and "DSP48E1" in out and "make synth" not in out
    # without a program: the resources of a config alone
    code, out, _ = run(capsys, "report", "--build", tmp_path)
    assert code == 0 and out.strip() == (f"synthesis estimate of the accelerator (zynqnn_top), "
                                         f"from {res}:\n{format_report(r)}").strip()
    code, out, _ = run(capsys, "report", "--config", "tiny", "--build", tmp_path)
    tiny = get_config("tiny")
    assert code == 0 and out.strip() == (
        f"no synthesis estimate for tiny ({tiny.config_id}) in {tmp_path / tiny.config_id}: "
        "run `make synth CONFIG=tiny` (or pass --resources FILE)")
    fails(capsys, "report", prog, "--clock-mhz", "999", match=r"HwConfig.clock_mhz = 999.0")
    fails(capsys, "report", prog, "--config", "tiny", match="compiled for config pynq_z2")


def test_verilog(capsys, tmp_path, monkeypatch):
    import zynqnn.rtl.gen as gen

    calls = []

    def fake(cfg, out, only=None):
        calls.append((cfg.name, Path(out), only))
        return [Path(out) / cfg.config_id / f"{only or 'all'}.v"]

    monkeypatch.setattr(gen, "write_verilog", fake)
    code, out, _ = run(capsys, "verilog", "--config", "tiny", "-o", tmp_path)
    assert code == 0 and calls == [("tiny", tmp_path, "zynqnn_top")]
    assert out.strip() == f"wrote {tmp_path / get_config('tiny').config_id / 'zynqnn_top.v'}"
    assert run(capsys, "verilog", "--all")[0] == 0 and calls[-1] == ("pynq_z2", Path("build"),
                                                                     None)
    fails(capsys, "verilog", "--config", "nope", match="unknown hardware config 'nope'")


@pytest.mark.slow
def test_verilog_writes_the_top_level(capsys, tmp_path):
    code, out, _ = run(capsys, "verilog", "--config", "tiny", "-o", tmp_path)
    path = tmp_path / get_config("tiny").config_id / "zynqnn_top.v"
    assert code == 0 and path.exists() and "module zynqnn_top" in path.read_text()


def test_user_errors(env, capsys):
    work, _ = env
    fails(capsys, "compile", "resnet50", "-o", work / "r.zqp",
          match=r"unknown model 'resnet50': not a zoo model \(digits, digits_cnn, "
                r"mobilenet_v2, resnet18, yolov3_tiny\)")
    fails(capsys, "compile", "digits", "-o", work / "r.zqp", "--size", "16",
          match=r"digits takes 8x8 inputs")
    fails(capsys, "compile", "digits", "-o", work / "r.zqp", "--config", "pynq_z2_int16",
          match=r"node '.*' \(quantize\): tensor '.*' is uint8, config pynq_z2_int16")
    fails(capsys, "run", work / "missing.zqp", "-i", work / "x.npy", "-o", work / "y.npy",
          match=r"missing.zqp: no such file")
    (work / "junk.zqp").write_bytes(b"junk")
    fails(capsys, "run", work / "junk.zqp", "-i", work / "x.npy", "-o", work / "y.npy",
          match=r"junk.zqp: not a zynqnn program")
    prog = work / "err.zqp"
    assert run(capsys, "compile", "digits", "-o", prog)[0] == 0
    fails(capsys, "run", prog, "-i", work / "nothing.npy", "-o", work / "y.npy",
          match=r"nothing.npy: no such file")
    (work / "bad.npy").write_bytes(b"not numpy")
    fails(capsys, "run", prog, "-i", work / "bad.npy", "-o", work / "y.npy",
          match=r"bad.npy: not a .npy array")
    np.save(work / "ints.npy", np.zeros((1, 1, 8, 8), np.int64))
    fails(capsys, "run", prog, "-i", work / "ints.npy", "-o", work / "y.npy",
          match=r"ints.npy: int64 values; the model takes float32 inputs \(pass --codes")
    np.save(work / "shape.npy", np.zeros((2, 3, 8, 8), np.float32))
    fails(capsys, "run", prog, "-i", work / "shape.npy", "-o", work / "y.npy",
          match=r"must have shape \(N, 1, 8, 8\), got \[2, 3, 8, 8\]")
    fails(capsys, "run", prog, "-i", work / "x.npy", "-o", work / "y.npy", "--backend", "pynq",
          match=r"no bitstream .*: pass --bitfile BIT or set \$ZYNQNN_BITFILE")
    fails(capsys, "run", prog, "-i", work / "x.npy", "-o", work / "y.npy", "--backend", "pynq",
          "--bitfile", work / "none.bit", match=r"no bitstream .*none.bit")


@pytest.mark.parametrize("command, words", [
    ("compile", ["MODEL", "--engine", "fbgemm", "qnnpack", "--config", "-o PROG",
                 "zynqnn compile digits -o digits.zqp"]),
    ("run", ["--input", "--output", "--backend", "golden", "verilator", "icarus", "pynq",
             "--codes", "--bitfile"]),
    ("report", ["--clock-mhz", "--ddr-gbps", "make synth", "Without PROG"]),
    ("verilog", ["--config", "-o DIR", "zynqnn_top"]),
    ("errors", ["MODEL", "--engine"]),
])
def test_help(capsys, command, words):
    with pytest.raises(SystemExit) as info:
        cli.main([command, "--help"])
    assert info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for w in words:
        assert w in text, (w, text)
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    top = capsys.readouterr().out
    assert all(c in top for c in ("compile", "run", "report", "verilog", "errors"))
