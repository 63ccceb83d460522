"""The command line's rough edges (issue 26, item 6) and the progress of long steps (item 4).

* the README's command-line blocks run as written in an empty directory (they are read from
  README.md by their ``<!-- readme-test: ... -->`` marker, so the test follows the README);
* every command that takes a model takes the same names (zoo names, aliases, files);
* ``zynqnn report PROG | head`` stops quietly (status 141, no traceback, no error line);
* the pynq backend's missing bitstream names ``--bitfile`` / ``$ZYNQNN_BITFILE``;
* a model from PyTorch: the graph is named after the model, its nodes after their modules;
* ``zynqnn report`` finds ``build/<config id>/resources.json`` from the current directory, the
  program's directory and the checkout, or ``--resources FILE``, and labels a component's
  figures with its module;
* ``torch.onnx.export(model, x, path)`` (the default exporter, which needs onnxscript) works;
* the per-layer error PNG: the legend clear of the title, long names ellipsized; ``--images``;
* ``zynqnn compile --input-shape`` for an ONNX file with a symbolic batch axis;
* progress on stderr: on a terminal (a pty here) or with ``--verbose``; never with ``--quiet``
  and not when stderr is not a terminal (CI logs stay clean).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import tomllib
import warnings
from pathlib import Path

import numpy as np
import pytest

import zynqnn
from zynqnn import cli, progress
from zynqnn.hw.config import get_config
from zynqnn.hw.platform import TOP_NAME

warnings.filterwarnings("ignore", message=r".*torch\.ao\.quantization.*deprecated.*")

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
ZYNQNN = Path(sys.executable).parent / "zynqnn"


# ---------------------------------------------------------------------------------------------
# helpers


def _cache_dir(tmp_path_factory) -> Path:
    """One digits weight cache for all xdist workers of the run (their base temp's parent)."""
    base = tmp_path_factory.getbasetemp()
    return (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "zynqnn-cache"


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """The digits CNN trained once (or loaded) into a shared cache."""
    from zynqnn.zoo import digits

    path = _cache_dir(tmp_path_factory)
    with digits.shared_cache(path):
        pass
    return path


def _env(cache: Path | None = None, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in (progress.ENV, "ZYNQNN_BITFILE")}
    env["PATH"] = str(ZYNQNN.parent) + os.pathsep + env.get("PATH", "")
    env["AMARANTH_USE_YOSYS"] = "builtin"
    if cache is not None:
        env["ZYNQNN_CACHE"] = str(cache)
    env.update(extra)
    return env


def readme_block(marker: str) -> list[str]:
    """The command lines of the ```sh block after ``<!-- readme-test: marker -->``."""
    text = README.read_text()
    at = text.find(f"<!-- readme-test: {marker}")
    assert at >= 0, f"README.md has no <!-- readme-test: {marker} --> block"
    block = re.compile(r"```sh\n(.*?)```", re.S).search(text, at)
    assert block and text[at:block.start()].count("\n") <= 2, "the marker precedes its block"
    return [line for line in block.group(1).splitlines() if line.strip()]


def run_lines(lines: list[str], cwd: Path, env: dict) -> list[subprocess.CompletedProcess]:
    done = []
    for line in lines:
        p = subprocess.run(["bash", "-c", line], cwd=cwd, env=env, capture_output=True,
                           text=True)
        assert p.returncode == 0, f"README line failed ({p.returncode}): {line}\n{p.stderr}"
        assert "Traceback" not in p.stderr, (line, p.stderr)
        done.append(p)
    return done


def run(capsys, *argv):
    """(status, stdout, stderr) of ``zynqnn argv`` in this process."""
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(folder, tiny.zqp compiled for `tiny`, tiny.zqg, x.npy) of test_program's tiny graph."""
    from test_program import tiny_graph

    from zynqnn.ir import save as save_graph

    d = tmp_path_factory.mktemp("rough")
    g = tiny_graph()
    zynqnn.compile(g, "tiny").save(d / "tiny.zqp")
    save_graph(g, d / "tiny.zqg")
    np.save(d / "x.npy", np.random.default_rng(0).normal(size=(2, 4, 8, 8)).astype(np.float32))
    return d


# ---------------------------------------------------------------------------------------------
# the README


def test_readme_cli_block_runs_as_written(cache, tmp_path):
    lines = readme_block("cli")
    assert any(line.startswith("zynqnn example-input") for line in lines)
    done = run_lines(lines, tmp_path, _env(cache))
    # stderr is a pipe here: no progress, no warnings, nothing
    assert all(p.stderr == "" for p in done), [p.stderr for p in done]
    y = np.load(tmp_path / "y.npy")
    assert y.shape == (8, 10) and y.dtype == np.float32
    out = {line.split()[1]: p.stdout for line, p in zip(lines, done, strict=True)}
    labels = re.search(r"labels ([\d ]+)\)", out["example-input"]).group(1).split()
    assert np.mean(y.argmax(1) == np.array(labels, dtype=int)) >= 0.75  # a trained digits CNN
    assert (tmp_path / "digits_cnn-fbgemm-errors.png").read_bytes()[:4] == b"\x89PNG"
    assert "performance model" in out["report"]
    assert "all 8 nodes map onto pynq_z2" in out["check"]
    assert (tmp_path / "digits.svg").read_text().startswith("<svg ")


@pytest.mark.slow
def test_readme_cli_rtl_block_runs_as_written(cache, tmp_path):
    """The Verilator run of the README (builds zynqnn_top for pynq_z2 the first time)."""
    env = _env(cache)
    run_lines([line for line in readme_block("cli") if " errors " not in line], tmp_path, env)
    done = run_lines(readme_block("cli-rtl"), tmp_path, env)
    assert "(RTL verilator, AXI RAM model)" in done[0].stdout


# ---------------------------------------------------------------------------------------------
# model names, example inputs


def test_every_model_command_takes_the_same_names(cache, capsys, tmp_path, tiny, monkeypatch):
    monkeypatch.setenv("ZYNQNN_CACHE", str(cache))
    # `errors digits` as `compile digits`; --images sets the images measured
    png = tmp_path / "d.png"
    code, out, err = run(capsys, "errors", "digits", "--images", "3", "--calib", "8", "--png", png)
    assert code == 0, err
    assert "per-layer quantization error: digits_cnn-fbgemm (3 images)" in out
    assert png.read_bytes()[:4] == b"\x89PNG"
    # a .zqg graph, for errors too (default: 8 images of its input shape)
    code, out, err = run(capsys, "errors", tiny / "tiny.zqg", "--png", tmp_path / "g.png")
    assert code == 0, err
    assert "per-layer quantization error: tiny (8 images)" in out
    # the same refusals, word for word
    for command in ("errors", "compile"):
        argv = [command, "no_such_model"] + (["-o", tmp_path / "p.zqp"] if command == "compile"
                                             else [])
        code, _, err = run(capsys, *argv)
        assert code == 1 and "unknown model 'no_such_model': not a zoo model (digits, " \
            "digits_cnn, mobilenet_v2, resnet18, yolov3_tiny), an ONNX file nor a .zqg graph" \
            in err, err
        argv[1] = tiny / "tiny.zqp"
        code, _, err = run(capsys, *argv)
        assert code == 1 and "tiny.zqp: a compiled program" in err, err


def test_example_input_feeds_run(capsys, tmp_path, tiny):
    x = tmp_path / "x.npy"
    code, out, err = run(capsys, "example-input", tiny / "tiny.zqp", "-o", x, "-n", "3")
    assert code == 0, err
    assert f"wrote {x}: float32 [3, 4, 8, 8], random normal values (seed 0)" in out
    code, out, err = run(capsys, "run", tiny / "tiny.zqp", "-i", x, "-o", tmp_path / "y.npy")
    assert code == 0, err
    model = zynqnn.load(tiny / "tiny.zqp")
    assert np.array_equal(np.load(tmp_path / "y.npy"), model.run(np.load(x)))
    code, _, err = run(capsys, "example-input", tiny / "tiny.zqp", "-o", x, "-n", "0")
    assert code == 1 and "--count must be at least 1" in err


# ---------------------------------------------------------------------------------------------
# pipes, the pynq error


def test_report_into_a_closed_pipe_exits_quietly(tiny):
    """`zynqnn report PROG | head -1`: the first line, then silence and status 141 (or 0 when
    everything fitted into the pipe before head left)."""
    prog = tiny / "tiny.zqp"
    p = subprocess.run(["bash", "-c", f'zynqnn report "{prog}" | head -1; '
                        'echo "status ${PIPESTATUS[0]}" >&2'], env=_env(), capture_output=True,
                       text=True)
    assert p.stdout.startswith(f"{prog}: tiny, ") and p.stdout.count("\n") == 1, p.stdout
    assert re.fullmatch(r"status (0|141)\n", p.stderr), p.stderr
    # a reader that is gone before the first write: always the broken pipe
    q = subprocess.Popen([ZYNQNN, "report", prog], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=_env())
    q.stdout.close()
    err = q.stderr.read().decode()
    assert q.wait(timeout=120) == cli.EXIT_BROKEN_PIPE == 141
    assert err == "", err


def test_pynq_error_names_the_cli_options(capsys, tmp_path, tiny, monkeypatch):
    monkeypatch.chdir(tmp_path)   # no build/<config id>/*.bit here
    monkeypatch.delenv("ZYNQNN_BITFILE", raising=False)
    argv = ["run", tiny / "tiny.zqp", "-i", tiny / "x.npy", "-o", tmp_path / "y.npy",
            "--backend", "pynq"]
    code, _, err = run(capsys, *argv)
    assert code == 1 and "--bitfile BIT or set $ZYNQNN_BITFILE" in err, err
    assert "bitfile=" not in err and "(the default)" in err
    monkeypatch.setenv("ZYNQNN_BITFILE", str(tmp_path / "nope.bit"))
    code, _, err = run(capsys, *argv)
    assert code == 1 and f"no bitstream {tmp_path / 'nope.bit'} ($ZYNQNN_BITFILE)" in err
    code, _, err = run(capsys, *argv[:-1], "icarus", "--ddr-latency", "100")
    assert code == 1 and "--ddr-latency needs --fast" in err


# ---------------------------------------------------------------------------------------------
# torch names


def test_a_torch_model_is_named_after_its_modules():
    import torch
    from torch import nn

    from zynqnn import zoo
    from zynqnn.zoo import digits

    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    model = zoo.get("digits_cnn", seed=0)
    g = zynqnn.from_torch(zoo.quantize_fx(model, x[:1], "fbgemm", x), x, engine="fbgemm")
    assert g.name == "GraphModule"   # was the last module's path, 'fc._packed_params'
    assert [n.name for n in g.nodes] == ["quantize_per_tensor", "conv1", "conv2", "pool",
                                         "conv3", "flatten", "fc", "dequantize_6"]
    assert all(n.name == n.source for n in g.nodes if n.source)
    e = digits.quantize_eager(model, x, "qnnpack")
    g = zynqnn.from_torch(e, x, name="eager")
    assert g.name == "eager" and [n.name for n in g.nodes if n.op in ("conv2d", "linear")] == \
        ["conv1", "conv2", "conv3", "fc"]
    assert zynqnn.from_torch(e, x).name == type(e).__name__
    # nested modules keep their paths; a module called twice gets a suffix
    seq = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3)).eval()
    gs = zynqnn.from_torch(zoo.quantize_fx(seq, x[:1], "fbgemm", x), x, engine="fbgemm")
    assert [n.name for n in gs.nodes if n.op == "conv2d"] == ["0", "2"]
    assert not any("_packed_params" in n for n in [g.name, *(n.name for n in gs.nodes)])


