"""The ASGI responses: thin edges that drive the pure encoders with I/O.

Each response resolves its entries (plain paths are stat'ed in a worker thread), decides its
headers, then sends the body produced by a :class:`~multiresp._pump.Pump` while a second task
reads ahead: the next batch (one thread hop's output) is read while this one is sent. A
watcher task listens for ``http.disconnect`` and cancels the transfer, which closes every
open file. A source that fails mid-stream raises out of the ASGI app, so the
server ends the connection without the chunked terminator or short of ``Content-Length``:
a client can never mistake the body for a complete archive.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping
from typing import IO, TypeAlias

import anyio
import anyio.to_thread
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import Receive, Scope, Send

from ._entries import Entry, entries_for_path
from ._http import choose
from ._multipart import MultipartWriter, multipart_size
from ._names import content_disposition
from ._pump import READ_BLOCK, Pump, check_unique
from ._zipwriter import (
    Compression,
    ZipEntryInfo,
    ZipWriter,
    zip_size,
)

BATCHES_AHEAD = 1  # batches read ahead of the one being sent; bounds memory per response

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

    def wants_crc(self, entry: Entry, sample: bytes) -> bool:
        if not entry.rereadable:
            return False
        if self.writer.compression == "store":  # the hot path: no info to build
            return bool(entry.size)
        return self.writer.wants_crc(self.info(entry, None), sample)

    def crc_ahead(self, entry: Entry) -> bool:
        info = self.info(entry, None)
        return self.writer.surely_stored(info) and self.wants_crc(entry, b"")

    def start(self, entry: Entry, crc: int | None, sample: bytes) -> bytes:
        return self.writer.start_entry(self.info(entry, crc), sample)

    def write(self, data: bytes) -> bytes:
        return self.writer.write(data)

    def end(self) -> bytes:
        return self.writer.end_entry()

    def finish(self) -> bytes:
        return self.writer.finish()


def predict_zip_size(entries: list[Entry]) -> int | None:
    """The exact stored archive size, or None when a size is unknown."""
    if any(entry.size is None for entry in entries):
        return None
    # Re-readable sources get their CRC computed ahead (layout 1): say so with any CRC value.
    return zip_size(_ZipEncoder.info(e, 0 if e.rereadable else None) for e in entries)


class _FilesResponse(Response):
    """What the streaming responses share: entries, headers, the send loop."""

    def __init__(
        self,
        entries: Entries,
        *,
        media_type: str,
        status_code: int,
        headers: Mapping[str, str] | None,
    ) -> None:
        self.status_code = status_code
        self.media_type = media_type
        self.background = None
        self.init_headers(headers)
        self._items: Iterable[EntryLike] | None = None
        self._stream: AsyncIterable[Entry] | None = None
        if isinstance(entries, AsyncIterable):
            self._stream = entries
        elif isinstance(entries, (str, bytes, os.PathLike)):
            raise TypeError("entries must be an iterable of entries or paths, not one path")
        else:
            self._items = entries

    async def _entries(self) -> list[Entry] | AsyncIterable[Entry]:
        """The entries, resolved and measured in one worker-thread hop; sets Content-Length
        when :meth:`_length` knows it."""
        if self._stream is not None:
            return self._stream
        assert self._items is not None
        items = self._items

        def prepare() -> tuple[list[Entry], int | None]:
            entries = _resolve(items)
            return entries, self._length(entries)

        entries, length = await anyio.to_thread.run_sync(prepare)
        if length is not None:
            self._set_header("content-length", str(length))
        return entries

    def _length(self, entries: list[Entry]) -> int | None:
        """The exact body length for these entries, when it is known before sending."""
        return None

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
        self, scope: Scope, receive: Receive, send: Send, body: AsyncIterator[list[bytes]]
    ) -> None:
        """Send ``body``, a stream of batches of pieces, reading ahead; stop on disconnect;
        raise what the body raised."""
        if scope.get("method") == "HEAD":
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        failure: list[BaseException] = []
        disconnected = False
        # The producer holds one finished batch while it waits for the sender to take it:
        # a buffer of BATCHES_AHEAD - 1 makes BATCHES_AHEAD batches ready beside the one sent.
        writer, reader = anyio.create_memory_object_stream[list[bytes]](BATCHES_AHEAD - 1)

        async def produce() -> None:
            try:
                async with writer:
                    async for batch in body:
                        await writer.send(batch)
            except Exception as exc:  # re-raised by the sending side, after the body stops
                failure.append(exc)
            finally:
                await _aclose(body)

        async def watch(cancel: anyio.CancelScope) -> None:
            nonlocal disconnected
            while (await receive())["type"] != "http.disconnect":
                pass
            disconnected = True
            cancel.cancel()

        async with anyio.create_task_group() as group:
            group.start_soon(produce)
            group.start_soon(watch, group.cancel_scope)
            async with reader:
                async for batch in reader:
                    for piece in batch:
                        await send({"type": "http.response.body", "body": piece, "more_body": True})
            if failure:
                group.cancel_scope.cancel()
                raise failure[0]
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            group.cancel_scope.cancel()


async def _aclose(body: AsyncIterator[list[bytes]]) -> None:
    close = getattr(body, "aclose", None)
    if close is not None:
        with anyio.CancelScope(shield=True):
            await close()


class ZipStreamResponse(_FilesResponse):
    """A zip archive built while it is sent, in bounded memory.

    When every size is known and compression is ``"store"``, the exact ``Content-Length`` is
    sent and ``HEAD`` is answered without reading any source; otherwise the body is chunked.

    Args:
        entries: Entries or paths (a folder's path sends its content), or an async iterable
            of entries produced while the response streams.
        filename: The download name for ``Content-Disposition``.
        compression: ``"store"``, ``"deflate"`` or ``"auto"`` (deflate what compresses).
        level: zlib level 0-9 for deflate; None for the fast default.
        status_code: The HTTP status.
        headers: Extra headers; ones given here win over the computed ones.

    Raises:
        UnsafeNameError: ``filename`` holds CR, LF or NUL.
        ValueError: an unknown compression.
    """

    def __init__(
        self,
        entries: Entries,
        *,
        filename: str = "files.zip",
        compression: Compression = "store",
        level: int | None = None,
        status_code: int = 200,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(
            entries, media_type="application/zip", status_code=status_code, headers=headers
        )
        self._zip_options(filename, compression, level)

    def _length(self, entries: list[Entry]) -> int | None:
        return predict_zip_size(entries) if self.compression == "store" else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        entries = await self._entries()
        await self._start(send)
        pump = Pump(entries, _ZipEncoder(self.compression, self.level))
        await self._send_body(scope, receive, send, pump.batches())


class ZipResponse(_FilesResponse):
    """ "Zip and send" done right: built in a temporary file off the event loop, then sent.

    The temporary file is unlinked as soon as it is created (it lives only through its open
    descriptor), so it disappears when the response ends, fails, or the client goes away,
    and even if the process dies.

    Args:
        entries: Entries or paths (a folder's path sends its content), or an async iterable.
        filename: The download name for ``Content-Disposition``.
        compression: ``"deflate"`` (default), ``"store"`` or ``"auto"``.
        level: zlib level 0-9 for deflate; None for the fast default.
        status_code: The HTTP status.
        headers: Extra headers; ones given here win over the computed ones.
    """

    def __init__(
        self,
        entries: Entries,
        *,
        filename: str = "files.zip",
        compression: Compression = "deflate",
        level: int | None = None,
        status_code: int = 200,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(
            entries, media_type="application/zip", status_code=status_code, headers=headers
        )
        self._zip_options(filename, compression, level)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        entries = await self._entries()
        spool: IO[bytes] = await anyio.to_thread.run_sync(tempfile.TemporaryFile)
        try:
            pump = Pump(entries, _ZipEncoder(self.compression, self.level))
            async for batch in pump.batches():
                await anyio.to_thread.run_sync(spool.writelines, batch)
            size = await anyio.to_thread.run_sync(spool.tell)
            self._set_header("content-length", str(size))
            await self._start(send)
            await anyio.to_thread.run_sync(spool.seek, 0)
            await self._send_body(scope, receive, send, _read_blocks(spool))
        finally:
            spool.close()


async def _read_blocks(f: IO[bytes]) -> AsyncIterator[list[bytes]]:
    while block := await anyio.to_thread.run_sync(f.read, READ_BLOCK):
        yield [block]


class _MultipartEncoder:
    """Adapts the pure :class:`MultipartWriter` to the pump."""

    def __init__(self, writer: MultipartWriter) -> None:
        self.writer = writer

    def wants_crc(self, entry: Entry, sample: bytes) -> bool:
        return False

    def crc_ahead(self, entry: Entry) -> bool:
        return False

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
    source.

    Args:
        entries: Entries or paths (a folder's path sends its content), or an async iterable
            of entries produced while the response streams.
        subtype: The multipart subtype; ``mixed`` by default.
        boundary: The boundary. Leave it out: a random boundary cannot be forged by a file.
        status_code: The HTTP status.
        headers: Extra headers; ones given here win over the computed ones.

    Raises:
        ValueError: the subtype is not a token or the boundary breaks RFC 2046.
    """

    def __init__(
        self,
        entries: Entries,
        *,
        subtype: str = "mixed",
        boundary: str | None = None,
        status_code: int = 200,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        writer = MultipartWriter(subtype=subtype, boundary=boundary)  # validates both now
        self.subtype, self.boundary = subtype, writer.boundary
        super().__init__(
            entries,
            media_type=writer.content_type,
            status_code=status_code,
            headers=headers,
        )

    def _length(self, entries: list[Entry]) -> int | None:
        if any(entry.size is None for entry in entries):
            return None
        parts = [(e.name, e.size or 0, e.media_type) for e in entries]
        return multipart_size(parts, boundary=self.boundary, subtype=self.subtype)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        entries = await self._entries()
        await self._start(send)
        writer = MultipartWriter(subtype=self.subtype, boundary=self.boundary)
        pump = Pump(entries, _MultipartEncoder(writer))
        await self._send_body(scope, receive, send, pump.batches())


ZIP_MEDIA_TYPE = "application/zip"
MULTIPART_MEDIA_TYPE = "multipart/mixed"


def negotiate(
    request: Request,
    entries: Entries,
    *,
    filename: str = "files.zip",
    compression: Compression = "store",
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
    """
    chosen = choose(request.headers.get("accept"), [ZIP_MEDIA_TYPE, MULTIPART_MEDIA_TYPE])
    if chosen == ZIP_MEDIA_TYPE:
        return ZipStreamResponse(entries, filename=filename, compression=compression)
    if chosen == MULTIPART_MEDIA_TYPE:
        return MultipartResponse(entries)
    return PlainTextResponse(
        f"Not Acceptable: this resource is available as {ZIP_MEDIA_TYPE} or "
        f"{MULTIPART_MEDIA_TYPE}\n",
        status_code=406,
    )


__all__ = (
    "Entries",
    "EntryLike",
    "MultipartResponse",
    "ZipResponse",
    "ZipStreamResponse",
    "negotiate",
)
