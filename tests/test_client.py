"""The httpx client against a real uvicorn on loopback: unpacking, streaming, safety, resume.

The server is one small ASGI app in a thread. Each test registers a body under a fresh URL
(:func:`serve`), with the knobs a test needs: chunk size, Content-Length or chunked, a gate the
server waits on mid-body, connection drops after a number of bytes, and Range / If-Range /
ETag support for resuming.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import itertools
import pathlib
import random
import re
import socket
import sys
import threading
import time
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import anyio
import httpx
import pytest
import uvicorn
import zipstream
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from multiresp import (
    Entry,
    IntegrityError,
    LimitExceeded,
    Limits,
    ProtocolError,
    SavedFile,
    UnsafeNameError,
    _decoding,
    _progress,
    _transfer,
)
from multiresp._errors import TransferTimeout
from multiresp._sink import TEMP_SUFFIX
from multiresp.client import (
    Progress,
    adownload,
    aiter_entries,
    download,
    iter_entries,
)

from ziputil import Unseekable

GATE_TIMEOUT = 10.0  # seconds the server waits on a gate before giving up
SERVER_START_TIMEOUT = 10.0  # seconds

_random = random.Random(20240601)
FILES: dict[str, bytes] = {
    "hello.txt": b"hello world\n",
    "empty.bin": b"",
    "nested/deeper/random.bin": _random.randbytes(1_500_000),
    "nested/text.txt": b"all work and no play " * 20_000,
    "unicodé/名前.txt": "päivää 🌍\n".encode(),
    "small/one.bin": _random.randbytes(1),
}
DIRS = ["emptydir/"]


# -- the server ---------------------------------------------------------------------------


@dataclasses.dataclass(eq=False)
class Served:
    """A body the test server sends, and how."""

    body: bytes
    content_type: str
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    chunk: int = 64 * 1024  # bytes per send
    length: bool = True  # send Content-Length (else chunked)
    cuts: list[int] = dataclasses.field(default_factory=list)  # per request: drop after N bytes
    gate_at: int | None = None  # bytes sent before waiting on ``gate``
    gate: threading.Event = dataclasses.field(default_factory=threading.Event)
    etag: str | None = None
    ranges: bool = False  # honour Range / If-Range
    etag_after_cut: str | None = None  # the ETag once a cut happened: the resource "changed"
    body_after_cut: bytes | None = None  # the body once a cut happened: the resource "changed"
    etag_on_206: bool = True  # send the ETag with a 206 too (a sloppy server does not)
    drip: float | None = None  # seconds between pieces (a slow server)
    requests: list[dict[str, str]] = dataclasses.field(default_factory=list)
    waited: bool = False  # the server reached the gate and waited


class Dropped(Exception):
    """Raised by the test app to make uvicorn drop the connection mid-body."""


SERVED: dict[str, Served] = {}
ROUTES: dict[str, Callable[[], Response]] = {}
_keys = itertools.count()


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    assert scope["type"] == "http"
    key = scope["path"].strip("/")
    if key in ROUTES:
        await ROUTES[key]()(scope, receive, send)
        return
    served = SERVED.get(key)
    if served is None:
        await Response(b"no such body", status_code=404)(scope, receive, send)
        return
    request = {name.decode().lower(): value.decode() for name, value in scope["headers"]}
    served.requests.append(request)
    body, status = served.body, 200
    headers = {"content-type": served.content_type, **served.headers}
    etag = served.etag
    if etag is not None:
        headers["etag"] = etag
    if served.ranges:
        headers["accept-ranges"] = "bytes"
        wanted, if_range = request.get("range"), request.get("if-range")
        if wanted and (if_range is None or if_range == etag or not served.etag_on_206):
            start = int(wanted.removeprefix("bytes=").removesuffix("-"))
            status = 206
            if not served.etag_on_206:
                headers.pop("etag", None)
            headers["content-range"] = f"bytes {start}-{len(body) - 1}/{len(body)}"
            body = body[start:]
    if served.length:
        headers["content-length"] = str(len(body))
    cut = served.cuts.pop(0) if served.cuts else None
    if cut is not None and served.etag_after_cut is not None:
        served.etag = served.etag_after_cut
    if cut is not None and served.body_after_cut is not None:
        served.body = served.body_after_cut
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
        }
    )
    sent = 0
    for start in range(0, len(body), served.chunk):
        piece = body[start : start + served.chunk]
        if served.gate_at is not None and sent >= served.gate_at and not served.waited:
            served.waited = True
            if not await anyio.to_thread.run_sync(served.gate.wait, GATE_TIMEOUT):
                raise Dropped("the gate was never opened")
        if cut is not None and sent + len(piece) > cut:
            await send(
                {"type": "http.response.body", "body": piece[: cut - sent], "more_body": True}
            )
            raise Dropped(f"dropped after {cut} bytes")
        await send({"type": "http.response.body", "body": piece, "more_body": True})
        sent += len(piece)
        if served.drip is not None:
            await anyio.sleep(served.drip)
    await send({"type": "http.response.body", "body": b"", "more_body": False})


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, log_level="critical", lifespan="off", ws="none")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    thread.join(SERVER_START_TIMEOUT)
    sock.close()


@pytest.fixture
def serve(base_url: str) -> Callable[..., tuple[str, Served]]:
    def register(body: bytes, content_type: str, **options: Any) -> tuple[str, Served]:
        key = f"b{next(_keys)}"
        served = SERVED[key] = Served(body, content_type, **options)
        return f"{base_url}/{key}", served

    return register


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# -- bodies -------------------------------------------------------------------------------


def stdlib_zip(
    files: dict[str, bytes], *, compression: int = zipfile.ZIP_STORED, dirs: list[str] = DIRS
) -> bytes:
    out = Unseekable()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate names, on purpose in some tests
        with zipfile.ZipFile(out, "w", compression=compression) as archive:
            for name in dirs:
                archive.writestr(zipfile.ZipInfo(name), b"")
            for name, data in files.items():
                archive.writestr(zipfile.ZipInfo(name), data, compress_type=compression)
    return bytes(out.data)


def zipstream_zip(files: dict[str, bytes], *, compression: int = zipstream.ZIP_STORED) -> bytes:
    archive = zipstream.ZipStream(compress_type=compression)
    for name in DIRS:
        archive.mkdir(name)
    for name, data in files.items():
        archive.add(data, name)
    return b"".join(archive)


BOUNDARY = "test-boundary-1234"
MULTIPART = f"multipart/mixed; boundary={BOUNDARY}"


def multipart_body(
    files: dict[str, bytes], *, lengths: bool = True, extra: dict[str, dict[str, str]] | None = None
) -> bytes:
    out = bytearray()
    for name, data in files.items():
        lines = [
            f"--{BOUNDARY}",
            "Content-Type: application/octet-stream",
            f"Content-Disposition: attachment; filename=\"x\"; filename*=UTF-8''{quote(name)}",
        ]
        if lengths:
            lines.append(f"Content-Length: {len(data)}")
        lines += [f"{key}: {value}" for key, value in (extra or {}).get(name, {}).items()]
        out += ("\r\n".join(lines) + "\r\n\r\n").encode() + data + b"\r\n"
    out += f"--{BOUNDARY}--\r\n".encode()
    return bytes(out)


def tree(root: pathlib.Path) -> dict[str, bytes | None]:
    found: dict[str, bytes | None] = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root).as_posix()
        found[relative] = None if path.is_dir() else path.read_bytes()
    return found


def expected_tree(files: dict[str, bytes], dirs: list[str] = DIRS) -> dict[str, bytes | None]:
    expected: dict[str, bytes | None] = {}
    for name in [*files, *dirs]:
        parts = name.rstrip("/").split("/")
        for depth in range(1, len(parts)):
            expected["/".join(parts[:depth])] = None
    expected.update({name.rstrip("/"): None for name in dirs})
    expected.update(files)
    return dict(sorted(expected.items()))


def check_saved(saved: list[SavedFile], dest: pathlib.Path, files: dict[str, bytes]) -> None:
    assert [file.name for file in saved] == list(files)
    for file in saved:
        assert file.path == dest.joinpath(*file.name.split("/"))
        assert file.size == len(files[file.name])
        assert file.sha256 == hashlib.sha256(files[file.name]).hexdigest()


def no_temp_files(root: pathlib.Path) -> bool:
    return not [path for path in root.rglob("*") if path.name.endswith(TEMP_SUFFIX)]


def entry_data_offset(body: bytes, name: str) -> int:
    """Where ``name``'s data starts in a zip body."""
    info = zipfile.ZipFile(io.BytesIO(body)).getinfo(name)
    local = body[info.header_offset : info.header_offset + 30]
    name_length = int.from_bytes(local[26:28], "little")
    extra_length = int.from_bytes(local[28:30], "little")
    return info.header_offset + 30 + name_length + extra_length


