"""The FuseSoC core (``zynqnn.core``, written by ``make ip``), checked by fusesoc's own parser.

fusesoc is installed into a throwaway venv ``build/venvs/fusesoc`` (created once, then reused;
about 20 s from PyPI). ``core show`` must parse the core (fusesoc validates CAPI2 against its
schema), and ``run --setup`` of the lint and synth targets must resolve every file the core
lists into the EDAM description (setup only: no verilator or Vivado run).
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

import pytest

from zynqnn.hw.config import get_config
from zynqnn.hw.platform import TOP_NAME
from zynqnn.vivado import BOARD_XDC, write_ip_bundle

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / "build" / "venvs" / "fusesoc"
CORE = f"zynqnn:accel:{TOP_NAME}:1.0.0"


def _fusesoc() -> Path:
    exe = VENV / "bin" / "fusesoc"
    VENV.parent.mkdir(parents=True, exist_ok=True)
    with open(VENV.parent / "fusesoc.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not exe.exists():
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
            res = subprocess.run([str(VENV / "bin" / "python"), "-m", "pip", "install", "-q",
                                  "fusesoc"], capture_output=True, text=True)
            if res.returncode != 0:
                pytest.fail(f"pip install fusesoc failed:\n{res.stdout}{res.stderr}")
    return exe


@pytest.fixture(scope="module")
def fusesoc():
    return _fusesoc()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return write_ip_bundle(get_config("pynq_z2"), tmp_path_factory.mktemp("core"),
                           shell_top=True)


def _run(fusesoc, cores_root, *args, cwd=None):
    env = dict(os.environ, PYTHONNOUSERSITE="1")
    env.pop("VIRTUAL_ENV", None)
    return subprocess.run([str(fusesoc), "--cores-root", str(cores_root), *args],
                          capture_output=True, text=True, cwd=cwd, env=env)


def test_core_parses(fusesoc, bundle):
    res = _run(fusesoc, bundle, "core", "show", CORE)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"Name:        {CORE}" in res.stdout
    for target in ("default", "lint", "synth"):
        assert f"\n{target}" in res.stdout


@pytest.mark.parametrize("target,files", [
    ("lint", [f"{TOP_NAME}.v"]),
    ("synth", [f"{TOP_NAME}.v", BOARD_XDC.name]),
])
def test_setup_lists_the_files(fusesoc, bundle, tmp_path, target, files):
    res = _run(fusesoc, bundle, "run", "--setup", "--build-root", str(tmp_path / "b"),
               "--target", target, CORE, cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    (eda,) = (tmp_path / "b").rglob("*.eda.yml")
    text = eda.read_text()
    assert f"toplevel: {TOP_NAME}" in text
    listed = [line.split("/")[-1] for line in text.splitlines() if "name: src/" in line]
    assert listed == files


def test_broken_core_fails(fusesoc, bundle, tmp_path):
    """The check can fail: a core naming a file that is not there does not set up."""
    core = (bundle / "zynqnn.core").read_text()
    assert core.count(f"      - {TOP_NAME}.v\n") == 1
    d = tmp_path / "c"
    d.mkdir()
    (d / "zynqnn.core").write_text(core.replace(f"      - {TOP_NAME}.v\n",
                                                "      - no_such_file.v\n"))
    res = _run(fusesoc, d, "run", "--setup", "--build-root", str(tmp_path / "b"),
               "--target", "lint", CORE, cwd=tmp_path)
    assert res.returncode != 0
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "zynqnn.core").write_text(core.replace("toplevel:", "top_level:"))
    res = _run(fusesoc, bad, "core", "show", CORE)
    assert res.returncode != 0 or CORE not in res.stdout
