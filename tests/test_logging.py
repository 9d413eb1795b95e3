"""What the server logs and runs after a transfer: one failure line, a DEBUG line per
transfer, background tasks (a real uvicorn in a thread of this process, so caplog sees it)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from multiresp import Entry
from multiresp.responses import MultipartResponse, ZipResponse, ZipStreamResponse, negotiate

from conftest import LiveServer

Serve = Callable[..., LiveServer]


def failing() -> Iterator[bytes]:
    yield b"a" * 100_000
    raise OSError("disk on fire")


def app_for(make: Callable[[Request, BackgroundTask], Response], ran: threading.Event) -> Starlette:
    async def endpoint(request: Request) -> Response:
        return make(request, BackgroundTask(ran.set))

    return Starlette(routes=[Route("/", endpoint)])


@pytest.mark.parametrize("kind", [ZipStreamResponse, MultipartResponse])
def test_a_failure_is_logged_once_with_its_entry_and_cause(
    live_server: Serve, caplog: pytest.LogCaptureFixture, kind: type[ZipStreamResponse]
) -> None:
    ran = threading.Event()
    entries = [Entry.from_bytes(b"fine", "ok.txt"), Entry.from_iter(failing(), "fails.bin")]
    server = live_server(app_for(lambda r, task: kind(entries, background=task), ran))
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(httpx.RemoteProtocolError):  # the body is cut, never completed
            httpx.get(server.url)
        assert ran.wait(5)  # the background task runs after a failed transfer too
        time.sleep(0.1)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.name for r in errors if r.name == "multiresp"] == ["multiresp"]
    failure = next(r for r in errors if r.name == "multiresp")
    assert "'fails.bin'" in failure.getMessage() and "disk on fire" in failure.getMessage()
    assert failure.exc_info is not None and isinstance(failure.exc_info[1], OSError)
    assert not [r for r in caplog.records if "ExceptionGroup" in r.getMessage()]
    groups = [r for r in errors if r.exc_info and "ExceptionGroup" in type(r.exc_info[1]).__name__]
    assert not groups
    debug = [r.getMessage() for r in caplog.records if r.name == "multiresp" and r.levelno == 10]
    assert len(debug) == 1 and debug[0].endswith(": failed"), debug


def test_one_debug_line_per_transfer_says_how_it_ended(
    live_server: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    ran = threading.Event()

    def endless() -> Iterator[bytes]:
        while True:
            yield bytes(1 << 20)

    def make(request: Request, task: BackgroundTask) -> Response:
        if request.query_params.get("endless"):
            return ZipStreamResponse([Entry.from_iter(endless(), "endless.bin")], background=task)
        return ZipStreamResponse([Entry.from_bytes(b"x" * 1000, "x.txt")] * 1, background=task)

    server = live_server(app_for(make, ran))
    with caplog.at_level(logging.DEBUG, logger="multiresp"):
        body = httpx.get(server.url).content
        assert ran.wait(5)
        ran.clear()
        with httpx.stream("GET", server.url + "/?endless=1") as response:
            next(response.iter_raw())
        assert ran.wait(5)  # the background task runs after the client left too
        time.sleep(0.1)
    lines = [r.getMessage() for r in caplog.records if r.name == "multiresp"]
    assert lines[0].startswith(f"ZipStreamResponse for GET /: 1 entries, {len(body)} bytes")
    assert lines[0].endswith(": complete")
    assert lines[1].startswith("ZipStreamResponse for GET /: 1 entries, ")
    assert lines[1].endswith(": client left")
    assert len(lines) == 2


@pytest.mark.parametrize("kind", ["zip-stream", "zip", "multipart", "negotiate"])
def test_every_response_runs_its_background_task_after_the_body(
    live_server: Serve, kind: str
) -> None:
    ran = threading.Event()
    entries = [Entry.from_bytes(b"x" * 1000, "x.txt")]

    def make(request: Request, task: BackgroundTask) -> Response:
        if kind == "zip-stream":
            return ZipStreamResponse(entries, background=task)
        if kind == "zip":
            return ZipResponse(entries, background=task)
        if kind == "multipart":
            return MultipartResponse(entries, background=task)
        return negotiate(request, entries, background=task)

    server = live_server(app_for(make, ran))
    assert httpx.get(server.url).status_code == 200
    assert ran.wait(5)