# ---------------------------------------------------------------------------------------------
# report: the synthesis estimate


def _estimate(module: str, cfg, out: Path) -> Path:
    from zynqnn.synth import Resources, write_outputs

    r = Resources(module=module, lut=52_800, ff=43_900, dsp=201, ramb36=101, logic_depth=20,
                  seconds=744.0, config=cfg.name, config_id=cfg.config_id, yosys="Yosys 0.70")
    return write_outputs(r, out)[1]


def test_report_finds_and_labels_the_estimate(capsys, tmp_path, tiny, monkeypatch):
    cfg = get_config("tiny")
    prog = tiny / "tiny.zqp"
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    # the program's directory
    top = _estimate(TOP_NAME, cfg, tiny / "build")
    code, out, err = run(capsys, "report", prog)
    assert code == 0, err
    assert f"synthesis estimate of the accelerator ({TOP_NAME}), from {top}:" in out
    assert "52,800" in out and "make synth" not in out
    # the current directory first; a component is labelled as such
    pe = _estimate("zynqnn_pe_array", cfg, work / "build")
    code, out, _ = run(capsys, "report", prog)
    assert f"synthesis estimate of the component zynqnn_pe_array alone, not of the whole " \
           f"accelerator ({TOP_NAME}: `make synth CONFIG=tiny`), from build/" in out
    assert "of the accelerator (" not in out
    # --resources FILE, checked before anything is printed
    code, out, _ = run(capsys, "report", prog, "--resources", top)
    assert code == 0 and f"of the accelerator ({TOP_NAME}), from {top}" in out
    code, out, err = run(capsys, "report", prog, "--resources", tmp_path / "none.json")
    assert code == 1 and out == "" and "none.json: no such file" in err
    (tmp_path / "bad.json").write_text("[1, 2]")
    code, out, err = run(capsys, "report", prog, "--resources", tmp_path / "bad.json")
    assert code == 1 and "bad.json: not a resources.json of `make synth`" in err
    # another config's estimate says so
    code, out, _ = run(capsys, "report", "--config", "pynq_z2", "--resources", pe)
    assert code == 0 and f"NOTE: it estimates config tiny ({cfg.config_id}), not pynq_z2" in out
    # nothing found: where it looked, the checkout's build/ included
    (work / "build").rename(work / "old")
    (tiny / "build").rename(tiny / "old")
    try:
        code, out, _ = run(capsys, "report", "--config", "tiny")
    finally:
        (tiny / "old").rename(tiny / "build")
    assert code == 0 and out.startswith(f"no synthesis estimate for tiny ({cfg.config_id}) in "
                                        f"build/{cfg.config_id}, ")
    assert str(ROOT / "build" / cfg.config_id) in out and "--resources FILE" in out
    code, out, _ = run(capsys, "report", prog, "--build", tiny / "build")
    assert code == 0 and f"from {top}:" in out


