"""Archives and bodies that other tools write, read by the pure readers and by ``download``.

Each writer runs for real (Info-ZIP ``zip``, ``bsdtar``, Python's ``email`` package, aiohttp's
``MultipartWriter``) on a tree with Unicode names, an empty file, nested folders, an
executable and a few MB of random data. The bytes are then served as a plain file by a
Starlette ``Response`` on a live uvicorn and fetched with :func:`multiresp.client.download`.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import random
import stat
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from multiresp import Limits, ProtocolError, UnsafeNameError
from multiresp._events import NEED_DATA, Data, End, EntryEnd, EntryStart, Event
from multiresp._zipreader import ZipReader
from multiresp.client import download

from conftest import require_tool

RANDOM_BYTES = 3 << 20  # bytes of incompressible data in the tree
UTF8_ENV = {**os.environ, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
TREE = {
    "ünicøde/名前.txt": b"hello\n",
    "ünicøde/sub/deeper/leaf.txt": b"leaf\n" * 100,
    "empty": b"",
    "run.sh": b"#!/bin/sh\necho hi\n",
    "data/random.bin": random.Random(15).randbytes(RANDOM_BYTES),
}
EXECUTABLE = "run.sh"


@pytest.fixture
def tree(tmp_path: pathlib.Path) -> pathlib.Path:
    root = tmp_path / "src"
    for name, data in TREE.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (root / EXECUTABLE).chmod(0o755)
    (root / "emptydir").mkdir()
    return root


def info_zip(root: pathlib.Path, *options: str) -> bytes:
    zip_tool = require_tool("zip")
    out = root.parent / "info.zip"
    subprocess.run(
        [zip_tool, "-q", "-r", *options, str(out), "."], cwd=root, check=True, env=UTF8_ENV
    )
    return out.read_bytes()


def info_zip_to_pipe(root: pathlib.Path, *options: str) -> bytes:
    """``zip -r - .``: written to stdout, so every file entry has a data descriptor."""
    zip_tool = require_tool("zip")
    done = subprocess.run(
        [zip_tool, "-q", "-r", *options, "-", "."],
        cwd=root,
        check=True,
        env=UTF8_ENV,
        capture_output=True,
    )
    return done.stdout


def bsdtar_zip(root: pathlib.Path, *options: str) -> bytes:
    bsdtar = require_tool("bsdtar")
    done = subprocess.run(
        [bsdtar, "--format", "zip", *options, "-cf", "-", "."],
        cwd=root,
        check=True,
        env=UTF8_ENV,
        capture_output=True,
    )
    return done.stdout


def bsdtar_zip_file(root: pathlib.Path) -> bytes:
    """bsdtar writing to a file: no block padding after the end record."""
    bsdtar = require_tool("bsdtar")
    out = root.parent / "bsdtar.zip"
    subprocess.run(
        [bsdtar, "--format", "zip", "-cf", str(out), "."], cwd=root, check=True, env=UTF8_ENV
    )
    return out.read_bytes()


def read_all(body: bytes, step: int = 65536, **kwargs: Any) -> list[Event]:
    reader = ZipReader(**kwargs)
    events: list[Event] = []
    for at in [*range(0, len(body), step), None]:
        reader.receive_data(b"" if at is None else body[at : at + step])
        while (event := reader.next_event()) is not NEED_DATA:
            events.append(event)
            if type(event) is End:
                return events
    raise AssertionError("no End")


def files_of(events: list[Event]) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    name = None
    for event in events:
        if isinstance(event, EntryStart):
            name = event.name
            files[name] = b""
        elif isinstance(event, Data):
            assert name is not None
            files[name] += event.data
        elif isinstance(event, EntryEnd):
            name = None
    return files


def expected_names() -> set[str]:
    folders = {"ünicøde/", "ünicøde/sub/", "ünicøde/sub/deeper/", "data/", "emptydir/"}
    return set(TREE) | folders


WRITERS: dict[str, Callable[[pathlib.Path], bytes]] = {
    "zip": info_zip,
    "zip -0": lambda root: info_zip(root, "-0"),
    "zip to a pipe": info_zip_to_pipe,
    "zip -0 to a pipe": lambda root: info_zip_to_pipe(root, "-0"),
    "bsdtar to a pipe": bsdtar_zip,
    "bsdtar to a file": bsdtar_zip_file,
    "bsdtar store": lambda root: bsdtar_zip(root, "--options", "zip:compression=store"),
}


@pytest.mark.parametrize("writer", WRITERS)
def test_pure_reader_reads_what_other_tools_write(writer: str, tree: pathlib.Path) -> None:
    events = read_all(WRITERS[writer](tree), step=4099)
    files = files_of(events)
    assert set(files) == expected_names()
    for name, data in TREE.items():
        assert files[name] == data, name
    end = events[-1]
    assert isinstance(end, End)
    modes = dict(end.modes)
    assert modes[EXECUTABLE] == 0o755
    assert modes["empty"] & 0o111 == 0


def test_info_zip_names_are_utf8_without_the_flag(tree: pathlib.Path) -> None:
    body = info_zip(tree)
    # zip 3.0 sets no language-encoding flag: bit 11 of every local header is clear
    assert b"PK\x03\x04" in body
    at = body.index(b"PK\x03\x04")
    assert not int.from_bytes(body[at + 6 : at + 8], "little") & (1 << 11)
    assert "ünicøde/名前.txt".encode() in body


def test_bsdtar_root_entry_is_skipped_and_dot_slash_stripped(tree: pathlib.Path) -> None:
    body = bsdtar_zip(tree)
    assert b"./run.sh" in body
    names = [e.name for e in read_all(body) if isinstance(e, EntryStart)]
    assert "./" not in names and not any(n.startswith("./") for n in names)
    assert set(names) == expected_names()


def serve(live_server: Callable[..., Any], body: bytes, media_type: str) -> str:
    def endpoint(request: Request) -> Response:
        return Response(body, media_type=media_type)

    return str(live_server(Starlette(routes=[Route("/file", endpoint)])).url) + "/file"


def tree_of(dest: pathlib.Path) -> dict[str, bytes]:
    return {
        path.relative_to(dest).as_posix(): path.read_bytes()
        for path in sorted(dest.rglob("*"))
        if path.is_file()
    }


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.parametrize("writer", WRITERS)
def test_download_saves_other_tools_archives(
    writer: str, tree: pathlib.Path, live_server: Callable[..., Any], umask_022: None
) -> None:
    url = serve(live_server, WRITERS[writer](tree), "application/zip")
    dest = tree.parent / "dest"
    saved = download(url, dest)
    assert tree_of(dest) == TREE
    assert (dest / "emptydir").is_dir()
    assert {s.name for s in saved} == set(TREE)
    for s in saved:
        assert s.sha256 == hashlib.sha256(TREE[s.name]).hexdigest()
    assert stat.S_IMODE((dest / EXECUTABLE).stat().st_mode) == 0o755
    assert stat.S_IMODE((dest / "empty").stat().st_mode) == 0o644


@pytest.mark.parametrize(
    ("umask", "expected"), [(0o077, 0o700), (0o027, 0o750), (0o002, 0o775), (0o033, 0o744)]
)
def test_exec_bit_stays_within_the_umask(
    umask: int, expected: int, tree: pathlib.Path, live_server: Callable[..., Any]
) -> None:
    (tree / EXECUTABLE).chmod(0o6777)  # setuid, setgid, group/other write: none comes back
    url = serve(live_server, info_zip(tree), "application/zip")
    old = os.umask(umask)
    try:
        download(url, tree.parent / "dest")
    finally:
        os.umask(old)
    mode = (tree.parent / "dest" / EXECUTABLE).stat().st_mode
    assert stat.S_IMODE(mode) == expected


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        ("././a", UnsafeNameError),
        ("./../a", UnsafeNameError),
        ("./", ProtocolError),  # the root entry, with content
        (".//a", UnsafeNameError),
    ],
)
def test_dot_slash_is_stripped_once_and_the_rest_still_refused(
    raw: str, error: type[Exception], tmp_path: pathlib.Path
) -> None:
    import io
    import zipfile

    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("ok", b"1")
        archive.writestr(raw, b"secret")
    with pytest.raises(error):
        read_all(out.getvalue(), limits=Limits())


# -- multipart bodies from the email package and aiohttp -----------------------------------------


def email_body(files: dict[str, bytes], encoder: str) -> tuple[str, bytes]:
    """A multipart/mixed body as the email package writes it, each part in ``encoder``."""
    from email import encoders, policy
    from email.mime.application import MIMEApplication
    from email.mime.multipart import MIMEMultipart

    encode = {"base64": encoders.encode_base64, "quoted-printable": encoders.encode_quopri}
    message = MIMEMultipart("mixed")
    for name, data in files.items():
        part = MIMEApplication(data, _encoder=encode[encoder])
        part.add_header("Content-Disposition", "attachment", filename=name)
        message.attach(part)
    raw = message.as_bytes(policy=policy.HTTP)
    _, _, body = raw.partition(b"\r\n\r\n")  # the headers go in the HTTP response
    return message["Content-Type"], body


def aiohttp_body(files: dict[str, bytes], *, quote_fields: bool) -> tuple[str, bytes]:
    import asyncio
    import io

    import aiohttp

    class Sink:
        def __init__(self) -> None:
            self.data = bytearray()

        async def write(self, chunk: bytes) -> None:
            self.data += chunk

    async def build() -> tuple[str, bytes]:
        writer = aiohttp.MultipartWriter("mixed")
        for name, data in files.items():
            payload = io.BytesIO(data)  # aiohttp warns about large raw bytes
            part = writer.append(payload, {"Content-Type": "application/octet-stream"})
            part.set_content_disposition("attachment", quote_fields=quote_fields, filename=name)
        sink = Sink()
        await writer.write(sink)
        return writer.headers["Content-Type"], bytes(sink.data)

    return asyncio.run(build())


def read_multipart(content_type: str, body: bytes, step: int) -> dict[str, bytes]:
    from multiresp._multipart_reader import MultipartReader, boundary_from_content_type

    reader = MultipartReader(boundary_from_content_type(content_type))
    events: list[Event] = []
    for at in [*range(0, len(body), step), None]:
        reader.receive_data(b"" if at is None else body[at : at + step])
        while (event := reader.next_event()) is not NEED_DATA:
            events.append(event)
            if type(event) is End:
                return files_of(events)
    raise AssertionError("no End")


# Text with CRLF line ends survives the email package's quoted-printable; binary data with bare
# LFs does not even through the email package's own reader (it gives CRLF back), so the random
# data goes through base64 only.
MAIL_TEXT = {"ünicøde-名前.txt": "grüße\r\nline two \r\n".encode(), "empty.txt": b""}
MAIL_BINARY = {**MAIL_TEXT, "random.bin": TREE["data/random.bin"]}


@pytest.mark.parametrize(
    ("encoder", "files"),
    [("base64", MAIL_BINARY), ("quoted-printable", MAIL_TEXT)],
    ids=["base64", "quoted-printable"],
)
@pytest.mark.parametrize("step", [1 << 16, 1000, 1], ids=["64KiB", "1000B", "1B"])
def test_email_package_bodies_are_decoded(encoder: str, files: dict[str, bytes], step: int) -> None:
    if step == 1:
        files = {name: data[:5000] for name, data in files.items()}
    content_type, body = email_body(files, encoder)
    assert f"Content-Transfer-Encoding: {encoder}".encode() in body
    assert read_multipart(content_type, body, step) == files


@pytest.mark.parametrize("encoder", ["base64", "quoted-printable"])
def test_download_saves_email_package_bodies(
    encoder: str, tmp_path: pathlib.Path, live_server: Callable[..., Any]
) -> None:
    files = MAIL_BINARY if encoder == "base64" else MAIL_TEXT
    content_type, body = email_body(files, encoder)
    url = serve(live_server, body, content_type)
    saved = download(url, tmp_path / "dest")
    assert tree_of(tmp_path / "dest") == files
    assert {s.name: s.size for s in saved} == {n: len(d) for n, d in files.items()}


AIOHTTP_FILES = {"data/random.bin": TREE["data/random.bin"], "名前 1.txt": b"x", "empty": b""}


def test_aiohttp_percent_encoded_names_are_kept_as_sent(
    tmp_path: pathlib.Path, live_server: Callable[..., Any]
) -> None:
    content_type, body = aiohttp_body(AIOHTTP_FILES, quote_fields=True)
    assert b'filename="data%2Frandom.bin"' in body
    literal = {
        "data%2Frandom.bin": AIOHTTP_FILES["data/random.bin"],
        "%E5%90%8D%E5%89%8D%201.txt": b"x",
        "empty": b"",
    }
    assert read_multipart(content_type, body, 4096) == literal
    url = serve(live_server, body, content_type)
    download(url, tmp_path / "dest")
    assert tree_of(tmp_path / "dest") == literal


def test_aiohttp_without_quoting_sends_the_exact_names(
    tmp_path: pathlib.Path, live_server: Callable[..., Any]
) -> None:
    content_type, body = aiohttp_body(AIOHTTP_FILES, quote_fields=False)
    assert read_multipart(content_type, body, 1000) == AIOHTTP_FILES
    url = serve(live_server, body, content_type)
    download(url, tmp_path / "dest")
    assert tree_of(tmp_path / "dest") == AIOHTTP_FILES


@pytest.mark.parametrize("name", ["%2e%2e%2fescape", "%2E%2E/x", "..%2f..%2fx", "%2fetc%2fpasswd"])
def test_percent_escapes_never_reach_outside_dest(
    name: str, tmp_path: pathlib.Path, live_server: Callable[..., Any]
) -> None:
    body = (
        b'--b\r\nContent-Disposition: attachment; filename="' + name.encode() + b'"\r\n\r\n'
        b"secret\r\n--b--\r\n"
    )
    url = serve(live_server, body, "multipart/mixed; boundary=b")
    dest = tmp_path / "inner" / "dest"
    saved = download(url, dest)
    assert [s.name for s in saved] == [name]  # one file, named literally, inside dest
    assert saved[0].path == dest.joinpath(*name.split("/"))
    assert saved[0].path.resolve().is_relative_to(dest.resolve())
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == [name.rsplit("/", 1)[-1]]


@pytest.mark.parametrize("charset", ["undefined", "idna", "punycode", "utf-16"])
def test_a_bad_rfc_8187_charset_is_a_protocol_error_for_download(
    charset: str, tmp_path: pathlib.Path, live_server: Callable[..., Any]
) -> None:
    disposition = f"attachment; filename=\"a.txt\"; filename*={charset}''%41"
    body = f"--b\r\nContent-Disposition: {disposition}\r\n\r\nx\r\n--b--\r\n".encode()
    url = serve(live_server, body, "multipart/mixed; boundary=b")
    with pytest.raises(ProtocolError, match=f"charset '{charset}'"):
        download(url, tmp_path / "dest")
    assert not any((tmp_path / "dest").rglob("*"))
