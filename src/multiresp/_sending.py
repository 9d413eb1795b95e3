"""The base of the streaming responses: entries, headers, conditional answers, the send loop.

How it works: :class:`_FilesResponse` resolves its entries (plain paths are stat'ed in a
worker thread), decides its headers, answers a conditional or range request (304, 416, 206,
with :class:`~multiresp._rangereader.RangeReader`), then sends the body produced by a
:class:`~multiresp._pump.Pump` while a second task reads ahead: the next batch (one thread
hop's output) is read while this one is sent, as long as the client keeps up (a
:class:`~multiresp._pace.Pace` shrinks the reads and stops the read-ahead for a slow client, so
that it holds a few hundred KiB of the server's memory). A watcher task listens for
``http.disconnect`` and cancels the transfer, which closes every open file. A source that
fails mid-stream is logged once on the ``multiresp`` logger, and the app returns without
finishing the body, so the server ends the connection without the chunked terminator or short
of ``Content-Length``: a client can never mistake the body for a complete archive. Every
transfer ends with one DEBUG line on that logger (:class:`_Transfer`), then the response's
background task runs.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import secrets
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping
from typing import IO, TypeAlias

import anyio
import anyio.to_thread
from starlette.background import BackgroundTask
from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from ._entries import Entry, entries_for_path
from ._names import content_disposition
from ._pace import Pace
from ._pump import Pump, check_unique
from ._rangereader import RangeReader
from ._ranges import (
    BYTERANGES_BOUNDARY_PREFIX,
    UNSATISFIABLE,
    ByteRange,
    byteranges,
    http_date,
    if_range_holds,
    not_modified,
    parse_range,
)
from ._sources import settle_all
from ._validators import _Ranged
from ._zipwriter import Compression, ZipWriter

logger = logging.getLogger("multiresp")

EntryLike: TypeAlias = "Entry | str | os.PathLike[str]"
Entries: TypeAlias = "Iterable[EntryLike] | AsyncIterable[Entry]"


def _to_entries(item: EntryLike) -> list[Entry]:
    if isinstance(item, Entry):
        return [item]
    return entries_for_path(item)


def _resolve(items: Iterable[EntryLike]) -> list[Entry]:
    """Entries from entries and paths (folders expand to their content), each settled by its
    source (facts fetched when the response starts); names unique. Blocking: run in a worker
    thread, before the headers, so that a failure is a 500, not an aborted body."""
    entries = [entry for item in items for entry in _to_entries(item)]
    entries = settle_all(entries)
    check_unique(entries, set())
    return entries


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