# ---------------------------------------------------------------------------------------------
# ONNX: the default exporter, --input-shape


def test_onnxscript_is_pinned_and_the_default_export_works(tmp_path):
    import onnxruntime as ort
    import torch
    from torch import nn

    tools = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]["tools"]
    assert any(re.fullmatch(r"onnxscript==[\d.]+", d) for d in tools)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 3)).eval()
    x = torch.rand(1, 3, 8, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, x, str(tmp_path / "m.onnx"))   # as the tutorials write it
    s = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    y = s.run(None, {s.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        assert np.allclose(y, model(x).numpy(), atol=1e-5)


def test_compile_input_shape_for_a_symbolic_batch_axis(capsys, tmp_path):
    import torch
    from torch import nn

    from zynqnn.zoo.ort import ort_quantize

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 3)).eval()
    x = torch.rand(1, 3, 8, 8)
    batch = torch.export.Dim("batch", min=1, max=64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), str(tmp_path / "f.onnx"), dynamic_shapes=({0: batch},))
    qdq = ort_quantize(tmp_path / "f.onnx", [torch.rand(1, 3, 8, 8).numpy() for _ in range(4)],
                       tmp_path / "q.onnx")
    out = tmp_path / "q.zqp"
    code, _, err = run(capsys, "compile", qdq, "-o", out)
    assert code == 1 and "has the dynamic shape [batch, 3, 8, 8]: pass --input-shape N,C,H,W " \
        "(e.g. --input-shape 1,3,8,8)" in err, err
    code, stdout, err = run(capsys, "compile", qdq, "-o", out, "--input-shape", "1,3,8,8")
    assert code == 0, err
    assert "input uint8 ['N', 3, 8, 8]" in stdout
    g = zynqnn.from_onnx(qdq, input_shapes=(1, 3, 8, 8))   # the API takes a bare shape too
    xs = np.random.default_rng(1).random((2, 3, 8, 8), dtype=np.float32)
    assert np.array_equal(zynqnn.load(out).run(xs), g.run(xs))
    code, _, err = run(capsys, "compile", qdq, "-o", out, "--input-shape", "1,4,8,8")
    assert code == 1 and re.search(r"the shape \[1, 4, 8, 8\] given for input '\w+'", err), err
    with pytest.raises(SystemExit):
        cli.main(["compile", str(qdq), "-o", str(out), "--input-shape", "1,3,8"])
    assert "four positive integers N,C,H,W" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# the error plot


