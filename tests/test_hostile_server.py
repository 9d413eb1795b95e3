"""The client's receive path against a hostile server: bodies and timings made to hurt it.

Each test shows one way a server could break a promise the README makes about downloads: a
bounded reader, ``if_exists="error"`` refusing before anything is written, and a deadline
that holds. Servers that must misbehave below HTTP are raw sockets on loopback.
"""

from __future__ import annotations

import contextlib
import pathlib
import re
import socket
import ssl
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator

import httpx
import pytest

from multiresp import Limits, ProtocolError
from multiresp._decoding import BodyDecoder
from multiresp._errors import TransferTimeout
from multiresp._events import NEED_DATA, EntryStart
from multiresp._sink import TEMP_SUFFIX, FileSink
from multiresp._zipreader import ZipReader
from multiresp.client import download

from conftest import self_signed_cert

LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")
DOS_TIME, DOS_DATE = 0, 0x21  # 1980-01-01 00:00
PIECE = 16 << 10  # bytes of body fed at once
BLOCK = 64 << 10  # bytes a raw server sends at once
SERVED = 256 << 20  # bytes of content a raw server sends at most
STALL = 5.0  # seconds a raw server holds the connection open before it gives up


def local_header(name: bytes, data: bytes = b"") -> bytes:
    """A stored entry's local header with its true CRC-32 and sizes, then its data."""
    crc = zlib.crc32(data)
    return (
        LOCAL_HEADER.pack(
            b"PK\x03\x04", 20, 0, 0, DOS_TIME, DOS_DATE, crc, len(data), len(data), len(name), 0
        )
        + name
        + data
    )


@pytest.fixture
def raw_server() -> Iterator[Callable[[Callable[[socket.socket], None]], str]]:
    """Serve one connection with ``handle(conn)`` after its request was read; gives the URL."""
    threads: list[threading.Thread] = []
    sockets: list[socket.socket] = []

    def start(handle: Callable[[socket.socket], None]) -> str:
        listener = socket.create_server(("127.0.0.1", 0))
        sockets.append(listener)

        def run() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.recv(65536)
                try:
                    handle(conn)
                except OSError:  # the client left: what these servers wait for
                    pass

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        threads.append(thread)
        return f"http://127.0.0.1:{listener.getsockname()[1]}/"

    yield start
    for listener in sockets:
        listener.close()
    for thread in threads:
        thread.join(STALL + 5)


# -- the bare "./" entry ---------------------------------------------------------------------


def test_a_repeated_root_entry_is_refused() -> None:
    """bsdtar writes one bare "./" entry, which gives no event and counts toward no limit;
    the reader still keeps a record of it for the central directory. A second one is no
    archive bsdtar writes: unbounded, those records let a small body hold any memory."""
    reader = ZipReader(limits=Limits(max_files=2))
    reader.receive_data(local_header(b"./") * 3)
    with pytest.raises(ProtocolError, match=r"'\./'"):
        while reader.next_event() is not NEED_DATA:
            pass


def test_root_entries_in_a_gzip_body_cannot_grow_memory_without_bound() -> None:
    """150 KB sent as gzip are 64 MB of "./" local headers: two million entries that the
    reader kept in memory (236 MiB measured), past max_files and max_total_ratio alike."""
    one = local_header(b"./")
    gzip = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    body = gzip.compress(one * 200_000) + gzip.flush()
    decoder = BodyDecoder("application/zip", limits=Limits(), content_encoding="gzip")
    with pytest.raises(ProtocolError, match="root"):
        for at in range(0, len(body), PIECE):
            decoder.receive(body[at : at + PIECE])
            while decoder.next_event() is not NEED_DATA:
                pass


def test_one_root_entry_is_still_read() -> None:
    reader = ZipReader()
    reader.receive_data(local_header(b"./") + local_header(b"./a", b"1"))
    event = reader.next_event()
    assert isinstance(event, EntryStart) and event.name == "a"


# -- if_exists="error" -----------------------------------------------------------------------


def test_error_policy_refuses_before_writing(tmp_path: pathlib.Path) -> None:
    """The README: 'if_exists="error" raises FileExistsError before writing it'."""
    (tmp_path / "a.txt").write_bytes(b"mine")
    with FileSink(tmp_path, if_exists="error") as sink:
        with pytest.raises(FileExistsError, match="already in the destination"):
            sink.start(EntryStart(name="a.txt", size=4))
    assert (tmp_path / "a.txt").read_bytes() == b"mine"