BODIES: dict[str, tuple[Callable[[], bytes], str]] = {
    "stdlib-stored": (lambda: stdlib_zip(FILES), "application/zip"),
    "stdlib-deflated": (
        lambda: stdlib_zip(FILES, compression=zipfile.ZIP_DEFLATED),
        "application/x-zip-compressed",
    ),
    "zipstream-stored": (lambda: zipstream_zip(FILES), "application/zip"),
    "zipstream-deflated": (
        lambda: zipstream_zip(FILES, compression=zipstream.ZIP_DEFLATED),
        "application/zip",
    ),
    "multipart": (lambda: multipart_body({**FILES, **dict.fromkeys(DIRS, b"")}), MULTIPART),
    "multipart-no-lengths": (
        lambda: multipart_body({**FILES, **dict.fromkeys(DIRS, b"")}, lengths=False),
        MULTIPART,
    ),
}


# -- download / adownload -----------------------------------------------------------------


@pytest.mark.parametrize("kind", list(BODIES))
def test_download_is_byte_identical(
    serve: Callable[..., tuple[str, Served]], tmp_path: pathlib.Path, kind: str
) -> None:
    make, content_type = BODIES[kind]
    url, _ = serve(make(), content_type)
    dest = tmp_path / "out"
    saved = download(url, dest)
    assert tree(dest) == expected_tree(FILES)
    check_saved(saved, dest, FILES)


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["stdlib-deflated", "zipstream-stored", "multipart"])
async def test_adownload_is_byte_identical(
    serve: Callable[..., tuple[str, Served]], tmp_path: pathlib.Path, kind: str
) -> None:
    make, content_type = BODIES[kind]
    url, _ = serve(make(), content_type, length=False, chunk=10_000)
    async with httpx.AsyncClient() as http:
        saved = await adownload(url, tmp_path, client=http)
    assert tree(tmp_path) == expected_tree(FILES)
    check_saved(saved, tmp_path, FILES)


def test_download_many_small_files(
    serve: Callable[..., tuple[str, Served]], tmp_path: pathlib.Path
) -> None:
    files = {f"d{i % 10}/f{i:04}.txt": f"file {i}\n".encode() * (i % 5) for i in range(1500)}
    url, _ = serve(stdlib_zip(files, dirs=[]), "application/zip")
    with httpx.Client() as http:
        saved = download(url, tmp_path, client=http)
    assert tree(tmp_path) == expected_tree(files, dirs=[])
    check_saved(saved, tmp_path, files)


def test_download_asks_for_identity_and_passes_request_options(
    serve: Callable[..., tuple[str, Served]], tmp_path: pathlib.Path
) -> None:
    url, served = serve(stdlib_zip(FILES), "application/zip")
    download(url, tmp_path, params={"q": "1"}, headers={"x-test": "yes"})
    (request,) = served.requests
    assert request["accept-encoding"] == "identity"
    assert request["x-test"] == "yes"


def test_http_error_status(base_url: str, tmp_path: pathlib.Path) -> None:
    with pytest.raises(httpx.HTTPStatusError):
        download(f"{base_url}/missing", tmp_path / "out")
    assert tree(tmp_path) == {"out": None}


def test_connection_refused_is_httpx_error(tmp_path: pathlib.Path) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    with pytest.raises(httpx.ConnectError):
        download(f"http://127.0.0.1:{port}/", tmp_path)
    assert not writer_threads()


def test_unknown_content_type(
    serve: Callable[..., tuple[str, Served]], tmp_path: pathlib.Path
) -> None:
    url, _ = serve(b"<html></html>", "text/html")
    with pytest.raises(ProtocolError, match="text/html"):
        download(url, tmp_path)
    with httpx.stream("GET", url) as response, pytest.raises(ProtocolError, match="text/html"):
        next(iter_entries(response))


