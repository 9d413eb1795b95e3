"""upload / aupload against independent readers: Starlette's ``request.form()``
(python-multipart) and the raw body read by python-multipart and the ``email`` package."""

from __future__ import annotations

import email
import email.policy
import hashlib
import os
import pathlib
import socket
import ssl
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import anyio
import anyio.lowlevel
import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse
from starlette.routing import Route

import multiresp._fs
import multiresp._uploading
from multiresp import Entry, IntegrityError, UnsafeNameError, walk
from multiresp._events import Data, EntryStart
from multiresp._multipart import MultipartWriter
from multiresp._multipart_reader import MultipartReader
from multiresp._uploading import Tracker, iter_body, plan_upload
from multiresp.client import Progress, aupload, upload

from conftest import LiveServer, self_signed_cert

MiB = 1 << 20
ODD_SIZES = [0, 1, 2, 4095, 65_537, 1_000_003]
LARGE = 5 * MiB + 7  # more than one read block of the pump


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Receiver:
    """Two endpoints: ``/form`` reads ``await request.form()`` and hashes every file,
    ``/raw`` keeps the raw body. Only a complete request is recorded."""

    def __init__(self) -> None:
        self.forms: list[list[dict[str, Any]]] = []
        self.raw: list[tuple[dict[str, str], bytes]] = []

    async def form(self, request: Request) -> JSONResponse:
        form = await request.form(max_files=10_000)
        files = []
        for field, value in form.multi_items():
            assert isinstance(value, UploadFile)
            data = await value.read()
            files.append(
                {
                    "field": field,
                    "name": value.filename,
                    "size": len(data),
                    "sha256": sha(data),
                    "type": value.content_type,
                }
            )
        await form.close()
        self.forms.append(files)
        return JSONResponse(files)

    async def raw_body(self, request: Request) -> JSONResponse:
        body = await request.body()
        self.raw.append((dict(request.headers), body))
        return JSONResponse({"received": len(body)})

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/form", self.form, methods=["POST", "PUT"]),
                Route("/raw", self.raw_body, methods=["POST"]),
                Route("/moved", lambda _: RedirectResponse("/form", 307), methods=["POST"]),
            ]
        )


@pytest.fixture
def receiver(live_server: Callable[..., LiveServer]) -> Iterator[tuple[Receiver, str]]:
    got = Receiver()
    server = live_server(got.app())
    yield got, server.url


@pytest.fixture
def tree(tmp_path: pathlib.Path) -> dict[str, bytes]:
    """A folder ``photos`` (nested, Unicode names) and loose files; name -> content."""
    expected: dict[str, bytes] = {}
    rng = __import__("random").Random(12)

    def put(relative: str, size: int) -> None:
        data = rng.randbytes(size)
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        expected[relative] = data

    for i, size in enumerate(ODD_SIZES):
        put(f"photos/2026/odd-{i}-{size}.bin", size)
    put("photos/2026/déjà vu 日本.txt", 333)
    put("photos/large.bin", LARGE)
    (tmp_path / "photos" / "empty").mkdir()  # an empty folder sends nothing
    put("loose één.dat", 77)
    return expected


