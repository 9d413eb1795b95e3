"""``progress=True``: the bar's line, and the bar as it looks on a real terminal (tmux)."""

from __future__ import annotations

import io
import os
import pathlib
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Callable

import anyio
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from multiresp import Entry
from multiresp._progress import TerminalBar, human_bytes, plain_line
from multiresp.client import Progress
from multiresp.responses import ZipStreamResponse

from conftest import LiveServer, require_tool

MIB = 1 << 20  # bytes


def test_plain_line_with_a_known_length() -> None:
    report = Progress(bytes_done=12 * MIB, bytes_total=48 * MIB, files_done=3, current="a/b.png")
    assert plain_line(report, 1.5) == (
        "12.0 MiB of 48.0 MiB (25%) · 8.0 MiB/s · 0:05 left · 3 files · a/b.png"
    )


def test_plain_line_without_a_length_has_no_time_left() -> None:
    report = Progress(bytes_done=3 * MIB, bytes_total=None, files_done=1, current=None)
    assert plain_line(report, 2.0) == "3.0 MiB · 1.5 MiB/s · 1 file"


def test_plain_line_before_any_byte() -> None:
    report = Progress(bytes_done=0, bytes_total=None, files_done=0, current=None)
    assert plain_line(report, 0.0) == "0 B · 0 files"


def test_long_names_keep_their_end() -> None:
    name = "outputs/" + "x" * 60 + "/mask-0042.png"
    report = Progress(bytes_done=1, bytes_total=None, files_done=0, current=name)
    line = plain_line(report, 1.0)
    assert line.endswith("…" + name[-31:])


def test_hours_and_units() -> None:
    report = Progress(bytes_done=1024, bytes_total=4 * (1 << 30), files_done=0, current=None)
    assert "left" in plain_line(report, 1.0) and ":" in plain_line(report, 1.0)
    assert [human_bytes(n) for n in (999, 1536, 5 * MIB, 3 << 30)] == [
        "999 B",
        "1.5 KiB",
        "5.0 MiB",
        "3.0 GiB",
    ]


def test_plain_bar_rewrites_one_line_and_ends_it() -> None:
    stream = io.StringIO()
    ticks = iter([0.0, 1.0, 2.0])
    bar = TerminalBar(stream, use_tqdm=False, clock=lambda: next(ticks))
    for done in (0, MIB, 2 * MIB):
        bar(Progress(bytes_done=done, bytes_total=2 * MIB, files_done=done // MIB, current=None))
    bar.close()
    out = stream.getvalue()
    assert out.count("\r") == 3
    assert out.endswith("\n")
    assert (
        out.rstrip("\n").rsplit("\r", 1)[1].rstrip()
        == "2.0 MiB of 2.0 MiB (100%) · 1.0 MiB/s · 2 files"
    )


# -- on a terminal --------------------------------------------------------------------------

SCRIPT = textwrap.dedent(
    """
    import sys
    if sys.argv[3] == "plain":
        sys.modules["tqdm"] = None  # as if the cli extra were not installed
    from multiresp.client import download
    saved = download(sys.argv[1], sys.argv[2], progress=True)
    print(f"saved {len(saved)} files")
    print("DONE")
    input()  # hold the screen until the test has read it
    """
)


def slow_app(*, sized: bool) -> Starlette:
    """24 files of 256 KiB, sent over about a second, so the bar is redrawn many times."""

    async def chunks(i: int) -> AsyncIterator[bytes]:
        for _ in range(4):
            await anyio.sleep(0.01)
            yield bytes([i]) * (64 << 10)

    async def endpoint(request: Request) -> Response:
        entries = [
            Entry.from_iter(chunks(i), f"out/part-{i:02}.bin", size=(256 << 10) if sized else None)
            for i in range(24)
        ]
        return ZipStreamResponse(entries)

    return Starlette(routes=[Route("/", endpoint)])


def screen(socket_name: str) -> list[str]:
    shown = subprocess.run(
        ["tmux", "-L", socket_name, "capture-pane", "-p", "-t", "bar"],
        capture_output=True,
        text=True,
        check=True,
    )
    return [line.rstrip() for line in shown.stdout.splitlines() if line.strip()]


@pytest.mark.parametrize("sized", [True, False], ids=["content-length", "chunked"])
@pytest.mark.parametrize("bar", ["tqdm", "plain"])
def test_progress_bar_on_a_terminal(
    live_server: Callable[..., LiveServer], tmp_path: pathlib.Path, bar: str, sized: bool
) -> None:
    tmux = require_tool("tmux")
    server = live_server(slow_app(sized=sized))
    script = tmp_path / "fetch.py"
    script.write_text(SCRIPT)
    socket_name = f"multiresp-test-{os.getpid()}-{bar}-{sized}"
    env = {k: v for k, v in os.environ.items() if k != "TMUX"}
    command = f"{sys.executable} {script} {server.url}/ {tmp_path / 'dest'} {bar}"
    subprocess.run(
        [tmux, "-L", socket_name, "-f", "/dev/null", "new-session", "-d", "-s", "bar",
         "-x", "100", "-y", "12", command],
        check=True,
        env=env,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        lines = screen(socket_name)
        while "DONE" not in lines:
            assert time.monotonic() < deadline, lines
            time.sleep(0.1)
            lines = screen(socket_name)
    finally:
        subprocess.run([tmux, "-L", socket_name, "kill-server"], check=False)
    # What the user is left with: one finished bar line, then the script's own output.
    assert lines[-2:] == ["saved 24 files", "DONE"], lines
    assert len(lines) == 3, lines
    final = lines[0]
    assert len(final) <= 100
    assert "24 files" in final
    assert "/s" in final
    if sized:
        assert "100%" in final
    assert "\r" not in final
