"""A failed transfer behind middleware: what the HTTP connection shows, and what a reader keeps.

A response whose source fails mid-body ends the app without finishing the body, and uvicorn
then ends the connection short of ``Content-Length`` or without the chunked terminator. Pure
ASGI middleware passes that through. Starlette's ``BaseHTTPMiddleware`` (FastAPI's
``@app.middleware("http")``) copies the body through a stream of its own and finishes it
whatever the app below did: behind it, a chunked body that failed ends like a complete one.
The README says so; these tests pin both behaviours, and show that the body it finishes is
still refused by readers (no end of central directory, no closing delimiter), so multiresp's
client keeps only the files it verified before the failure.
"""

from __future__ import annotations

import io
import os
import pathlib
import zipfile
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from multiresp import Entry, MultipartResponse, ProtocolError, ZipStreamResponse
from multiresp.client import download

GOOD = b"good\n" * 1000
NOISE = os.urandom(300_000)  # what the failing source yields before it raises: deflate keeps it


def failing() -> Iterator[bytes]:
    yield NOISE
    raise RuntimeError("the source failed")


def entries() -> list[Entry]:
    return [Entry.from_bytes(GOOD, "good.txt"), Entry.from_iter(failing(), "bad.bin")]


async def zip_chunked(request: Request) -> Response:
    return ZipStreamResponse(entries(), compression="deflate")  # no length: chunked


async def zip_sized(request: Request) -> Response:
    sized = Entry.from_iter(failing(), "bad.bin", size=len(NOISE) + 10)
    return ZipStreamResponse([Entry.from_bytes(GOOD, "good.txt"), sized])  # Content-Length


async def multipart(request: Request) -> Response:
    return MultipartResponse(entries())


class Headered:
    """A pure ASGI middleware: adds a header, passes every message on as it is."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_header(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message["headers"], (b"x-seen", b"1")]}
            await send(message)

        await self.app(scope, receive, send_with_header)


class Based(BaseHTTPMiddleware):
    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        response = await call_next(request)
        response.headers["x-seen"] = "1"
        return response


def app_with(middleware: Middleware) -> Starlette:
    routes = [Route("/zip", zip_chunked), Route("/sized", zip_sized), Route("/mp", multipart)]
    return Starlette(routes=routes, middleware=[middleware])


def raw_get(url: str) -> tuple[bytes, BaseException | None, int | None]:
    """The body as received, the transport error that ended it if one did, and its
    ``Content-Length`` if it had one."""
    body = bytearray()
    length = None
    try:
        with httpx.stream("GET", url) as response:
            assert response.status_code == 200 and response.headers["x-seen"] == "1"
            if "content-length" in response.headers:
                length = int(response.headers["content-length"])
            for chunk in response.iter_raw():
                body += chunk
    except httpx.TransportError as error:
        return bytes(body), error, length
    return bytes(body), None, length


@pytest.mark.parametrize("path", ["/zip", "/sized", "/mp"])
def test_pure_asgi_middleware_keeps_the_abort(live_server: Any, path: str) -> None:
    server = live_server(app_with(Middleware(Headered)))
    body, error, length = raw_get(server.url + path)
    assert isinstance(error, httpx.RemoteProtocolError)  # short of its length or terminator
    assert len(body) >= len(NOISE) // 2  # the body was cut mid-way, not refused
    assert (length is not None) == (path == "/sized")


@pytest.mark.parametrize("path", ["/zip", "/mp"])
def test_base_http_middleware_finishes_a_failed_chunked_body(live_server: Any, path: str) -> None:
    server = live_server(app_with(Middleware(Based)))
    body, error, length = raw_get(server.url + path)
    assert error is None and length is None  # Starlette's middleware sent the terminator
    if path == "/zip":
        with pytest.raises(zipfile.BadZipFile):  # but no central directory: not an archive
            zipfile.ZipFile(io.BytesIO(body))
    else:
        assert not body.rstrip().endswith(b"--")  # no closing delimiter


def test_base_http_middleware_cannot_finish_a_body_short_of_its_length(
    live_server: Any,
) -> None:
    server = live_server(app_with(Middleware(Based)))
    body, error, length = raw_get(server.url + "/sized")
    assert isinstance(error, httpx.RemoteProtocolError)  # uvicorn refused to finish it short
    assert length is not None and len(NOISE) <= len(body) < length


@pytest.mark.parametrize("path", ["/zip", "/sized", "/mp"])
@pytest.mark.parametrize("middleware", [Headered, Based])
def test_the_client_keeps_only_what_it_verified_behind_either(
    live_server: Any, tmp_path: pathlib.Path, path: str, middleware: type
) -> None:
    server = live_server(app_with(Middleware(middleware)))
    with pytest.raises(ProtocolError):
        download(server.url + path, tmp_path / "out", resume=False)
    kept = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    assert kept in ({}, {"good.txt": GOOD})
