"""A served folder under change, on a real uvicorn: files swapped for FIFOs or rewritten in
place, and what the archive says about folders, modes and dates."""

from __future__ import annotations

import concurrent.futures
import io
import os
import pathlib
import subprocess
import zipfile
from collections.abc import Callable

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from multiresp import Entry, walk
from multiresp._pace import READ_BLOCK
from multiresp.responses import MultipartResponse, ZipStreamResponse

from conftest import LiveServer, require_tool

Serve = Callable[..., LiveServer]


def app_for(routes: dict[str, Callable[[Request], Response]]) -> Starlette:
    def route(path: str, make: Callable[[Request], Response]) -> Route:
        async def endpoint(request: Request) -> Response:
            return make(request)

        return Route(path, endpoint)

    return Starlette(routes=[route(path, make) for path, make in routes.items()])


def attempt(url: str) -> str:
    """GET ``url`` to the end; how it ended."""
    try:
        with httpx.stream("GET", url, timeout=20) as response:
            for _ in response.iter_raw():
                pass
            return f"complete {response.status_code}"
    except httpx.TimeoutException:
        return "timeout"
    except httpx.TransportError:
        return "aborted"


def test_fifos_swapped_in_hold_no_worker(live_server: Serve, tmp_path: pathlib.Path) -> None:
    """40 blocked opens used to take every worker thread: then nothing answered at all."""
    root = tmp_path / "served"
    root.mkdir()
    for name in ("walked.txt", "named.txt", "big.bin"):
        (root / name).write_bytes(b"x" * (READ_BLOCK + 1 if name == "big.bin" else 100))
    walked = walk(root)
    named = [Entry.from_path(root / "named.txt")]
    for name in ("walked.txt", "named.txt", "big.bin"):
        (root / name).unlink()
        os.mkfifo(root / name)
    (tmp_path / "ok.txt").write_bytes(b"fine")
    server = live_server(
        app_for(
            {
                "/walked": lambda r: ZipStreamResponse(walked),
                "/named": lambda r: MultipartResponse(named),
                "/ok": lambda r: ZipStreamResponse([tmp_path / "ok.txt"]),
            }
        )
    )
    urls = [f"{server.url}/{('walked', 'named')[i % 2]}" for i in range(50)]
    with concurrent.futures.ThreadPoolExecutor(50) as pool:
        outcomes = list(pool.map(attempt, urls))
    assert set(outcomes) <= {"aborted", "complete 500"}, outcomes
    response = httpx.get(f"{server.url}/ok", timeout=20)
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        assert archive.read("ok.txt") == b"fine"


def test_an_in_place_rewrite_with_mtime_restored_gets_a_fresh_crc(
    live_server: Serve, tmp_path: pathlib.Path
) -> None:
    """As ``cp -p``, ``rsync -t`` and ``tar x`` leave a file: same size, same mtime."""
    root = tmp_path / "served"
    root.mkdir()
    path = root / "big.bin"
    path.write_bytes(os.urandom(2 * READ_BLOCK))
    server = live_server(app_for({"/": lambda r: ZipStreamResponse(walk(root))}))

    def fetch() -> bytes:
        response = httpx.get(server.url, timeout=20)
        assert response.status_code == 200
        with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
            assert archive.testzip() is None
            return archive.read("big.bin")

    assert fetch() == path.read_bytes()
    st = path.stat()
    with open(path, "r+b") as f:
        f.seek(READ_BLOCK + 10)
        f.write(os.urandom(4096))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert fetch() == path.read_bytes()


@pytest.fixture
def photos(tmp_path: pathlib.Path) -> pathlib.Path:
    folder = tmp_path / "photos"
    (folder / "2026").mkdir(parents=True)
    (folder / "2026" / "a.jpg").write_bytes(b"jpeg")
    script = folder / "resize.sh"
    script.write_bytes(b"#!/bin/sh\necho resized\n")
    os.chmod(script, 0o4755)  # setuid is never sent
    os.chmod(folder / "2026" / "a.jpg", 0o600)
    (tmp_path / "empty").mkdir()
    os.chmod(tmp_path / "empty", 0o750)
    return folder


def test_folders_modes_and_dates_as_unzip_sees_them(
    live_server: Serve, photos: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    entries = [photos, tmp_path / "empty", Entry.from_bytes(b"{}", "report.json")]
    server = live_server(app_for({"/": lambda r: ZipStreamResponse(entries)}))
    body = httpx.get(server.url, timeout=20).content
    assert body == httpx.get(server.url, timeout=20).content  # no clock in the bytes
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        infos = {info.filename: info for info in archive.infolist()}
    assert sorted(infos) == [
        "empty/",
        "photos/2026/a.jpg",
        "photos/resize.sh",
        "report.json",
    ]  # a folder's path nests under its name, as zip -r does; an empty one gives "name/"
    modes = {name: info.external_attr >> 16 for name, info in infos.items()}
    assert modes == {
        "empty/": 0o40750,
        "photos/2026/a.jpg": 0o100600,
        "photos/resize.sh": 0o100755,
        "report.json": 0o100644,
    }
    assert infos["empty/"].external_attr & 0x10  # MS-DOS directory bit
    assert infos["report.json"].date_time == (1980, 1, 1, 0, 0, 0)

    unzip = require_tool("unzip")
    archive_path = tmp_path / "out.zip"
    archive_path.write_bytes(body)
    out = tmp_path / "out"
    subprocess.run([unzip, "-q", str(archive_path), "-d", str(out)], check=True)
    script = out / "photos" / "resize.sh"
    assert os.access(script, os.X_OK)
    assert not script.stat().st_mode & 0o4000
    assert subprocess.run([str(script)], capture_output=True, check=True).stdout == b"resized\n"
