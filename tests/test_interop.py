"""Interoperability matrix, readers: every response and layout, served by a real uvicorn and
read back byte for byte by the tools and libraries people use.

Each archive holds every layout the writer makes: files on disk and bytes (STORE with the CRC
ahead, or deflate), one-shot iterables with and without a declared size (deflate, real or
stored blocks), empty entries and an empty directory, under Unicode and nested names.

``7zz`` cannot read a zip from stdin (``7zz x -si -tzip`` answers E_NOTIMPL), and ``unzip``
reads only files: those two are checked from a file only.
"""

from __future__ import annotations

import datetime as dt
import io
import os
import pathlib
import subprocess
import zipfile
from collections.abc import Callable, Iterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from stream_unzip import stream_unzip

from multiresp import Entry, ZipResponse, ZipStreamResponse, walk

from conftest import LiveServer, require_tool
from ziputil import local_headers

T0 = dt.datetime(2024, 5, 17, 8, 30, 0, tzinfo=dt.timezone.utc)
RANDOM = os.urandom(1_500_000)  # incompressible, several stored blocks
ONCE = os.urandom(300_000)
TEXT = "ünïcødé lines to compress\n".encode() * 8_000


def _chunks(data: bytes, size: int = 50_000) -> Iterator[bytes]:
    yield from (data[i : i + size] for i in range(0, len(data), size))


# name -> content for files; names ending in "/" are directories
EXPECTED: dict[str, bytes] = {
    "disk/random.bin": RANDOM,
    "disk/ünicøde/名前.txt": TEXT,
    "disk/empty.txt": b"",
    "disk/empty-dir/": b"",
    "bytes/text.txt": TEXT,
    "bytes/empty": b"",
    "once/sized.bin": ONCE,
    "once/sized.txt": TEXT,
    "once/unsized.bin": ONCE,
    "once/unsized-empty": b"",
    "once/sized-empty": b"",
}


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    root = tmp_path_factory.mktemp("tree")
    for name, data in EXPECTED.items():
        if not name.startswith("disk/"):
            continue
        target = root / name.removeprefix("disk/")
        if name.endswith("/"):
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
    return root


def entries(tree: pathlib.Path, *, sized_only: bool) -> list[Entry]:
    found = walk(tree, prefix="disk/")
    found += [
        Entry.from_bytes(TEXT, "bytes/text.txt", mtime=T0),
        Entry.from_bytes(b"", "bytes/empty", mtime=T0),
        Entry.from_iter(_chunks(ONCE), "once/sized.bin", size=len(ONCE), mtime=T0),
        Entry.from_iter(_chunks(TEXT), "once/sized.txt", size=len(TEXT), media_type="text/plain"),
        Entry.from_iter(iter([]), "once/sized-empty", size=0),
    ]
    if not sized_only:
        found += [
            Entry.from_iter(_chunks(ONCE, 7_000), "once/unsized.bin", mtime=T0),
            Entry.from_iter(iter([b""]), "once/unsized-empty"),
        ]
    return found


# kind -> the response serving the entries
KINDS: dict[str, Callable[[list[Entry]], Response]] = {
    "stream-store": lambda e: ZipStreamResponse(e, compression="store"),
    "stream-deflate": lambda e: ZipStreamResponse(e, compression="deflate"),
    "stream-auto": lambda e: ZipStreamResponse(e, compression="auto"),
    "spooled-deflate": lambda e: ZipResponse(e),
    "spooled-store": lambda e: ZipResponse(e, compression="store"),
    "stream-store-sized": lambda e: ZipStreamResponse(e, compression="store"),
}


def expected_for(kind: str) -> dict[str, bytes]:
    if kind.endswith("-sized"):
        return {k: v for k, v in EXPECTED.items() if not k.startswith("once/unsized")}
    return EXPECTED


@pytest.fixture(scope="module")
def server(tree: pathlib.Path) -> Iterator[LiveServer]:
    async def serve(request: Request) -> Response:
        kind = request.path_params["kind"]
        return KINDS[kind](entries(tree, sized_only=kind.endswith("-sized")))

    app = Starlette(routes=[Route("/{kind}.zip", serve)])
    with LiveServer(app) as live:
        yield live


@pytest.fixture(scope="module")
def archives(server: LiveServer) -> dict[str, bytes]:
    """Each kind fetched once (its one-shot sources are read once per request)."""
    bodies = {}
    with httpx.Client() as client:
        for kind in KINDS:
            response = client.get(f"{server.url}/{kind}.zip")
            response.raise_for_status()
            if kind in ("stream-store-sized", "spooled-store", "spooled-deflate"):
                # every size known: the length is predicted (or measured) and exact
                assert int(response.headers["content-length"]) == len(response.content)
            bodies[kind] = response.content
    return bodies