def test_error_plot_keeps_legend_title_and_names_apart(tmp_path):
    from zynqnn.analysis import LayerError, LayerErrors, ellipsize

    names = ["quantize_per_tensor", "features.17.conv.0.0.a_very_long_layer_name_indeed",
             "conv2", "fc"]
    rows = LayerErrors(LayerError(n, "conv2d", "t", "uint8", 0.1, 30.0 + i, 0.1 * (i + 1),
                                  0.9, 100) for i, n in enumerate(names))
    rows.title = "per-layer quantization error: resnet18-fbgemm (8 images)"
    fig = rows.figure()
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    ax = fig.axes[0]
    title = ax.title.get_window_extent(r)
    legend = fig.axes[1].get_legend().get_window_extent(r)
    assert not title.overlaps(legend) and legend.y1 <= title.y0
    page = fig.bbox
    labels = ax.get_xticklabels()
    assert [t.get_text() for t in labels][::2] == ["quantize_per_tensor", "conv2"]
    assert labels[1].get_text() == "features.17.co\u2026r_name_indeed" and \
        len(labels[1].get_text()) == rows.label_chars == 28
    for t in [*labels, ax.title, fig.axes[1].get_legend()]:
        b = t.get_window_extent(r)
        assert page.x0 <= b.x0 and b.x1 <= page.x1 and page.y0 <= b.y0 and b.y1 <= page.y1, t
    assert rows.plot(tmp_path / "e.png").read_bytes()[:4] == b"\x89PNG"
    assert ellipsize("abc", 3) == "abc" and ellipsize("abcdef", 5) == "ab\u2026ef"
    assert "features.17.conv.0.0.a_very_l" not in rows.table()  # the table ellipsizes too


