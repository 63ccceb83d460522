"""``zynqnn`` on bad input: exit status 1 and one line ``zynqnn <command>: error: ...`` naming the
file, never a traceback (``--debug`` shows one on purpose; a bug is status 2, one line), and
``zynqnn run`` reading ``.npz`` inputs, including the ``.npz`` it writes for several outputs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_program import tiny_graph
from test_program_files import _set, craft

import zynqnn
from zynqnn import cli
from zynqnn.program import ProgramFileError


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """(folder with tiny.zqp and x.npy, the graph, the inputs)."""
    d = tmp_path_factory.mktemp("cli-errors")
    g = tiny_graph()
    zynqnn.compile(g, "tiny").save(d / "tiny.zqp")
    x = np.random.default_rng(2).normal(size=(3, 4, 8, 8)).astype(np.float32)
    np.save(d / "x.npy", x)
    return d, g, x


def run(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line(code, err, command, status=1):
    assert code == status, err
    assert err.startswith(f"zynqnn {command}: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err[len(f"zynqnn {command}: error: "):-1]


def _files(d: Path, g) -> dict:
    """name -> (argv after the command, what the message must contain)."""
    prog, x = d / "tiny.zqp", d / "x.npy"
    (d / "junk.zqp").write_bytes(b"junk")
    (d / "dir.zqp").mkdir(exist_ok=True)
    craft(prog, d / "negative.zqp", doc=_set("input.addr", -64))
    craft(prog, d / "nan.zqp", doc=_set("boundary.input_scale", float("nan")))
    (d / "bad.npy").write_bytes(b"not numpy")
    raw = (d / "x.npy").read_bytes()
    (d / "cut.npy").write_bytes(raw[:len(raw) // 2])
    (d / "broken.npz").write_bytes(b"PK\x03\x04" + bytes(60))
    np.savez(d / "empty.npz")
    np.savez(d / "two.npz", output0=np.zeros(3), output1=np.ones(3))
    np.save(d / "shape.npy", np.zeros((3, 4, 8), np.float32))
    np.save(d / "ints.npy", np.zeros((1, 4, 8, 8), np.int64))
    np.save(d / "codes.npy", np.full((1, 4, 8, 8), 300))
    nan = np.zeros((2, 4, 8, 8), np.float32)
    nan[1, 2, 3, 4], nan[1, 3, 0, 0] = np.nan, -np.inf
    np.save(d / "nan.npy", nan)
    out = ["-o", d / "y.npy"]
    return {
        "program-missing": (["run", d / "missing.zqp", "-i", x, *out],
                            f"{d / 'missing.zqp'}: no such file"),
        "program-junk": (["run", d / "junk.zqp", "-i", x, *out],
                         f"{d / 'junk.zqp'}: not a zynqnn program"),
        "program-directory": (["run", d / "dir.zqp", "-i", x, *out],
                              f"{d / 'dir.zqp'}: cannot read ("),
        "program-negative-address": (["run", d / "negative.zqp", "-i", x, *out],
                                     f"{d / 'negative.zqp'}: program.json: input.addr: -64 is "
                                     "negative"),
        "program-nan-scale": (["run", d / "nan.zqp", "-i", x, *out],
                              f"{d / 'nan.zqp'}: program.json: boundary.input_scale: is NaN"),
        "report-junk": (["report", d / "junk.zqp"], f"{d / 'junk.zqp'}: not a zynqnn program"),
        "input-missing": (["run", prog, "-i", d / "none.npy", *out],
                          f"{d / 'none.npy'}: no such file"),
        "input-junk": (["run", prog, "-i", d / "bad.npy", *out],
                       f"{d / 'bad.npy'}: not a .npy array nor an .npz archive"),
        "input-truncated": (["run", prog, "-i", d / "cut.npy", *out],
                            f"{d / 'cut.npy'}: not a .npy array nor an .npz archive (Failed to "
                            "read all data"),
        "input-broken-npz": (["run", prog, "-i", d / "broken.npz", *out],
                             f"{d / 'broken.npz'}: not a .npy array nor an .npz archive"),
        "input-empty-npz": (["run", prog, "-i", d / "empty.npz", *out],
                            f"{d / 'empty.npz'}: an .npz archive without arrays"),
        "input-npz-unnamed": (["run", prog, "-i", d / "two.npz", *out],
                              f"{d / 'two.npz'}: 2 arrays (output0, output1) and none is named "
                              "after the model's input 'x'"),
        "input-shape": (["run", prog, "-i", d / "shape.npy", *out],
                        f"{d / 'shape.npy'}: input 'x' must have shape (N, 4, 8, 8), got "
                        "[1, 3, 4, 8]"),
        "input-dtype": (["run", prog, "-i", d / "ints.npy", *out],
                        f"{d / 'ints.npy'}: int64 values; the model takes float32 inputs"),
        "input-codes-range": (["run", prog, "-i", d / "codes.npy", "--codes", *out],
                              f"{d / 'codes.npy'}: input 'x' holds codes outside -128..127"),
        "input-nan": (["run", prog, "-i", d / "nan.npy", *out],
                      f"{d / 'nan.npy'}: 2 of 512 values are NaN or infinite (the first at "
                      "index [1, 2, 3, 4]); the model takes finite inputs"),
        "output-no-folder": (["run", prog, "-i", x, "-o", d / "nowhere" / "y.npy"],
                             f"{d / 'nowhere' / 'y.npy'}: No such file or directory (the folder "
                             f"{d / 'nowhere'} does not exist)"),
        "output-folder": (["run", prog, "-i", x, "-o", d / "dir.zqp"],
                          f"{d / 'dir.zqp'}: is a directory; name the file to write"),
        "config-unknown": (["run", prog, "-i", x, *out, "--config", "nope"],
                           "unknown hardware config 'nope'"),
    }


CASES = ["program-missing", "program-junk", "program-directory", "program-negative-address",
         "program-nan-scale", "report-junk", "input-missing", "input-junk", "input-truncated",
         "input-broken-npz", "input-empty-npz", "input-npz-unnamed", "input-shape",
         "input-dtype", "input-codes-range", "input-nan", "output-no-folder", "output-folder",
         "config-unknown"]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_line(work, capsys, case):
    d, g, _ = work
    argv, want = _files(d, g)[case]
    code, out, err = run(capsys, *argv)
    msg = one_line(code, err, argv[0])
    assert msg.startswith(want), (want, msg)
    assert not out


def test_debug_shows_the_traceback(work, capsys):
    """``--debug`` before or after the command lets the exception through."""
    d, g, _ = work
    argv, _ = _files(d, g)["program-negative-address"]
    for flags in (["--debug", *argv], [argv[0], "--debug", *argv[1:]]):
        with pytest.raises(ProgramFileError, match="input.addr: -64 is negative"):
            cli.main([str(a) for a in flags])
    with pytest.raises(cli.UserError, match="not a .npy array"):
        cli.main(["run", str(d / "tiny.zqp"), "-i", str(d / "bad.npy"), "-o", str(d / "y.npy"),
                  "--debug"])


def test_the_command_line_itself(work):
    """The real process: one line and status 1; with --debug the traceback."""
    d, g, _ = work
    argv, want = _files(d, g)["program-negative-address"]
    cmd = [sys.executable, "-m", "zynqnn.cli", *map(str, argv)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert p.returncode == 1 and p.stdout == ""
    assert p.stderr == f"zynqnn run: error: {want}\n", p.stderr
    p = subprocess.run([*cmd[:3], "--debug", *cmd[3:]], capture_output=True, text=True,
                       timeout=300)
    assert p.returncode != 0 and "Traceback (most recent call last)" in p.stderr
    assert "zynqnn.program.ProgramFileError: " in p.stderr


def test_a_bug_is_one_line_with_status_2(work, capsys, monkeypatch):
    d, _, _ = work

    def broken(*a, **k):
        raise AttributeError("'NoneType' object has no attribute 'shape'")

    monkeypatch.setattr(zynqnn.program.CompiledModel, "run", broken)
    code, _, err = run(capsys, "run", d / "tiny.zqp", "-i", d / "x.npy", "-o", d / "y.npy")
    msg = one_line(code, err, "run", status=2)
    assert msg == ("internal error: AttributeError: 'NoneType' object has no attribute 'shape' "
                   "(`zynqnn --debug run ...` shows the traceback)")
    with pytest.raises(AttributeError):
        cli.main(["--debug", "run", str(d / "tiny.zqp"), "-i", str(d / "x.npy"), "-o",
                  str(d / "y.npy")])


def test_npz_inputs(work, capsys):
    """An .npz with the input alone (any name) or under the model's input name runs exactly as
    the .npy does."""
    d, g, x = work
    assert run(capsys, "run", d / "tiny.zqp", "-i", d / "x.npy", "-o", d / "ref.npy")[0] == 0
    ref = np.load(d / "ref.npy")
    assert np.array_equal(ref, g.run(x))
    np.savez(d / "alone.npz", anything=x)
    np.savez(d / "named.npz", output0=np.zeros(3), x=x, output1=np.ones(3))
    for name in ("alone.npz", "named.npz"):
        code, out, err = run(capsys, "run", d / "tiny.zqp", "-i", d / name, "-o", d / "y.npy")
        assert code == 0, err
        assert np.array_equal(np.load(d / "y.npy"), ref)


def test_npz_written_by_run_reads_back(work, capsys, monkeypatch):
    """A two-output program writes output0/output1 to an .npz; that file is read back: an
    array of it is the input of a program whose input it fits (selected by name), and the
    two-output .npz itself as an input gives one line, not an AttributeError."""
    monkeypatch.syspath_prepend(str(Path(__file__).parent / "compiler"))
    from test_multi_output import two_heads

    d, g, x = work
    heads = two_heads()
    zynqnn.compile(heads, "pynq_z2").save(d / "heads.zqp")
    code, out, err = run(capsys, "run", d / "heads.zqp", "-i", d / "x.npy", "-o", d / "h.npz")
    assert code == 0, err
    assert "(.npz, output0..1)" in out
    want = heads.run(x)
    with np.load(d / "h.npz") as z:
        assert sorted(z.files) == ["output0", "output1"]
        for k in range(2):
            assert np.array_equal(z[f"output{k}"], want[k])
    # several outputs to a name that is not .npz: refused before the run, nothing written
    msg = one_line(*run(capsys, "run", d / "heads.zqp", "-i", d / "x.npy", "-o",
                        d / "h.npy")[::2], "run")
    assert msg == (f"{d / 'h.npy'}: the model has 2 outputs, written as an .npz archive "
                   "(output0, output1, ...): name the file h.npz")
    assert not (d / "h.npy").exists() and not (d / "h.npy.npz").exists()
    msg = one_line(*run(capsys, "run", d / "tiny.zqp", "-i", d / "h.npz", "-o",
                        d / "y.npy")[::2], "run")
    assert msg.startswith(f"{d / 'h.npz'}: 2 arrays (output0, output1) and none is named")
    # the same archive with the input added under the model's input name: that array is used
    with np.load(d / "h.npz") as z:
        np.savez(d / "chain.npz", x=x, **{k: z[k] for k in z.files})
    code, _, err = run(capsys, "run", d / "heads.zqp", "-i", d / "chain.npz", "-o",
                       d / "h2.npz")
    assert code == 0, err
    with np.load(d / "h2.npz") as a, np.load(d / "h.npz") as b:
        assert all(np.array_equal(a[k], b[k]) for k in ("output0", "output1"))


def test_outputs_are_written_where_named(work, capsys):
    """``-o`` with another suffix than .npy: the file is that name (numpy alone would write
    ``named.txt.npy`` and the message would name a file that does not exist)."""
    d, g, x = work
    for name in ("named.txt", "named"):
        code, out, err = run(capsys, "run", d / "tiny.zqp", "-i", d / "x.npy", "-o", d / name)
        assert code == 0, err
        assert out.startswith(f"wrote {d / name}: ")
        assert np.array_equal(np.load(d / name), g.run(x))
        assert not (d / f"{name}.npy").exists()
    code, out, err = run(capsys, "example-input", d / "tiny.zqp", "-o", d / "ex.dat")
    assert code == 0, err
    assert out.startswith(f"wrote {d / 'ex.dat'}: ") and np.load(d / "ex.dat").shape[1:] == \
        (4, 8, 8)
    assert not (d / "ex.dat.npy").exists()


def test_onnx_errors_name_the_file(tmp_path, capsys):
    """An ONNX model the importer refuses: the message names the file (the CLI used to pass the
    parsed ModelProto on, and the importer called it ``<ModelProto>``)."""
    import torch
    from torch import nn

    from zynqnn.zoo.ort import export_onnx, ort_quantize

    class ConvSigmoid(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.gate = nn.Conv2d(3, 4, 1)

        def forward(self, x):
            # a multiply of two tensors is not supported (x * sigmoid(x) of one tensor is)
            return self.conv(x) * torch.sigmoid(self.gate(x))

    torch.manual_seed(0)
    x = torch.rand(2, 3, 8, 8)
    f = export_onnx(ConvSigmoid().eval(), x, tmp_path / "sig.onnx")
    q = ort_quantize(f, [x.numpy()], tmp_path / "sig_qdq.onnx")
    for argv in (["compile", q, "-o", tmp_path / "sig.zqp"], ["errors", q, "--png",
                                                               tmp_path / "e.png"]):
        msg = one_line(*run(capsys, *argv)[::2], argv[0])
        assert "sig_qdq.onnx" in msg and "<ModelProto>" not in msg and "not supported" in msg, msg


def test_run_reads_images(tmp_path, capsys, work):
    """``--input img.png``: grey or RGB by the model's channels, resized to its input, values
    in [0, 1], then --mean/--std: a uniform image gives the uniform array; a 4-channel model
    says it needs an array."""
    import torch
    from PIL import Image
    from torch import nn

    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 1)).eval()
    calib = torch.rand(8, 3, 8, 8)
    zynqnn.compile(zynqnn.quantize(m, calib), "tiny").save(tmp_path / "rgb.zqp")
    Image.new("RGB", (13, 7), (51, 102, 204)).save(tmp_path / "img.png")
    want = np.array([51, 102, 204], np.float32).reshape(1, 3, 1, 1) / 255.0
    mean, std = np.array([0.1, 0.2, 0.3], np.float32), np.float32(0.5)
    for extra, x in (([], want), (["--mean", "0.1,0.2,0.3", "--std", "0.5"],
                                  (want - mean.reshape(1, 3, 1, 1)) / std)):
        np.save(tmp_path / "x.npy", np.broadcast_to(x, (1, 3, 8, 8)).astype(np.float32))
        code, _, err = run(capsys, "run", tmp_path / "rgb.zqp", "-i", tmp_path / "img.png",
                           "-o", tmp_path / "y_img.npy", *extra)
        assert code == 0, err
        code, _, err = run(capsys, "run", tmp_path / "rgb.zqp", "-i", tmp_path / "x.npy",
                           "-o", tmp_path / "y_npy.npy")
        assert code == 0, err
        assert np.array_equal(np.load(tmp_path / "y_img.npy"), np.load(tmp_path / "y_npy.npy"))
    d, _, _ = work   # tiny.zqp takes 4 channels
    code, _, err = run(capsys, "run", d / "tiny.zqp", "-i", tmp_path / "img.png", "-o",
                       tmp_path / "y.npy")
    one_line(code, err, "run")
    assert "not 1- or 3-channel images" in err
    code, _, err = run(capsys, "run", tmp_path / "rgb.zqp", "-i", tmp_path / "x.npy", "-o",
                       tmp_path / "y.npy", "--mean", "0.5")
    one_line(code, err, "run")
    assert "--mean and --std apply to image inputs" in err
