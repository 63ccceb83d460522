"""The direction of imports between the packages of zynqnn.

Layers, lowest first:

* ``zynqnn.numerics``: the frameworks' arithmetic (numpy only);
* ``zynqnn.hw``: the hardware/software contract (config, ISA, registers, words, geometry);
* ``zynqnn.rtl``: the gateware, built on the contract;
* software (IR, front end, compiler, machine model, runtime, CLI) on ``hw`` and ``numerics``,
  never on ``rtl``: a bit layout or constant both sides need lives in ``hw``;
* the build tools that generate or synthesize the gateware (:data:`BUILD_TOOLS`) and the
  simulation side (``zynqnn.sim``) on everything.

Every import counts, including those inside functions.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: Where each top-level part of the package lives in the repository (pyproject's package-dir).
SOURCES = {"zynqnn": ROOT / "py" / "zynqnn", "zynqnn.rtl": ROOT / "rtl", "zynqnn.sim": ROOT / "sim"}
#: Modules whose job is to generate or synthesize the hardware: they may import zynqnn.rtl.
BUILD_TOOLS = {"zynqnn.synth", "zynqnn.vivado", "zynqnn.timing", "zynqnn.cli"}


def _modules() -> dict[str, Path]:
    mods = {}
    for pkg, base in SOURCES.items():
        for path in sorted(base.rglob("*.py")):
            rel = path.relative_to(base).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            name = ".".join([pkg, *parts])
            if pkg == "zynqnn" and parts and parts[0] in ("rtl", "sim"):
                continue
            mods[name] = path
    return mods


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """Absolute names of the zynqnn modules ``name`` imports (anywhere in the file)."""
    is_pkg = path.name == "__init__.py"
    package = name if is_pkg else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.add(mod)
            # `from zynqnn.hw import isa` imports the module zynqnn.hw.isa
            found |= {f"{mod}.{a.name}" for a in node.names if f"{mod}.{a.name}" in MODULES}
    return {m for m in found if m == "zynqnn" or m.startswith("zynqnn.")}


def _layer(mod: str) -> str:
    for prefix in ("zynqnn.numerics", "zynqnn.hw", "zynqnn.rtl", "zynqnn.sim"):
        if mod == prefix or mod.startswith(prefix + "."):
            return prefix.split(".")[1]
    return "build" if mod in BUILD_TOOLS else "software"


#: Runtime back ends imported when a run asks for them: the runtime picks the simulation back
#: end by name (``CompiledModel.run(backend="verilator")``), as it picks PYNQ on the board.
BACKENDS = {("zynqnn.program", "zynqnn.sim"), ("zynqnn.program", "zynqnn.sim.program_runner")}

#: Which layers each layer may import.
ALLOWED = {
    "numerics": {"numerics"},
    "hw": {"hw", "numerics"},
    "rtl": {"rtl", "hw", "numerics"},
    "software": {"software", "hw", "numerics"},
    "build": {"build", "software", "hw", "numerics", "rtl"},
    "sim": {"sim", "rtl", "software", "build", "hw", "numerics"},
}


def test_modules_found():
    # The walk must see the three source trees, or the checks below pass vacuously.
    assert {"zynqnn.hw.isa", "zynqnn.rtl.engine", "zynqnn.sim.tb_soc", "zynqnn.compiler.perf"} \
        <= set(MODULES)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_import_direction(name):
    src = _layer(name)
    bad = sorted(m for m in _imports(name, MODULES[name])
                 if m != "zynqnn" and _layer(m) not in ALLOWED[src] and (name, m) not in BACKENDS)
    assert not bad, f"{name} ({src}) imports {bad}: {src} may import only {sorted(ALLOWED[src])}"


def test_contract_cannot_reach_the_gateware():
    # Transitively: nothing zynqnn.hw imports leads to zynqnn.rtl.
    seen, todo = set(), [n for n in MODULES if _layer(n) == "hw"]
    while todo:
        n = todo.pop()
        if n in seen or n not in MODULES:
            continue
        seen.add(n)
        todo.extend(_imports(n, MODULES[n]))
    assert not [n for n in seen if _layer(n) in ("rtl", "sim", "software", "build")]


def test_checker_sees_a_violation(tmp_path):
    # The import walk resolves relative and function-level imports: a planted one is found.
    path = tmp_path / "planted.py"
    path.write_text("def f():\n    from ..rtl.postproc import PostProc\n")
    assert "zynqnn.rtl.postproc" in _imports("zynqnn.compiler.planted", path)