def test_download_refuses_a_taken_name_before_its_bytes_arrive(
    raw_server: Callable[[Callable[[socket.socket], None]], str], tmp_path: pathlib.Path
) -> None:
    """An entry whose name is taken is refused at its header, not after the server sent (and
    the client wrote) all of it: the server is cut off long before the end of its body."""
    (tmp_path / "big.bin").write_bytes(b"mine")
    head = LOCAL_HEADER.pack(b"PK\x03\x04", 20, 0, 0, DOS_TIME, DOS_DATE, 0, 1 << 30, 1 << 30, 7, 0)
    sent = [0]

    def handle(conn: socket.socket) -> None:
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/zip\r\nConnection: close\r\n\r\n"
            + head
            + b"big.bin"
        )
        block = bytes(BLOCK)
        while sent[0] < SERVED:
            conn.sendall(block)
            sent[0] += len(block)

    url = raw_server(handle)
    with pytest.raises(FileExistsError, match=r"big\.bin"):
        download(url, tmp_path, if_exists="error")
    assert sent[0] < SERVED // 2
    assert (tmp_path / "big.bin").read_bytes() == b"mine"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(TEMP_SUFFIX)]


# -- deadlines -------------------------------------------------------------------------------


def _trickle_headers(conn: socket.socket) -> None:
    """Response headers a byte at a time: no read of them ever waits long."""
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/zip\r\nX-Slow: ")
    started = time.monotonic()
    while time.monotonic() - started < STALL:
        conn.sendall(b"a")
        time.sleep(0.2)


def test_deadline_holds_while_headers_trickle(
    raw_server: Callable[[Callable[[socket.socket], None]], str], tmp_path: pathlib.Path
) -> None:
    """httpcore bounds each read of the headers, not the headers as a whole: the sync
    download's deadline must still end the request in time."""
    url = raw_server(_trickle_headers)
    started = time.monotonic()
    with pytest.raises(TransferTimeout):
        download(url, tmp_path, deadline=0.5)
    assert time.monotonic() - started < STALL / 2


def test_deadline_holds_while_headers_trickle_over_tls(tmp_path: pathlib.Path) -> None:
    """The same over TLS, with the caller's own client (and its own trace, still called)."""
    cert, key = self_signed_cert(tmp_path)
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))

    def run() -> None:
        with contextlib.suppress(OSError):
            raw, _ = listener.accept()
            with server_context.wrap_socket(raw, server_side=True) as conn:
                conn.recv(65536)
                _trickle_headers(conn)

    threading.Thread(target=run, daemon=True).start()
    traced: list[str] = []
    client_context = ssl.create_default_context(cafile=str(cert))
    url = f"https://127.0.0.1:{listener.getsockname()[1]}/"
    started = time.monotonic()
    try:
        with httpx.Client(verify=client_context) as client, pytest.raises(TransferTimeout):
            download(
                url,
                tmp_path / "out",
                client=client,
                deadline=1.0,
                extensions={"trace": lambda name, info: traced.append(name)},
            )
    finally:
        listener.close()
    assert time.monotonic() - started < STALL / 2
    assert "connection.start_tls.complete" in traced


# -- what an error message prints ------------------------------------------------------------


def test_an_etag_in_an_error_prints_no_terminal_control(
    raw_server: Callable[[Callable[[socket.socket], None]], str], tmp_path: pathlib.Path
) -> None:
    """``multiresp get`` prints the error's first line: header bytes over 0x7F reach it as C1
    controls (U+009B is a terminal's CSI), which names are refused for."""

    def handle(conn: socket.socket) -> None:
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/zip\r\nContent-Length: 1000\r\n"
            b'Accept-Ranges: bytes\r\nETag: W/"\xc2\x9b2J"\r\n\r\n' + local_header(b"a")[:20]
        )

    url = raw_server(handle)
    with pytest.raises(ProtocolError, match="cannot be resumed") as caught:
        download(url, tmp_path)
    assert not re.search("[\x00-\x1f\x7f-\x9f]", str(caught.value))
