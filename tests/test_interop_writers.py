"""Interoperability matrix, writers: archives and multipart bodies that other tools and
libraries write, served as plain files by a real uvicorn and unpacked by ``download``.

Every cell must give back the tree byte for byte, names included: Info-ZIP's unflagged UTF-8
names, bsdtar's ``./`` entries, base64 and quoted-printable parts. aiohttp's percent-encoded
names are kept as sent (README, "Archives from other tools").
"""

from __future__ import annotations

import asyncio
import email.encoders
import email.generator
import email.mime.application
import email.mime.multipart
import email.policy
import hashlib
import io
import os
import pathlib
import subprocess
import urllib.parse
import zipfile
from collections.abc import Callable, Iterator

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from multiresp.client import download

from conftest import LiveServer, require_tool
from ziputil import Unseekable

RANDOM = os.urandom(2_000_000)  # incompressible
FILES: dict[str, bytes] = {
    "ünicøde/名前.txt": "ünïcødé, 名前\n".encode() * 500,
    "empty.txt": b"",
    "a/b/c/deep.txt": b"nested\n" * 1000,
    "a/random.bin": RANDOM,
}
EMPTY_DIRS = ["a/b/empty-dir/"]


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    root = tmp_path_factory.mktemp("src") / "tree"
    for name, data in FILES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    for name in EMPTY_DIRS:
        (root / name).mkdir(parents=True, exist_ok=True)
    return root


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[pathlib.Path, str]]:
    """A folder whose files uvicorn serves as they are; ``<name>.type`` holds the media type."""
    folder = tmp_path_factory.mktemp("served")

    async def serve(request: Request) -> Response:
        name = request.path_params["name"]
        media_type = (folder / f"{name}.type").read_text()
        return FileResponse(folder / name, media_type=media_type)

    app = Starlette(routes=[Route("/{name}", serve)])
    with LiveServer(app) as live:
        yield folder, live.url


def found_tree(root: pathlib.Path) -> dict[str, bytes]:
    found = {}
    for path in sorted(root.rglob("*")):
        name = path.relative_to(root).as_posix()
        if path.is_dir():
            if not any(path.iterdir()):
                found[name + "/"] = b""
        else:
            found[name] = path.read_bytes()
    return found


def digests(tree: dict[str, bytes]) -> dict[str, str]:
    """Names and SHA-256s: a mismatch of megabytes shows as names, not as a byte diff."""
    return {name: hashlib.sha256(data).hexdigest() for name, data in tree.items()}


def run(args: list[str], **kwargs: object) -> bytes:
    result = subprocess.run(args, capture_output=True, **kwargs)  # type: ignore[call-overload]
    assert result.returncode == 0, (result.stdout + result.stderr).decode(errors="replace")
    out: bytes = result.stdout
    return out


# -- zip writers: each returns the archive's bytes ----------------------------------------------


def info_zip(tree: pathlib.Path, *options: str) -> bytes:
    zip_tool = require_tool("zip")  # Debian's zip (Info-ZIP 3.0)
    return run([zip_tool, "-q", "-r", *options, "-", "."], cwd=tree)


def sevenz(tree: pathlib.Path, tmp: pathlib.Path) -> bytes:
    target = tmp / "7z.zip"
    run([require_tool("7zz"), "a", "-tzip", str(target), "."], cwd=tree)
    return target.read_bytes()


def bsdtar_file(tree: pathlib.Path, tmp: pathlib.Path) -> bytes:
    target = tmp / "bsdtar.zip"
    run([require_tool("bsdtar"), "--format", "zip", "-cf", str(target), "-C", str(tree), "."])
    return target.read_bytes()


def bsdtar_pipe(tree: pathlib.Path, tmp: pathlib.Path) -> bytes:
    """To a pipe, bsdtar cannot seek back: it writes data descriptors."""
    return run([require_tool("bsdtar"), "--format", "zip", "-cf", "-", "-C", str(tree), "."])


def jar(tree: pathlib.Path, tmp: pathlib.Path, options: str) -> bytes:
    target = tmp / "archive.jar"
    run([require_tool("jar"), options, str(target), "-C", str(tree), "."])
    return target.read_bytes()


