"""The window tests catch a broken DDR window check: every mutant of scripts/mutants.py (the
extent modulo 2^32, the last line left out, no WINDOW_BASE check, the limit a beat late) fails
tb_soc's window_violations or corrupted_programs on Icarus, and the unmutated design passes."""

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
    assert "4 of 4 mutants killed" in p.stdout, p.stdout
