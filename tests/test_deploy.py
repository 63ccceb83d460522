"""``zynqnn deploy PROG -o DIR``: the folder a board runs a program from (program, bitstream and
.hwh, the runtime, requirements.txt, run_on_board.py, an example input and its golden output),
and run_on_board.py itself, on the golden backend in a process of its own and on the pynq
backend against the PYNQ stand-in whose accelerator executes the commands (tests/test_program)."""

from __future__ import annotations

import runpy
import subprocess
import sys

import numpy as np
import pytest
from test_program import MachineAccelerator, tiny_graph
from test_pynq_overlay import pynq_module

import zynqnn
from zynqnn.cli import RUNTIME_REQUIREMENTS, main


@pytest.fixture(scope="module")
def program(tmp_path_factory):
    folder = tmp_path_factory.mktemp("deploy")
    g = tiny_graph(5)
    model = zynqnn.compile(g, "pynq_z2")
    model.name = "tiny"
    path = model.save(folder / "tiny.zqp")
    bit = folder / "zynqnn_x.bit"
    bit.write_bytes(b"bitstream")
    bit.with_suffix(".hwh").write_text("<hwh/>")
    return g, model, path, bit


def test_deploy_writes_the_board_folder(program, tmp_path, capsys):
    g, model, path, bit = program
    out = tmp_path / "board"
    assert main(["deploy", str(path), "-o", str(out), "--bitfile", str(bit)]) == 0
    assert f"wrote {out}/" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == sorted([
        "tiny.zqp", "zynqnn_x.bit", "zynqnn_x.hwh", "zynqnn", "requirements.txt",
        "run_on_board.py", "run_on_board.ipynb", "example_input.npy", "example_output.npy"])
    assert (out / "zynqnn_x.hwh").read_text() == "<hwh/>"
    reqs = [ln for ln in (out / "requirements.txt").read_text().splitlines()
            if ln and not ln.startswith("#")]
    assert reqs == list(RUNTIME_REQUIREMENTS)
    # the runtime: the package's Python files, not the RTL, the testbenches or caches
    pkg = out / "zynqnn"
    assert (pkg / "program.py").is_file() and (pkg / "driver.py").is_file()
    assert (pkg / "hw" / "isa.py").is_file() and not (pkg / "rtl").exists()
    assert not list(pkg.rglob("__pycache__"))
    x = np.load(out / "example_input.npy")
    assert x.dtype == np.float32 and x.shape == (1, 4, 8, 8)
    assert np.array_equal(np.load(out / "example_output.npy"), g.run(x))
    assert zynqnn.load(out / "tiny.zqp").config_id == model.config_id