# ---------------------------------------------------------------------------------------------
# progress


def _pty_run(argv: list, cwd: Path, env: dict) -> tuple[int, str, str]:
    """Run with stderr on a pseudo-terminal (stdout a pipe): (status, stdout, what the terminal
    got)."""
    import pty

    master, slave = pty.openpty()
    p = subprocess.Popen([str(a) for a in argv], cwd=cwd, env=env, stdout=subprocess.PIPE,
                         stderr=slave)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:   # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    out = p.stdout.read().decode()
    return p.wait(timeout=300), out, b"".join(chunks).decode(errors="replace")


def test_compile_progress_on_a_terminal_or_verbose_only(tiny, tmp_path, capsys):
    argv = [ZYNQNN, "compile", tiny / "tiny.zqg", "-o", tmp_path / "t.zqp", "--config", "tiny"]
    code, out, tty = _pty_run(argv, tmp_path, _env())
    assert code == 0 and "wrote" in out
    # the step's first line, the per-layer bar (tqdm on the pty), the step's last line
    assert re.search(r"compiling tiny \(\d+ nodes\) for tiny \(4x4i8-[0-9a-f]+\) \.\.\.\r?\n"
                     r".*\ncompiling tiny [^\n]*: done in \d+\.\d s", tty, re.S), tty
    assert "compiling" not in out   # progress never goes to stdout
    code, _, tty = _pty_run([*argv, "--quiet"], tmp_path, _env())
    assert code == 0 and tty == "", tty
    # not a terminal: nothing; --verbose: the lines anyway (here in-process, stderr captured)
    code, out, err = run(capsys, *argv[1:])
    assert code == 0 and err == ""
    code, out, err = run(capsys, "--verbose", *argv[1:])
    assert code == 0 and "compiling tiny" in err and "done in" in err
    assert re.search(r"compiling \d+ layers for tiny: (\d+)/\1 layers in ", err), err
    assert progress.ENV not in os.environ   # restored after the command
    with pytest.raises(SystemExit):
        cli.main(["-v", "-q", "report"])
    assert "--verbose and --quiet exclude each other" in capsys.readouterr().err


