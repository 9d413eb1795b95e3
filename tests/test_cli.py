"""The ``multiresp`` command as users run it: the console script, in subprocesses."""

from __future__ import annotations

import contextlib
import io
import os
import pathlib
import re
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import AsyncIterator, Callable, Iterator

import anyio
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from multiresp import Entry, negotiate
from multiresp.responses import ZipStreamResponse

from conftest import LiveServer, require_tool

SCRIPT = pathlib.Path(sys.executable).parent / "multiresp"
TIMEOUT = 60  # seconds any one command may take


def multiresp(*args: str, cwd: pathlib.Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), *args], capture_output=True, text=True, timeout=TIMEOUT, cwd=cwd
    )


@contextlib.contextmanager
def serving(root: pathlib.Path, *command: str) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """``multiresp serve root --port 0`` in a subprocess; yields its URL, stops it with SIGINT."""
    launcher = list(command) or [str(SCRIPT)]
    server = subprocess.Popen(
        [*launcher, "serve", str(root), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        first = server.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:\d+/", first)
        assert match, first + (server.stderr.read() if server.stderr else "")
        yield match.group(0), server
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.wait(TIMEOUT)
        if server.poll() is None:
            server.kill()
            server.wait()
        for stream in (server.stdout, server.stderr):
            if stream is not None:
                stream.close()


def sample(root: pathlib.Path) -> dict[str, bytes]:
    files = {
        "a.txt": b"alpha\n",
        "images/mask-0.png": os.urandom(300_000),
        "images/mask-1.png": os.urandom(5),
        "reports/résumé.json": b'{"ok": true}',
        "empty.txt": b"",
    }
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return files


def tree(root: pathlib.Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_serve_then_get_as_zip_and_multipart(tmp_path: pathlib.Path) -> None:
    root = tmp_path / "share"
    want = sample(root)
    with serving(root) as (url, server):
        got_zip = multiresp("get", url + "zip/", "-o", str(tmp_path / "z"), "--no-progress")
        got_mp = subprocess.run(
            [sys.executable, "-m", "multiresp", "get", url + "multipart/", "-o",
             str(tmp_path / "m"), "--no-progress"],
            capture_output=True, text=True, timeout=TIMEOUT,
        )  # fmt: skip
        server.send_signal(signal.SIGINT)
        out, err = server.communicate(timeout=TIMEOUT)
    for run in (got_zip, got_mp):
        assert run.returncode == 0, run.stderr
        assert run.stderr == ""  # --no-progress
        assert re.fullmatch(
            r"Saved 5 files, \d+\.\d KiB in \d+\.\d\d s \(.+/s\) to .+\n", run.stdout
        ), run.stdout
    assert tree(tmp_path / "z") == want
    assert tree(tmp_path / "m") == want
    assert server.returncode == 0
    assert "Traceback" not in err
    assert "Stopped." in out
    log = [line for line in err.splitlines() if '"GET ' in line]
    assert any('"GET /zip/" 200' in line and " in " in line for line in log), err
    assert any('"GET /multipart/" 200' in line for line in log), err


def test_python_m_multiresp_serves_and_stops_on_ctrl_c(tmp_path: pathlib.Path) -> None:
    root = tmp_path / "share"
    sample(root)
    with serving(root, sys.executable, "-m", "multiresp") as (url, server):
        run = multiresp("get", url + "zip/?name=a.txt", "-o", str(tmp_path / "one"))
        server.send_signal(signal.SIGINT)
        _, err = server.communicate(timeout=TIMEOUT)
    assert run.returncode == 0, run.stderr
    assert tree(tmp_path / "one") == {"a.txt": b"alpha\n"}
    assert server.returncode == 0
    assert "Traceback" not in err and "KeyboardInterrupt" not in err


def test_help_and_usage_errors() -> None:
    run = multiresp("--help")
    assert run.returncode == 0
    assert "serve" in run.stdout and "get" in run.stdout
    assert multiresp("get", "--help").stdout.count("--format") >= 1
    bad = multiresp("get", "http://x/", "--format", "tar")
    assert bad.returncode == 2
    assert "invalid choice" in bad.stderr


def test_serve_a_missing_folder_is_one_line(tmp_path: pathlib.Path) -> None:
    run = multiresp("serve", str(tmp_path / "missing"), "--port", "0")
    assert run.returncode == 1
    assert run.stderr.count("\n") == 1 and "not a directory" in run.stderr


# -- get against small apps ------------------------------------------------------------------


def hostile_zip() -> bytes:
    body = io.BytesIO()
    with zipfile.ZipFile(body, "w") as archive:
        archive.writestr("fine.txt", b"fine")
        archive.writestr("../evil.txt", b"evil")
    return body.getvalue()


async def hostile(request: Request) -> Response:
    return Response(hostile_zip(), media_type="application/zip")


async def negotiated(request: Request) -> Response:
    seen.append(request.headers.get("accept", ""))
    return negotiate(request, [Entry.from_bytes(b"one", "one.txt")])


async def slow(request: Request) -> Response:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(SLOW_STEPS):
            await anyio.sleep(SLOW_STEP)
            yield b"x" * SLOW_CHUNK

    size = SLOW_STEPS * SLOW_CHUNK
    return ZipStreamResponse(
        [Entry.from_bytes(b"first", "first.txt"), Entry.from_iter(chunks(), "big.bin", size=size)]
    )


SLOW_STEPS, SLOW_STEP, SLOW_CHUNK = 30, 0.1, 64 * 1024  # a 3 s body the progress can show
seen: list[str] = []
APP = Starlette(
    routes=[Route("/hostile", hostile), Route("/negotiate", negotiated), Route("/slow", slow)]
)


@pytest.fixture
def app_url(live_server: Callable[..., LiveServer]) -> str:
    return live_server(APP).url


def test_get_of_a_hostile_archive_is_one_line_and_writes_nothing_outside(
    app_url: str, tmp_path: pathlib.Path
) -> None:
    dest = tmp_path / "nested" / "dest"
    run = multiresp("get", app_url + "/hostile", "-o", str(dest))
    assert run.returncode == 1
    lines = run.stderr.splitlines()
    error = [line for line in lines if line.startswith("multiresp get: error:")]
    assert len(error) == 1 and "../evil.txt" in error[0], run.stderr
    assert "Traceback" not in run.stderr
    assert run.stdout == ""
    outside = [p for p in tmp_path.rglob("*") if not p.is_relative_to(dest)]
    assert sorted(p.relative_to(tmp_path).as_posix() for p in outside) == ["nested"]
    assert not (tmp_path / "nested" / "evil.txt").exists()
    assert not any("evil" in p.name for p in tmp_path.rglob("*"))


def test_get_of_an_error_status_is_one_line(app_url: str, tmp_path: pathlib.Path) -> None:
    run = multiresp("get", app_url + "/missing", "-o", str(tmp_path / "d"))
    assert run.returncode == 1
    assert run.stderr.count("\n") == 1 and "404" in run.stderr, run.stderr


def test_get_format_sets_accept(app_url: str, tmp_path: pathlib.Path) -> None:
    seen.clear()
    for fmt in ["multipart", "zip"]:
        run = multiresp("get", app_url + "/negotiate", "--format", fmt, "-o", str(tmp_path / fmt))
        assert run.returncode == 0, run.stderr
        assert tree(tmp_path / fmt) == {"one.txt": b"one"}
    assert seen == ["multipart/mixed", "application/zip"]


def test_get_prints_plain_progress_lines_when_piped(app_url: str, tmp_path: pathlib.Path) -> None:
    run = multiresp("get", app_url + "/slow", "-o", str(tmp_path / "d"))
    assert run.returncode == 0, run.stderr
    assert "\r" not in run.stderr and "\x1b" not in run.stderr
    lines = run.stderr.splitlines()
    assert len(lines) >= 2, run.stderr  # one a second, over a 3 s body
    assert all(re.match(r"[\d.]+ \w?i?B of 1\.9 MiB \(\d+%\) · ", line) for line in lines), lines
    assert "files" in lines[-1] or "file" in lines[-1]
    assert run.stdout.startswith("Saved 2 files, 1.9 MiB in ")


def test_get_stops_on_ctrl_c_with_one_line_and_no_partial_file(
    app_url: str, tmp_path: pathlib.Path
) -> None:
    dest = tmp_path / "d"
    with subprocess.Popen(
        [str(SCRIPT), "get", app_url + "/slow", "-o", str(dest)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as get:
        try:
            assert get.stderr is not None
            first = get.stderr.readline()  # a progress line: big.bin is on its way
            assert "big.bin" in first, first
            get.send_signal(signal.SIGINT)
            out, err = get.communicate(timeout=TIMEOUT)
        finally:
            if get.poll() is None:
                get.kill()
    assert get.returncode == 130
    assert out == ""
    assert err.endswith("\nmultiresp get: error: interrupted\n") or err == (
        "multiresp get: error: interrupted\n"
    )
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert sorted(p.name for p in dest.iterdir()) == ["first.txt"]  # verified before, kept


def test_get_draws_a_progress_bar_on_a_terminal(app_url: str, tmp_path: pathlib.Path) -> None:
    tmux = require_tool("tmux")
    socket_name = f"multiresp-test-{os.getpid()}"
    dest = tmp_path / "d"
    done = tmp_path / "done"
    env = " ".join(f"{k}={v!s}" for k, v in os.environ.items() if k == "PYTHONPATH")
    command = f"{env} {SCRIPT} get {app_url}/slow -o {dest}; echo exit=$? > {done}; sleep 30"
    subprocess.run(
        [tmux, "-L", socket_name, "new-session", "-d", "-x", "120", "-y", "10", command],
        check=True,
    )
    try:
        screens: list[str] = []
        deadline = time.monotonic() + TIMEOUT
        while not done.exists() and time.monotonic() < deadline:
            capture = subprocess.run(
                [tmux, "-L", socket_name, "capture-pane", "-p"],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            screens.append(capture.stdout)
            time.sleep(0.2)
        assert done.read_text().strip() == "exit=0"
    finally:
        subprocess.run([tmux, "-L", socket_name, "kill-server"], check=False)
    mid = [s for s in screens if "%|" in s and "Saved" not in s]
    assert mid, screens[-1]
    bar = next(line for line in mid[-1].splitlines() if "%|" in line)
    # tqdm: percentage, bar, bytes of total, [elapsed<ETA, rate], then files and current entry
    assert re.search(r"\d+%\|.*\| [\d.]+\w?/1\.88M \[", bar), bar
    assert re.search(r"\d\d:\d\d<\d\d:\d\d, [\d.]+\w?B/s", bar), bar
    assert re.search(r"\d+ files? · big\.bin", bar), bar
    assert "Saved 2 files" in screens[-1] or dest.joinpath("big.bin").exists()
