"""The httpx client: read zip and multipart responses while they stream, and save them safely.

::

    from multiresp.client import download, iter_entries

    saved = download("https://example.org/export.zip", "out/")

    with httpx.stream("GET", url) as response:
        for entry in iter_entries(response):
            print(entry.name, entry.size)
            for chunk in entry.iter_bytes(): ...

How this works: the raw body (``iter_raw`` / ``aiter_raw``: the bytes as sent, in the pieces
the connection gives) goes through an :class:`_Unpacker`, which undoes any Content-Encoding
and feeds the pure format reader picked from the Content-Type (``ZipReader`` or
``MultipartReader``), giving h11-style events. Everything that decides something, the events,
the entry iteration, resuming and progress, lives in classes that do no I/O
(:class:`_Unpacker`, :class:`_Walker`, :class:`_Transfer`); the public functions are the short
loops that move bytes, written once for sync and once for async. ``download`` hands the events,
in batches of about ``BATCH_BYTES``, to a :class:`_Writer`: a thread of its own that drives a
:class:`~multiresp._sink.FileSink`, so that hashing and disk writes overlap with receiving and
parsing, in both loops, and the async loop (anyio: asyncio or trio) never blocks on the disk.

Why ``iter_raw`` and our own Content-Encoding decoder rather than httpx's ``iter_bytes``: a
resumed transfer continues one body over several responses, and a ``Range`` counts bytes of the
*encoded* body, so the decoder state must outlive a response; a gzip bomb must come out in
bounded pieces; and a zip body gains nothing from a second compression. ``download`` therefore
asks for ``Accept-Encoding: identity`` (a caller's own header wins) and resumes only bodies
sent that way, while ``iter_entries`` accepts whatever response it is given and decodes gzip
and deflate itself.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import os
import queue
import re
import threading
import time
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol

import anyio
import anyio.to_thread
import httpx

from ._entries import _guess_media_type
from ._errors import MultirespError, ProtocolError
from ._events import NEED_DATA, Data, End, EntryEnd, EntryStart, Event, _Sentinel
from ._multipart import MultipartReader, boundary_from_content_type
from ._names import parse_header_params
from ._progress import TerminalBar
from ._sink import FileSink
from ._types import Limits, SavedFile
from ._zipreader import ZipReader

__all__ = (
    "Progress",
    "ReceivedEntry",
    "adownload",
    "aiter_entries",
    "download",
    "iter_entries",
)

ZIP_MEDIA_TYPES = frozenset({"application/zip", "application/x-zip-compressed"})
BATCH_BYTES = 1 << 20  # bytes of content handed to the file writer at once
WRITER_QUEUE = 4  # batches waiting for the file writer; bounds memory to about 5 x BATCH_BYTES,
# plus up to _sink.HASH_BACKLOG + 1 batches in the sink, waiting to be hashed
DECODE_STEP = 1 << 20  # most bytes a gzip / deflate decoder hands out at once
GZIP_WBITS = 16 + zlib.MAX_WBITS  # zlib window bits that expect a gzip header
RAW_DEFLATE_WBITS = -zlib.MAX_WBITS  # zlib window bits for deflate without the zlib header
PROGRESS_INTERVAL = 0.1  # seconds between two progress reports (the last one always comes)
MAX_RESUME_ATTEMPTS = 3  # resume attempts in a row that bring no new byte before giving up
RESUME_BACKOFF = 0.25  # seconds before the first resume attempt; doubles for each further one
CONNECT_TIMEOUT = 10.0  # seconds, for the client download() makes when given none
READ_TIMEOUT = 60.0  # seconds without a byte, for the client download() makes when given none

_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)", re.ASCII)


class _Reader(Protocol):
    """What the pure readers (zip, multipart) offer."""

    def receive_data(self, data: bytes) -> None: ...

    def next_event(self) -> Event | _Sentinel: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Progress:
    """How far a :func:`download` got; what a ``progress`` callable receives.

    Attributes:
        bytes_done: Body bytes received so far, as sent (before any Content-Encoding is
            undone); counts from the start of the body across resumed requests.
        bytes_total: The body's length from ``Content-Length``, or None when not sent.
        files_done: Files verified and saved so far.
        current: The name of the entry being received, or None between entries.
    """

    bytes_done: int
    bytes_total: int | None
    files_done: int
    current: str | None


ProgressCallback = Callable[[Progress], object]


# -- the core: every decision about the bytes, and no socket or file ----------------------


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


def _inflater_for(content_encoding: str | None) -> _Inflater | None:
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


def _reader_for(content_type: str, limits: Limits) -> _Reader:
    media_type, _ = parse_header_params(content_type)
    if media_type in ZIP_MEDIA_TYPES:
        return ZipReader(limits=limits)
    if media_type.startswith("multipart/"):
        return MultipartReader(boundary_from_content_type(content_type), limits=limits)
    raise ProtocolError(
        f"cannot unpack a response of type {content_type!r}: expected application/zip or"
        " multipart/*"
    )


class _Unpacker:
    """Raw body bytes in, reader events out; knows which entry is in progress.

    ``receive(raw)`` takes one piece of the body as sent (``b""`` when it ended);
    ``next_event()`` then gives events until it returns ``NEED_DATA``. :class:`End` is only
    given once the body itself ended, so trailing bytes still reach the reader.
    """

    def __init__(self, response: httpx.Response, limits: Limits) -> None:
        headers = response.headers
        self.reader = _reader_for(headers.get("content-type", ""), limits)
        self.inflater = _inflater_for(headers.get("content-encoding"))
        self.received = 0  # body bytes as sent, across resumed responses
        self.current: str | None = None  # the entry in progress
        self.last: str | None = None  # the last entry that ended
        self._pieces: Iterator[bytes] = iter(())
        self._eof = False  # receive(b"") was called
        self._closed = False  # the reader was told the body ended

    def receive(self, raw: bytes) -> None:
        if raw:
            self.received += len(raw)
            self._pieces = self.inflater.decode(raw) if self.inflater else iter((raw,))
        elif not self._eof:
            self._eof = True
            if self.inflater is not None:
                self.inflater.finish()
            self._pieces = iter((b"",))

    def next_event(self) -> Event | _Sentinel:
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


@dataclass(frozen=True, slots=True, kw_only=True)
class ReceivedEntry:
    """An entry of a response, as :func:`iter_entries` / :func:`aiter_entries` give it.

    Its bytes can be read once, with :meth:`iter_bytes` (from :func:`iter_entries`) or
    :meth:`aiter_bytes` (from :func:`aiter_entries`), and only until the iteration moves on to
    the next entry; an entry that is not read is skipped.

    Attributes:
        name: The entry name, a relative POSIX path (already checked: it cannot escape a
            folder). A trailing ``/`` marks a directory entry.
        size: Its size in bytes when the format declares it, else None.
        media_type: The part's Content-Type (multipart), or a guess from the name (zip).
        mtime: Its modification time when the format carries one (zip), else None.
        is_dir: True for a directory entry, which has no bytes.
        headers: The part's headers, lower-cased names (multipart); empty for zip.
    """

    name: str
    size: int | None
    media_type: str
    mtime: dt.datetime | None
    is_dir: bool
    headers: tuple[tuple[str, str], ...] = ()
    _walker: _Walker = field(repr=False, compare=False)

    def iter_bytes(self) -> Iterator[bytes]:
        """Yield the entry's content, verified by the reader as it goes.

        Raises:
            RuntimeError: the iteration already moved past this entry, its bytes were already
                read, or the entries came from :func:`aiter_entries`.
            MultirespError: the body is malformed, truncated, or breaks a limit.
        """
        walker = self._walker
        walker.claim(self, asynchronous=False)
        while (chunk := walker.next_chunk(self)) is not None:
            if chunk is NEED_DATA:
                _pull(walker)
            else:
                yield chunk

    def aiter_bytes(self) -> AsyncIterator[bytes]:
        """Iterate over the entry's content asynchronously; the twin of :meth:`iter_bytes`.

        Returns:
            An async iterator of byte chunks (use it with ``async for``).

        Raises:
            RuntimeError: the iteration already moved past this entry, its bytes were already
                read, or the entries came from :func:`iter_entries`.
            MultirespError: the body is malformed, truncated, or breaks a limit.
        """
        return _AsyncChunks(self)


class _Walker:
    """The state behind :func:`iter_entries`: which entry is current and whether it was read."""

    def __init__(
        self,
        response: httpx.Response,
        limits: Limits | None,
        *,
        raw: Iterator[bytes] | None = None,
        araw: AsyncIterator[bytes] | None = None,
    ) -> None:
        self.unpacker = _Unpacker(response, limits if limits is not None else Limits())
        self.raw = raw
        self.araw = araw
        self.current: ReceivedEntry | None = None
        self.claimed = False  # the current entry's bytes are being (or were) read
        self.done = False  # the current entry's EntryEnd was seen

    def next_entry(self) -> ReceivedEntry | _Sentinel | None:
        """The next entry, ``NEED_DATA``, or None after the last; skips what is left unread."""
        while True:
            event = self.unpacker.next_event()
            if event is NEED_DATA:
                return NEED_DATA
            if type(event) is EntryStart:
                self.current = ReceivedEntry(
                    name=event.name,
                    size=event.size,
                    media_type=event.media_type or _guess_media_type(event.name),
                    mtime=event.mtime,
                    is_dir=event.is_dir,
                    headers=event.headers,
                    _walker=self,
                )
                self.claimed = self.done = False
                return self.current
            if type(event) is End:
                self.current = None
                return None

    def claim(self, entry: ReceivedEntry, *, asynchronous: bool) -> None:
        if asynchronous != (self.araw is not None):
            wanted = "aiter_bytes()" if self.araw is not None else "iter_bytes()"
            raise RuntimeError(f"entries from this iteration are read with {wanted}")
        if entry is not self.current:
            raise RuntimeError(
                f"entry {entry.name!r} can no longer be read: the iteration moved past it"
            )
        if self.claimed:
            raise RuntimeError(f"the bytes of entry {entry.name!r} were already read")
        self.claimed = True

    def next_chunk(self, entry: ReceivedEntry) -> bytes | _Sentinel | None:
        """A piece of ``entry``'s content, ``NEED_DATA``, or None at its end."""
        while True:
            if entry is not self.current:
                raise RuntimeError(
                    f"entry {entry.name!r} can no longer be read: the iteration moved past it"
                )
            if self.done:
                return None
            event = self.unpacker.next_event()
            if event is NEED_DATA:
                return NEED_DATA
            if type(event) is Data:
                if event.data:
                    return event.data
            elif type(event) is EntryEnd:
                self.done = True
            else:  # pragma: no cover - the readers always end an entry before the next
                raise RuntimeError(f"reader gave {event!r} inside entry {entry.name!r}")