def writer_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == "multiresp-writer"]


def open_gate_when(path: pathlib.Path, served: Served) -> threading.Thread:
    """Open ``served``'s gate once ``path`` exists (or after GATE_TIMEOUT, to fail the test)."""

    def watch() -> None:
        deadline = time.monotonic() + GATE_TIMEOUT / 2
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.005)
        served.gate.set()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    return watcher


def test_download_saves_files_while_the_body_is_still_arriving(
    serve: Callable[..., tuple[str, Served]], tmp_path: pathlib.Path
) -> None:
    body = stdlib_zip(FILES)
    gate_at = entry_data_offset(body, "nested/deeper/random.bin") + 100_000
    url, served = serve(body, "application/zip", chunk=50_000, gate_at=gate_at, length=False)
    watcher = open_gate_when(tmp_path / "hello.txt", served)
    started = time.monotonic()
    saved = download(url, tmp_path)
    watcher.join()
    assert time.monotonic() - started < GATE_TIMEOUT / 2, "hello.txt only came at the end"
    check_saved(saved, tmp_path, FILES)


@pytest.mark.anyio
async def test_adownload_saves_files_while_the_body_is_still_arriving(
    serve: Callable[..., tuple[str, Served]], tmp_path: pathlib.Path
) -> None:
    body = multipart_body(FILES, lengths=False)
    gate_at = body.index(FILES["nested/deeper/random.bin"]) + 100_000
    url, served = serve(body, MULTIPART, chunk=50_000, gate_at=gate_at)
    watcher = open_gate_when(tmp_path / "empty.bin", served)
    started = time.monotonic()
    saved = await adownload(url, tmp_path)
    watcher.join()
    assert time.monotonic() - started < GATE_TIMEOUT / 2, "empty.bin only came at the end"
    check_saved(saved, tmp_path, FILES)


@pytest.mark.anyio
async def test_cancelled_adownload_leaves_no_partial_file(
    serve: Callable[..., tuple[str, Served]],
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_progress, "PROGRESS_INTERVAL", 0.0)
    body = stdlib_zip(FILES)
    gate_at = entry_data_offset(body, "nested/deeper/random.bin") + 300_000
    url, served = serve(body, "application/zip", chunk=50_000, gate_at=gate_at)
    with anyio.CancelScope() as scope:

        def cancel_when_stalled(progress: Progress) -> None:
            if progress.bytes_done >= gate_at:
                scope.cancel()

        await adownload(url, tmp_path, progress=cancel_when_stalled)
    served.gate.set()
    assert scope.cancelled_caught
    assert (tmp_path / "hello.txt").read_bytes() == FILES["hello.txt"]
    assert not (tmp_path / "nested").exists()
    assert no_temp_files(tmp_path)
    assert not writer_threads()


def test_no_writer_thread_is_left_behind(
    serve: Callable[..., tuple[str, Served]], tmp_path: pathlib.Path
) -> None:
    url, _ = serve(stdlib_zip(FILES), "application/zip")
    download(url, tmp_path / "ok")
    bad = bytearray(stdlib_zip(FILES))
    bad[entry_data_offset(bytes(bad), "nested/text.txt")] ^= 1
    bad_url, _ = serve(bytes(bad), "application/zip")
    with pytest.raises(IntegrityError):
        download(bad_url, tmp_path / "bad")
    assert not writer_threads()


# -- iter_entries / aiter_entries ---------------------------------------------------------


def test_iter_entries_yields_the_first_entry_before_the_last_byte(
    serve: Callable[..., tuple[str, Served]],
) -> None:
    body = stdlib_zip(FILES)
    url, served = serve(body, "application/zip", chunk=16_384, gate_at=16_384, length=False)
    seen: dict[str, bytes] = {}
    with httpx.stream("GET", url) as response:
        for entry in iter_entries(response):
            if not seen:
                assert not served.gate.is_set()
                served.gate.set()
            seen[entry.name] = b"".join(entry.iter_bytes())
    assert seen == {**dict.fromkeys(DIRS, b""), **FILES}


@pytest.mark.anyio
async def test_aiter_entries_yields_the_first_entry_before_the_last_byte(
    serve: Callable[..., tuple[str, Served]],
) -> None:
    body = multipart_body(FILES, lengths=False)
    url, served = serve(body, MULTIPART, chunk=8192, gate_at=8192)
    seen: dict[str, bytes] = {}
    async with httpx.AsyncClient() as http, http.stream("GET", url) as response:
        async for entry in aiter_entries(response):
            if not seen:
                assert not served.gate.is_set()
                served.gate.set()
            seen[entry.name] = b"".join([chunk async for chunk in entry.aiter_bytes()])
    assert seen == FILES


def test_entry_metadata(serve: Callable[..., tuple[str, Served]]) -> None:
    url, _ = serve(stdlib_zip({"a/b.txt": b"abc"}, dirs=["d/"]), "application/zip")
    with httpx.stream("GET", url) as response:
        entries = [(entry, b"".join(entry.iter_bytes())) for entry in iter_entries(response)]
    (directory, _), (file, data) = entries
    assert (directory.name, directory.is_dir) == ("d/", True)
    assert (file.name, file.is_dir, file.media_type, data) == (
        "a/b.txt",
        False,
        "text/plain",
        b"abc",
    )
    assert file.mtime is not None and file.mtime.year >= 1980


def test_multipart_entry_metadata(serve: Callable[..., tuple[str, Served]]) -> None:
    url, _ = serve(
        multipart_body({"x.bin": b"12345"}, extra={"x.bin": {"X-Note": "hi"}}), MULTIPART
    )
    with httpx.stream("GET", url) as response:
        entry = next(iter_entries(response))
        assert (entry.name, entry.size, entry.media_type) == (
            "x.bin",
            5,
            "application/octet-stream",
        )
        assert ("x-note", "hi") in entry.headers


def test_skipped_and_partly_read_entries_are_drained(
    serve: Callable[..., tuple[str, Served]],
) -> None:
    url, _ = serve(stdlib_zip(FILES), "application/zip", chunk=4096)
    names = []
    with httpx.stream("GET", url) as response:
        for entry in iter_entries(response):
            names.append(entry.name)
            if entry.name == "nested/deeper/random.bin":
                chunks = entry.iter_bytes()
                assert next(chunks)
    assert names == [*DIRS, *FILES]


