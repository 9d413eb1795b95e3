"""Sources are pluggable: a kind defined here, outside the library, is served like a file.

The toy sources below implement :class:`multiresp._sources.Source` and nothing else: the
responses, the pump, the range reader, the validators and the CRC cache must treat them as
they treat files, by asking the protocol (a real uvicorn, a real httpx client).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import io
import itertools
import random
import threading
import uuid
import zipfile
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
import python_multipart
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from multiresp import Entry, IntegrityError, MultipartResponse, ZipStreamResponse
from multiresp._crccache import CrcKey, crc_cache
from multiresp._pace import READ_BLOCK
from multiresp._sources import SourceBase

from conftest import LiveServer

Start = Callable[..., LiveServer]
LISTED = dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=dt.timezone.utc)  # the store's Last-Modified


@dataclasses.dataclass
class Log:
    """What the toy sources were asked, in order."""

    events: list[tuple[str, str, int]] = dataclasses.field(default_factory=list)
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    def add(self, what: str, name: str, offset: int = 0) -> None:
        with self.lock:
            self.events.append((what, name, offset))

    def of(self, what: str) -> list[tuple[str, int]]:
        return [(name, offset) for kind, name, offset in self.events if kind == what]


class Stored(SourceBase):
    """Bytes "in a store": re-readable from any offset, named by a key and an ETag, facts
    fetched when the response starts (``settle``), every open and CRC counted."""

    def __init__(self, bucket: str, key: str, data: bytes, log: Log, fail: bool = False) -> None:
        self.bucket, self.key, self.data, self.log, self.fail = bucket, key, data, log, fail
        self.etag = hashlib.md5(data).hexdigest()

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def identity(self) -> str:
        return self.etag

    @property
    def crc_key(self) -> CrcKey:
        return ("toy", 1, self.bucket, self.key, self.etag, len(self.data))

    def known_crc(self) -> int | None:
        return crc_cache.get(self)

    def remember_crc(self, crc: int, read_from_ns: int, *, shared: bool = True) -> None:
        self.log.add("remember", self.key)
        crc_cache.put(self, crc, read_from_ns=read_from_ns, shared=shared)

    def settle(self, entry: Entry) -> Entry:
        self.log.add("settle", self.key)
        if self.fail:
            raise IntegrityError(f"entry {entry.name!r}: no such object (existence check)")
        return dataclasses.replace(entry, size=len(self.data), mtime=LISTED)

    def open(self, entry: Entry, offset: int = 0) -> ToyReader:
        self.log.add("open", self.key, offset)
        return ToyReader(self.data, offset)

    def crc(self, entry: Entry, stop: threading.Event) -> int:
        self.log.add("crc", self.key)
        return super().crc(entry, stop)


class Truncated(Stored):
    """An object that says it has more bytes than it gives (a store's short read)."""

    def open(self, entry: Entry, offset: int = 0) -> ToyReader:
        self.log.add("open", self.key, offset)
        return ToyReader(self.data, offset, end=len(self.data) // 2)


class ToyReader:
    def __init__(self, data: bytes, offset: int, end: int | None = None) -> None:
        self.data, self.at = data, offset
        self.end = len(data) if end is None else end

    def read(self, size: int) -> list[bytes]:
        stop = min(self.at + min(size, 1 << 20), self.end)  # pieces of 1 MiB at most
        piece = self.data[self.at : stop]
        self.at += len(piece)
        return [piece] if piece else []

    def close(self) -> None:
        pass


class OneShot(SourceBase):
    """Chunks read once, in a worker thread."""

    rereadable = False

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks_left: Iterator[bytes] | None = iter(chunks)

    @property
    def size(self) -> None:
        return None

    def open(self, entry: Entry, offset: int = 0) -> OneShotReader:
        chunks, self.chunks_left = self.chunks_left, None
        if chunks is None:
            raise RuntimeError(f"entry {entry.name!r}: already read")
        return OneShotReader(chunks)


class OneShotReader:
    def __init__(self, chunks: Iterator[bytes]) -> None:
        self.left = chunks

    def read(self, size: int) -> list[bytes]:
        chunk = next(self.left, b"")
        return [chunk] if chunk else []

    def close(self) -> None:
        pass


class Streamed(SourceBase):
    """Chunks read once, on the event loop."""

    rereadable = False
    blocking = False

    def __init__(self, chunks: list[bytes]) -> None:
        self.parts = chunks

    @property
    def size(self) -> None:
        return None

    def chunks(self, entry: Entry) -> AsyncIterator[bytes]:
        async def each() -> AsyncIterator[bytes]:
            for part in self.parts:
                yield part

        return each()


def unnamed(name: str, source: Any) -> Entry:
    """An entry named without its facts: size and mtime come from ``settle``."""
    return Entry(name, None, None, "application/octet-stream", source)


def contents(bucket: str) -> dict[str, bytes]:
    rng = random.Random(bucket)
    return {
        "small.txt": b"a small object\n" * 40,
        "empty.bin": b"",
        "big-1.bin": rng.randbytes(READ_BLOCK + 12_345),
        "big-2.bin": rng.randbytes(READ_BLOCK + 1),
    }


def app(bucket: str, log: Log) -> Starlette:
    """A gateway over the toy store; each request builds new sources, as a listing would."""

    def entries() -> list[Entry]:
        return [unnamed(k, Stored(bucket, k, v, log)) for k, v in contents(bucket).items()]

    def zipped(request: Request) -> Response:
        return ZipStreamResponse(entries(), filename="toy.zip")

    def parts(request: Request) -> Response:
        return MultipartResponse(entries())

    def missing(request: Request) -> Response:
        gone = Stored(bucket, "gone.bin", b"x", log, fail=True)
        return ZipStreamResponse([*entries(), unnamed("gone.bin", gone)])

    def short(request: Request) -> Response:
        data = contents(bucket)["big-1.bin"]
        return ZipStreamResponse([unnamed("short.bin", Truncated(bucket, "short", data, log))])

    def streamed(request: Request) -> Response:
        async def produce() -> AsyncIterator[Entry]:
            for entry in entries():
                yield entry

        return ZipStreamResponse(produce())

    def one_shot(request: Request) -> Response:
        sources = [OneShot([b"one ", b"shot"]), Streamed([b"async ", b"chunks"])]
        items = [Entry("one.txt", None, None, "text/plain", sources[0]),
                 Entry("async.txt", None, None, "text/plain", sources[1])]  # fmt: skip
        if request.path_params["kind"] == "zip":
            return ZipStreamResponse(items)
        return MultipartResponse(items)

    return Starlette(
        routes=[
            Route("/zip", zipped),
            Route("/multipart", parts),
            Route("/missing", missing),
            Route("/one-shot/{kind}", one_shot),
            Route("/short", short),
            Route("/streamed", streamed),
        ]
    )


@pytest.fixture
def bucket() -> str:
    """A bucket name of this test alone: the process's CRC cache starts cold for it."""
    return f"bucket-{uuid.uuid4().hex}"


@pytest.fixture
def replicas(bucket: str, live_server: Start) -> Iterator[tuple[httpx.Client, Log, Log]]:
    """Two app instances over the same store, each with its own sources and log."""
    logs = Log(), Log()
    servers = [live_server(app(bucket, log)) for log in logs]
    with httpx.Client(base_url=servers[0].url, timeout=30) as a:
        with httpx.Client(base_url=servers[1].url, timeout=30) as b:
            yield a, b, *logs  # type: ignore[misc]


def split_points(total: int) -> list[int]:
    return [0, 1, 100, READ_BLOCK - 3, READ_BLOCK + 20_000, 2 * READ_BLOCK + 7, total - 5, total]


def stitched(client: httpx.Client, path: str, etag: str, total: int) -> bytes:
    """The body fetched as consecutive ranges, each held to ``etag`` by If-Range."""
    cuts = sorted(set(split_points(total)))
    out = b""
    for start, stop in itertools.pairwise(cuts):
        part = client.get(path, headers={"range": f"bytes={start}-{stop - 1}", "if-range": etag})
        assert part.status_code == 206, (start, stop)
        assert part.headers["content-range"] == f"bytes {start}-{stop - 1}/{total}"
        out += part.content
    return out


def test_a_zip_of_toy_sources_has_a_length_validators_and_ranges(
    replicas: tuple[httpx.Client, httpx.Client, Log, Log], bucket: str
) -> None:
    a, b, log_a, log_b = replicas
    data = contents(bucket)
    first = a.get("/zip")
    assert first.status_code == 200
    body = first.content
    assert int(first.headers["content-length"]) == len(body)  # sizes from settle, before it
    assert first.headers["accept-ranges"] == "bytes"
    assert first.headers["last-modified"] == "Mon, 06 May 2024 07:08:09 GMT"
    etag = first.headers["etag"]
    assert not etag.startswith("W/")
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        assert {info.filename: archive.read(info) for info in archive.infolist()} == data
        assert all(not info.flag_bits & 8 for info in archive.infolist())  # CRCs led
    # Settled before the first byte: every settle comes before every read.
    kinds = [kind for kind, _, _ in log_a.events]
    assert kinds[: len(data)] == ["settle"] * len(data)
    # The first large object's CRC is read where it is needed, the next one's ahead, once.
    assert log_a.of("crc") == [("big-2.bin", 0)]
    assert ("big-1.bin", 0) in log_a.of("remember")
    # Another instance, its own sources: the same bytes and ETag, every CRC from the cache.
    again = b.get("/zip")
    assert again.content == body and again.headers["etag"] == etag
    assert log_b.of("crc") == []
    assert log_b.of("open") == [(name, 0) for name in data]  # each read once, whole
    assert stitched(b, "/zip", etag, len(body)) == body
    assert any(offset > 0 for _, offset in log_b.of("open"))  # read from where a range starts
    assert log_b.of("crc") == []


def test_a_multipart_body_of_toy_sources_has_a_length_validators_and_ranges(
    replicas: tuple[httpx.Client, httpx.Client, Log, Log], bucket: str
) -> None:
    a, b, _, log_b = replicas
    data = contents(bucket)
    first = a.get("/multipart")
    body = first.content
    assert int(first.headers["content-length"]) == len(body)
    etag = first.headers["etag"]
    again = b.get("/multipart")
    assert again.content == body and again.headers["etag"] == etag
    assert stitched(b, "/multipart", etag, len(body)) == body
    assert any(offset > 0 for _, offset in log_b.of("open"))
    parts: dict[str, bytes] = {}
    boundary = first.headers["content-type"].split("boundary=")[1].encode()
    current: dict[str, Any] = {}

    def on_header_value(data: bytes, start: int, end: int) -> None:
        value = data[start:end]
        if b"filename=" in value:
            current["name"] = value.split(b'filename="')[1].split(b'"')[0].decode()
            parts[current["name"]] = b""

    def on_part_data(data: bytes, start: int, end: int) -> None:
        parts[current["name"]] += data[start:end]

    parser = python_multipart.MultipartParser(
        boundary, {"on_header_value": on_header_value, "on_part_data": on_part_data}
    )
    parser.write(body)
    parser.finalize()
    assert parts == data


def test_a_settle_that_fails_is_a_500_before_any_byte(
    replicas: tuple[httpx.Client, httpx.Client, Log, Log],
) -> None:
    a, _, log, _ = replicas
    answer = a.get("/missing")
    assert answer.status_code == 500
    assert not answer.content.startswith(b"PK")  # no archive began
    assert ("gone.bin", 0) in log.of("settle")
    assert log.of("open") == [] and log.of("crc") == []


@pytest.mark.parametrize("kind", ["zip", "multipart"])
def test_one_shot_toy_sources_still_stream(
    replicas: tuple[httpx.Client, httpx.Client, Log, Log], kind: str
) -> None:
    a = replicas[0]
    answer = a.get(f"/one-shot/{kind}")
    assert answer.status_code == 200
    assert "etag" not in answer.headers and "accept-ranges" not in answer.headers
    if kind == "zip":
        with zipfile.ZipFile(io.BytesIO(answer.content)) as archive:
            assert archive.read("one.txt") == b"one shot"
            assert archive.read("async.txt") == b"async chunks"
    else:
        assert b"one shot" in answer.content and b"async chunks" in answer.content


def test_a_source_that_ends_early_aborts_the_body_and_its_ranges(
    replicas: tuple[httpx.Client, httpx.Client, Log, Log],
) -> None:
    a, _, log, _ = replicas
    with pytest.raises(httpx.RemoteProtocolError):  # cut short of its Content-Length
        a.get("/short")
    assert log.of("remember") == []  # no CRC of half the bytes is kept
    source = Truncated("b", "short", b"0123456789", log)
    with pytest.raises(IntegrityError, match="size check"):  # read ahead for its CRC
        source.crc(source.settle(unnamed("short.bin", source)), threading.Event())
    assert log.of("remember") == []
    with pytest.raises(httpx.RemoteProtocolError):
        a.get("/short", headers={"range": "bytes=-100"})  # the data's end, never given


def test_entries_from_a_stream_are_settled_before_they_are_read(
    replicas: tuple[httpx.Client, httpx.Client, Log, Log], bucket: str
) -> None:
    a, _, log, _ = replicas
    answer = a.get("/streamed")
    with zipfile.ZipFile(io.BytesIO(answer.content)) as archive:
        assert {info.filename: archive.read(info) for info in archive.infolist()} == (
            contents(bucket)
        )
        big = archive.getinfo("big-1.bin")
        assert not big.flag_bits & 8  # its size known, from settle: its CRC led
        assert big.date_time == (2024, 5, 6, 7, 8, 8)  # the listed mtime (a zip's 2 s steps)
    for name in contents(bucket):
        events = [kind for kind, key, _ in log.events if key == name]
        assert events[0] == "settle", (name, events)


def test_an_upload_holds_a_short_source_to_its_size() -> None:
    """An upload sends a re-readable part with the headers planned from its size, bypassing
    the writer's count: the pump itself must refuse a source that gives fewer bytes."""
    from multiresp._uploading import Tracker, iter_body, plan_upload

    source = Truncated("b", "short", b"0123456789", Log())
    entry = source.settle(unnamed("short.bin", source))
    plan = plan_upload([entry], field="files")
    with pytest.raises(IntegrityError, match="size check"):
        b"".join(iter_body(plan, Tracker(plan, None)))