def by_name(files: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {f["name"]: f for f in files}


def check_arrived(files: list[dict[str, Any]], expected: dict[str, bytes]) -> None:
    got = by_name(files)
    assert len(got) == len(files) == len(expected)
    for name, data in expected.items():
        assert got[name]["size"] == len(data), name
        assert got[name]["sha256"] == sha(data), name
        assert got[name]["field"] == "files"


# -- round trips through request.form() -------------------------------------------------------


def test_round_trip_paths_folder_and_entries(
    receiver: tuple[Receiver, str], tree: dict[str, bytes], tmp_path: pathlib.Path
) -> None:
    _, url = receiver
    extra = {"mem/bytes.bin": b"\x00\xffxyz" * 1001, "mem/iter.bin": os.urandom(3 * MiB + 1)}
    chunks = [extra["mem/iter.bin"][i : i + 100_000] for i in range(0, 3 * MiB + 1, 100_000)]
    response = upload(
        url + "/form",
        [
            tmp_path / "photos",
            str(tmp_path / "loose één.dat"),
            Entry.from_bytes(extra["mem/bytes.bin"], "mem/bytes.bin"),
            Entry.from_iter(iter(chunks), "mem/iter.bin", size=len(extra["mem/iter.bin"])),
        ],
    )
    assert response.status_code == 200
    check_arrived(response.json(), tree | extra)
    assert by_name(response.json())["loose één.dat"]["type"] == "application/octet-stream"
    assert by_name(response.json())["photos/2026/déjà vu 日本.txt"]["type"] == "text/plain"


def test_many_files(receiver: tuple[Receiver, str], tmp_path: pathlib.Path) -> None:
    _, url = receiver
    expected = {f"many/{i:04}.bin": os.urandom(i % 97) for i in range(1500)}
    for name, data in expected.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(data)
    response = upload(url + "/form", walk(tmp_path / "many", prefix="many"))
    check_arrived(response.json(), expected)


@pytest.mark.anyio
async def test_aupload_round_trip(
    anyio_backend: str,
    receiver: tuple[Receiver, str],
    tree: dict[str, bytes],
    tmp_path: pathlib.Path,
) -> None:
    _, url = receiver

    async def produce() -> AsyncIterator[bytes]:
        for _ in range(3):
            await anyio.lowlevel.checkpoint()
            yield b"async!" * 1000

    response = await aupload(
        url + "/form",
        [
            tmp_path / "photos",
            tmp_path / "loose één.dat",
            Entry.from_iter(produce(), "a.bin", size=18_000),
        ],
    )
    check_arrived(response.json(), tree | {"a.bin": b"async!" * 3000})


def test_field_and_method(receiver: tuple[Receiver, str]) -> None:
    _, url = receiver
    field = 'up "loads" \\ é'
    response = upload(url + "/form", Entry.from_bytes(b"x", "x.txt"), field=field, method="PUT")
    assert [f["field"] for f in response.json()] == [field]


def test_returns_error_responses(receiver: tuple[Receiver, str]) -> None:
    _, url = receiver
    response = upload(url + "/nowhere", Entry.from_bytes(b"x", "x.txt"))
    assert response.status_code == 404
    # a redirect is returned, not followed: the body would have to be sent again
    response = upload(url + "/moved", Entry.from_bytes(b"x", "x.txt"))
    assert (response.status_code, response.headers["location"]) == (307, "/form")


@pytest.mark.anyio
async def test_an_answer_before_the_body_ends_is_returned(
    anyio_backend: str, live_server: Callable[..., LiveServer]
) -> None:
    async def refuse(request: Request) -> JSONResponse:
        return JSONResponse({"error": "too large"}, status_code=413)

    server = live_server(Starlette(routes=[Route("/up", refuse, methods=["POST"])]))
    big = Entry.from_bytes(os.urandom(32 * MiB), "big.bin")
    response = await aupload(server.url + "/up", big)
    assert (response.status_code, response.json()) == (413, {"error": "too large"})


# -- the raw body, read by independent parsers ----------------------------------------------------

AWKWARD = ['say "hi".txt', "100%.txt", "a%22b.txt", "naïve 文件 🎉.txt", "x;y=z.txt", "sp ace .txt"]


def python_multipart_parts(content_type: str, body: bytes) -> list[tuple[dict[str, bytes], bytes]]:
    """Parts as python-multipart's low-level parser sees them: raw headers and data."""
    _, params = parse_options_header(content_type)
    parts: list[tuple[dict[str, bytes], bytes]] = []
    state: dict[str, Any] = {}

    def on_part_begin() -> None:
        state.update(headers={}, data=bytearray(), name=b"", value=b"")

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state["name"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state["value"] += data[start:end]

    def on_header_end() -> None:
        state["headers"][state["name"].decode().lower()] = state["value"]
        state["name"] = state["value"] = b""

    def on_part_data(data: bytes, start: int, end: int) -> None:
        state["data"] += data[start:end]

    def on_part_end() -> None:
        parts.append((state["headers"], bytes(state["data"])))

    parser = MultipartParser(
        params[b"boundary"],
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        },
    )
    parser.write(body)
    parser.finalize()
    return parts


def test_raw_body_read_by_python_multipart_and_email(receiver: tuple[Receiver, str]) -> None:
    got, url = receiver
    contents = {name: os.urandom(i * 1000) for i, name in enumerate(AWKWARD)}
    entries = [Entry.from_bytes(data, name) for name, data in contents.items()]
    assert upload(url + "/raw", entries).status_code == 200
    [(headers, body)] = got.raw
    assert int(headers["content-length"]) == len(body)
    assert "transfer-encoding" not in headers
    content_type = headers["content-type"]
    assert content_type.startswith("multipart/form-data; boundary=")

    parts = python_multipart_parts(content_type, body)
    assert len(parts) == len(contents)
    for (part_headers, data), (name, content) in zip(parts, contents.items(), strict=True):
        disposition, params = parse_options_header(part_headers["content-disposition"])
        assert disposition == b"form-data"
        assert params[b"name"] == b"files"
        assert params[b"filename"].decode("utf-8") == name
        assert data == content
        assert b"filename*" not in part_headers["content-disposition"]  # RFC 7578 section 4.2
        assert set(part_headers) == {"content-disposition", "content-type"}  # section 4.8

    message = email.message_from_bytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body, policy=email.policy.HTTP
    )
    assert message.is_multipart()
    read = [(p.get_filename(), p.get_payload(decode=True)) for p in message.iter_parts()]
    assert read == list(contents.items())