def test_reading_an_entry_after_moving_on_is_a_programming_error(
    serve: Callable[..., tuple[str, Served]],
) -> None:
    url, _ = serve(multipart_body(FILES), MULTIPART)
    with httpx.stream("GET", url) as response:
        entries = iter_entries(response)
        first = next(entries)
        started = first.iter_bytes()
        next(entries)
        with pytest.raises(RuntimeError, match="moved past"):
            next(first.iter_bytes())
        with pytest.raises(RuntimeError, match="moved past"):
            next(started)


def test_reading_an_entry_twice_is_a_programming_error(
    serve: Callable[..., tuple[str, Served]],
) -> None:
    url, _ = serve(multipart_body(FILES), MULTIPART)
    with httpx.stream("GET", url) as response:
        entry = next(iter_entries(response))
        assert b"".join(entry.iter_bytes()) == FILES["hello.txt"]
        with pytest.raises(RuntimeError, match="already read"):
            next(entry.iter_bytes())


@pytest.mark.anyio
async def test_sync_reading_of_async_entries_is_a_programming_error(
    serve: Callable[..., tuple[str, Served]],
) -> None:
    url, _ = serve(multipart_body(FILES), MULTIPART)
    async with httpx.AsyncClient() as http, http.stream("GET", url) as response:
        async for entry in aiter_entries(response):
            with pytest.raises(RuntimeError, match="aiter_bytes"):
                next(entry.iter_bytes())
            break


@pytest.mark.parametrize("coding", ["gzip", "deflate", "raw-deflate"])
def test_content_encoding_is_undone(
    serve: Callable[..., tuple[str, Served]], tmp_path: pathlib.Path, coding: str
) -> None:
    body = multipart_body(FILES)
    if coding == "gzip":
        encoded = gzip.compress(body)
    elif coding == "deflate":
        encoded = zlib.compress(body)
    else:
        compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
        encoded = compressor.compress(body) + compressor.flush()
    header = coding.removeprefix("raw-")
    url, _ = serve(encoded, MULTIPART, headers={"content-encoding": header}, chunk=1000)
    with httpx.stream("GET", url) as response:
        seen = {entry.name: b"".join(entry.iter_bytes()) for entry in iter_entries(response)}
    assert seen == FILES
    saved = download(url, tmp_path, headers={"accept-encoding": header})
    check_saved(saved, tmp_path, FILES)


def test_gzip_bomb_comes_out_in_bounded_pieces(serve: Callable[..., tuple[str, Served]]) -> None:
    zeros = b"\0" * (64 << 20)
    url, _ = serve(
        gzip.compress(multipart_body({"zeros": zeros})),
        MULTIPART,
        headers={"content-encoding": "gzip"},
    )
    with httpx.stream("GET", url) as response:
        limits = Limits(max_compression_ratio=10_000, max_total_ratio=None)
        entries = iter_entries(response, limits=limits)
        entry = next(entries)
        sizes = [len(chunk) for chunk in entry.iter_bytes()]
        assert next(entries, None) is None
    assert sum(sizes) == len(zeros)
    assert max(sizes) <= _decoding.DECODE_STEP + 1024


@pytest.mark.parametrize(
    ("headers", "match"),
    [({"content-encoding": "br"}, "'br' is not supported"), ({"content-encoding": "gzip"}, "gzip")],
    ids=["unknown", "corrupt"],
)
def test_bad_content_encoding(
    serve: Callable[..., tuple[str, Served]], headers: dict[str, str], match: str
) -> None:
    url, _ = serve(multipart_body(FILES), MULTIPART, headers=headers)
    with httpx.stream("GET", url) as response, pytest.raises(ProtocolError, match=match):
        list(iter_entries(response))


def test_truncated_gzip_is_an_error(serve: Callable[..., tuple[str, Served]]) -> None:
    body = multipart_body(FILES)
    encoded = gzip.compress(body)[:-8]  # the gzip trailer is lost, the multipart is complete
    url, _ = serve(encoded, MULTIPART, headers={"content-encoding": "gzip"})
    with httpx.stream("GET", url) as response, pytest.raises(ProtocolError, match="ended inside"):
        list(iter_entries(response))


# -- safety and failures through download -------------------------------------------------


def test_truncation_mid_entry_keeps_earlier_entries_only(
    serve: Callable[..., tuple[str, Served]], tmp_path: pathlib.Path
) -> None:
    body = stdlib_zip(FILES)
    victim = "nested/deeper/random.bin"
    url, _ = serve(body, "application/zip", cuts=[entry_data_offset(body, victim) + 500_000])
    with pytest.raises(
        ProtocolError, match=re.escape("lost in entry 'nested/deeper/random.bin'")
    ) as caught:
        download(url, tmp_path)
    assert caught.value.entry == victim
    before = dict(itertools.takewhile(lambda item: item[0] != victim, FILES.items()))
    assert tree(tmp_path) == expected_tree(before)  # the folders made for the victim went too
    assert no_temp_files(tmp_path)


@pytest.mark.anyio
async def test_async_truncation_mid_entry(
    serve: Callable[..., tuple[str, Served]], tmp_path: pathlib.Path
) -> None:
    body = multipart_body(FILES, lengths=False)
    cut = body.index(FILES["nested/deeper/random.bin"]) + 700_000
    url, _ = serve(body, MULTIPART, cuts=[cut], length=False)
    with pytest.raises(ProtocolError) as caught:
        await adownload(url, tmp_path)
    assert caught.value.entry == "nested/deeper/random.bin"
    assert tree(tmp_path) == {"empty.bin": b"", "hello.txt": FILES["hello.txt"]}
    assert no_temp_files(tmp_path)


def test_bad_crc_keeps_earlier_entries(
    serve: Callable[..., tuple[str, Served]], tmp_path: pathlib.Path
) -> None:
    body = bytearray(stdlib_zip(FILES))
    body[entry_data_offset(bytes(body), "nested/text.txt") + 1000] ^= 0xFF
    url, _ = serve(bytes(body), "application/zip")
    with pytest.raises(IntegrityError) as caught:
        download(url, tmp_path)
    assert caught.value.entry == "nested/text.txt"
    assert not (tmp_path / "nested" / "text.txt").exists()
    assert (tmp_path / "nested" / "deeper" / "random.bin").read_bytes() == FILES[
        "nested/deeper/random.bin"
    ]
    assert no_temp_files(tmp_path)