def _content_length(headers: httpx.Headers) -> int | None:
    value = headers.get("content-length", "")
    return int(value) if value.isdigit() else None


class _Reporter:
    """Calls the ``progress`` callback at most every ``PROGRESS_INTERVAL``, and at the end."""

    def __init__(self, progress: ProgressCallback | bool | None) -> None:
        self._bar: TerminalBar | None = None
        self._callback: ProgressCallback | None
        if progress is True:
            self._bar = TerminalBar()
            self._callback = self._bar
        elif progress is None or progress is False:
            self._callback = None
        elif callable(progress):
            self._callback = progress
        else:
            raise TypeError(f"progress must be None, True or a callable, not {progress!r}")
        self._last = -PROGRESS_INTERVAL

    def report(self, make: Callable[[], Progress], *, final: bool = False) -> None:
        if self._callback is None:
            return
        now = time.monotonic()
        if final or now - self._last >= PROGRESS_INTERVAL:
            self._last = now
            self._callback(make())

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


class _Transfer:
    """What one download decides, without doing I/O: requests, responses, events, resuming.

    The loops in :func:`download` / :func:`adownload` ask it for the request's arguments, show
    it each response (:meth:`open`) and each raw chunk (:meth:`feed`, which yields batches of
    events for the sink), tell it when the connection was lost (:meth:`dropped`, which says how
    long to wait before resuming, or raises), and report progress through it.
    """

    def __init__(
        self,
        url: httpx.URL | str,
        *,
        method: str,
        limits: Limits | None,
        resume: bool,
        progress: ProgressCallback | bool | None,
    ) -> None:
        self.url = url
        self.method = method.upper()
        self.limits = limits if limits is not None else Limits()
        self.resume = resume
        self.reporter = _Reporter(progress)
        self.unpacker: _Unpacker | None = None
        self.total: int | None = None  # Content-Length of the first response
        self.etag: str | None = None  # its strong ETag
        self.resumable = False
        self._attempts = 0  # resume attempts since the last one that brought bytes
        self._received_at_drop = -1
        self._batch: list[Event] = []
        self._batch_bytes = 0
        self._batch_ends = False  # the batch completes an entry

    def request_kwargs(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """The arguments of the next request: the caller's, plus encoding and range headers."""
        headers = httpx.Headers(kwargs.get("headers"))
        headers.setdefault("accept-encoding", "identity")
        if self.unpacker is not None and self.etag is not None:
            headers["range"] = f"bytes={self.unpacker.received}-"
            headers["if-range"] = self.etag
        return {**kwargs, "headers": headers}

    def open(self, response: httpx.Response) -> None:
        """Check a response before its body is read: the first one, or one that resumes.

        Raises:
            httpx.HTTPStatusError: the first response has an error status.
            ProtocolError: the content type cannot be unpacked, or a resumed response does not
                continue the body where it broke off.
        """
        if self.unpacker is not None:
            self._check_resumed(response)
            return
        response.raise_for_status()
        self.unpacker = _Unpacker(response, self.limits)
        headers = response.headers
        self.total = _content_length(headers)
        etag = headers.get("etag")
        self.etag = etag if etag and not etag.startswith("W/") else None
        ranges = {token.strip().lower() for token in headers.get("accept-ranges", "").split(",")}
        self.resumable = (
            self.resume
            and self.method == "GET"
            and self.etag is not None
            and "bytes" in ranges
            and self.unpacker.inflater is None
        )

    def _check_resumed(self, response: httpx.Response) -> None:
        unpacker = self._unpacker()
        where = f"resuming {self.url} at byte {unpacker.received}, {unpacker.where()}"

        def refuse(problem: str) -> ProtocolError:
            return ProtocolError(f"{where}: {problem}", entry=unpacker.current)

        if response.status_code != httpx.codes.PARTIAL_CONTENT:
            changed = (
                " (the resource changed, or the server ignores Range)"
                if response.status_code == httpx.codes.OK
                else ""
            )
            raise refuse(f"the server answered {response.status_code}{changed}, not 206")
        match = _CONTENT_RANGE.fullmatch(response.headers.get("content-range", "").strip())
        if match is None:
            raise refuse(f"Content-Range {response.headers.get('content-range')!r} is unusable")
        start, end, total = match.groups()
        expected_total = str(self.total) if self.total is not None else total
        if int(start) != unpacker.received or total != expected_total:
            raise refuse(f"the server sent {match.group(0)!r}")
        if total != "*" and int(end) != int(total) - 1:
            raise refuse(f"the server sent {match.group(0)!r}, not the rest of the body")
        etag = response.headers.get("etag")
        if etag is not None and etag != self.etag:
            raise refuse(f"the ETag changed from {self.etag} to {etag}")
        if _inflater_for(response.headers.get("content-encoding")) is not None:
            raise refuse("the rest came with a Content-Encoding")

    def _unpacker(self) -> _Unpacker:
        if self.unpacker is None:  # pragma: no cover - open() always comes first
            raise RuntimeError("no response was opened")
        return self.unpacker

    def feed(self, raw: bytes) -> Iterator[list[Event]]:
        """Take a piece of the body (``b""`` at its end) and yield batches of events to write.

        A batch goes out when it holds ``BATCH_BYTES`` of content, and at the end of the piece
        when it completes an entry (so that a file is saved even if the server then pauses,
        as one producing entries while it streams does); otherwise its events wait for the
        next piece (or :meth:`pending`). When the reader fails, the events before the failure
        are yielded first, so entries that were complete before it are still saved.
        """
        unpacker = self._unpacker()
        try:
            unpacker.receive(raw)
            while (event := unpacker.next_event()) is not NEED_DATA:
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

    def dropped(self, exc: httpx.TransportError) -> float:
        """The connection failed: the seconds to wait before asking for the rest.

        Raises:
            httpx.TransportError: ``exc`` itself, when no response had arrived yet.
            ProtocolError: the body cannot be resumed, or attempts ran out; it names the entry
                in progress.
        """
        unpacker = self.unpacker
        if unpacker is None:
            raise exc
        if unpacker.received > self._received_at_drop:
            self._attempts = 0
        self._received_at_drop = unpacker.received
        self._attempts += 1
        if not self.resumable:
            reason = (
                "the response cannot be resumed (that needs a GET, a strong ETag, Accept-Ranges:"
                " bytes and no Content-Encoding; resume=False turns it off)"
            )
        elif self._attempts > MAX_RESUME_ATTEMPTS:
            reason = f"gave up after {MAX_RESUME_ATTEMPTS} attempts to resume"
        else:
            return float(RESUME_BACKOFF * 2 ** (self._attempts - 1))
        total = self.total if self.total is not None else "?"
        raise ProtocolError(
            f"connection to {self.url} lost {unpacker.where()}, after {unpacker.received} of"
            f" {total} bytes ({type(exc).__name__}: {exc}); {reason}",
            entry=unpacker.current,
        ) from exc

    def report(self, files_done: int, *, final: bool = False) -> None:
        """Tell the ``progress`` callback how far the transfer is (throttled)."""
        unpacker = self.unpacker
        if unpacker is None:
            return
        self.reporter.report(
            lambda: Progress(
                bytes_done=unpacker.received,
                bytes_total=self.total,
                files_done=files_done,
                current=None if final else unpacker.current,
            ),
            final=final,
        )


# -- shared by both edges: the file-writing thread and the progress bar --------------------


class _Writer:
    """Applies batches of events to a :class:`FileSink` on a thread of its own.

    The loop that receives hands over each batch with :meth:`put` (or :meth:`offer`, which
    never blocks) and goes on receiving while the batch is hashed and written. At most
    ``WRITER_QUEUE`` batches wait, so memory stays bounded when the disk is slower than the
    network. The first error the sink raises is kept; it is raised to the receiving loop at
    its next :meth:`put`, and the batches after it are dropped. Leaving the ``with`` block
    writes what was queued (entries complete before a failure are still saved) and stops the
    thread.
    """

    def __init__(self, sink: FileSink) -> None:
        self.sink = sink
        self._queue: queue.Queue[list[Event] | None] = queue.Queue(maxsize=WRITER_QUEUE)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="multiresp-writer", daemon=True)
        self._thread.start()

    @property
    def files_done(self) -> int:
        """Files saved so far."""
        return len(self.sink.saved)

    def _run(self) -> None:
        while (batch := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self.sink.handle(batch)
                except BaseException as exc:  # handed to the receiving loop
                    self._error = exc

    def _check(self) -> None:
        if self._error is not None:
            raise self._error

    def offer(self, batch: list[Event]) -> bool:
        """Queue ``batch`` if there is room; False when :meth:`put` must wait for it."""
        self._check()
        try:
            self._queue.put_nowait(batch)
        except queue.Full:
            return False
        return True

    def put(self, batch: list[Event]) -> None:
        """Queue ``batch``, waiting for room (blocks: from async code, call it in a thread)."""
        self._check()
        if batch:
            self._queue.put(batch)

    def finish(self) -> None:
        """Write everything queued and stop the thread (blocks).

        Raises:
            BaseException: the first error the sink raised.
        """
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        self._check()

    def __enter__(self) -> _Writer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None and (exc is self._error or not isinstance(exc, Exception)):
            with contextlib.suppress(BaseException):  # nothing to add to that
                self.finish()
        else:
            # The sink's error (if any) came from earlier in the body than whatever the
            # receiving loop met since, as that loop runs ahead: it is the one to report.
            self.finish()


# -- the edges: the loops that do I/O, once sync and once async ----------------------------


def _pull(walker: _Walker) -> None:
    assert walker.raw is not None
    walker.unpacker.receive(next(walker.raw, b""))


async def _apull(walker: _Walker) -> None:
    assert walker.araw is not None
    walker.unpacker.receive(await anext(walker.araw, b""))


def iter_entries(
    response: httpx.Response, *, limits: Limits | None = None
) -> Iterator[ReceivedEntry]:
    """Yield the entries of a zip or multipart response while its body arrives.

    Each entry is given as soon as its header has arrived; its bytes are read with
    :meth:`ReceivedEntry.iter_bytes` before moving on (an entry not read is skipped). Nothing is
    written anywhere: use :func:`download` to save files.

    Args:
        response: A response opened with ``stream=True`` (``client.stream(...)``), whose body
            has not been read. The format comes from its Content-Type: ``application/zip``
            (or ``application/x-zip-compressed``) or ``multipart/*``.
        limits: Bounds checked while reading; ``Limits()`` when None.

    Yields:
        The entries, in order.

    Raises:
        ProtocolError: the Content-Type is neither zip nor multipart, or the body is malformed
            or truncated.
        IntegrityError: an entry's CRC-32 or size does not match its bytes.
        LimitExceeded: a bound of ``limits`` was crossed.
        UnsafeNameError: an entry name could escape its folder.
    """
    walker = _Walker(response, limits, raw=response.iter_raw())
    while (entry := walker.next_entry()) is not None:
        if entry is NEED_DATA:
            _pull(walker)
        else:
            yield entry


def aiter_entries(
    response: httpx.Response, *, limits: Limits | None = None
) -> AsyncIterator[ReceivedEntry]:
    """Iterate over the entries of a zip or multipart response; the twin of :func:`iter_entries`.

    ``async for entry in aiter_entries(response): ...``. The iterator is a plain object, not an
    async generator, so leaving the loop early needs no ``aclosing()``.

    Args:
        response: A response from ``httpx.AsyncClient.stream(...)``, whose body has not been
            read.
        limits: Bounds checked while reading; ``Limits()`` when None.

    Returns:
        An async iterator of the entries, in order; read each one's bytes with
        :meth:`ReceivedEntry.aiter_bytes`.

    Raises:
        ProtocolError: the Content-Type is neither zip nor multipart, or the body is malformed
            or truncated.
        IntegrityError: an entry's CRC-32 or size does not match its bytes.
        LimitExceeded: a bound of ``limits`` was crossed.
        UnsafeNameError: an entry name could escape its folder.
    """
    return _AsyncEntries(response, limits)


class _AsyncEntries:
    """What :func:`aiter_entries` returns (the twin of the generator in :func:`iter_entries`)."""

    def __init__(self, response: httpx.Response, limits: Limits | None) -> None:
        self._response = response
        self._limits = limits
        self._walker: _Walker | None = None

    def __aiter__(self) -> _AsyncEntries:
        return self

    async def __anext__(self) -> ReceivedEntry:
        if self._walker is None:
            response = self._response
            self._walker = _Walker(response, self._limits, araw=response.aiter_raw())
        walker = self._walker
        while (entry := walker.next_entry()) is not None:
            if entry is NEED_DATA:
                await _apull(walker)
            else:
                return entry
        raise StopAsyncIteration


class _AsyncChunks:
    """What :meth:`ReceivedEntry.aiter_bytes` returns (the twin of ``iter_bytes``)."""

    def __init__(self, entry: ReceivedEntry) -> None:
        self._entry = entry
        self._claimed = False

    def __aiter__(self) -> _AsyncChunks:
        return self

    async def __anext__(self) -> bytes:
        entry = self._entry
        walker = entry._walker
        if not self._claimed:
            walker.claim(entry, asynchronous=True)
            self._claimed = True
        while (chunk := walker.next_chunk(entry)) is not None:
            if chunk is NEED_DATA:
                await _apull(walker)
            else:
                return chunk
        raise StopAsyncIteration


def _client() -> httpx.Client:
    return httpx.Client(
        follow_redirects=True, timeout=httpx.Timeout(READ_TIMEOUT, connect=CONNECT_TIMEOUT)
    )


def _async_client() -> httpx.AsyncClient:
    return httpx.AsyncClient(
        follow_redirects=True, timeout=httpx.Timeout(READ_TIMEOUT, connect=CONNECT_TIMEOUT)
    )


def download(
    url: httpx.URL | str,
    dest: str | os.PathLike[str],
    *,
    client: httpx.Client | None = None,
    method: str = "GET",
    limits: Limits | None = None,
    progress: ProgressCallback | bool | None = None,
    resume: bool = True,
    **request_kwargs: Any,
) -> list[SavedFile]:
    """Download a zip or multipart response and unpack it under ``dest`` while it streams.

    Every file is written to a hidden temporary name next to its final place and renamed only
    after its size and checksum were verified. If anything fails, the entry in progress leaves
    nothing behind, and the files verified before it stay.

    Args:
        url: What to request.
        dest: The folder to unpack into; created when missing. Nothing is ever written outside
            it, and no symbolic link in it is followed.
        client: The httpx client to use; by default a new one that follows redirects.
        method: The HTTP method. Only ``GET`` transfers are resumed.
        limits: Bounds on the entries (count, sizes, names, compression ratio);
            ``Limits()`` when None.
        progress: None; True for a progress bar on stderr (tqdm when installed); or a callable
            that receives a :class:`Progress` about ten times a second and once at the end.
        resume: When the connection drops mid-body and the response had a strong ``ETag`` and
            ``Accept-Ranges: bytes``, ask for the rest with ``Range`` and ``If-Range``.
        **request_kwargs: Passed to ``client.stream()`` (``params``, ``headers``, ``json``...).
            ``Accept-Encoding: identity`` is sent unless ``headers`` set it.

    Returns:
        The files saved, in the order they arrived (directories are created, not listed).

    Raises:
        httpx.HTTPStatusError: the response has an error status.
        httpx.TransportError: the request failed before any response arrived.
        ProtocolError: the Content-Type is neither zip nor multipart, the body is malformed or
            truncated, or the connection was lost and could not be resumed.
        IntegrityError: an entry's CRC-32 or size does not match its bytes.
        LimitExceeded: a bound of ``limits`` was crossed.
        UnsafeNameError: an entry name is unsafe or not portable, repeats, clashes with another
            entry, or meets a symbolic link in ``dest``.
    """
    transfer = _Transfer(url, method=method, limits=limits, resume=resume, progress=progress)
    with contextlib.ExitStack() as stack:
        stack.callback(transfer.reporter.close)
        http = client if client is not None else stack.enter_context(_client())
        sink = stack.enter_context(FileSink(dest, limits=transfer.limits))
        writer = stack.enter_context(_Writer(sink))
        while True:
            try:
                with http.stream(method, url, **transfer.request_kwargs(request_kwargs)) as resp:
                    transfer.open(resp)
                    for raw in resp.iter_raw():
                        for batch in transfer.feed(raw):
                            writer.put(batch)
                        transfer.report(writer.files_done)
                break
            except httpx.TransportError as exc:
                writer.put(transfer.pending())
                time.sleep(transfer.dropped(exc))
        for batch in transfer.finish():
            writer.put(batch)
        writer.finish()
        transfer.report(writer.files_done, final=True)
        return sink.saved


async def adownload(
    url: httpx.URL | str,
    dest: str | os.PathLike[str],
    *,
    client: httpx.AsyncClient | None = None,
    method: str = "GET",
    limits: Limits | None = None,
    progress: ProgressCallback | bool | None = None,
    resume: bool = True,
    **request_kwargs: Any,
) -> list[SavedFile]:
    """Download and unpack under ``dest``; the async twin of :func:`download`.

    Runs on anyio (asyncio or trio). Files are hashed and written on a worker thread, handed
    ``BATCH_BYTES`` of content at a time (small files are batched together), never a chunk at a
    time; the event loop only waits for it when the disk falls behind. Arguments, return value
    and errors are those of :func:`download`, with an ``httpx.AsyncClient`` as ``client``.
    """
    transfer = _Transfer(url, method=method, limits=limits, resume=resume, progress=progress)
    async with contextlib.AsyncExitStack() as stack:
        stack.callback(transfer.reporter.close)
        http = client if client is not None else await stack.enter_async_context(_async_client())
        sink = await anyio.to_thread.run_sync(
            functools.partial(FileSink, dest, limits=transfer.limits)
        )
        stack.push_async_callback(_in_thread_shielded, sink.close)
        writer = _Writer(sink)
        stack.push_async_exit(functools.partial(_exit_writer, writer))
        while True:
            try:
                async with http.stream(
                    method, url, **transfer.request_kwargs(request_kwargs)
                ) as resp:
                    transfer.open(resp)
                    async for raw in resp.aiter_raw():
                        for batch in transfer.feed(raw):
                            await _put(writer, batch)
                        transfer.report(writer.files_done)
                break
            except httpx.TransportError as exc:
                await _put(writer, transfer.pending())
                await anyio.sleep(transfer.dropped(exc))
        for batch in transfer.finish():
            await _put(writer, batch)
        await anyio.to_thread.run_sync(writer.finish)
        transfer.report(writer.files_done, final=True)
        return sink.saved


async def _put(writer: _Writer, batch: list[Event]) -> None:
    if batch and not writer.offer(batch):
        await anyio.to_thread.run_sync(writer.put, batch)


async def _in_thread_shielded(function: Callable[[], object]) -> None:
    with anyio.CancelScope(shield=True):
        await anyio.to_thread.run_sync(function)


async def _exit_writer(
    writer: _Writer,
    exc_type: type[BaseException] | None,
    exc: BaseException | None,
    tb: TracebackType | None,
) -> None:
    """:meth:`_Writer.__exit__` in a worker thread, safe from cancellation."""
    with anyio.CancelScope(shield=True):
        await anyio.to_thread.run_sync(writer.__exit__, exc_type, exc, tb)