def test_form_reads_awkward_names(receiver: tuple[Receiver, str]) -> None:
    _, url = receiver
    entries = [Entry.from_bytes(name.encode(), name) for name in AWKWARD]
    response = upload(url + "/form", entries)
    assert [f["name"] for f in response.json()] == AWKWARD


def test_backslash_and_control_names_never_reach_the_wire() -> None:
    for name in ["a\\b.txt", "a\r\nContent-Type: x", "a\nb", "nul\x00"]:
        with pytest.raises(UnsafeNameError):
            Entry.from_bytes(b"", name)


def test_chunked_when_a_size_is_unknown(receiver: tuple[Receiver, str]) -> None:
    got, url = receiver
    data = os.urandom(2 * MiB + 3)
    entry = Entry.from_iter(iter([data[:MiB], data[MiB:]]), "unsized.bin")
    assert upload(url + "/raw", [entry, Entry.from_bytes(b"k", "k.txt")]).status_code == 200
    [(headers, body)] = got.raw
    assert headers.get("transfer-encoding") == "chunked"
    assert "content-length" not in headers
    parts = python_multipart_parts(headers["content-type"], body)
    assert [p[1] for p in parts] == [data, b"k"]


# -- the body's length is predicted exactly; the project's reader reads it back -----------------

names = st.text(
    st.characters(
        blacklist_categories=("Cs", "Cc"),
        blacklist_characters="/\\\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069",
    ),
    min_size=1,
    max_size=20,
).filter(lambda n: n not in (".", ".."))


@settings(max_examples=60, deadline=None)
@given(
    st.dictionaries(names, st.binary(max_size=300), min_size=1, max_size=6),
    st.text(min_size=1, max_size=10).filter(lambda f: not set(f) & set("\r\n\x00")),
)
def test_length_is_exact_and_reader_reads_it_back(files: dict[str, bytes], field: str) -> None:
    entries = [Entry.from_bytes(data, name) for name, data in files.items()]
    plan = plan_upload(entries, field=field)
    body = b"".join(iter_body(plan, Tracker(plan, None)))
    assert len(body) == plan.length
    reader = MultipartReader(plan.boundary)
    reader.receive_data(body)
    reader.receive_data(b"")
    got: dict[str, bytes] = {}
    current = ""
    while True:
        event = reader.next_event()
        if isinstance(event, EntryStart):
            current = event.name
            got[current] = b""
        elif isinstance(event, Data):
            got[current] += event.data
        elif type(event).__name__ in ("End", "_Sentinel"):
            break
    assert got == files