@pytest.mark.parametrize("fmt", ["zip", "multipart"])
@pytest.mark.parametrize("name", ["../evil.txt", "/etc/evil", "a/../../evil.txt"])
def test_traversal_names_are_refused(
    serve: Callable[..., tuple[str, Served]], tmp_path: pathlib.Path, fmt: str, name: str
) -> None:
    files = {"ok.txt": b"fine", name: b"evil"}
    if fmt == "zip":
        url, _ = serve(stdlib_zip(files, dirs=[]), "application/zip")
    else:
        url, _ = serve(multipart_body(files), MULTIPART)
    dest = tmp_path / "a" / "b" / "dest"
    with pytest.raises(UnsafeNameError):
        download(url, dest)
    assert tree(tmp_path) == {"a": None, "a/b": None, "a/b/dest": None, "a/b/dest/ok.txt": b"fine"}


def test_symlink_in_dest_pointing_outside(
    serve: Callable[..., tuple[str, Served]], tmp_path: pathlib.Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "nested").symlink_to(outside, target_is_directory=True)
    url, _ = serve(stdlib_zip(FILES), "application/zip")
    with pytest.raises(UnsafeNameError, match="symbolic link") as caught:
        download(url, dest)
    assert caught.value.entry == "nested/deeper/random.bin"
    assert list(outside.iterdir()) == []
    assert no_temp_files(tmp_path)


@pytest.mark.parametrize(
    "files",
    [
        [("a.txt", b"1"), ("a.txt", b"2")],
        [("a", b"1"), ("a/b", b"2")],
        [("a/b", b"1"), ("a", b"2")],
    ],
    ids=["duplicate", "file-then-child", "child-then-file"],
)
@pytest.mark.parametrize("fmt", ["zip", "multipart"])
def test_duplicates_and_clashes(
    serve: Callable[..., tuple[str, Served]],
    tmp_path: pathlib.Path,
    files: list[tuple[str, bytes]],
    fmt: str,
) -> None:
    if fmt == "zip":
        out = Unseekable()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with zipfile.ZipFile(out, "w") as archive:
                for name, data in files:
                    archive.writestr(name, data)
        url, _ = serve(bytes(out.data), "application/zip")
    else:
        body = b"".join(multipart_body({name: data})[: -len(BOUNDARY) - 6] for name, data in files)
        url, _ = serve(body + f"--{BOUNDARY}--\r\n".encode(), MULTIPART)
    with pytest.raises(UnsafeNameError) as caught:
        download(url, tmp_path)
    assert caught.value.entry == files[1][0]
    first, data = files[0]
    assert (tmp_path / first).read_bytes() == data
    assert no_temp_files(tmp_path)


@pytest.mark.parametrize(
    ("limits", "bound"),
    [
        (Limits(max_files=3), "max_files"),
        (Limits(max_file_size=1_000_000), "max_file_size"),
        (Limits(max_total_size=1_000_000), "max_total_size"),
    ],
)
@pytest.mark.parametrize("fmt", ["zip", "multipart"])
def test_limits(
    serve: Callable[..., tuple[str, Served]],
    tmp_path: pathlib.Path,
    limits: Limits,
    bound: str,
    fmt: str,
) -> None:
    if fmt == "zip":
        url, _ = serve(stdlib_zip(FILES), "application/zip")
    else:
        url, _ = serve(multipart_body(FILES, lengths=False), MULTIPART)
    with pytest.raises(LimitExceeded, match=bound):
        download(url, tmp_path, limits=limits)
    assert no_temp_files(tmp_path)
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert path.read_bytes() == FILES[path.relative_to(tmp_path).as_posix()]


def test_compression_ratio_limit(
    serve: Callable[..., tuple[str, Served]], tmp_path: pathlib.Path
) -> None:
    files = {"zeros.bin": b"\0" * 5_000_000}
    url, _ = serve(stdlib_zip(files, compression=zipfile.ZIP_DEFLATED, dirs=[]), "application/zip")
    with pytest.raises(LimitExceeded, match="ratio"):
        download(url, tmp_path)
    assert tree(tmp_path) == {}


# -- resume -------------------------------------------------------------------------------


def resumable(
    serve: Callable[..., tuple[str, Served]], **options: Any
) -> tuple[str, Served, bytes]:
    body = stdlib_zip(FILES)
    url, served = serve(body, "application/zip", etag='"v1"', ranges=True, **options)
    return url, served, body


def test_resume_after_a_dropped_connection(
    serve: Callable[..., tuple[str, Served]], tmp_path: pathlib.Path
) -> None:
    url, served, body = resumable(
        serve, cuts=[entry_data_offset(stdlib_zip(FILES), "nested/deeper/random.bin") + 300_000]
    )
    reports: list[Progress] = []
    saved = download(url, tmp_path, progress=reports.append)
    assert tree(tmp_path) == expected_tree(FILES)
    check_saved(saved, tmp_path, FILES)
    first, second = served.requests
    assert "range" not in first
    cut = entry_data_offset(body, "nested/deeper/random.bin") + 300_000
    assert second["range"] == f"bytes={cut}-"
    assert second["if-range"] == '"v1"'
    assert reports[-1] == Progress(
        bytes_done=len(body), bytes_total=len(body), files_done=len(FILES), current=None
    )


@pytest.mark.anyio
async def test_async_resume_after_a_dropped_connection(
    serve: Callable[..., tuple[str, Served]], tmp_path: pathlib.Path
) -> None:
    url, served, _ = resumable(serve, cuts=[100_000, 1_000_000])
    saved = await adownload(url, tmp_path)
    assert tree(tmp_path) == expected_tree(FILES)
    check_saved(saved, tmp_path, FILES)
    assert [request.get("range") for request in served.requests] == [
        None,
        "bytes=100000-",
        "bytes=1100000-",
    ]


