"""The window tests catch a broken DDR window check: every mutant of scripts/mutants.py (the
extent modulo 2^32, the last line left out, no WINDOW_BASE check, the limit a beat late, no
dispatcher check, no dispatcher check and no port guard) fails tb_soc's window_violations,
window_edges or corrupted_programs on Icarus, the unmutated design passes, and without the
dispatcher's check the ports' guard still refuses every transfer (window_edges passes with
TB_PORT_GUARD=1: PORT_WINDOW)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_every_window_mutant_is_killed(tmp_path):
    p = subprocess.run([sys.executable, str(ROOT / "scripts" / "mutants.py"), "--work",
                        str(tmp_path)], capture_output=True, text=True, timeout=1800)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "6 of 6 mutants killed" in p.stdout, p.stdout
    assert "guard holds" in p.stdout, p.stdout
