"""The C header of the register map (``python -m zynqnn.hw.regs --write-header``).

The header is written by the module's command line, then a C program that checks values of
the header against :mod:`zynqnn.hw.regs` with ``_Static_assert`` (the asserts generated here
from the Python values) is compiled with ``gcc -Wall -Werror -std=c99``: a header whose
offsets, masks, shifts, enum values or config readback differ does not compile.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from zynqnn.hw import isa
from zynqnn.hw.config import get_config
from zynqnn.hw.platform import BASE_ADDRESS, REG_SPACE_BYTES
from zynqnn.hw.regs import ID_MAGIC, REGMAP, VERSION, render_c_header

# gcc is required, not optional: Verilator compiles its models with it too (make setup).
GCC = shutil.which("gcc") or "gcc"


def _asserts(cfg) -> list[str]:
    checks = [
        ("ZYNQNN_BASE_ADDRESS", BASE_ADDRESS),
        ("ZYNQNN_REG_SPACE_BYTES", REG_SPACE_BYTES),
        ("ZYNQNN_ID_MAGIC", ID_MAGIC),
        ("ZYNQNN_REGMAP_VERSION_MAJOR", VERSION[0]),
        ("ZYNQNN_REGMAP_VERSION_MINOR", VERSION[1]),
    ]
    for r in REGMAP:
        checks.append((f"ZYNQNN_REG_{r.name}", r.offset))
        if r.const is not None:
            checks.append((f"ZYNQNN_{r.name}_VALUE", r.const_value(cfg)))
        if len(r.fields) == 1 and r.fields[0].width == 32:
            continue
        for f in r.fields:
            base = f"ZYNQNN_{r.name}_{f.name.upper()}"
            checks += [(f"{base}_SHIFT", f.lsb), (f"{base}_WIDTH", f.width),
                       (f"{base}_MASK", f.mask)]
    for c in isa.ErrorCause:
        checks.append((f"ZYNQNN_ERROR_CAUSE_{c.name}", int(c)))
    lines = [f'_Static_assert({name} == {value}u, "{name}");' for name, value in checks]
    # The accessor macros on one field, against Python's encode/decode.
    status = REGMAP["STATUS"]
    word = status.encode(error=1, cause=int(isa.ErrorCause.WATCHDOG), cmd_index=12345)
    lines += [
        f"_Static_assert(ZYNQNN_GET(STATUS, CAUSE, {word}u) == ZYNQNN_ERROR_CAUSE_WATCHDOG, "
        '"get");',
        f'_Static_assert(ZYNQNN_GET(STATUS, CMD_INDEX, {word}u) == 12345u, "get index");',
        f'_Static_assert((ZYNQNN_SET(STATUS, ERROR, 1) | ZYNQNN_SET(STATUS, CAUSE, '
        f'ZYNQNN_ERROR_CAUSE_WATCHDOG) | ZYNQNN_SET(STATUS, CMD_INDEX, 12345)) == {word}u, "set");',
        f'_Static_assert(sizeof(ZYNQNN_CONFIG_ID) == {len(cfg.config_id) + 1}, "config id");',
    ]
    return lines


def _compile(tmp_path: Path, header: Path, cfg) -> subprocess.CompletedProcess:
    src = tmp_path / "check.c"
    src.write_text("\n".join([
        f'#include "{header.name}"',
        f'#include "{header.name}" /* include guard */',
        "#include <string.h>",
        *_asserts(cfg),
        "int main(void) {",
        "    uint32_t id = ZYNQNN_ID_VALUE;",
        '    return (id == ZYNQNN_ID_MAGIC && strcmp(ZYNQNN_CONFIG_ID, '
        f'"{cfg.config_id}") == 0) ? 0 : 1;',
        "}",
        "",
    ]))
    exe = tmp_path / "check"
    return subprocess.run(
        [GCC, "-Wall", "-Wextra", "-Werror", "-std=c99", "-pedantic", f"-I{header.parent}",
         str(src), "-o", str(exe)], capture_output=True, text=True)


def test_header_compiles_and_matches(tmp_path):
    cfg = get_config("pynq_z2")
    header = tmp_path / "inc" / "zynqnn_regs.h"
    env = dict(os.environ, AMARANTH_USE_YOSYS="builtin")
    subprocess.run([sys.executable, "-m", "zynqnn.hw.regs", "--write-header", str(header),
                    "--config", "pynq_z2"], check=True, env=env)
    assert header.read_text() == render_c_header(cfg)
    res = _compile(tmp_path, header, cfg)
    assert res.returncode == 0, res.stderr
    assert subprocess.run([str(tmp_path / "check")]).returncode == 0


def test_header_mismatch_fails(tmp_path):
    """The check can fail: a header with one wrong mask does not compile."""
    cfg = get_config("pynq_z2")
    header = tmp_path / "zynqnn_regs.h"
    mask = f"0x{REGMAP['STATUS'].field('cause').mask:08X}u"
    text = render_c_header(cfg)
    assert text.count(mask) == 1
    header.write_text(text.replace(mask, "0x00000FF8u"))
    res = _compile(tmp_path, header, cfg)
    assert res.returncode != 0 and "ZYNQNN_STATUS_CAUSE_MASK" in res.stderr
