"""Every command of the README runs as written, or is excluded here with the reason (issue 26).

The README's ```sh blocks are read from README.md. A block marked ``<!-- readme-test: NAME -->``
is run line by line in an empty directory by the test named in ``RUN`` (the command-line blocks
by tests/test_cli_rough_edges.py, the deploy block here); every command line of an unmarked
block must be in ``EXCLUDED`` with the reason it is not run. A new block or command that is
neither fails :func:`test_every_readme_command_is_run_or_excluded`, so the list follows the
README.
"""

from __future__ import annotations

import re

import numpy as np
from test_cli_rough_edges import README, _env, cache, readme_block, run_lines  # noqa: F401

#: The marked blocks and the test that runs each.
RUN = {
    "cli": "test_cli_rough_edges.py::test_readme_cli_block_runs_as_written",
    "cli-rtl": "test_cli_rough_edges.py::test_readme_cli_rtl_block_runs_as_written (slow)",
    "deploy": "test_readme.py::test_readme_deploy_block_runs_as_written",
}

#: Command lines not run by the tests, and why.
EXCLUDED = {
    "make setup": "creates the venv the tests run in (and may apt-get install); run by CI's "
                  "set-up step",
    "make test": "the whole short suite, of which this test is part",
    "make demo": "classifies 450 images on the Verilator RTL of pynq_z2 (a 1.5-minute build, "
                 "then minutes of simulation); the cli-rtl block runs the same flow (slow)",
    "make synth [CONFIG=pynq_z2] [TARGET=<module>]":
        "Yosys on the whole pynq_z2 top level takes 7-14 minutes; tests/vivado/"
        "test_synth_estimate.py runs the script on small components",
    "make tcl-lint [CONFIG=pynq_z2]": "tests/vivado/test_vivado_lint.py runs the same lint "
                                      "(scripts under tclsh with the stubs)",
    "make bitstream [CONFIG=pynq_z2]": "needs Vivado, which is not installed here",
    "pip install -r digits-board/requirements.txt": "on the board (PYNQ's Python)",
    "python3 digits-board/run_on_board.py": "on the board: the pynq backend needs the FPGA "
                                            "(tests/test_deploy.py runs it on a PYNQ stand-in)",
    "python3 digits-board/run_on_board.py x.npy -o y.npy": "on the board, as above",
}


#: The README's ```python blocks are API sketches, not commands: the first starts from the
#: user's quantized model and input, the second runs on the board (``backend="pynq"``). What they
#: call is tested elsewhere (tests/test_program.py, tests/test_deploy.py).
PYTHON_SKETCHES = ("graph = zynqnn.from_torch(quantized_model, example_input)",
                   'y = prog.run(x, backend="pynq", bitfile=')


def sh_blocks() -> list[tuple[str | None, list[str]]]:
    """(marker or None, command lines) of every ```sh block of the README, comments and
    continuation-only lines dropped."""
    text = README.read_text()
    blocks = []
    for m in re.finditer(r"^[ \t]*```sh\n(.*?)^[ \t]*```", text, re.S | re.M):
        before = text[:m.start()].rstrip().splitlines()[-1:] or [""]
        marker = re.fullmatch(r"<!-- readme-test: ([\w-]+).*-->", before[0].strip())
        lines = [line.split("#")[0].strip() for line in m.group(1).splitlines()]
        blocks.append((marker.group(1) if marker else None, [ln for ln in lines if ln]))
    return blocks


def test_every_readme_command_is_run_or_excluded():
    blocks = sh_blocks()
    assert len(blocks) >= 6, blocks
    markers = [name for name, _ in blocks if name]
    assert sorted(markers) == sorted(RUN), (markers, sorted(RUN))
    unexplained = [line for name, lines in blocks if name is None for line in lines
                   if line not in EXCLUDED]
    assert not unexplained, f"README commands neither run by a test nor in EXCLUDED: " \
                            f"{unexplained}"
    python = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert len(python) == len(PYTHON_SKETCHES) and all(
        mark in block for mark, block in zip(PYTHON_SKETCHES, python, strict=True)), python
    listed = {line for name, lines in blocks if name is None for line in lines}
    assert not set(EXCLUDED) - listed, f"EXCLUDED lists lines the README no longer has: " \
                                       f"{sorted(set(EXCLUDED) - listed)}"


def test_readme_deploy_block_runs_as_written(cache, tmp_path):  # noqa: F811
    """The deploy block: compile digits, write the board folder (no bitstream here, so it
    says so), and run the folder's script on the golden backend in a process of its own."""
    done = run_lines(readme_block("deploy"), tmp_path, _env(cache))
    assert "no bitstream for pynq_z2" in done[1].stdout
    board = tmp_path / "digits-board"
    assert (board / "run_on_board.ipynb").is_file() and (board / "zynqnn").is_dir()
    assert "equal to example_output.npy" in done[2].stdout
    assert np.array_equal(np.load(tmp_path / "y.npy"), np.load(board / "example_output.npy"))