def test_resume_refused_when_the_resource_changed(
    serve: Callable[..., tuple[str, Served]], tmp_path: pathlib.Path
) -> None:
    body = stdlib_zip(FILES)
    cut = entry_data_offset(body, "nested/deeper/random.bin") + 10
    url, _, _ = resumable(serve, cuts=[cut], etag_after_cut='"v2"')
    with pytest.raises(ProtocolError, match="answered 200") as caught:
        download(url, tmp_path)
    assert caught.value.entry == "nested/deeper/random.bin"
    assert not (tmp_path / "nested" / "deeper" / "random.bin").exists()
    assert (tmp_path / "hello.txt").exists()
    assert no_temp_files(tmp_path)


def test_resume_gives_up(
    serve: Callable[..., tuple[str, Served]],
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_transfer, "RESUME_BACKOFF", 0.001)
    attempts = _transfer.MAX_RESUME_ATTEMPTS
    url, served, _ = resumable(serve, cuts=[200_000] + [0] * (attempts + 1))
    with pytest.raises(ProtocolError, match=f"gave up after {attempts}"):
        download(url, tmp_path)
    assert len(served.requests) == 1 + attempts
    assert no_temp_files(tmp_path)


@pytest.mark.parametrize(
    "options",
    [{"resume": False}, {"method": "POST"}],
    ids=["resume-off", "not-get"],
)
def test_no_resume_when_not_allowed(
    serve: Callable[..., tuple[str, Served]], tmp_path: pathlib.Path, options: dict[str, Any]
) -> None:
    url, served, _ = resumable(serve, cuts=[300_000])
    with pytest.raises(ProtocolError, match="cannot be resumed"):
        download(url, tmp_path, **options)
    assert len(served.requests) == 1


def test_no_resume_without_etag(
    serve: Callable[..., tuple[str, Served]], tmp_path: pathlib.Path
) -> None:
    url, served = serve(stdlib_zip(FILES), "application/zip", ranges=True, cuts=[300_000])
    with pytest.raises(ProtocolError, match="cannot be resumed"):
        download(url, tmp_path)
    assert len(served.requests) == 1


# -- progress -----------------------------------------------------------------------------


def test_progress_callback(
    serve: Callable[..., tuple[str, Served]],
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_progress, "PROGRESS_INTERVAL", 0.0)
    body = stdlib_zip(FILES)
    url, _ = serve(body, "application/zip", length=False, chunk=100_000)
    reports: list[Progress] = []
    download(url, tmp_path, progress=reports.append)
    assert len(reports) > 3
    assert all(report.bytes_total is None for report in reports)
    done = [report.bytes_done for report in reports]
    assert done == sorted(done)
    assert [report.files_done for report in reports] == sorted(
        report.files_done for report in reports
    )
    assert reports[-1] == Progress(
        bytes_done=len(body), bytes_total=None, files_done=len(FILES), current=None
    )
    assert any(report.current for report in reports)


def test_progress_is_throttled(
    serve: Callable[..., tuple[str, Served]], tmp_path: pathlib.Path
) -> None:
    url, _ = serve(stdlib_zip(FILES), "application/zip", chunk=1000)
    reports: list[Progress] = []
    download(url, tmp_path, progress=reports.append)
    assert 1 <= len(reports) <= 5
    assert reports[-1].files_done == len(FILES)


@pytest.mark.parametrize("tqdm", [True, False], ids=["tqdm", "plain"])
def test_progress_bar(
    serve: Callable[..., tuple[str, Served]],
    tmp_path: pathlib.Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tqdm: bool,
) -> None:
    if not tqdm:
        monkeypatch.setitem(sys.modules, "tqdm", None)
    url, _ = serve(stdlib_zip(FILES), "application/zip")
    download(url, tmp_path, progress=True)
    err = capsys.readouterr().err
    assert f"{len(FILES)} files" in err
    assert err.endswith("\n")


def test_bad_progress_argument(tmp_path: pathlib.Path) -> None:
    with pytest.raises(TypeError, match="progress"):
        download("http://127.0.0.1:9/", tmp_path, progress="yes")  # type: ignore[arg-type]


# -- against multiresp's own responses ----------------------------------------------------


def source_entries() -> list[Entry]:
    return [Entry.from_bytes(data, name) for name, data in FILES.items()]


RESPONSE_KINDS = {
    "ZipStreamResponse": {},
    "ZipStreamResponse-deflate": {"compression": "deflate"},
    "ZipResponse": {},
    "MultipartResponse": {},
}


@pytest.mark.parametrize("kind", list(RESPONSE_KINDS))
def test_download_from_multiresp_responses(
    base_url: str, tmp_path: pathlib.Path, kind: str
) -> None:
    responses = pytest.importorskip("multiresp.responses")
    cls = getattr(responses, kind.partition("-")[0], None)
    if cls is None:
        pytest.skip(f"multiresp.responses.{kind} is not there yet")
    key = f"resp-{kind}"
    ROUTES[key] = lambda: cls(source_entries(), **RESPONSE_KINDS[kind])
    saved = download(f"{base_url}/{key}", tmp_path)
    assert tree(tmp_path) == expected_tree(FILES, dirs=[])
    check_saved(saved, tmp_path, FILES)


@pytest.mark.anyio
async def test_aiter_entries_from_multiresp_zipstream(base_url: str) -> None:
    responses = pytest.importorskip("multiresp.responses")
    ROUTES["resp-async"] = lambda: responses.ZipStreamResponse(source_entries())
    async with (
        httpx.AsyncClient() as http,
        http.stream("GET", f"{base_url}/resp-async") as response,
    ):
        seen = {
            entry.name: b"".join([chunk async for chunk in entry.aiter_bytes()])
            async for entry in aiter_entries(response)
        }
    assert seen == FILES


# -- limits on the whole transfer, whatever the encodings (issue 9) -------------------------


def zeros_zip(count: int, size: int, compression: int) -> bytes:
    return stdlib_zip(
        {f"z{index:03}.bin": bytes(size) for index in range(count)},
        compression=compression,
        dirs=[],
    )


def written(root: pathlib.Path) -> int:
    return sum(path.stat().st_size for path in root.rglob("*") if path.is_file())