class _Tty:
    """A stderr that says it is a terminal."""

    def __init__(self):
        self.text = ""

    def write(self, s):
        self.text += s
        return len(s)

    def flush(self):
        pass

    def isatty(self):
        return True


def test_simulator_build_progress(tmp_path, monkeypatch):
    """The build line of zynqnn.sim.runner.run (a fake cocotb runner: no simulator runs)."""
    import cocotb_tools.runner as cocotb_runner

    from zynqnn.sim import runner

    builds = []

    class FakeRunner:
        def build(self, build_dir, hdl_toplevel, **kw):
            builds.append(hdl_toplevel)
            (Path(build_dir) / hdl_toplevel).write_bytes(b"binary")

        def test(self, **kw):
            return "results.xml"

    def fake_verilog(make, name, build_dir):   # written once, as the real one when unchanged
        build_dir.mkdir(parents=True, exist_ok=True)
        if not (build_dir / f"{name}.v").exists():
            (build_dir / f"{name}.v").write_text("module m; endmodule\n" * 20_000)  # 0.4 MB
        return build_dir / f"{name}.v"

    monkeypatch.setattr(cocotb_runner, "get_runner", lambda sim: FakeRunner())
    monkeypatch.setattr(cocotb_runner, "get_results", lambda results: (1, 0))
    monkeypatch.setattr(runner, "_verilog_for", fake_verilog)
    monkeypatch.delenv(progress.ENV, raising=False)
    cfg = get_config("tiny")

    def build():
        runner.run(None, TOP_NAME, "zynqnn.sim.tb_program", "verilator", cfg, testcase="t",
                   build_root=tmp_path)

    tty = _Tty()
    monkeypatch.setattr(sys, "stderr", tty)
    build()
    bdir = tmp_path / "sim" / f"{TOP_NAME}-{cfg.config_id}-verilator"
    mb = (bdir / f"{TOP_NAME}.v").stat().st_size / 1e6
    guess = progress.duration(max(runner.BUILD_SECONDS_MIN["verilator"],
                                  runner.BUILD_SECONDS_PER_MB["verilator"] * mb))
    generating = (rf"generating the Verilog of {TOP_NAME} \(tiny\) \.\.\.\n"
                  rf"generating the Verilog of {TOP_NAME} \(tiny\): done in \d+\.\d s\n")
    # between the two lines, a tqdm bar of the elapsed seconds against the estimate, cleared
    # when the build is done
    bar = re.search(r"\r(building [^\r\n]*)\r", tty.text)
    assert bar and re.search(rf"building {TOP_NAME} for verilator: +0%\|.*\| 0/\d+ s "
                             r"\(estimated\)", bar.group(1)), tty.text
    tty.text = re.sub(r"\r[^\n]*\r", "", tty.text)   # the bar and its clearing
    assert re.fullmatch(
        generating +
        rf"building {TOP_NAME} \(tiny, 0\.4 MB of Verilog\) for verilator \(this takes ~"
        rf"{re.escape(guess)} the first time; log: {re.escape(str(bdir / 'build.log'))}\) "
        rf"\.\.\.\n"
        rf"building {TOP_NAME} .* for verilator: done in \d+\.\d s\n", tty.text), tty.text
    tty.text = ""
    build()   # up to date: no build line
    assert builds == [TOP_NAME, TOP_NAME] and re.fullmatch(generating, tty.text), tty.text
    (bdir / TOP_NAME).unlink()
    build()   # rebuilt: the last build's time is the estimate
    assert "(the last build took " in tty.text
    monkeypatch.setattr(sys, "stderr", _Tty())
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    (bdir / TOP_NAME).unlink()
    build()   # not a terminal: nothing
    assert sys.stderr.text == ""


