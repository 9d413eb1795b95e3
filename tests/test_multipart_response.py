"""MultipartResponse and negotiate against a real uvicorn, read by stdlib email."""

from __future__ import annotations

import email.parser
import email.policy
import os
import pathlib
from collections.abc import AsyncIterator, Callable, Iterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from multiresp import Entry, MultipartResponse, negotiate
from multiresp._http import accept_quality, choose
from multiresp._names import parse_content_disposition

from conftest import LiveServer

Serve = Callable[..., LiveServer]


def parts_of(response: httpx.Response) -> dict[str, tuple[str, bytes]]:
    raw = f"Content-Type: {response.headers['content-type']}\r\n\r\n".encode() + response.content
    # compat32 keeps header values as sent: the default policy keeps only the first of
    # filename / filename* and so would report the ASCII fallback
    message = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(raw)
    assert message.is_multipart() and not message.defects
    found = {}
    for part in message.get_payload():
        _, name = parse_content_disposition(part["content-disposition"])  # prefers filename*
        payload = part.get_payload(decode=True)
        assert int(part["content-length"]) == len(payload)
        found[name] = (part.get_content_type(), payload)
    return found


def app_for(make: Callable[[Request], Response]) -> Starlette:
    async def endpoint(request: Request) -> Response:
        return make(request)

    return Starlette(routes=[Route("/", endpoint, methods=["GET", "HEAD"])])


@pytest.fixture
def files(tmp_path: pathlib.Path) -> list[Entry]:
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(9 << 20))
    return [
        Entry.from_path(big),
        Entry.from_bytes(b'{"a": 1}', "reports/résumé.json"),
        Entry.from_bytes(b"", "empty.txt"),
    ]


def test_sized_parts_exact_length_and_head(live_server: Serve, files: list[Entry]) -> None:
    server = live_server(app_for(lambda r: MultipartResponse(files)))
    response = httpx.get(server.url)
    head = httpx.head(server.url)
    assert response.headers["content-type"].startswith("multipart/mixed; boundary=")
    assert int(response.headers["content-length"]) == len(response.content)
    assert head.headers["content-length"] == response.headers["content-length"]
    assert parts_of(response) == {
        "big.bin": ("application/octet-stream", pathlib.Path(files[0].source.path).read_bytes()),  # type: ignore[union-attr]
        "reports/résumé.json": ("application/json", b'{"a": 1}'),
        "empty.txt": ("text/plain", b""),
    }
    assert response.content.endswith(b"--\r\n")


def test_boundary_is_random_unless_given(live_server: Serve) -> None:
    first = MultipartResponse([]).boundary
    assert first != MultipartResponse([]).boundary
    assert MultipartResponse([], boundary="fixed-boundary").boundary == "fixed-boundary"
    with pytest.raises(ValueError):
        MultipartResponse([], boundary="bad\r\nboundary")


def test_unsized_and_streamed_entries_are_chunked(live_server: Serve) -> None:
    async def produce() -> AsyncIterator[Entry]:
        yield Entry.from_iter(iter([b"a" * 70_000, b"b"]), "gen.bin")

        async def chunks() -> AsyncIterator[bytes]:
            yield b"async"

        yield Entry.from_iter(chunks(), "async.txt")

    server = live_server(app_for(lambda r: MultipartResponse(produce())))
    response = httpx.get(server.url)
    assert "content-length" not in response.headers
    raw = f"Content-Type: {response.headers['content-type']}\r\n\r\n".encode() + response.content
    message = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(raw)
    got = {
        parse_content_disposition(p["content-disposition"])[1]: p.get_payload(decode=True)
        for p in message.get_payload()
    }
    assert got == {"gen.bin": b"a" * 70_000 + b"b", "async.txt": b"async"}


def test_failing_source_never_yields_a_closing_boundary(live_server: Serve) -> None:
    def failing() -> Iterator[bytes]:
        for _ in range(3):
            yield b"x" * (1 << 20)
        raise OSError("boom")

    response_holder: list[MultipartResponse] = []

    def make(request: Request) -> Response:
        response = MultipartResponse(
            [Entry.from_bytes(b"ok", "ok.txt"), Entry.from_iter(failing(), "bad.bin")]
        )
        response_holder.append(response)
        return response

    server = live_server(app_for(make))
    received = b""
    with pytest.raises(httpx.RemoteProtocolError), httpx.stream("GET", server.url) as response:
        for chunk in response.iter_raw():
            received += chunk
    closing = b"--" + response_holder[0].boundary.encode() + b"--"
    assert closing not in received
    assert len(received) >= 1 << 20  # the body had started: the failure came mid-stream


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, "application/zip"),
        ("*/*", "application/zip"),
        ("application/zip", "application/zip"),
        ("multipart/mixed", "multipart/mixed"),
        ("multipart/*", "multipart/mixed"),
        ("multipart/mixed, */*;q=0.1", "multipart/mixed"),
        ("application/zip;q=0.5, multipart/mixed;q=0.9", "multipart/mixed"),
        ("*/*, application/zip;q=0", "multipart/mixed"),
        ("text/html", None),
        ("application/zip;q=0", None),
    ],
)
def test_choose_follows_q_values(accept: str | None, expected: str | None) -> None:
    assert choose(accept, ["application/zip", "multipart/mixed"]) == expected


def test_accept_quality_specificity() -> None:
    assert accept_quality("text/*;q=0.3, text/plain;q=0.7", "text/plain") == 0.7
    assert accept_quality("text/*;q=0.3, text/plain;q=0.7", "text/html") == 0.3
    assert accept_quality("text/plain;q=bogus", "text/plain") == 0.0


def test_negotiate_live(live_server: Serve) -> None:
    entries = [Entry.from_bytes(b"hello", "a.txt")]
    server = live_server(app_for(lambda r: negotiate(r, entries, filename="n.zip")))
    zipped = httpx.get(server.url)
    assert zipped.headers["content-type"] == "application/zip"
    assert 'filename="n.zip"' in zipped.headers["content-disposition"]
    multi = httpx.get(server.url, headers={"Accept": "multipart/mixed"})
    assert multi.headers["content-type"].startswith("multipart/mixed")
    assert parts_of(multi) == {"a.txt": ("text/plain", b"hello")}
    refused = httpx.get(server.url, headers={"Accept": "text/html"})
    assert refused.status_code == 406
    assert "application/zip" in refused.text


def test_aiohttp_and_requests_toolbelt_read_the_live_response(
    live_server: Serve, files: list[Entry]
) -> None:
    import asyncio

    import aiohttp
    from requests_toolbelt.multipart.decoder import MultipartDecoder

    server = live_server(app_for(lambda r: MultipartResponse(files)))
    big = pathlib.Path(files[0].source.path).read_bytes()  # type: ignore[union-attr]
    expected = {"big.bin": big, "reports/résumé.json": b'{"a": 1}', "empty.txt": b""}

    async def with_aiohttp() -> dict[str, bytes]:
        found = {}
        async with aiohttp.ClientSession() as session, session.get(server.url) as response:
            reader = aiohttp.MultipartReader.from_response(response)
            while (part := await reader.next()) is not None:
                assert isinstance(part, aiohttp.BodyPartReader)
                found[part.filename or ""] = bytes(await part.read())
        return found

    assert asyncio.run(with_aiohttp()) == expected

    response = httpx.get(server.url)
    decoded = MultipartDecoder(response.content, response.headers["content-type"])
    got = {
        parse_content_disposition(part.headers[b"Content-Disposition"].decode())[1]: part.content
        for part in decoded.parts
    }
    assert got == expected
