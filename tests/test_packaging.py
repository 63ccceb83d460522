"""Packaging and generated-artifact hygiene."""

import re
import tomllib
from pathlib import Path

import pytest

from zynqnn.config import get_config
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
    cfg = get_config(cfg_name)
    first = {p.name: p.read_text() for p in write_verilog(cfg, tmp_path / "a")}
    second = {p.name: p.read_text() for p in write_verilog(cfg, tmp_path / "b")}
    assert first == second and first
    assert all((tmp_path / "a" / cfg.config_id / n).exists() for n in first)
    setup_verilator_env()
    for name, text in first.items():
        assert not re.search(r"/(home|root|tmp|work)/", text), f"{name} embeds a machine path"
        rc, out = lint_file(tmp_path / "a" / cfg.config_id / name, name[:-2])
        assert rc == 0 and "%Warning" not in out, out