def test_elapsed_bar_ticks_and_says_when_the_estimate_is_passed(monkeypatch):
    monkeypatch.delenv(progress.ENV, raising=False)
    tty = _Tty()
    monkeypatch.setattr(sys, "stderr", tty)
    with progress.elapsed_bar("building x", 1.0):
        time.sleep(1.8)
    assert "building x:   0%|" in tty.text and "0/1 s (estimated)" in tty.text
    assert "longer than estimated: 1." in tty.text, tty.text
    assert tty.text.endswith("\r"), tty.text   # cleared: the step's own line comes next
    monkeypatch.setattr(tty, "isatty", lambda: False)
    tty.text = ""
    with progress.elapsed_bar("building x", 1.0):
        pass
    assert tty.text == ""


def test_synthesis_and_calibration_progress(tmp_path, monkeypatch):
    """make synth's line before Yosys (a fake yosys) and zynqnn.quantize's calibration bar."""
    import torch
    from torch import nn

    from zynqnn import synth

    fake = tmp_path / "yosys"
    fake.write_text(f"#!{sys.executable}\n"
                    "import json, sys\n"
                    "if '-V' in sys.argv: print('Yosys 0.0 (fake)'); sys.exit()\n"
                    "cells = {'design': {'num_cells_by_type': {'LUT2': 10}}}\n"
                    "open('stat.json', 'w').write(json.dumps(cells))\n"
                    "open('path.json', 'w').write(json.dumps(cells))\n"
                    "open('ltp.txt', 'w').write('Longest topological path in m (length=3):')\n")
    fake.chmod(0o755)
    monkeypatch.setenv(progress.ENV, "1")   # --verbose
    err = _Tty()
    monkeypatch.setattr(sys, "stderr", err)
    monkeypatch.setattr(err, "isatty", lambda: False)   # plain lines
    cfg = get_config("tiny")
    r = synth.run_synth(cfg, "zynqnn_pe_array", tmp_path, yosys=str(fake))
    assert r.lut == 10
    log = tmp_path / cfg.config_id / "yosys_zynqnn_pe_array" / "yosys.log"
    assert re.fullmatch(r"generating the Verilog of zynqnn_pe_array \(tiny\) \.\.\.\n"
                        r"generating .*: done in \d+\.\d s\n"
                        rf"Yosys synth_xilinx: zynqnn_pe_array, config tiny \({cfg.config_id}\) "
                        rf"\(expect a few minutes; log: {re.escape(str(log))}\) \.\.\.\n"
                        r"Yosys synth_xilinx: .*: done in \d+\.\d s\n", err.text), err.text
    synth.write_outputs(r, tmp_path)
    assert synth._expected_time(cfg, "zynqnn_pe_array", tmp_path).startswith("the last run took")
    assert synth._expected_time(get_config("pynq_z2"), TOP_NAME, tmp_path) == "expect 7-14 min"
    # the seconds of the bar drawn on a terminal during the Yosys run
    assert synth._expected_seconds(cfg, "zynqnn_pe_array", tmp_path) == r.seconds
    assert synth._expected_seconds(get_config("pynq_z2"), TOP_NAME, tmp_path) == 14 * 60
    err.text = ""
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU()).eval()
    zynqnn.quantize(model, torch.rand(10, 1, 6, 6), batch_size=4, calibrator="entropy")
    assert re.search(r"calibrating Sequential \(entropy, 2 pass\(es\) over 10 images\): "
                     r"0/20 images \.\.\.\n.*: 20/20 images in \d+\.\d s\n", err.text), err.text
    monkeypatch.setenv(progress.ENV, "0")   # --quiet
    err.text = ""
    zynqnn.quantize(model, torch.rand(10, 1, 6, 6))
    assert err.text == ""


