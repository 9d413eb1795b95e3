"""Many downloads at once on a real uvicorn in its own process (``benchmarks/load.py``):
bounded memory per connection, and nothing left behind by clients that finish or leave."""

from __future__ import annotations

import pathlib
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # the harness lives in benchmarks/, beside the tests
    sys.path.insert(0, str(REPO))

from benchmarks import load  # noqa: E402

MIB = 1 << 20  # bytes
PER_CONNECTION = 4 * MIB  # bytes of server RSS growth allowed per concurrent download


@pytest.mark.slow
def test_fifty_downloads_ten_slow_twenty_leaving(tmp_path: pathlib.Path) -> None:
    data = load.make_data(tmp_path / "data", files=4, size=4 * MIB)
    figures = load.run(data, fast=40, slow=10, leaving=20, slow_seconds=3.0, leave_after=2 * MIB)
    archive = figures["fast_alone"]["fast_bytes"] // 40
    assert archive > 16 * MIB  # every fast client read the whole archive, alone ...
    assert figures["mixed"]["fast_bytes"] == 40 * archive  # ... and beside the slow ones
    # Memory: the peak growth while 50 downloads run, 10 of them at 1 MB/s.
    assert figures["mixed_growth_mib"] * MIB <= 50 * PER_CONNECTION, figures
    assert figures["leaving_growth_mib"] * MIB <= 30 * PER_CONNECTION, figures
    # Nothing left: descriptors, threads (anyio's idle workers may only have exited),
    # spooled temporary files (unlinked, so they would show as "(deleted)" descriptors).
    before, after = figures["held_before"], figures["held_after"]
    assert after["fds"] <= before["fds"], figures
    assert after["threads"] <= before["threads"], figures
    assert after["deleted_files"] == [] and after["temp_files"] == [], figures
