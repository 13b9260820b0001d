"""install.sh's own options (the full install is what CI runs first)."""
from __future__ import annotations

import subprocess
from pathlib import Path

INSTALL = Path(__file__).resolve().parents[1] / "install.sh"


def test_help_prints_the_options_and_installs_nothing():
    run = subprocess.run([str(INSTALL), "--help"], capture_output=True, text=True, timeout=30)
    assert run.returncode == 0 and "--gpu" in run.stdout and "--cpu" in run.stdout
    assert "installing" not in run.stdout


def test_an_unknown_option_is_refused():
    run = subprocess.run([str(INSTALL), "--fast"], capture_output=True, text=True, timeout=30)
    assert run.returncode == 2 and "unknown option --fast" in run.stderr
