"""The quick-start demo runs as a new user runs it: serves, fetches, verifies, stops cleanly."""

from __future__ import annotations

import pathlib
import subprocess
import sys

DEMO = pathlib.Path(__file__).resolve().parent.parent / "examples" / "demo.py"


def test_demo_serves_fetches_and_verifies(tmp_path: pathlib.Path) -> None:
    run = subprocess.run(
        [sys.executable, str(DEMO)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,  # as from a fresh checkout: nothing relies on the working directory
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert not run.stderr
    out = run.stdout
    assert "$ multiresp serve " in out
    assert out.count("$ multiresp get ") == 3
    assert "/zip/ -o " in out and "/multipart/ -o " in out
    assert out.count("every file identical to the folder") == 3
    assert "the server stopped with exit status 0" in out
    assert '"GET /zip/" 200, ' in out and '"GET /multipart/" 200, ' in out  # the access log
    assert "all verified" in out.splitlines()[-2]
    assert list(tmp_path.iterdir()) == []  # it cleaned up after itself
