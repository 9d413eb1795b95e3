"""Body bytes in, reader events out: the receive path, with no HTTP library in it.

How this works: a :class:`BodyDecoder` is made from what the headers say (the Content-Type,
the Content-Encoding) or from an explicit format, and from the :class:`~multiresp.Limits`. It
is fed the body as sent, in whatever pieces arrive (``receive``), undoes the Content-Encoding
in bounded pieces (:class:`_Inflater`), feeds the pure format reader (``ZipReader`` or
``MultipartReader``) and gives its h11-style events (``next_event``). It counts the bytes as
sent and the content bytes that come out. A
:class:`Batcher` groups the events into batches for the file writer
(:class:`~multiresp._writer.Writer`, which drives a :class:`~multiresp._sink.FileSink`).

This is the one path from body bytes to verified files: the httpx client uses it for
downloads, and a receiver of uploads can use it for request bodies::

    decoder = BodyDecoder(content_type, limits=limits)
    batcher = Batcher(decoder)
    with FileSink(dest, limits=limits) as sink, Writer(sink) as writer:
        for piece in body:
            for batch in batcher.feed(piece):
                writer.put(batch)
        for batch in batcher.finish():
            writer.put(batch)
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from typing import Literal, Protocol

from ._errors import MultirespError, ProtocolError
from ._events import NEED_DATA, Data, End, EntryEnd, EntryStart, Event, _Sentinel
from ._multipart import MultipartReader, boundary_from_content_type
from ._names import parse_header_params
from ._types import Limits
from ._zipreader import ZipReader

Format = Literal["zip", "multipart"]
ZIP_MEDIA_TYPES = frozenset({"application/zip", "application/x-zip-compressed"})
BATCH_BYTES = 1 << 20  # bytes of content handed to the file writer at once
DECODE_STEP = 1 << 20  # most bytes a gzip / deflate decoder hands out at once
GZIP_WBITS = 16 + zlib.MAX_WBITS  # zlib window bits that expect a gzip header
RAW_DEFLATE_WBITS = -zlib.MAX_WBITS  # zlib window bits for deflate without the zlib header


class _Reader(Protocol):
    """What the pure readers (zip, multipart) offer."""

    def receive_data(self, data: bytes) -> None: ...

    def next_event(self) -> Event | _Sentinel: ...


class _Inflater:
    """Undoes a gzip or deflate Content-Encoding, in pieces of at most ``DECODE_STEP``."""

    def __init__(self, coding: str) -> None:
        self.coding = coding
        self._gzip = coding != "deflate"
        self._z = zlib.decompressobj(GZIP_WBITS if self._gzip else zlib.MAX_WBITS)
        self._fresh = True

    def decode(self, data: bytes) -> Iterator[bytes]:
        pending = data
        while True:
            try:
                out = self._z.decompress(pending, DECODE_STEP)
            except zlib.error as exc:
                if self._fresh and not self._gzip:  # deflate sent without its zlib header
                    self._z = zlib.decompressobj(RAW_DEFLATE_WBITS)
                    self._fresh = False
                    continue
                raise ProtocolError(
                    f"the {self.coding} Content-Encoding is corrupt: {exc}"
                ) from None
            self._fresh = False
            if out:
                yield out
            if self._z.eof and self._z.unused_data:
                if not self._gzip:
                    raise ProtocolError("bytes after the end of the deflate Content-Encoding")
                pending = self._z.unused_data  # a gzip body may hold several members
                self._z = zlib.decompressobj(GZIP_WBITS)
                continue
            pending = self._z.unconsumed_tail
            if not pending and len(out) < DECODE_STEP:
                return

    def finish(self) -> None:
        if not self._z.eof:
            raise ProtocolError(f"the body ended inside its {self.coding} Content-Encoding")


def inflater_for(content_encoding: str | None) -> _Inflater | None:
    """The decoder for a Content-Encoding header value, or None for identity.

    Raises:
        ProtocolError: an encoding other than identity, gzip or deflate, or more than one.
    """
    codings = [
        coding
        for coding in (part.strip().lower() for part in (content_encoding or "").split(","))
        if coding and coding != "identity"
    ]
    if not codings:
        return None
    if len(codings) == 1 and codings[0] in ("gzip", "x-gzip", "deflate"):
        return _Inflater(codings[0])
    raise ProtocolError(
        f"Content-Encoding {content_encoding!r} is not supported: multiresp reads identity,"
        " gzip and deflate (download() asks for identity)"
    )


def format_of(content_type: str) -> Format:
    """The body's format, as ``content_type`` names it.

    Raises:
        ProtocolError: the Content-Type is neither zip nor multipart.
    """
    media_type, _ = parse_header_params(content_type)
    if media_type in ZIP_MEDIA_TYPES:
        return "zip"
    if media_type.startswith("multipart/"):
        return "multipart"
    raise ProtocolError(
        f"cannot unpack a response of type {content_type!r}: expected application/zip or"
        " multipart/*"
    )


def reader_for(content_type: str, limits: Limits) -> _Reader:
    """The pure reader for a body: zip or multipart, as its Content-Type says.

    Raises:
        ProtocolError: the Content-Type is neither zip nor multipart, or is malformed.
    """
    if format_of(content_type) == "zip":
        return ZipReader(limits=limits)
    return MultipartReader(boundary_from_content_type(content_type), limits=limits)


class BodyDecoder:
    """Body bytes in, reader events out; knows which entry is in progress.

    ``receive(raw)`` takes one piece of the body as sent (``b""`` when it ended);
    ``next_event()`` then gives events until it returns ``NEED_DATA``. :class:`End` is only
    given once the body itself ended, so trailing bytes still reach the reader.

    Args:
        content_type: The body's Content-Type header value.
        limits: Bounds checked while reading.
        content_encoding: The Content-Encoding header value, or None.

    Attributes:
        received: Body bytes received, as sent (before any Content-Encoding is undone).
        produced: Content bytes given out in :class:`Data` events.
        current: The name of the entry in progress, or None.
        last: The name of the last entry that ended, or None.

    Raises:
        ProtocolError: the format cannot be told, or the Content-Encoding is not supported.
    """

    def __init__(
        self,
        content_type: str,
        *,
        limits: Limits,
        content_encoding: str | None = None,
    ) -> None:
        self.limits = limits
        self.reader = reader_for(content_type, limits)
        self.inflater = inflater_for(content_encoding)
        self.received = 0
        self.produced = 0
        self.current: str | None = None
        self.last: str | None = None
        self._pieces: Iterator[bytes] = iter(())
        self._eof = False  # receive(b"") was called
        self._closed = False  # the reader was told the body ended

    def receive(self, raw: bytes) -> None:
        """Take the next piece of the body as sent; ``b""`` when the body ended."""
        if raw:
            self.received += len(raw)
            self._pieces = self.inflater.decode(raw) if self.inflater else iter((raw,))
        elif not self._eof:
            self._eof = True
            if self.inflater is not None:
                self.inflater.finish()
            self._pieces = iter((b"",))

    def next_event(self) -> Event | _Sentinel:
        """The next event, or ``NEED_DATA`` when :meth:`receive` must be called first.

        Raises:
            ProtocolError: the body is malformed, or ended before the format's end.
            IntegrityError: an entry's CRC-32 or size does not match its bytes.
            LimitExceeded: a bound of the limits was crossed.
            UnsafeNameError: an entry name could escape its folder.
        """
        event = self._next_event()
        if type(event) is Data:
            self.produced += len(event.data)
        return event

    def _next_event(self) -> Event | _Sentinel:
        reader = self.reader
        while True:
            event = reader.next_event()
            if event is NEED_DATA or (not self._closed and type(event) is End):
                piece = next(self._pieces, None)
                if piece is not None:
                    self._closed = not piece
                    reader.receive_data(piece)
                    continue
                if self._closed:
                    raise ProtocolError(f"the body is truncated: it ended {self.where()}")
                return NEED_DATA
            if type(event) is EntryStart:
                self.current = event.name
            elif type(event) is EntryEnd:
                self.current, self.last = None, event.name
            return event

    def where(self) -> str:
        """Where in the body we are, for error messages."""
        if self.current is not None:
            return f"in entry {self.current!r}"
        if self.last is not None:
            return f"after entry {self.last!r}"
        return "before the first entry"


class Batcher:
    """Groups a :class:`BodyDecoder`'s events into batches for the file writer.

    A batch goes out when it holds ``BATCH_BYTES`` of content, and at the end of a piece of
    the body when it completes an entry (so that a file is saved even if the sender then
    pauses, as one producing entries while it streams does); otherwise its events wait for
    the next piece (or :meth:`pending`).
    """

    def __init__(self, decoder: BodyDecoder) -> None:
        self.decoder = decoder
        self._batch: list[Event] = []
        self._batch_bytes = 0
        self._batch_ends = False  # the batch completes an entry

    def feed(self, raw: bytes) -> Iterator[list[Event]]:
        """Take a piece of the body (``b""`` at its end) and yield batches of events to write.

        When the reader fails, the events before the failure are yielded first, so entries
        that were complete before it are still saved.
        """
        decoder = self.decoder
        try:
            decoder.receive(raw)
            while (event := decoder.next_event()) is not NEED_DATA:
                self._batch.append(event)
                if type(event) is Data:
                    self._batch_bytes += len(event.data)
                    if self._batch_bytes >= BATCH_BYTES:
                        yield self.pending()
                elif type(event) is EntryEnd:
                    self._batch_ends = True
                elif type(event) is End:
                    yield self.pending()
                    return
            if self._batch_ends:
                yield self.pending()
        except MultirespError:
            if self._batch:
                yield self.pending()
            raise

    def finish(self) -> Iterator[list[Event]]:
        """The body ended: yield the last events (through :class:`End`)."""
        yield from self.feed(b"")

    def pending(self) -> list[Event]:
        """Take the events gathered so far."""
        batch, self._batch, self._batch_bytes, self._batch_ends = self._batch, [], 0, False
        return batch