def test_rtl_run_progress_and_memory_labels(tiny, monkeypatch):
    """The RTL run's bar and the memory model that produced the cycles (a fake simulator)."""
    from zynqnn.sim import program_runner as pr

    assert pr.memory_model() == "AXI RAM model"
    assert pr.memory_model(fast=True) == "lean DDR model"
    assert pr.memory_model(fast=True, ddr_latency=100) == "lean DDR model with 100-cycle latency"
    assert pr.memory_model(backpressure=0.3) == "AXI RAM model with 30 % back-pressure"
    model = zynqnn.load(tiny / "tiny.zqp")
    calls = []

    def fake_run_program(program, samples, sim, **options):
        calls.append(options)
        bar = pr._RunProgress(Path("/nonexistent/program-run"), sim, pr.memory_model(**options),
                              1000, len(samples))
        bar.poll()   # no simulator log yet: no bar
        assert bar.bar is None
        for i in range(len(samples)):
            time.sleep(0.01)
            bar(i + 1, len(samples))
        bar.close([1234] * len(samples))
        return [program.run_golden(s) for s in samples], [1234] * len(samples)

    monkeypatch.setattr(pr, "run_program", fake_run_program)
    monkeypatch.setenv(progress.ENV, "1")
    err = _Tty()
    monkeypatch.setattr(sys, "stderr", err)
    monkeypatch.setattr(err, "isatty", lambda: False)
    x = np.load(tiny / "x.npy")
    model.run(x, "verilator", fast=True, ddr_latency=100)
    assert model.last_memory == "RTL verilator, lean DDR model with 100-cycle latency"
    assert model.last_cycles == [1234, 1234]
    assert re.search(r"verilator run \(lean DDR model with 100-cycle latency\): 0/2 input\(s\) "
                     r"\.\.\.\n.*: 2/2 input\(s\) in \d+\.\d s, 2,468 busy cycles, [\d.,k]+ "
                     r"cycles/s\n", err.text), err.text
    model.run(x, "icarus")
    assert model.last_memory == "RTL icarus, AXI RAM model"
    model.run(x)
    assert model.last_memory is None and model.last_cycles is None


def test_rtl_run_bar_shows_the_layer_being_dispatched(tiny, tmp_path, monkeypatch):
    """While an input runs, the bar names the layer of the command the testbench last saw
    dispatched (its position file) and the simulated cycles per second."""
    from zynqnn.sim import program_runner as pr

    prog = zynqnn.load(tiny / "tiny.zqp").program
    work = tmp_path / "program-run"
    work.mkdir()
    monkeypatch.setenv(progress.ENV, "1")
    monkeypatch.setattr(progress, "LINE_EVERY_S", 0.0)
    err = _Tty()
    monkeypatch.setattr(sys, "stderr", err)
    monkeypatch.setattr(err, "isatty", lambda: False)
    bar = pr._RunProgress(work, "verilator", "AXI RAM model", 1000, 2, prog.labels)
    (tmp_path / "test-x.log").write_text("")
    pool = prog.labels.index("pool")
    (work / pr.POSITION).write_text(f"4000 {pool}")
    bar.poll()
    assert "verilator run (AXI RAM model): 0/2 input(s), layer pool (2/3)" in err.text, err.text
    time.sleep(0.05)
    (work / pr.POSITION).write_text(f"6000 {prog.labels.index('conv1')}")
    bar.poll()
    assert re.search(r"layer conv1 \(3/3\), [\d,.k]+ simulated cycles/s", err.text), err.text
    (work / pr.POSITION).write_text("8000 -1")   # idle between inputs: no layer
    bar.poll()
    assert err.text.rstrip().endswith("simulated cycles/s"), err.text
    bar.close([10, 10])