def test_part_headers_are_formatted_once(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The plan measures the body by writing every part's headers; a file's and a bytes
    entry's are then sent as written. An iterable's go through the writer again, which counts
    its bytes against its size."""
    for number in range(5):
        (tmp_path / f"f{number}.txt").write_bytes(b"x" * number)
    entries: list[Entry | pathlib.Path] = [tmp_path / f"f{n}.txt" for n in range(5)]
    entries += [
        Entry.from_bytes(b"bytes", "b.bin"),
        Entry.from_iter(iter([b"it", b"er"]), "i.bin", size=4),
    ]
    formatted: list[str] = []
    real = MultipartWriter.start_part

    def start_part(self: MultipartWriter, name: str, **kwargs: Any) -> bytes:
        formatted.append(name)
        return real(self, name, **kwargs)

    monkeypatch.setattr(MultipartWriter, "start_part", start_part)
    plan = plan_upload(entries, field="files")
    assert len(formatted) == 7
    body = b"".join(iter_body(plan, Tracker(plan, None)))
    assert formatted[7:] == ["i.bin"]
    assert len(body) == plan.length
    parsed = email.message_from_bytes(
        b"Content-Type: " + plan.headers["Content-Type"].encode() + b"\r\n\r\n" + body,
        policy=email.policy.HTTP,
    )
    assert [(p.get_filename(), p.get_payload(decode=True)) for p in parsed.iter_parts()] == [
        *((f"f{n}.txt", b"x" * n) for n in range(5)),
        ("b.bin", b"bytes"),
        ("i.bin", b"iter"),
    ]


# -- progress -------------------------------------------------------------------------------------


def test_progress_callable(
    receiver: tuple[Receiver, str], tree: dict[str, bytes], tmp_path: pathlib.Path
) -> None:
    _, url = receiver
    reports: list[Progress] = []
    upload(url + "/form", tmp_path / "photos", progress=reports.append)
    plan = plan_upload(tmp_path / "photos", field="files")
    assert reports[-1] == Progress(
        bytes_done=plan.length, bytes_total=plan.length, files_done=len(plan.entries), current=None
    )
    done = [r.bytes_done for r in reports]
    assert done == sorted(done)


# -- changed files abort; the event loop is never blocked -----------------------------------------


def test_file_changed_since_listed_aborts(
    receiver: tuple[Receiver, str], tmp_path: pathlib.Path
) -> None:
    got, url = receiver
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.bin").write_bytes(b"a" * 1000)
    (tmp_path / "d" / "b.bin").write_bytes(b"b" * 1000)
    entries = walk(tmp_path / "d")
    (tmp_path / "d" / "b.bin").write_bytes(b"b" * 1001)
    with pytest.raises(IntegrityError, match=r"b\.bin"):
        upload(url + "/form", entries)
    assert got.forms == []


@pytest.mark.anyio
async def test_file_changed_mid_upload_aborts(
    anyio_backend: str, receiver: tuple[Receiver, str], tmp_path: pathlib.Path
) -> None:
    got, url = receiver
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(40 * MiB))

    def grow(progress: Progress) -> None:
        if big.stat().st_size == 40 * MiB:
            with big.open("ab") as f:
                f.write(b"!")

    with pytest.raises(IntegrityError, match=r"big\.bin"):
        await aupload(url + "/form", [big], progress=grow)
    assert big.stat().st_size == 40 * MiB + 1  # the change happened while it was sent
    assert got.forms == []


@pytest.mark.anyio
async def test_aupload_reads_off_the_event_loop(
    anyio_backend: str,
    receiver: tuple[Receiver, str],
    tree: dict[str, bytes],
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, url = receiver
    loop_thread = threading.get_ident()
    opened_on: list[int] = []
    open_source = multiresp._fs.open_source

    def spy(*args: Any) -> int:
        opened_on.append(threading.get_ident())
        return open_source(*args)

    monkeypatch.setattr(multiresp._fs, "open_source", spy)
    ticks = 0
    ticks_at_reports: list[int] = []

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(ticker)
        response = await aupload(
            url + "/form",
            tmp_path / "photos",
            progress=lambda _: ticks_at_reports.append(ticks),
        )
        tasks.cancel_scope.cancel()
    assert response.status_code == 200
    assert len(opened_on) == len([n for n in tree if n.startswith("photos/")])
    assert loop_thread not in opened_on
    assert ticks_at_reports[-1] > ticks_at_reports[0]  # the loop ran while files were sent


async def test_aupload_lists_folders_off_the_event_loop(
    anyio_backend: str,
    receiver: tuple[Receiver, str],
    tree: dict[str, bytes],
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A folder is listed with a stat per file: not on the loop, which other tasks share."""
    _, url = receiver
    listed_on: list[int] = []
    real = multiresp._uploading.entries_for_path

    def spy(path: str | os.PathLike[str]) -> list[Entry]:
        listed_on.append(threading.get_ident())
        return real(path)

    monkeypatch.setattr(multiresp._uploading, "entries_for_path", spy)
    response = await aupload(url + "/form", tmp_path / "photos")
    assert response.status_code == 200
    assert listed_on and threading.get_ident() not in listed_on


# -- refusals --------------------------------------------------------------------------------------


def test_refusals(tmp_path: pathlib.Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="nothing to upload"):
        upload("http://127.0.0.1:9/", tmp_path / "empty")
    twice = Entry.from_bytes(b"", "same.txt")
    with pytest.raises(UnsafeNameError, match="duplicate"):
        upload("http://127.0.0.1:9/", [twice, twice])
    with pytest.raises(TypeError, match="aupload"):

        async def chunks() -> AsyncIterator[bytes]:
            yield b""

        upload("http://127.0.0.1:9/", Entry.from_iter(chunks(), "a.bin", size=0))
    with pytest.raises(TypeError, match="content"):
        upload("http://127.0.0.1:9/", Entry.from_bytes(b"", "a"), content=b"x")
    with pytest.raises(TypeError, match="paths or Entry"):
        upload("http://127.0.0.1:9/", [b"raw bytes"])  # type: ignore[list-item]


def test_sized_source_that_lies_aborts(receiver: tuple[Receiver, str]) -> None:
    got, url = receiver
    with pytest.raises(IntegrityError, match=r"short\.bin"):
        upload(url + "/form", Entry.from_iter(iter([b"abc"]), "short.bin", size=4))
    with pytest.raises(IntegrityError, match=r"long\.bin"):
        upload(url + "/form", Entry.from_iter(iter([b"abcde"]), "long.bin", size=4))
    assert got.forms == []


def test_client_is_not_closed(receiver: tuple[Receiver, str]) -> None:
    _, url = receiver
    with httpx.Client() as client:
        upload(url + "/form", Entry.from_bytes(b"1", "1.txt"), client=client)
        assert upload(url + "/form", Entry.from_bytes(b"2", "2.txt"), client=client).is_success


def test_default_clients_share_one_tls_context(monkeypatch: pytest.MonkeyPatch) -> None:
    """httpx loads the CA bundle for every new client: the default clients load it once."""
    from multiresp import client as client_module
    from multiresp._uploading import _client_options

    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    with client_module._client() as first, httpx.Client(**_client_options()) as second:
        shared = first._transport._pool._ssl_context
        assert second._transport._pool._ssl_context is shared
    assert shared.verify_mode is ssl.CERT_REQUIRED and shared.check_hostname
    monkeypatch.setenv("SSL_CERT_FILE", "/nonexistent/ca.pem")  # another setting: its own
    other = client_module._default_ssl_context()
    assert other is not shared
    assert client_module._default_ssl_context() is other


def test_the_shared_tls_context_loads_its_cas_before_any_handshake() -> None:
    """The CA bundle is loaded on the first TLS use, by either way in, never skipped."""
    from multiresp.client import _ssl_context

    expected = len(httpx.create_ssl_context(trust_env=False).get_ca_certs())
    for wrap in ("bio", "socket"):
        context = _ssl_context.__wrapped__(None, None)  # a fresh one, not the cached one
        assert context.cert_store_stats()["x509_ca"] == 0  # nothing loaded at creation
        if wrap == "bio":
            context.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(), server_hostname="example.com")
        else:
            with (
                socket.socket() as raw,
                context.wrap_socket(
                    raw, server_hostname="example.com", do_handshake_on_connect=False
                ),
            ):
                pass
        assert len(context.get_ca_certs()) == expected > 0


@pytest.fixture
def tls_server(tmp_path: pathlib.Path) -> Iterator[tuple[str, pathlib.Path]]:
    """An HTTPS server on loopback with a self-signed certificate for 127.0.0.1."""
    import http.server

    cert, key = self_signed_cert(tmp_path)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            answer = str(len(body)).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}/", cert
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.anyio
@pytest.mark.parametrize("trusted", [True, False])
async def test_uploads_over_tls_verify_the_server(
    anyio_backend: str,
    tls_server: tuple[str, pathlib.Path],
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
    trusted: bool,
) -> None:
    """The default clients verify the server with the CAs of SSL_CERT_FILE (certifi's when
    unset, which do not know this self-signed server): sync and async alike."""
    url, cert = tls_server
    if trusted:
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    else:
        monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    source = tmp_path / "a.bin"
    source.write_bytes(b"x" * 1000)
    if trusted:
        assert upload(url, [source]).status_code == 200
        assert (await aupload(url, [source])).status_code == 200
    else:
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            upload(url, [source])
        with pytest.raises(httpx.ConnectError):  # trio gives no message: the same cause
            await aupload(url, [source])
