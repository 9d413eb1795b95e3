"""The quick-start demo runs as a new user runs it, and verifies what it fetched."""

from __future__ import annotations

import pathlib
import subprocess
import sys

DEMO = pathlib.Path(__file__).resolve().parent.parent / "examples" / "demo.py"


def test_demo_fetches_every_way_and_verifies() -> None:
    run = subprocess.run(
        [sys.executable, str(DEMO)], capture_output=True, text=True, timeout=120, check=False
    )
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    rows = [line for line in lines if line.startswith("/")]
    assert len(rows) == 15  # 14 fetches of the folder + the generated entries
    assert all("verified" in row for row in rows), run.stdout
    assert "all verified" in lines[-1]
    assert {"zipfile", "download()", "adownload()", "iter_entries"} <= {
        row.split()[1] for row in rows
    }
    assert "-> 406" in run.stdout
    assert not run.stderr
