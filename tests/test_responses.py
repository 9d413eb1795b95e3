"""The zip responses against a real uvicorn on loopback and a real httpx client."""

from __future__ import annotations

import io
import os
import pathlib
import subprocess
import threading
import time
import zipfile
from collections.abc import AsyncIterator, Callable, Iterator

import anyio.to_thread
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from stream_unzip import stream_unzip

from multiresp import Entry, UnsafeNameError
from multiresp.responses import ZipResponse, ZipStreamResponse

from conftest import LiveServer, open_fds, require_tool

Serve = Callable[..., LiveServer]


@pytest.fixture
def tree(tmp_path: pathlib.Path) -> pathlib.Path:
    root = tmp_path / "data"
    (root / "sub" / "empty").mkdir(parents=True)
    for i in range(40):
        (root / f"small-{i:02}.txt").write_bytes(b"line %d\n" % i * (i * 37))
    (root / "sub" / "big.bin").write_bytes(os.urandom(9 << 20))
    (root / "sub" / "ünï.json").write_text('{"ok": true}')
    return root


def contents(root: pathlib.Path, prefix: str) -> dict[str, bytes]:
    found = {}
    for path in root.rglob("*"):
        name = f"{prefix}/{path.relative_to(root).as_posix()}"
        if path.is_file():
            found[name] = path.read_bytes()
        elif not any(path.iterdir()):
            found[name + "/"] = b""
    return found