@pytest.mark.parametrize("fmt", ["stored-zip", "multipart"])
def test_content_encoding_cannot_get_round_the_ratio_limits(
    serve: Callable[..., tuple[str, Served]], tmp_path: pathlib.Path, fmt: str
) -> None:
    # Stored entries inflate nothing themselves: all the inflation is in the gzip layer.
    if fmt == "multipart":
        body, content_type = multipart_body({"zeros.bin": bytes(16 << 20)}), MULTIPART
    else:
        body, content_type = zeros_zip(1, 16 << 20, zipfile.ZIP_STORED), "application/zip"
    encoded = gzip.compress(body)
    url, _ = serve(encoded, content_type, headers={"content-encoding": "gzip"})
    with pytest.raises(LimitExceeded, match="max_total_ratio"):
        download(url, tmp_path, headers={"accept-encoding": "gzip"})
    assert tree(tmp_path) == {}
    with httpx.stream("GET", url) as response, pytest.raises(LimitExceeded, match="whole"):
        for entry in iter_entries(response):
            for _ in entry.iter_bytes():
                pass


def test_many_small_inflating_entries_hit_the_transfer_ratio(
    serve: Callable[..., tuple[str, Served]], tmp_path: pathlib.Path
) -> None:
    # Each entry stays under the per-entry ratio's first MiB; together they are a bomb.
    body = zeros_zip(60, 256 << 10, zipfile.ZIP_DEFLATED)
    url, _ = serve(body, "application/zip")
    with pytest.raises(LimitExceeded, match="max_total_ratio"):
        download(url, tmp_path)
    assert written(tmp_path) <= _decoding.TOTAL_RATIO_FLOOR + 200 * len(body) + (256 << 10)
    assert no_temp_files(tmp_path)
    saved = download(url, tmp_path / "allowed", limits=Limits(max_total_ratio=None))
    assert len(saved) == 60


# -- folders (issue 9) ---------------------------------------------------------------------


def test_deep_names_are_refused_before_any_folder_is_made(
    serve: Callable[..., tuple[str, Served]], tmp_path: pathlib.Path
) -> None:
    deep = "/".join(["d"] * 100) + "/f.txt"
    url, _ = serve(multipart_body({"ok.txt": b"ok", deep: b"x"}), MULTIPART)
    with pytest.raises(LimitExceeded, match="max_depth") as caught:
        download(url, tmp_path)
    assert caught.value.entry == deep
    assert tree(tmp_path) == {"ok.txt": b"ok"}


def test_folder_count_is_bounded(
    serve: Callable[..., tuple[str, Served]], tmp_path: pathlib.Path
) -> None:
    files = {f"top{index}/sub/f.txt": b"x" for index in range(20)}
    url, _ = serve(multipart_body(files), MULTIPART)
    with pytest.raises(LimitExceeded, match="max_folders"):
        download(url, tmp_path, limits=Limits(max_folders=15))
    folders = [path for path in tmp_path.rglob("*") if path.is_dir()]
    assert len(folders) <= 15
    saved = download(url, tmp_path / "all", limits=Limits(max_folders=40))
    assert len(saved) == 20


# -- resume must repeat the validator (issue 9) --------------------------------------------


def test_resume_refuses_a_206_without_the_etag(
    serve: Callable[..., tuple[str, Served]], tmp_path: pathlib.Path
) -> None:
    # Two versions of the same length: a splice would raise no CRC error in multipart.
    first = {"a.txt": b"a" * 1000, "b.bin": b"1" * 400_000, "c.txt": b"c"}
    second = {"a.txt": b"A" * 1000, "b.bin": b"2" * 400_000, "c.txt": b"C"}
    old, new = multipart_body(first), multipart_body(second)
    url, served = serve(
        old,
        MULTIPART,
        etag='"v1"',
        ranges=True,
        cuts=[200_000],
        body_after_cut=new,
        etag_on_206=False,
    )
    with pytest.raises(ProtocolError, match="ETag") as caught:
        download(url, tmp_path)
    assert caught.value.entry == "b.bin"
    assert served.requests[1]["range"] == "bytes=200000-"  # it was asked, and refused
    assert tree(tmp_path) == {"a.txt": b"a" * 1000}
    assert no_temp_files(tmp_path)


# -- deadlines and slow servers (issues 9 and 10) ------------------------------------------


def drip(serve: Callable[..., tuple[str, Served]]) -> tuple[str, Served]:
    """A server that sends 4 bytes every 50 ms: about 3 s for the whole body."""
    body = multipart_body({"slow.txt": b"s" * 150})
    return serve(body, MULTIPART, chunk=4, drip=0.05)


def test_deadline_stops_a_slow_drip(
    serve: Callable[..., tuple[str, Served]], tmp_path: pathlib.Path
) -> None:
    url, _ = drip(serve)
    with pytest.raises(TransferTimeout, match=r"timed out.*deadline of 0\.5 s") as caught:
        download(url, tmp_path, deadline=0.5)
    assert isinstance(caught.value, TimeoutError)
    assert tree(tmp_path) == {}


@pytest.mark.anyio
async def test_async_deadline_stops_a_slow_drip(
    serve: Callable[..., tuple[str, Served]], tmp_path: pathlib.Path
) -> None:
    url, _ = drip(serve)
    with pytest.raises(TransferTimeout, match="deadline"):
        await adownload(url, tmp_path, deadline=0.5)
    assert tree(tmp_path) == {}


def test_min_rate_stops_a_slow_drip(
    serve: Callable[..., tuple[str, Served]],
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_transfer, "RATE_WINDOW", 0.3)
    url, _ = drip(serve)
    with pytest.raises(TransferTimeout, match="min_rate"):
        download(url, tmp_path, min_rate=1000)
    assert tree(tmp_path) == {}
    # 80 bytes/s is enough for this one; a window of 2 s, so that a stall of the loaded test
    # machine (no byte for 0.3 s) is not taken for a slow server
    monkeypatch.setattr(_transfer, "RATE_WINDOW", 2.0)
    saved = download(url, tmp_path, min_rate=10)
    assert [file.name for file in saved] == ["slow.txt"]


def test_a_silent_server_is_a_timeout_not_a_protocol_error(
    serve: Callable[..., tuple[str, Served]], tmp_path: pathlib.Path
) -> None:
    url, served = serve(multipart_body(FILES), MULTIPART, gate_at=200_000)
    try:
        with (
            httpx.Client(timeout=0.3) as http,
            pytest.raises(TransferTimeout, match="timed out") as caught,
        ):
            download(url, tmp_path, client=http)
    finally:
        served.gate.set()
    assert isinstance(caught.value, TimeoutError)
    assert isinstance(caught.value.__cause__, httpx.ReadTimeout)
    assert no_temp_files(tmp_path)


