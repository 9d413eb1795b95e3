"""``multiresp put`` as users run it: the console script, in a subprocess, against uvicorn."""

from __future__ import annotations

import hashlib
import os
import pathlib
import subprocess
import sys
from collections.abc import Callable
from typing import Any

from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from conftest import LiveServer

SCRIPT = pathlib.Path(sys.executable).parent / "multiresp"
TIMEOUT = 60  # seconds any one command may take


def multiresp(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=TIMEOUT)


def receiving_app(received: dict[str, Any]) -> Starlette:
    async def form(request: Request) -> JSONResponse:
        got = await request.form()
        for field, value in got.multi_items():
            assert isinstance(value, UploadFile)
            received[value.filename or ""] = (field, hashlib.sha256(await value.read()).digest())
        await got.close()
        return JSONResponse({"saved": len(received)})

    async def refuse(request: Request) -> PlainTextResponse:
        await request.body()
        return PlainTextResponse("too large\nfor this server", status_code=413)

    return Starlette(
        routes=[Route("/up", form, methods=["POST"]), Route("/small", refuse, methods=["POST"])]
    )


def test_put_files_and_a_folder(
    live_server: Callable[..., LiveServer], tmp_path: pathlib.Path
) -> None:
    received: dict[str, Any] = {}
    server = live_server(receiving_app(received))
    folder = tmp_path / "photos"
    (folder / "2026").mkdir(parents=True)
    contents = {
        "photos/2026/a.jpg": os.urandom(3 << 20),
        "photos/b é.txt": b"b" * 10,
        "photos/2026/empty.bin": b"",
        "loose.dat": os.urandom(1001),
    }
    for name, data in contents.items():
        (tmp_path / name).write_bytes(data)
    done = multiresp("put", server.url + "/up", str(folder), str(tmp_path / "loose.dat"))
    assert done.returncode == 0, done.stderr
    assert received == {
        name: ("files", hashlib.sha256(data).digest()) for name, data in contents.items()
    }
    assert done.stdout.startswith("Sent 4 files, ")
    assert "200 OK" in done.stdout
    assert "Traceback" not in done.stderr

    received.clear()
    done = subprocess.run(
        [sys.executable, "-m", "multiresp", "put", server.url + "/up", str(tmp_path / "loose.dat"),
         "--field", "attachments", "--no-progress"],
        capture_output=True, text=True, timeout=TIMEOUT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert received == {
        "loose.dat": ("attachments", hashlib.sha256(contents["loose.dat"]).digest())
    }
    assert done.stderr == ""


def test_put_failures_are_one_line(
    live_server: Callable[..., LiveServer], tmp_path: pathlib.Path
) -> None:
    server = live_server(receiving_app({}))
    (tmp_path / "a.txt").write_bytes(b"a")
    cases = [
        (
            server.url + "/small",
            str(tmp_path / "a.txt"),
            "413 Request Entity Too Large: too large for",
        ),
        (server.url + "/up", str(tmp_path / "missing.txt"), "FileNotFoundError"),
        ("http://127.0.0.1:9/up", str(tmp_path / "a.txt"), "ConnectError"),
    ]
    for url, path, said in cases:
        done = multiresp("put", url, path)
        assert done.returncode == 1, done
        [line] = done.stderr.strip().splitlines()
        assert line.startswith("multiresp put: error: ")
        assert said in line
        assert done.stdout == ""