def test_run_on_board_script_on_the_golden_backend(program, tmp_path):
    """In a process of its own, from another folder: the example checks out, an input of the
    user's is run (the runtime copied beside the script is the one imported)."""
    g, _, path, bit = program
    out = tmp_path / "board"
    assert main(["deploy", str(path), "-o", str(out), "--bitfile", str(bit)]) == 0
    script = out / "run_on_board.py"
    run = subprocess.run([sys.executable, str(script), "--backend", "golden", "-o", "y0.npy"],
                         capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "equal to example_output.npy" in run.stdout
    x = np.random.default_rng(3).normal(size=(2, 4, 8, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    code = ("import runpy, sys; sys.argv = sys.argv[1:]; "
            "runpy.run_path(sys.argv[0], run_name='not main'); "
            "import zynqnn; print(zynqnn.__file__)")
    where = subprocess.run([sys.executable, "-c", code, str(script)], capture_output=True,
                           text=True, cwd=tmp_path)
    assert where.stdout.strip() == str(out / "zynqnn" / "__init__.py"), where.stderr
    run = subprocess.run([sys.executable, str(script), "x.npy", "--backend", "golden",
                          "-o", "y.npy"], capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert np.array_equal(np.load(tmp_path / "y.npy"), g.run(x))
    run = subprocess.run([sys.executable, str(script), "x.npy", "-o", "y.npy"],
                         capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 1
    assert run.stderr.strip() == ("run_on_board.py: error: backend 'pynq' runs on the board: "
                                  "the Python package 'pynq' is not installed here")


def test_run_on_board_script_on_the_pynq_backend(program, tmp_path, monkeypatch, capsys):
    """Against the PYNQ stand-in (overlay, MMIO, allocate, interrupt) whose accelerator runs
    the commands on the machine model: the example's output is the deploy-time golden one,
    --check agrees, and the busy cycles are reported."""
    g, model, path, bit = program
    out = tmp_path / "board"
    assert main(["deploy", str(path), "-o", str(out), "--bitfile", str(bit)]) == 0
    capsys.readouterr()
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setitem(sys.modules, "pynq", pynq_module(MachineAccelerator(model.cfg)))
    monkeypatch.delitem(sys.modules, "zynqnn.pynq_overlay", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["run_on_board.py", "--check"])
    try:
        with pytest.raises(SystemExit) as done:
            runpy.run_path(str(out / "run_on_board.py"), run_name="__main__")
    finally:
        sys.modules.pop("zynqnn.pynq_overlay", None)
    text = capsys.readouterr().out
    assert done.value.code == 0, text
    assert "1 input(s) on pynq" in text and "accelerator busy cycles per input: 4,322" in text
    assert "equal to example_output.npy" in text and "equal to the golden backend" in text
    x = np.load(out / "example_input.npy")
    assert np.array_equal(np.load(tmp_path / "y.npy"), g.run(x))


def test_deploy_without_a_bitstream_and_with_a_missing_hwh(program, tmp_path, capsys,
                                                           monkeypatch):
    _, model, path, bit = program
    monkeypatch.chdir(tmp_path)   # no build/<config id>/ here
    monkeypatch.delenv("ZYNQNN_BITFILE", raising=False)
    assert main(["deploy", str(path), "-o", "board"]) == 0
    text = capsys.readouterr().out
    assert f"no bitstream for pynq_z2 ({model.config_id}): pass --bitfile" in text
    assert not list((tmp_path / "board").glob("*.bit"))
    lone = tmp_path / "lone.bit"
    lone.write_bytes(b"x")
    assert main(["deploy", str(path), "-o", "board2", "--bitfile", str(lone)]) == 1
    assert capsys.readouterr().err.strip() == (
        f"zynqnn deploy: error: {tmp_path / 'lone.hwh'}: no such file (PYNQ reads the .hwh "
        "beside the .bit; `make bitstream` writes both)")
    assert main(["deploy", str(path), "-o", "board3", "--config", "tiny"]) == 1
    assert "compiled for config pynq_z2" in capsys.readouterr().err


def _notebook_code(path) -> list[str]:
    """The code cells of a notebook, after checking it is a valid nbformat 4 document (with
    nbformat when it is installed, else the schema's required keys by hand)."""
    import json

    nb = json.loads(path.read_text())
    try:
        import nbformat
    except ModuleNotFoundError:
        assert nb["nbformat"] == 4 and nb["nbformat_minor"] >= 5
        assert set(nb) == {"cells", "metadata", "nbformat", "nbformat_minor"}
        assert nb["metadata"]["kernelspec"]["language"] == "python"
        ids = [c["id"] for c in nb["cells"]]
        assert len(set(ids)) == len(ids)
        for c in nb["cells"]:
            assert c["cell_type"] in ("markdown", "code") and isinstance(c["source"], list)
            assert all(isinstance(line, str) for line in c["source"])
            if c["cell_type"] == "code":
                assert c["outputs"] == [] and c["execution_count"] is None
    else:
        nbformat.validate(nbformat.reads(path.read_text(), as_version=4))
    return ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]


def test_board_notebook_runs_golden_and_on_the_pynq_stand_in(program, tmp_path, monkeypatch,
                                                             capsys):
    """run_on_board.ipynb is valid nbformat 4; its cells, run in order from the folder (as
    Jupyter runs them), reproduce the deploy-time output on the golden backend in a process of
    its own, and on the PYNQ stand-in (the overlay loaded from the deployed bitstream). Not run
    on a board here (there is none)."""
    _, model, path, bit = program
    out = tmp_path / "board"
    assert main(["deploy", str(path), "-o", str(out), "--bitfile", str(bit)]) == 0
    cells = _notebook_code(out / "run_on_board.ipynb")
    assert 'BACKEND = "pynq"' in cells[0] and "BITFILE = 'zynqnn_x.bit'" in cells[0]
    source = "\n".join(cells).replace('BACKEND = "pynq"', 'BACKEND = "golden"')
    run = subprocess.run([sys.executable, "-c", source], capture_output=True, text=True,
                         cwd=out)
    assert run.returncode == 0, run.stderr
    assert "equal to example_output.npy" in run.stdout
    # on the PYNQ stand-in, in this process
    capsys.readouterr()
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setitem(sys.modules, "pynq", pynq_module(MachineAccelerator(model.cfg)))
    monkeypatch.delitem(sys.modules, "zynqnn.pynq_overlay", raising=False)
    monkeypatch.chdir(out)
    try:
        exec(compile("\n".join(cells), "run_on_board.ipynb", "exec"), {})
    finally:
        sys.modules.pop("zynqnn.pynq_overlay", None)
    text = capsys.readouterr().out
    assert "busy cycles per input: [4322]" in text and "equal to example_output.npy" in text
    # without a bitstream the notebook says so in its first cell that needs one
    nb = tmp_path / "nobit"
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ZYNQNN_BITFILE", raising=False)
    assert main(["deploy", str(path), "-o", str(nb)]) == 0
    assert "BITFILE = None" in _notebook_code(nb / "run_on_board.ipynb")[0]
