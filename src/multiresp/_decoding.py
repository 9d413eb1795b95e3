"""Body bytes in, reader events out: the receive path, with no HTTP library in it.

How this works: a :class:`BodyDecoder` is made from what the headers say (the Content-Type,
the Content-Encoding) or from an explicit format, and from the :class:`~multiresp.Limits`. It
is fed the body as sent, in whatever pieces arrive (``receive``), undoes the Content-Encoding
in bounded pieces (:class:`_Inflater`), feeds the pure format reader (``ZipReader`` or
``MultipartReader``) and gives its h11-style events (``next_event``). It counts the bytes as
sent and the content bytes that come out, so that the limits on the whole transfer hold
whatever encodings stand between the two (:meth:`BodyDecoder.next_event`). A
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

import struct
import zlib
from collections.abc import Iterator
from typing import Literal, Protocol

from ._errors import LimitExceeded, MultirespError, ProtocolError
from ._events import NEED_DATA, Data, End, EntryEnd, EntryStart, Event, _Sentinel
from ._multipart_reader import MultipartReader, boundary_from_content_type
from ._names import parse_header_params
from ._types import Limits
from ._zipreader import ZipReader

Format = Literal["zip", "multipart"]
FORMATS: tuple[Format, ...] = ("zip", "multipart")
ZIP_MEDIA_TYPES = frozenset({"application/zip", "application/x-zip-compressed"})
BATCH_BYTES = 1 << 20  # bytes of content handed to the file writer at once
DECODE_STEP = 1 << 20  # most bytes a gzip / deflate decoder hands out at once
GZIP_WBITS = 16 + zlib.MAX_WBITS  # zlib window bits that expect a gzip header
RAW_DEFLATE_WBITS = -zlib.MAX_WBITS  # zlib window bits for deflate without the zlib header
TOTAL_RATIO_FLOOR = 1 << 20  # bytes of content before max_total_ratio is enforced
MAX_BOUNDARY_LINE = 2 + 70 + 2  # bytes: "--", the longest boundary RFC 2046 allows, CRLF
# What a malformed body can make the standard library raise; turned into ProtocolError.
_DATA_ERRORS = (zlib.error, struct.error, LookupError, ValueError, OverflowError)


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


def check_format(format: Format | None) -> None:
    """Refuse a ``format`` argument that names no format (a programming error).

    Raises:
        ValueError: ``format`` is neither None, ``"zip"`` nor ``"multipart"``.
    """
    if format is not None and format not in FORMATS:
        raise ValueError(f"format must be None, 'zip' or 'multipart', not {format!r}")


def format_of(content_type: str, format: Format | None = None) -> Format:
    """The body's format: ``format`` when given, else the one ``content_type`` names.

    Raises:
        ProtocolError: no ``format`` was given and the Content-Type is neither zip nor
            multipart.
    """
    check_format(format)
    if format is not None:
        return format
    media_type, _ = parse_header_params(content_type)
    if media_type in ZIP_MEDIA_TYPES:
        return "zip"
    if media_type.startswith("multipart/"):
        return "multipart"
    raise ProtocolError(
        f"cannot unpack a body of type {content_type!r}: expected application/zip or"
        " multipart/* (or say which with format='zip' or format='multipart')"
    )


class _BoundarySniffer:
    """A multipart reader whose boundary is taken from the body's first line.

    For ``format="multipart"`` on a body whose Content-Type carries no boundary (served as
    ``application/octet-stream``, say): the body must then start with ``--boundary CRLF``.
    """

    def __init__(self, limits: Limits) -> None:
        self._limits = limits
        self._head = b""
        self._reader: MultipartReader | None = None

    def receive_data(self, data: bytes) -> None:
        if self._reader is not None:
            self._reader.receive_data(data)
            return
        self._head = (self._head + data).lstrip(b"\r\n")  # CRLFs may come before it
        line, crlf, _ = self._head.partition(b"\r\n")
        if not crlf and data and len(self._head) < MAX_BOUNDARY_LINE:
            return
        if not crlf or not line.startswith(b"--") or len(line) > MAX_BOUNDARY_LINE:
            raise ProtocolError(
                "the body has no multipart boundary: its Content-Type names none, and it does"
                " not start with a boundary line"
            )
        boundary = line[2:].rstrip(b" \t").decode("ascii", "replace")
        self._reader = MultipartReader(
            boundary_from_content_type(f'multipart/mixed; boundary="{boundary}"'),
            limits=self._limits,
        )
        head, self._head = self._head, b""
        self._reader.receive_data(head)
        if not data:
            self._reader.receive_data(b"")

    def next_event(self) -> Event | _Sentinel:
        return NEED_DATA if self._reader is None else self._reader.next_event()


def reader_for(content_type: str, limits: Limits, format: Format | None = None) -> _Reader:
    """The pure reader for a body: zip or multipart, as :func:`format_of` decides.

    Raises:
        ProtocolError: the format cannot be told, or a multipart Content-Type is malformed.
    """
    if format_of(content_type, format) == "zip":
        return ZipReader(limits=limits)
    _, params = parse_header_params(content_type)
    if "boundary" not in params:
        if format is None:  # a multipart/* type without its boundary: say so
            boundary_from_content_type(content_type)
        return _BoundarySniffer(limits)
    if format is not None:  # take the boundary whatever the type claims to be
        boundary = params["boundary"].replace("\\", "\\\\").replace('"', '\\"')
        content_type = f'multipart/mixed; boundary="{boundary}"'
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
        format: ``"zip"`` or ``"multipart"`` to read the body as that whatever its
            Content-Type says; None to go by the Content-Type.

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
        format: Format | None = None,
    ) -> None:
        self.limits = limits
        try:
            self.reader = reader_for(content_type, limits, format)
        except MultirespError:
            raise
        except _DATA_ERRORS as exc:
            raise ProtocolError(f"unreadable Content-Type {content_type!r}: {exc}") from None
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
        # One loop, the most frequent event first: it runs once or twice per event.
        reader = self.reader
        try:
            while True:
                event = reader.next_event()
                kind = type(event)
                if kind is Data:
                    self.produced += len(event.data)  # type: ignore[union-attr]
                    if self.produced > TOTAL_RATIO_FLOOR:
                        self._check_total_ratio()
                    return event
                if event is NEED_DATA or (kind is End and not self._closed):
                    piece = next(self._pieces, None)
                    if piece is not None:
                        self._closed = not piece
                        reader.receive_data(piece)
                        continue
                    if self._closed:
                        raise ProtocolError(f"the body is truncated: it ended {self.where()}")
                    return NEED_DATA
                if kind is EntryStart:
                    self.current = event.name  # type: ignore[union-attr]
                elif kind is EntryEnd:
                    self.current, self.last = None, event.name  # type: ignore[union-attr]
                return event
        except MultirespError:
            raise
        except _DATA_ERRORS as exc:
            raise ProtocolError(
                f"the body is malformed {self.where()}: {type(exc).__name__}: {exc}",
                entry=self.current,
            ) from exc

    def _check_total_ratio(self) -> None:
        """Hold the whole transfer to ``max_total_ratio`` (past its first bytes)."""
        ratio = self.limits.max_total_ratio
        if ratio is not None and self.produced > ratio * self.received:
            raise LimitExceeded(
                f"entry {self.current!r} brings the content to {self.produced} bytes from"
                f" {self.received} bytes received: over the limit of {ratio:g} times the bytes"
                " received for the whole transfer (max_total_ratio)",
                entry=self.current,
            )

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