def zipfile_unseekable(tree: pathlib.Path, tmp: pathlib.Path) -> bytes:
    stream = Unseekable()
    with zipfile.ZipFile(stream, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(tree.rglob("*")):
            archive.write(path, path.relative_to(tree).as_posix())
    return bytes(stream.data)


def zipstream_ng(tree: pathlib.Path, tmp: pathlib.Path, *, sized: bool) -> bytes:
    import zipstream

    if sized:
        stream = zipstream.ZipStream(compress_type=zipstream.ZIP_STORED, sized=True)
    else:
        stream = zipstream.ZipStream(compress_type=zipstream.ZIP_DEFLATED)
    stream.add_path(str(tree), arcname=".")
    body = b"".join(stream)
    if sized:
        assert len(body) == len(stream)
    return body


def stream_zip_of(tree: pathlib.Path, tmp: pathlib.Path, method_name: str) -> bytes:
    import datetime as dt

    import stream_zip

    method = getattr(stream_zip, method_name)
    now = dt.datetime(2024, 1, 1)
    members = []
    for path in sorted(tree.rglob("*")):
        name = path.relative_to(tree).as_posix()
        if path.is_dir():
            members.append((name + "/", now, 0o40755, method, iter(())))
        else:
            members.append((name, now, 0o100644, method, iter([path.read_bytes()])))
    return b"".join(stream_zip.stream_zip(members))


ZIP_WRITERS: dict[str, tuple[Callable[[pathlib.Path, pathlib.Path], bytes], list[object]]] = {
    "info-zip-deflate": (lambda t, _: info_zip(t), []),
    "info-zip-store": (lambda t, _: info_zip(t, "-0"), []),
    "7zz-a-tzip": (sevenz, []),
    "bsdtar-file": (bsdtar_file, []),
    "bsdtar-pipe": (bsdtar_pipe, []),
    "jar-cf": (lambda t, p: jar(t, p, "cf"), []),
    "jar-cMf": (lambda t, p: jar(t, p, "cMf"), []),
    "zipfile-unseekable": (zipfile_unseekable, []),
    "zipstream-ng-sized": (lambda t, p: zipstream_ng(t, p, sized=True), []),
    "zipstream-ng-deflate": (lambda t, p: zipstream_ng(t, p, sized=False), []),
    "stream-zip-deflate": (lambda t, p: stream_zip_of(t, p, "ZIP_32"), []),
    "stream-zip-store": (lambda t, p: stream_zip_of(t, p, "NO_COMPRESSION_32"), []),
}


def expected_zip_tree(writer: str) -> dict[str, bytes]:
    expected = {**FILES, **dict.fromkeys(EMPTY_DIRS, b"")}
    if writer == "jar-cf":  # jar adds its manifest
        expected["META-INF/MANIFEST.MF"] = b""  # compared by presence only
    return expected


def publish(served: tuple[pathlib.Path, str], name: str, body: bytes, media_type: str) -> str:
    folder, url = served
    (folder / name).write_bytes(body)
    (folder / f"{name}.type").write_text(media_type)
    return f"{url}/{name}"


@pytest.mark.parametrize(
    "writer", [pytest.param(name, marks=marks) for name, (_, marks) in ZIP_WRITERS.items()]
)
def test_client_reads_zip_from(
    writer: str,
    tree: pathlib.Path,
    served: tuple[pathlib.Path, str],
    tmp_path: pathlib.Path,
) -> None:
    make = ZIP_WRITERS[writer][0]
    url = publish(served, f"{writer}.zip", make(tree, tmp_path), "application/zip")
    dest = tmp_path / "dest"
    download(url, dest)
    found = found_tree(dest)
    expected = expected_zip_tree(writer)
    assert sorted(found) == sorted(expected)
    for name, data in expected.items():
        if name != "META-INF/MANIFEST.MF":
            assert found[name] == data, name


# -- multipart writers: each returns (body, content type) ----------------------------------------


# Quoted-printable carries line breaks as CRLF (RFC 2045, 6.7): the email package encodes a bare
# LF or CR in binary data as a line break, which decodes to CRLF, in its own reader as in ours.
# So the quoted-printable cell sends text with CRLF line ends and binary data without CR or LF.
QP_FILES = {name: data.replace(b"\n", b"\r\n") for name, data in FILES.items()} | {
    "a/random.bin": RANDOM.replace(b"\n", b"").replace(b"\r", b"")
}


def email_multipart(encoding: str) -> tuple[bytes, str]:
    message = email.mime.multipart.MIMEMultipart("mixed")
    files = QP_FILES if encoding == "qp" else FILES
    for name, data in files.items():
        part = email.mime.application.MIMEApplication(data, _encoder=lambda p: None)
        del part["Content-Transfer-Encoding"]
        if encoding == "base64":
            email.encoders.encode_base64(part)
        else:
            email.encoders.encode_quopri(part)
        part.add_header("Content-Disposition", "attachment", filename=name)
        message.attach(part)
    out = io.BytesIO()
    email.generator.BytesGenerator(out, policy=email.policy.HTTP).flatten(message)
    _, _, body = out.getvalue().partition(b"\r\n\r\n")
    return body, message["Content-Type"]


def aiohttp_multipart(quote_fields: bool = True) -> tuple[bytes, str]:
    import aiohttp

    async def build() -> tuple[bytes, str]:
        writer = aiohttp.MultipartWriter("mixed")
        for name, data in FILES.items():
            part = writer.append(io.BytesIO(data), {"Content-Type": "application/octet-stream"})
            part.set_content_disposition("attachment", quote_fields=quote_fields, filename=name)

        class Sink:
            def __init__(self) -> None:
                self.data = bytearray()

            async def write(self, chunk: bytes) -> None:
                self.data += chunk

        sink = Sink()
        await writer.write(sink)  # type: ignore[arg-type]
        return bytes(sink.data), writer.content_type

    return asyncio.run(build())


def toolbelt_multipart() -> tuple[bytes, str]:
    from requests_toolbelt import MultipartEncoder

    encoder = MultipartEncoder(
        fields=[("files", (name, data, "application/octet-stream")) for name, data in FILES.items()]
    )
    return encoder.to_string(), encoder.content_type


MULTIPART_WRITERS: dict[str, tuple[Callable[[], tuple[bytes, str]], list[object]]] = {
    "email-base64": (lambda: email_multipart("base64"), []),
    "email-quoted-printable": (lambda: email_multipart("qp"), []),
    "aiohttp-MultipartWriter-exact-names": (lambda: aiohttp_multipart(quote_fields=False), []),
    "requests-toolbelt": (toolbelt_multipart, []),
}


@pytest.mark.parametrize(
    "writer", [pytest.param(name, marks=marks) for name, (_, marks) in MULTIPART_WRITERS.items()]
)
def test_client_reads_multipart_from(
    writer: str, served: tuple[pathlib.Path, str], tmp_path: pathlib.Path
) -> None:
    body, content_type = MULTIPART_WRITERS[writer][0]()
    url = publish(served, writer, body, content_type)
    dest = tmp_path / "dest"
    download(url, dest)
    expected = QP_FILES if writer == "email-quoted-printable" else FILES
    assert digests(found_tree(dest)) == digests(expected)


def test_client_keeps_aiohttp_percent_escapes_literal(
    served: tuple[pathlib.Path, str], tmp_path: pathlib.Path
) -> None:
    """aiohttp percent-encodes ``filename=`` by default; in a plain ``filename=`` a ``%`` is an
    ordinary character, so each part is saved under its escaped name, flat inside ``dest``:
    ``%2F`` never becomes a folder and nothing lands outside ``dest``."""
    body, content_type = aiohttp_multipart()
    url = publish(served, "aiohttp-quoted", body, content_type)
    dest = tmp_path / "dest"
    download(url, dest)
    found = found_tree(dest)
    assert {urllib.parse.unquote(name) for name in found} == set(FILES)
    assert all("/" not in name for name in found)
    assert sorted(found.values()) == sorted(FILES.values())