def unzipped(body: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        assert archive.testzip() is None
        return {info.filename: archive.read(info) for info in archive.infolist()}


def app_for(make: Callable[[Request], Response]) -> Starlette:
    async def endpoint(request: Request) -> Response:
        return make(request)

    return Starlette(routes=[Route("/", endpoint, methods=["GET", "HEAD"])])


@pytest.mark.parametrize("compression", ["store", "deflate", "auto"])
@pytest.mark.parametrize("kind", [ZipStreamResponse, ZipResponse])
def test_folder_round_trip(
    live_server: Serve, tree: pathlib.Path, kind: type[ZipStreamResponse], compression: str
) -> None:
    server = live_server(app_for(lambda r: kind([tree], compression=compression)))  # type: ignore[arg-type]
    response = httpx.get(server.url)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/zip"
    assert response.headers["content-disposition"] == 'attachment; filename="files.zip"'
    assert unzipped(response.content) == contents(tree, "data")
    sized = kind is ZipResponse or compression == "store"
    assert ("content-length" in response.headers) == sized
    if sized:
        assert int(response.headers["content-length"]) == len(response.content)
    else:
        assert response.headers["transfer-encoding"] == "chunked"


def test_head_matches_get_and_reads_no_source(live_server: Serve, tree: pathlib.Path) -> None:
    pulled = []

    def chunks() -> Iterator[bytes]:
        pulled.append(1)
        yield b"x" * 1000

    def make(request: Request) -> Response:
        return ZipStreamResponse(
            [tree, Entry.from_iter(chunks(), "late.bin", size=1000)], filename="résumé.zip"
        )

    server = live_server(app_for(make))
    head = httpx.head(server.url)
    assert pulled == []
    get = httpx.get(server.url)
    assert pulled == [1]
    for name in ["content-length", "content-type", "content-disposition"]:
        assert head.headers[name] == get.headers[name], name
    assert int(head.headers["content-length"]) == len(get.content)
    assert "filename*=UTF-8''r%C3%A9sum%C3%A9.zip" in get.headers["content-disposition"]
    assert unzipped(get.content)["late.bin"] == b"x" * 1000


def test_filename_with_cr_lf_is_refused() -> None:
    with pytest.raises(UnsafeNameError, match="CR, LF and NUL"):
        ZipStreamResponse([], filename="a\r\nX-Evil: 1.zip")


def test_first_bytes_arrive_before_the_last_source_is_read(live_server: Serve) -> None:
    release = threading.Event()
    done = threading.Event()

    def last() -> Iterator[bytes]:
        release.wait(10)
        yield b"late"
        done.set()

    first = os.urandom(3 << 20)
    server = live_server(
        app_for(lambda r: ZipStreamResponse(
            [Entry.from_bytes(first, "first.bin"), Entry.from_iter(last(), "last.txt")]
        ))
    )  # fmt: skip
    with httpx.stream("GET", server.url) as response:
        stream = response.iter_raw()
        received = next(stream)
        assert received.startswith(b"PK\x03\x04")
        assert not done.is_set()  # the first bytes are here; the last source is still unread
        release.set()
        body = received + b"".join(stream)
    assert unzipped(body) == {"first.bin": first, "last.txt": b"late"}


def test_entries_produced_while_streaming(live_server: Serve) -> None:
    release = threading.Event()

    async def produce() -> AsyncIterator[Entry]:
        yield Entry.from_bytes(b"mask" * 1000, "mask.png")
        await anyio.to_thread.run_sync(release.wait, 10)

        async def report() -> AsyncIterator[bytes]:
            yield b'{"score": '
            yield b"0.97}"

        yield Entry.from_iter(report(), "report.json")

    server = live_server(app_for(lambda r: ZipStreamResponse(produce())))
    with httpx.stream("GET", server.url) as response:
        stream = response.iter_raw()
        received = next(stream)
        assert b"mask.png" in received
        release.set()
        body = received + b"".join(stream)
    assert unzipped(body) == {"mask.png": b"mask" * 1000, "report.json": b'{"score": 0.97}'}


def failing() -> Iterator[bytes]:
    yield b"a" * 100_000
    raise OSError("disk on fire")


@pytest.mark.parametrize(
    "make",
    [
        lambda: [Entry.from_iter(failing(), "fails.bin")],
        lambda: [Entry.from_iter(failing(), "fails.bin", size=10**6)],
        lambda: [Entry.from_iter(iter([b"short"]), "lies.bin", size=10)],
        lambda: [Entry.from_iter(iter([b"too long"]), "lies.bin", size=3)],
    ],
    ids=["fails-unsized", "fails-sized", "short", "long"],
)
@pytest.mark.parametrize("kind", [ZipStreamResponse, ZipResponse])
def test_failing_or_lying_source_aborts(
    live_server: Serve, make: Callable[[], list[Entry]], kind: type[ZipStreamResponse]
) -> None:
    entries = [Entry.from_bytes(b"fine", "ok.txt"), *make()]
    server = live_server(app_for(lambda r: kind(entries)))
    try:
        response = httpx.get(server.url)
    except httpx.RemoteProtocolError:
        return  # the connection ended short of the declared length / chunked terminator
    # ZipResponse fails before it starts: the error becomes a 500, never a 200 archive
    assert kind is ZipResponse and response.status_code == 500


def test_file_that_changes_while_sent_aborts(live_server: Serve, tmp_path: pathlib.Path) -> None:
    path = tmp_path / "moving.bin"
    path.write_bytes(os.urandom(10 << 20))
    entry = Entry.from_path(path)
    path.write_bytes(os.urandom(5 << 20))  # shrinks after its size was taken
    server = live_server(app_for(lambda r: ZipStreamResponse([entry])))
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.get(server.url)


@pytest.mark.parametrize("kind", [ZipStreamResponse, ZipResponse])
def test_disconnect_stops_reading_and_releases_files(
    live_server: Serve, tmp_path: pathlib.Path, kind: type[ZipStreamResponse]
) -> None:
    files = []
    for i in range(6):
        path = tmp_path / f"f{i}.bin"
        path.write_bytes(os.urandom(8 << 20))
        files.append(path)
    pulled = []

    def endless() -> Iterator[bytes]:
        for _ in range(10_000):
            pulled.append(1)
            yield bytes(1 << 20)

    before_fds = open_fds()
    entries = [*files, Entry.from_iter(endless(), "endless.bin")]
    if kind is ZipResponse:
        entries = files  # ZipResponse builds the whole archive before sending
    server = live_server(app_for(lambda r: kind(entries)))
    with httpx.stream("GET", server.url) as response:
        next(response.iter_raw())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        leaked = open_fds() - before_fds
        if not leaked:
            break
        time.sleep(0.05)
    assert not leaked, leaked
    count = len(pulled)
    time.sleep(0.3)
    assert len(pulled) == count < 10  # nothing is read once the client has gone


def test_stream_unzip_and_bsdtar_read_the_live_stream(
    live_server: Serve, tree: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    server = live_server(app_for(lambda r: ZipStreamResponse([tree], compression="auto")))
    with httpx.stream("GET", server.url) as response:
        got = {
            name.decode(): b"".join(chunks)
            for name, _size, chunks in stream_unzip(response.iter_raw())
        }
    assert got == contents(tree, "data")
    curl = require_tool("curl")
    bsdtar = require_tool("bsdtar")
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run(f"{curl} -sf {server.url} | {bsdtar} -xf - -C {out}", shell=True, check=True)
    assert contents(out / "data", "data") == contents(tree, "data")


def test_duplicate_names_fail_before_the_headers(live_server: Serve) -> None:
    entries = [Entry.from_bytes(b"a", "same.txt"), Entry.from_bytes(b"b", "same.txt")]
    server = live_server(app_for(lambda r: ZipStreamResponse(entries)))
    assert httpx.get(server.url).status_code == 500


@pytest.mark.parametrize("kind", [ZipStreamResponse, ZipResponse])
def test_bad_options_fail_at_construction(kind: type[ZipStreamResponse]) -> None:
    with pytest.raises(ValueError, match="compression"):
        kind([], compression="lzma")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="level"):
        kind([], compression="deflate", level=12)
    with pytest.raises(TypeError, match="not one path"):
        kind("a/path")


def test_zip_response_leaves_no_spool_after_success_or_failure(
    live_server: Serve, tree: pathlib.Path
) -> None:
    before = open_fds()
    server = live_server(app_for(lambda r: ZipResponse([tree])))
    assert unzipped(httpx.get(server.url).content) == contents(tree, "data")
    failing_server = live_server(
        app_for(lambda r: ZipResponse([tree, Entry.from_iter(failing(), "fails.bin")]))
    )
    assert httpx.get(failing_server.url).status_code == 500
    time.sleep(0.2)
    assert open_fds() - before == set()


def test_hung_sources_hold_no_thread_the_server_needs(live_server: Serve) -> None:
    """45 requests whose iterable never returns, clients gone: more than anyio's default
    limiter of 40 threads, and the server still answers the next request at once."""
    release = threading.Event()

    def hangs() -> Iterator[bytes]:
        yield b"x"
        release.wait(60)  # a source that never returns while the test runs
        yield b"y"

    def make(request: Request) -> Response:
        if request.query_params.get("hang"):
            return ZipStreamResponse([Entry.from_iter(hangs(), "hangs.bin", size=10**6)])
        return ZipStreamResponse([Entry.from_bytes(b"fine", "ok.txt")])

    server = live_server(app_for(make))
    try:
        for _ in range(45):
            with httpx.stream("GET", server.url + "/?hang=1") as response:
                assert response.status_code == 200  # headers sent; the body hangs: leave
        response = httpx.get(server.url, timeout=10)
        assert unzipped(response.content) == {"ok.txt": b"fine"}
    finally:
        release.set()


def _counting(pulled: list[int], total: int = 4000) -> Iterator[bytes]:
    for _ in range(total):
        pulled.append(1)
        time.sleep(0.002)  # a source of about 500 MB/s at most: the test stays small
        yield bytes(1 << 20)


def test_zip_response_stops_spooling_when_the_client_leaves(live_server: Serve) -> None:
    pulled: list[int] = []
    server = live_server(
        app_for(lambda r: ZipResponse([Entry.from_iter(_counting(pulled), "big.bin")]))
    )
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(server.url, timeout=httpx.Timeout(5, read=0.3))  # leaves while spooling
    time.sleep(0.3)
    count = len(pulled)
    time.sleep(0.3)
    assert len(pulled) == count < 1000  # a 4 GB source stopped within a block


@pytest.mark.parametrize("compression", ["store", "deflate"])
def test_zip_response_head_reads_no_source(live_server: Serve, compression: str) -> None:
    pulled: list[int] = []

    def make(request: Request) -> Response:
        entries = [
            Entry.from_bytes(b"a" * 1000, "a.txt"),
            Entry.from_iter(_counting(pulled, 3), "late.bin", size=3 << 20),
        ]
        return ZipResponse(entries, compression=compression)  # type: ignore[arg-type]

    server = live_server(app_for(make))
    head = httpx.head(server.url)
    assert head.status_code == 200 and pulled == []
    get = httpx.get(server.url)
    assert len(pulled) == 3
    if compression == "store":
        assert int(head.headers["content-length"]) == len(get.content)
    else:
        assert "content-length" not in head.headers
    assert head.headers["content-type"] == get.headers["content-type"]
