"""The ASGI responses: thin edges that drive the pure encoders with I/O.

Each response resolves its entries (plain paths are stat'ed in a worker thread), decides its
headers, then sends the body produced by a :class:`~multiresp._pump.Pump` while a second task
reads ahead: the next batch (one thread hop's output) is read while this one is sent, as long
as the client keeps up (a :class:`~multiresp._pump.Pace` shrinks the reads and stops the
read-ahead for a slow client, so that it holds a few hundred KiB of the server's memory). A
watcher task listens for ``http.disconnect`` and cancels the transfer, which closes every
open file. A source that fails mid-stream is logged once on the ``multiresp`` logger, and the
app returns without finishing the body, so the server ends the connection without the
chunked terminator or short of ``Content-Length``: a client can never mistake the body for a
complete archive. Every transfer ends with one DEBUG line on that logger.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import secrets
import tempfile
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import IO, Any, TypeAlias

import anyio
import anyio.to_thread
from starlette.background import BackgroundTask
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import Receive, Scope, Send

from ._entries import BytesSource, Entry, entries_for_path
from ._http import choose
from ._multipart import MultipartWriter
from ._names import content_disposition
from ._plan import MultipartPlan, PartFacts, ZipPlan, plan_multipart, plan_zip
from ._pump import Pace, Pump, RangeReader, check_unique
from ._ranges import (
    BYTERANGES_BOUNDARY_PREFIX,
    UNSATISFIABLE,
    ByteRange,
    byteranges,
    derived_boundary,
    http_date,
    if_range_holds,
    manifest_etag,
    not_modified,
    parse_range,
)
from ._zipformat import crc32
from ._zipwriter import (
    Compression,
    ZipEntryInfo,
    ZipWriter,
    zip_size,
)

logger = logging.getLogger("multiresp")

ZIP_MEDIA_TYPE = "application/zip"
MULTIPART_MEDIA_TYPE = "multipart/mixed"
BOUNDARY_KEY_VARIABLE = "MULTIRESP_BOUNDARY_KEY"
BOUNDARY_KEY_BYTES = 32  # a random per-process key when the variable is unset
_PROCESS_KEY = secrets.token_bytes(BOUNDARY_KEY_BYTES)

EntryLike: TypeAlias = "Entry | str | os.PathLike[str]"
Entries: TypeAlias = "Iterable[EntryLike] | AsyncIterable[Entry]"


def _to_entries(item: EntryLike) -> list[Entry]:
    if isinstance(item, Entry):
        return [item]
    return entries_for_path(item)


def _resolve(items: Iterable[EntryLike]) -> list[Entry]:
    """Entries from entries and paths (folders expand to their content); names unique."""
    entries = [entry for item in items for entry in _to_entries(item)]
    check_unique(entries, set())  # before the headers: a 500, not an aborted body
    return entries


class _ZipEncoder:
    """Adapts the pure :class:`ZipWriter` to the pump."""

    def __init__(self, compression: Compression, level: int | None) -> None:
        self.writer = ZipWriter(compression=compression, level=level)

    @staticmethod
    def info(entry: Entry, crc: int | None) -> ZipEntryInfo:
        return ZipEntryInfo(
            name=entry.name, size=entry.size, mtime=entry.mtime, crc32=crc,
            media_type=entry.media_type, mode=entry.mode,
        )  # fmt: skip

    def crc_first(self, entry: Entry, sample: bytes | None) -> bool:
        """True when the entry takes layout 1, by the writer's one rule: its CRC is then
        computed before its header (only a re-readable source's can be)."""
        if not entry.size:
            return False
        info = self.info(entry, 0 if entry.rereadable else None)
        return self.writer.layout(info, sample) == "store"

    def start(self, entry: Entry, crc: int | None, sample: bytes) -> bytes:
        return self.writer.start_entry(self.info(entry, crc), sample)

    def write(self, data: bytes) -> bytes:
        return self.writer.write(data)

    def end(self) -> bytes:
        return self.writer.end_entry()

    def finish(self) -> bytes:
        return self.writer.finish()


def predict_zip_size(entries: list[Entry], compression: Compression = "store") -> int | None:
    """The exact archive size, or None when it is not known before the bytes are read (a
    size unknown, or an entry compressed or sampled by "auto")."""
    if any(entry.size is None for entry in entries):
        return None
    plan = _zip_plan(entries, compression)
    if plan is not None:
        return plan.total
    if compression != "store":
        return None
    # One-shot sources: framed as deflate stored blocks (layout 2), still of known length.
    return zip_size(_ZipEncoder.info(e, 0 if e.rereadable else None) for e in entries)


def _zip_plan(entries: list[Entry], compression: Compression) -> ZipPlan | None:
    """The plan of an archive of re-readable sources, or None (see :func:`plan_zip`)."""
    if not all(entry.rereadable for entry in entries):
        return None
    return plan_zip(compression, (_ZipEncoder.info(e, None) for e in entries))


def _newest(entries: list[Entry]) -> dt.datetime | None:
    times = [entry.mtime for entry in entries if entry.mtime is not None]
    return max(times) if times else None


def _facts(entries: list[Entry]) -> Iterator[tuple[object, ...]]:
    """What decides each entry's bytes, for the ETag: never an inode or absolute path."""
    for entry in entries:
        source = entry.source
        digest = crc32(source.data, 0) if isinstance(source, BytesSource) else None
        yield (entry.name, entry.size, entry.mtime_ns, entry.mode, entry.media_type, digest)


def boundary_key() -> bytes:
    """The key that derives multipart boundaries: ``MULTIRESP_BOUNDARY_KEY`` (shared by the
    replicas), else a random key of this process."""
    shared = os.environ.get(BOUNDARY_KEY_VARIABLE)
    return shared.encode("utf-8") if shared else _PROCESS_KEY


@dataclass(frozen=True, slots=True)
class _Ranged:
    """What a body that serves ranges knows before its first byte."""

    plan: ZipPlan | MultipartPlan
    etag: str
    last_modified: dt.datetime | None


class _Transfer:
    """What one response did, for its DEBUG line: entries, bytes, time, how it ended."""

    def __init__(self, scope: Scope, kind: str) -> None:
        self.what = f"{kind} for {scope.get('method', '?')} {scope.get('path', '?')}"
        self.began = time.monotonic()
        self.entries = 0
        self.sent = 0
        self.outcome = "failed"  # until it ends otherwise

    def log(self) -> None:
        logger.debug(
            "%s: %d entries, %d bytes in %.3f s: %s",
            self.what, self.entries, self.sent, time.monotonic() - self.began, self.outcome,
        )  # fmt: skip


class _FilesResponse(Response):
    """What the streaming responses share: entries, headers, the send loop."""

    def __init__(
        self,
        entries: Entries,
        *,
        media_type: str,
        status_code: int,
        headers: Mapping[str, str] | None,
        background: BackgroundTask | None = None,
    ) -> None:
        self.status_code = status_code
        self.media_type = media_type
        self.background = background
        self.init_headers(headers)
        self._items: Iterable[EntryLike] | None = None
        self._stream: AsyncIterable[Entry] | None = None
        self._ranged: _Ranged | None = None
        if isinstance(entries, AsyncIterable):
            self._stream = entries
        elif isinstance(entries, (str, bytes, os.PathLike)):
            raise TypeError("entries must be an iterable of entries or paths, not one path")
        else:
            self._items = entries

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Send the response, then run ``background`` (once the transfer has ended: complete,
        failed, or left by the client)."""
        transfer = _Transfer(scope, type(self).__name__)
        try:
            await self._respond(scope, receive, send, transfer)
        finally:
            transfer.log()
        if self.background is not None:
            await self.background()

    async def _respond(
        self, scope: Scope, receive: Receive, send: Send, transfer: _Transfer
    ) -> None:
        raise NotImplementedError

    async def _entries(self) -> list[Entry] | AsyncIterable[Entry]:
        """The entries, resolved and measured in one worker-thread hop; sets Content-Length
        when :meth:`_length` knows it, and the validators when :meth:`_validators` gives
        them."""
        if self._stream is not None:
            return self._stream
        assert self._items is not None
        items = self._items

        def prepare() -> tuple[list[Entry], int | None]:
            entries = _resolve(items)
            self._ranged = self._validators(entries)
            return entries, self._length(entries)

        entries, length = await anyio.to_thread.run_sync(
            prepare, limiter=anyio.CapacityLimiter(1), abandon_on_cancel=True
        )
        if length is not None:
            self._set_header("content-length", str(length))
        if self._ranged is not None:
            self._set_header("etag", self._ranged.etag)
            if self._ranged.last_modified is not None:
                self._set_header("last-modified", http_date(self._ranged.last_modified))
            self._set_header("accept-ranges", "bytes")
        return entries

    def _length(self, entries: list[Entry]) -> int | None:
        """The exact body length for these entries, when it is known before sending."""
        return None if self._ranged is None else self._ranged.plan.total

    def _validators(self, entries: list[Entry]) -> _Ranged | None:
        """The plan and validators of a body that can be sent again, byte for byte, in part
        (every size known, every source re-readable, a layout known without reading); None
        otherwise."""
        return None

    async def _conditional(
        self, scope: Scope, receive: Receive, send: Send, transfer: _Transfer, entries: object
    ) -> bool:
        """Answer a conditional or range request (304, 416, 206) and return True; False when
        the whole body is to be sent."""
        ranged = self._ranged
        if ranged is None or not isinstance(entries, list):
            return False
        request = Headers(scope=scope)
        method = scope.get("method", "GET")
        if self.status_code == 200 and not_modified(
            method, request.get("if-none-match"), request.get("if-modified-since"),
            ranged.etag, ranged.last_modified,
        ):  # fmt: skip
            self._drop_headers("content-length", "content-type")
            return await self._answer(send, 304, transfer, "not modified")
        if method != "GET" or self.status_code != 200 or "range" not in request:
            return False
        now = dt.datetime.now(dt.timezone.utc)
        if not if_range_holds(request.get("if-range"), ranged.etag, ranged.last_modified, now):
            return False
        total = ranged.plan.total
        ranges = parse_range(request["range"], total)
        if ranges is None:
            return False
        if ranges == UNSATISFIABLE or isinstance(ranges, str):
            self.headers["content-range"] = f"bytes */{total}"
            self.headers["content-length"] = "0"
            return await self._answer(send, 416, transfer, "unsatisfiable range")
        self.status_code = 206
        if len(ranges) == 1:
            parts = [(b"", ranges[0])]
            close = b""
            self.headers["content-range"] = ranges[0].content_range(total)
            self.headers["content-length"] = str(ranges[0].stop - ranges[0].start)
        else:
            boundary = BYTERANGES_BOUNDARY_PREFIX + secrets.token_hex(16)
            framed = byteranges(ranges, total, self.headers["content-type"], boundary)
            parts = [(part.head, part.range) for part in framed.parts]
            close = framed.close
            self.headers["content-type"] = framed.content_type
            self.headers["content-length"] = str(framed.length)
        await self._start(send)
        pace = Pace()
        reader = RangeReader(ranged.plan, entries)
        await self._send_body(
            scope, receive, send, _range_batches(reader, parts, close, pace),
            pace=pace, transfer=transfer,
        )  # fmt: skip
        return True

    async def _answer(self, send: Send, status: int, transfer: _Transfer, outcome: str) -> bool:
        self.status_code = status
        await self._start(send)
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        transfer.outcome = outcome
        return True

    def _drop_headers(self, *names: str) -> None:
        for name in names:
            if name in self.headers:
                del self.headers[name]

    def _zip_options(self, filename: str, compression: Compression, level: int | None) -> None:
        ZipWriter(compression=compression, level=level)  # refuses bad options now, not mid-body
        self.compression, self.level = compression, level
        self._set_header("content-disposition", content_disposition(filename))

    def _set_header(self, name: str, value: str) -> None:
        if name not in self.headers:
            self.headers[name] = value

    async def _start(self, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )

    async def _send_body(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        body: AsyncIterator[list[bytes]],
        *,
        pace: Pace,
        transfer: _Transfer,
        pump: Pump | None = None,
    ) -> None:
        """Send ``body``, a stream of batches of pieces, reading ahead while the client keeps
        up; stop on disconnect. A failure of the body is logged (naming the entry being read,
        from ``pump``) and ends the app without finishing the body: the server then aborts
        the connection."""
        if scope.get("method") == "HEAD":
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            transfer.outcome = "complete"
            return
        failure: list[BaseException] = []
        server_error: Exception | None = None
        disconnected = False
        # The producer hands over one batch at a time; while the client keeps up it reads the
        # next while this one is sent, otherwise it waits until this one was sent (``done``),
        # so that a slow client never holds two batches.
        writer, reader = anyio.create_memory_object_stream[tuple[list[bytes], anyio.Event]]()

        async def produce() -> None:
            try:
                async with writer:
                    async for batch in body:
                        done = anyio.Event()
                        await writer.send((batch, done))
                        if not pace.ahead:
                            await done.wait()
            except Exception as exc:  # logged by the sending side, after the body stops
                failure.append(exc)
            finally:
                await _aclose(body)

        async def watch(cancel: anyio.CancelScope) -> None:
            nonlocal disconnected
            await _disconnected(receive)
            disconnected = True
            cancel.cancel()

        with pace:  # counted among the bodies that share the memory budget
            async with anyio.create_task_group() as group:
                group.start_soon(produce)
                group.start_soon(watch, group.cancel_scope)
                try:
                    async with reader:
                        async for batch, done in reader:
                            began, size = time.monotonic(), 0
                            for piece in batch:
                                message = {
                                    "type": "http.response.body",
                                    "body": piece,
                                    "more_body": True,
                                }
                                await send(message)
                                size += len(piece)
                            del batch
                            pace.sent(size, time.monotonic() - began)
                            transfer.sent += size
                            done.set()
                    if not failure:
                        await send({"type": "http.response.body", "body": b"", "more_body": False})
                        transfer.outcome = "complete"
                except Exception as exc:  # from the server's send: raised bare, not in a group
                    server_error = exc
                group.cancel_scope.cancel()
        if server_error is not None:
            raise server_error
        if pump is not None:
            transfer.entries = pump.entries_started
        if failure:
            _log_failure(failure[0], pump)
        elif transfer.outcome != "complete" and disconnected:
            transfer.outcome = "client left"


async def _disconnected(receive: Receive) -> None:
    """Return once the client has gone (``http.disconnect``)."""
    while (await receive())["type"] != "http.disconnect":
        pass


def _log_failure(exc: BaseException, pump: Pump | None) -> None:
    entry = getattr(exc, "entry", None) or (pump.current if pump is not None else None)
    where = f"entry {entry!r}" if entry else "the body"
    logger.error(
        "transfer aborted: %s failed: %s: %s", where, type(exc).__name__, exc, exc_info=exc
    )


async def _aclose(body: AsyncIterator[list[bytes]]) -> None:
    close = getattr(body, "aclose", None)
    if close is not None:
        with anyio.CancelScope(shield=True):
            await close()


class ZipStreamResponse(_FilesResponse):
    """A zip archive built while it is sent, in bounded memory.

    When every size is known and compression is ``"store"`` (or ``"auto"`` with only
    incompressible media types), the exact ``Content-Length`` is sent and ``HEAD`` is answered
    without reading any source; otherwise the body is chunked. When, in addition, every source
    can be read again (paths, bytes), the response carries a strong ``ETag`` (a hash of the
    manifest: names, sizes, mtimes, modes, media types, never an inode or absolute path),
    ``Last-Modified`` and ``Accept-Ranges: bytes``, and answers ``Range`` (206, several
    ranges as ``multipart/byteranges``, 416), ``If-Range``, ``If-None-Match`` and
    ``If-Modified-Since`` (304). A range reads only the sources it overlaps, and the CRCs of
    the entries whose records it covers.

    Args:
        entries: Entries or paths (a folder's path sends its content), or an async iterable
            of entries produced while the response streams.
        filename: The download name for ``Content-Disposition``.
        compression: ``"store"``, ``"deflate"`` or ``"auto"`` (deflate what compresses).
        level: zlib level 0-9 for deflate; None for the fast default.
        status_code: The HTTP status.
        headers: Extra headers; ones given here win over the computed ones.
        background: A Starlette ``BackgroundTask`` (or ``BackgroundTasks``) run after the
            body, as Starlette's own responses do; FastAPI attaches an endpoint's
            ``BackgroundTasks`` here. It runs once the transfer has ended however it ended:
            complete, left by the client, or failed (a source failed: then it runs before
            the connection is aborted; the failure is logged on the ``multiresp`` logger).

    Raises:
        UnsafeNameError: ``filename`` holds CR, LF or NUL.
        ValueError: an unknown compression.
    """

    media_type = ZIP_MEDIA_TYPE  # what FastAPI's OpenAPI documents for this response_class

    def __init__(
        self,
        entries: Entries,
        *,
        filename: str = "files.zip",
        compression: Compression = "store",
        level: int | None = None,
        status_code: int = 200,
        headers: Mapping[str, str] | None = None,
        background: BackgroundTask | None = None,
    ) -> None:
        super().__init__(
            entries, media_type=ZIP_MEDIA_TYPE, status_code=status_code, headers=headers,
            background=background,
        )  # fmt: skip
        self._zip_options(filename, compression, level)

    def _length(self, entries: list[Entry]) -> int | None:
        if self._ranged is not None:
            return self._ranged.plan.total
        return predict_zip_size(entries, self.compression)

    def _validators(self, entries: list[Entry]) -> _Ranged | None:
        plan = _zip_plan(entries, self.compression)
        if plan is None:
            return None
        etag = manifest_etag(f"zip {self.compression}", _facts(entries))
        return _Ranged(plan, etag, _newest(entries))

    async def _respond(
        self, scope: Scope, receive: Receive, send: Send, transfer: _Transfer
    ) -> None:
        entries = await self._entries()
        if await self._conditional(scope, receive, send, transfer, entries):
            return
        await self._start(send)
        pace = Pace()
        pump = Pump(entries, _ZipEncoder(self.compression, self.level), pace)
        await self._send_body(
            scope, receive, send, pump.batches(), pace=pace, transfer=transfer, pump=pump
        )


class ZipResponse(_FilesResponse):
    """ "Zip and send" done right: built in a temporary file off the event loop, then sent.

    The temporary file is unlinked as soon as it is created (it lives only through its open
    descriptor), so it disappears when the response ends, fails, or the client goes away,
    and even if the process dies. A client that leaves while the archive is being built
    stops the build within one block of reading. ``HEAD`` builds nothing and reads no
    source: it carries the exact ``Content-Length`` when compression is ``"store"`` and
    every size is known, and no ``Content-Length`` otherwise.

    Args:
        entries: Entries or paths (a folder's path sends its content), or an async iterable.
        filename: The download name for ``Content-Disposition``.
        compression: ``"deflate"`` (default), ``"store"`` or ``"auto"``.
        level: zlib level 0-9 for deflate; None for the fast default.
        status_code: The HTTP status.
        headers: Extra headers; ones given here win over the computed ones.
        background: Run after the body, as for :class:`ZipStreamResponse`. A source that
            fails while the archive is built fails the request before its headers (a 500
            from the server), and then the task does not run, as with Starlette's own
            responses when the endpoint raises.
    """

    media_type = ZIP_MEDIA_TYPE  # what FastAPI's OpenAPI documents for this response_class

    def __init__(
        self,
        entries: Entries,
        *,
        filename: str = "files.zip",
        compression: Compression = "deflate",
        level: int | None = None,
        status_code: int = 200,
        headers: Mapping[str, str] | None = None,
        background: BackgroundTask | None = None,
    ) -> None:
        super().__init__(
            entries, media_type=ZIP_MEDIA_TYPE, status_code=status_code, headers=headers,
            background=background,
        )  # fmt: skip
        self._zip_options(filename, compression, level)

    def _length(self, entries: list[Entry]) -> int | None:
        # Only HEAD uses it: a GET sends the spooled archive's own size.
        return predict_zip_size(entries, self.compression)

    async def _respond(
        self, scope: Scope, receive: Receive, send: Send, transfer: _Transfer
    ) -> None:
        head = scope.get("method") == "HEAD"
        entries = await self._entries()
        if head:
            await self._start(send)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            transfer.outcome = "complete"
            return
        if "content-length" in self.headers:  # predicted for HEAD; the spool's size counts
            del self.headers["content-length"]
        spool: IO[bytes] = await anyio.to_thread.run_sync(tempfile.TemporaryFile)
        try:
            pump = Pump(entries, _ZipEncoder(self.compression, self.level))
            if not await self._spool(receive, pump, spool, transfer):
                transfer.outcome = "client left"
                return
            size = await anyio.to_thread.run_sync(spool.tell)
            self._set_header("content-length", str(size))
            await self._start(send)
            await anyio.to_thread.run_sync(spool.seek, 0)
            pace = Pace()
            await self._send_body(
                scope, receive, send, _read_blocks(spool, pace), pace=pace, transfer=transfer
            )
        finally:
            spool.close()

    @staticmethod
    async def _spool(receive: Receive, pump: Pump, spool: IO[bytes], transfer: _Transfer) -> bool:
        """Write the archive to ``spool``; False when the client left first. A failure of a
        source is raised as itself (the server answers 500)."""
        failure: Exception | None = None
        left = False

        async def watch(cancel: anyio.CancelScope) -> None:
            nonlocal left
            await _disconnected(receive)
            left = True
            cancel.cancel()

        async with anyio.create_task_group() as group:
            group.start_soon(watch, group.cancel_scope)
            batches = pump.batches()
            try:
                async for batch in batches:
                    # Not abandoned on cancel: the spool is closed only once no thread writes.
                    await anyio.to_thread.run_sync(spool.writelines, batch, limiter=pump.limiter)
            except Exception as exc:  # raised bare below, not in a group
                failure = exc
            finally:
                await _aclose(batches)
            group.cancel_scope.cancel()
        transfer.entries = pump.entries_started
        if failure is not None:
            raise failure
        return not left


async def _read_blocks(f: IO[bytes], pace: Pace) -> AsyncIterator[list[bytes]]:
    while block := await anyio.to_thread.run_sync(f.read, pace.block):
        yield [block]


async def _range_batches(
    reader: RangeReader, parts: list[tuple[bytes, ByteRange]], close: bytes, pace: Pace
) -> AsyncIterator[list[bytes]]:
    """The bytes of ``parts`` (a head, then a range of the body) and ``close``, read by
    ``reader`` a hop at a time in a thread of its own."""
    limiter = anyio.CapacityLimiter(1)
    try:
        for head, byte_range in parts:
            reader.select(byte_range.start, byte_range.stop)
            first = [head] if head else []
            while batch := await anyio.to_thread.run_sync(
                reader.step, pace.block, limiter=limiter, abandon_on_cancel=True
            ):
                yield first + batch
                first = []
            if first:
                yield first
        if close:
            yield [close]
    finally:
        reader.close()


class _MultipartEncoder:
    """Adapts the pure :class:`MultipartWriter` to the pump."""

    def __init__(self, writer: MultipartWriter) -> None:
        self.writer = writer

    def start(self, entry: Entry, crc: int | None, sample: bytes) -> bytes:
        return self.writer.start_part(entry.name, size=entry.size, media_type=entry.media_type)

    def write(self, data: bytes) -> bytes:
        return self.writer.write(data)

    def end(self) -> bytes:
        return self.writer.end_part()

    def finish(self) -> bytes:
        return self.writer.finish()


class MultipartResponse(_FilesResponse):
    """One part per entry in a ``multipart/<subtype>`` body, streamed in bounded memory.

    Each part carries ``Content-Type``, ``Content-Disposition: attachment; filename="..."``
    (plus ``filename*=UTF-8''...`` for non-ASCII names) and ``Content-Length`` when its size is
    known. When every size is known the total ``Content-Length`` is exact and ``HEAD`` reads no
    source. When every source can also be read again (paths, bytes), the boundary is fixed
    and the body serves validators and ranges as :class:`ZipStreamResponse` does.

    Args:
        entries: Entries or paths (a folder's path sends its content), or an async iterable
            of entries produced while the response streams.
        subtype: The multipart subtype; ``mixed`` by default.
        boundary: The boundary. Leave it out: then it is derived from the manifest with a
            key only the servers hold (``MULTIRESP_BOUNDARY_KEY``, else a random key of the
            process), so no file can forge it and replicas sharing the key agree; it is
            random per response when the body cannot serve ranges.
        status_code: The HTTP status.
        headers: Extra headers; ones given here win over the computed ones.
        background: Run after the body, as for :class:`ZipStreamResponse` (also when the
            client left or a source failed).

    Raises:
        ValueError: the subtype is not a token or the boundary breaks RFC 2046.
    """

    media_type = MULTIPART_MEDIA_TYPE  # what FastAPI's OpenAPI documents for response_class

    def __init__(
        self,
        entries: Entries,
        *,
        subtype: str = "mixed",
        boundary: str | None = None,
        status_code: int = 200,
        headers: Mapping[str, str] | None = None,
        background: BackgroundTask | None = None,
    ) -> None:
        writer = MultipartWriter(subtype=subtype, boundary=boundary)  # validates both now
        self.subtype, self.boundary = subtype, writer.boundary
        self._boundary_given = boundary is not None
        super().__init__(
            entries,
            media_type=writer.content_type,
            status_code=status_code,
            headers=headers,
            background=background,
        )

    def _length(self, entries: list[Entry]) -> int | None:
        if any(entry.size is None for entry in entries):
            return None
        return self._plan(entries).total

    def _plan(self, entries: list[Entry]) -> MultipartPlan:
        parts = (PartFacts(e.name, e.size or 0, e.media_type) for e in entries)
        return plan_multipart(parts, boundary=self.boundary, subtype=self.subtype)

    def _validators(self, entries: list[Entry]) -> _Ranged | None:
        """A sized body of re-readable sources gets a fixed boundary: the one given, or one
        derived from the manifest with the servers' key (:func:`boundary_key`)."""
        if any(e.size is None or not e.rereadable for e in entries):
            return None
        facts = list(_facts(entries))
        if not self._boundary_given:
            base = manifest_etag(f"multipart {self.subtype}", facts)
            self.boundary = derived_boundary(boundary_key(), base)
        etag = manifest_etag(f"multipart {self.subtype} {self.boundary}", facts)
        plan = self._plan(entries)
        self.headers["content-type"] = plan.content_type
        return _Ranged(plan, etag, _newest(entries))

    async def _respond(
        self, scope: Scope, receive: Receive, send: Send, transfer: _Transfer
    ) -> None:
        entries = await self._entries()
        if await self._conditional(scope, receive, send, transfer, entries):
            return
        await self._start(send)
        writer = MultipartWriter(subtype=self.subtype, boundary=self.boundary)
        pace = Pace()
        pump = Pump(entries, _MultipartEncoder(writer), pace)
        await self._send_body(
            scope, receive, send, pump.batches(), pace=pace, transfer=transfer, pump=pump
        )


NEGOTIATED_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The files, as the request's Accept header asks",
        "content": {ZIP_MEDIA_TYPE: {}, MULTIPART_MEDIA_TYPE: {}},
    },
    406: {"description": f"Accept allows neither {ZIP_MEDIA_TYPE} nor {MULTIPART_MEDIA_TYPE}"},
}
"""What a route that returns :func:`negotiate` answers, for FastAPI's OpenAPI: pass it as
``@app.get(path, responses=NEGOTIATED_RESPONSES)``."""


def negotiate(
    request: Request,
    entries: Entries,
    *,
    filename: str = "files.zip",
    compression: Compression = "store",
    background: BackgroundTask | None = None,
) -> Response:
    """The response the client's ``Accept`` header asks for.

    ``multipart/mixed`` gives a :class:`MultipartResponse`; ``application/zip``, ``*/*`` or no
    ``Accept`` gives a :class:`ZipStreamResponse` (preferred on a tie of q-values); when
    neither is acceptable the answer is ``406 Not Acceptable``.

    Args:
        request: The Starlette request (its ``Accept`` header is read).
        entries: As for the responses.
        filename: The zip download name.
        compression: The zip compression.
        background: Run after the response, whichever it is (see
            :class:`ZipStreamResponse`). For FastAPI's OpenAPI, declare the route with
            ``responses=NEGOTIATED_RESPONSES``.
    """
    chosen = choose(request.headers.get("accept"), [ZIP_MEDIA_TYPE, MULTIPART_MEDIA_TYPE])
    vary = {"vary": "Accept"}  # caches must key the answer on Accept
    if chosen == ZIP_MEDIA_TYPE:
        return ZipStreamResponse(
            entries, filename=filename, compression=compression, headers=vary,
            background=background,
        )  # fmt: skip
    if chosen == MULTIPART_MEDIA_TYPE:
        return MultipartResponse(entries, headers=vary, background=background)
    return PlainTextResponse(
        f"Not Acceptable: this resource is available as {ZIP_MEDIA_TYPE} or "
        f"{MULTIPART_MEDIA_TYPE}\n",
        status_code=406,
        headers=vary,
        background=background,
    )


__all__ = (
    "NEGOTIATED_RESPONSES",
    "Entries",
    "EntryLike",
    "MultipartResponse",
    "ZipResponse",
    "ZipStreamResponse",
    "negotiate",
)