def check_tree(root: pathlib.Path, expected: dict[str, bytes]) -> None:
    """``root`` holds exactly the expected files (byte for byte) and directories."""
    found: dict[str, bytes] = {}
    for path in sorted(root.rglob("*")):
        name = path.relative_to(root).as_posix()
        if path.is_dir():
            if not any(path.iterdir()):
                found[name + "/"] = b""
        else:
            found[name] = path.read_bytes()
    wanted = {
        name: data
        for name, data in expected.items()
        if not name.endswith("/") or not any(n.startswith(name) and n != name for n in expected)
    }
    assert sorted(found) == sorted(wanted)
    for name, data in wanted.items():
        assert found[name] == data, name


def check_members(members: dict[str, bytes], expected: dict[str, bytes]) -> None:
    assert sorted(members) == sorted(expected)
    for name, data in expected.items():
        assert members[name] == data, name


def run(args: list[str], **kwargs: object) -> None:
    result = subprocess.run(args, capture_output=True, **kwargs)  # type: ignore[call-overload]
    assert result.returncode == 0, (result.stdout + result.stderr).decode(errors="replace")


def read_unzip(path: pathlib.Path, out: pathlib.Path, url: str) -> None:
    unzip = require_tool("unzip")
    run([unzip, "-tq", str(path)])
    run([unzip, "-q", str(path), "-d", str(out)])


def read_7zz(path: pathlib.Path, out: pathlib.Path, url: str) -> None:
    sevenz = require_tool("7zz")
    run([sevenz, "t", str(path)])
    run([sevenz, "x", "-y", f"-o{out}", str(path)])


def read_bsdtar(path: pathlib.Path, out: pathlib.Path, url: str) -> None:
    run([require_tool("bsdtar"), "-xf", str(path), "-C", str(out)])


def _pipe(url: str, reader: list[str], out: pathlib.Path) -> None:
    """``curl URL | reader``: the reader sees the archive as the server streams it."""
    curl = subprocess.Popen([require_tool("curl"), "-sSf", url], stdout=subprocess.PIPE)
    try:
        run(reader, stdin=curl.stdout, cwd=out)
    finally:
        assert curl.stdout is not None
        curl.stdout.close()
        assert curl.wait() == 0


def read_bsdtar_pipe(path: pathlib.Path, out: pathlib.Path, url: str) -> None:
    _pipe(url, [require_tool("bsdtar"), "-xf", "-"], out)


def read_jar_file(path: pathlib.Path, out: pathlib.Path, url: str) -> None:
    """``jar xf`` reads through java.util.zip.ZipFile (the central directory)."""
    run([require_tool("jar"), "xf", str(path)], cwd=out)


def read_jar_stdin(path: pathlib.Path, out: pathlib.Path, url: str) -> None:
    """``jar x`` from stdin reads through java.util.zip.ZipInputStream (local headers only)."""
    _pipe(url, [require_tool("jar"), "x"], out)


def read_zipfile(body: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        assert archive.testzip() is None
        return {info.filename: archive.read(info) for info in archive.infolist()}


def read_stream_unzip(body: bytes) -> dict[str, bytes]:
    pieces = (body[i : i + 8_191] for i in range(0, len(body), 8_191))
    return {name.decode(): b"".join(data) for name, _size, data in stream_unzip(pieces)}


TREE_READERS = {
    "unzip": read_unzip,
    "7zz": read_7zz,
    "bsdtar": read_bsdtar,
    "bsdtar-pipe": read_bsdtar_pipe,
    "jar-xf-ZipFile": read_jar_file,
    "jar-x-stdin-ZipInputStream": read_jar_stdin,
}
MEMBER_READERS = {"zipfile": read_zipfile, "stream-unzip": read_stream_unzip}


@pytest.mark.parametrize("reader", list(TREE_READERS))
@pytest.mark.parametrize("kind", list(KINDS))
def test_tool_reads_response(
    kind: str,
    reader: str,
    archives: dict[str, bytes],
    server: LiveServer,
    tmp_path: pathlib.Path,
) -> None:
    path = tmp_path / f"{kind}.zip"
    path.write_bytes(archives[kind])
    out = tmp_path / "out"
    out.mkdir()
    TREE_READERS[reader](path, out, f"{server.url}/{kind}.zip")
    check_tree(out, expected_for(kind))


@pytest.mark.parametrize("reader", list(MEMBER_READERS))
@pytest.mark.parametrize("kind", list(KINDS))
def test_library_reads_response(kind: str, reader: str, archives: dict[str, bytes]) -> None:
    check_members(MEMBER_READERS[reader](archives[kind]), expected_for(kind))


@pytest.mark.parametrize("kind", list(KINDS))
def test_no_entry_is_stored_with_a_descriptor(kind: str, archives: dict[str, bytes]) -> None:
    """What ZipInputStream needs, checked on the bytes: STORE only with the CRC ahead."""
    body = archives[kind]
    for local in local_headers(body):
        assert not (local.method == 0 and local.flags & 8), local.name
    if kind == "stream-store-sized":  # the sized one-shot iterable: deflate stored blocks
        with zipfile.ZipFile(io.BytesIO(body)) as archive:
            info = archive.getinfo("once/sized.bin")
        blocks = -(-len(ONCE) // 0xFFFF)
        assert (info.compress_type, info.compress_size) == (8, len(ONCE) + 5 * blocks + 5)