def test_a_resumable_body_is_resumed_after_a_read_timeout(
    serve: Callable[..., tuple[str, Served]],
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_transfer, "RESUME_BACKOFF", 0.001)
    body = stdlib_zip(FILES)
    url, served = serve(body, "application/zip", etag='"v1"', ranges=True, gate_at=200_000)
    try:
        with httpx.Client(timeout=0.3) as http:
            saved = download(url, tmp_path, client=http)
    finally:
        served.gate.set()
    check_saved(saved, tmp_path, FILES)
    assert len(served.requests) == 2


# -- errors before the body, formats, existing files, misuse (issue 10) --------------------


def test_iter_entries_raises_the_status_before_reading(base_url: str) -> None:
    with httpx.stream("GET", f"{base_url}/missing") as response:
        with pytest.raises(httpx.HTTPStatusError, match="404"):
            iter_entries(response)
        assert not response.is_stream_consumed


@pytest.mark.anyio
async def test_aiter_entries_raises_the_status_before_reading(base_url: str) -> None:
    async with httpx.AsyncClient() as http, http.stream("GET", f"{base_url}/missing") as resp:
        with pytest.raises(httpx.HTTPStatusError, match="404"):
            aiter_entries(resp)
        assert not resp.is_stream_consumed


def test_iter_entries_needs_a_streamed_response(
    serve: Callable[..., tuple[str, Served]],
) -> None:
    url, _ = serve(stdlib_zip(FILES), "application/zip")
    response = httpx.get(url)
    with pytest.raises(RuntimeError, match="stream=True"):
        iter_entries(response)


OCTET = "application/octet-stream"


def test_format_reads_a_zip_served_as_octet_stream(
    serve: Callable[..., tuple[str, Served]], tmp_path: pathlib.Path
) -> None:
    url, _ = serve(stdlib_zip(FILES), OCTET)
    with pytest.raises(ProtocolError, match="format='zip'"):
        download(url, tmp_path / "refused")
    check_saved(download(url, tmp_path / "zip", format="zip"), tmp_path / "zip", FILES)
    with httpx.stream("GET", url) as response:
        seen = {e.name: b"".join(e.iter_bytes()) for e in iter_entries(response, format="zip")}
    assert seen == {**FILES, **dict.fromkeys(DIRS, b"")}
    with pytest.raises(ValueError, match="format"):
        download(url, tmp_path, format="tar")  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_async_format_reads_a_zip_served_as_octet_stream(
    serve: Callable[..., tuple[str, Served]], tmp_path: pathlib.Path
) -> None:
    url, _ = serve(stdlib_zip(FILES), OCTET)
    saved = await adownload(url, tmp_path, format="zip")
    check_saved(saved, tmp_path, FILES)
    async with httpx.AsyncClient() as http, http.stream("GET", url) as response:
        names = [entry.name async for entry in aiter_entries(response, format="zip")]
    assert names == [*DIRS, *FILES]


@pytest.mark.parametrize("content_type", [OCTET, f"{OCTET}; boundary={BOUNDARY}"])
def test_format_reads_multipart_served_as_octet_stream(
    serve: Callable[..., tuple[str, Served]], tmp_path: pathlib.Path, content_type: str
) -> None:
    # Without a boundary parameter, the body's first line gives it.
    url, _ = serve(multipart_body(FILES), content_type, chunk=3)
    saved = download(url, tmp_path, format="multipart")
    check_saved(saved, tmp_path, FILES)


def test_format_multipart_without_any_boundary(
    serve: Callable[..., tuple[str, Served]], tmp_path: pathlib.Path
) -> None:
    url, _ = serve(b"not a multipart body at all", OCTET)
    with pytest.raises(ProtocolError, match="no multipart boundary"):
        download(url, tmp_path, format="multipart")


@pytest.mark.parametrize("policy", ["replace", "skip", "error"])
def test_files_already_in_dest(
    serve: Callable[..., tuple[str, Served]], tmp_path: pathlib.Path, policy: str
) -> None:
    (tmp_path / "hello.txt").write_bytes(b"old")
    url, _ = serve(multipart_body(FILES), MULTIPART)
    if policy == "error":
        with pytest.raises(FileExistsError, match=r"hello\.txt"):
            download(url, tmp_path, if_exists="error")
        assert tree(tmp_path) == {"hello.txt": b"old"}
        return
    saved = download(url, tmp_path, if_exists=policy)  # type: ignore[arg-type]
    names = [file.name for file in saved]
    if policy == "replace":
        assert (tmp_path / "hello.txt").read_bytes() == FILES["hello.txt"]
        assert names == list(FILES)
    else:
        assert (tmp_path / "hello.txt").read_bytes() == b"old"
        assert names == [name for name in FILES if name != "hello.txt"]
    assert no_temp_files(tmp_path)


def test_replace_is_the_default(
    serve: Callable[..., tuple[str, Served]], tmp_path: pathlib.Path
) -> None:
    (tmp_path / "hello.txt").write_bytes(b"old")
    url, _ = serve(multipart_body(FILES), MULTIPART)
    download(url, tmp_path)
    assert (tmp_path / "hello.txt").read_bytes() == FILES["hello.txt"]


def test_dest_that_is_a_file(
    serve: Callable[..., tuple[str, Served]], tmp_path: pathlib.Path
) -> None:
    url, served = serve(multipart_body(FILES), MULTIPART)
    target = tmp_path / "a-file"
    target.write_bytes(b"")
    with pytest.raises(NotADirectoryError, match="not a folder"):
        download(url, target)
    assert served.requests == []  # refused before asking


@pytest.mark.parametrize(
    ("url_arg", "dest_arg", "name"),
    [(b"http://127.0.0.1:9/", "dest", "url"), (7, "dest", "url"), (None, 7, "dest")],
)
def test_wrong_types_name_the_parameter(
    base_url: str, tmp_path: pathlib.Path, url_arg: object, dest_arg: object, name: str
) -> None:
    dest = tmp_path / "d" if dest_arg == "dest" else dest_arg
    url = url_arg if url_arg is not None else f"{base_url}/missing"
    with pytest.raises(TypeError, match=name):
        download(url, dest)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="dest"):
        download(url if isinstance(url, str) else base_url, b"bytes-dest")  # type: ignore[arg-type]
