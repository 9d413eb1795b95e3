"""The read side of every response: sources in, encoded bytes out, in large pieces.

How it works: the pure encoders (zip, multipart) need an entry's facts and then its bytes.
A :class:`Pump` walks the entries and feeds an :class:`Encoder`. It asks each source the
questions of :class:`~multiresp._sources.Source` (blocking? re-readable? its size, its CRC if
known), never which kind it is:

- Entries whose sources block (files, bytes, sync iterables, any source read in threads) are
  handled by a :class:`_BlockingWork` object in worker threads, one hop per ``SEND_TARGET`` of
  output or per *block* of input, whichever comes first (deflate of zeros makes little
  output): small re-readable sources are read whole (``read_all``), CRC'd and framed many per
  hop; larger ones are read through a reader (``open``) a block per hop, in pieces of
  ``SEND_PIECE`` bytes; a one-shot source through a reader opened once.
- Async sources (``blocking`` False) are read on the event loop (``chunks``), coalesced to a
  block; their encoding (deflate) runs in a thread.

The block is ``READ_BLOCK`` for a client that keeps up and shrinks for a slow one (see
:class:`~multiresp._pace.Pace`). The hops run on the pump's own one-thread limiter, not anyio's
shared default one, and are abandoned when the response is cancelled, so a source that hangs
costs its thread and nothing else. :meth:`Pump.batches` yields the output of one hop at a time,
so that the response can read the next batch while it sends this one.

Where the encoder wants a source's CRC-32 before its header (zip layout 1), a small one (up to
a block) is read once, its CRC taken from the same read. A larger one takes the CRC its source
knows (``known_crc``: bytes in memory, the CRC cache, a store's checksum); else the CRC is
read once ahead (``Source.crc_ahead`` in ``_crc_pool`` of :mod:`multiresp._filecrc`, while the
entry before it is sent) and the source read again to be sent, unless ``crc_ahead`` gave back
a reader over what it read (an object spooled to a temporary file), which is sent instead. A
source slow to open whose CRC was not read ahead is read by ``crc_ahead`` where it is needed,
not in place and then opened again; and an entry whose CRC is to be read ahead is never
opened ahead as well. Readers given back and never used are closed with the pump, or when
their reading ends if it still runs then. Holding a whole large file until its
CRC is known reads each byte once but was slower (1 GiB of 16 MiB files in 0.70 s against 0.49
s on a quiet machine): every held file is fresh memory that malloc gives back to the kernel
once sent, and faults in again, page by page, for the next. A source that changed since it was
listed, when it is opened or when its last byte is read, aborts the transfer (its reader
checks): the archive must not carry a CRC or size that its bytes belie. A source slow to open
(``opens_ahead``: an object in a store, a round trip before its first byte) is opened ahead in
``_open_pool``, with the next ones up to two read blocks, while the entries before it are
sent. A range of a planned body is read by :class:`~multiresp._rangereader.RangeReader`
instead."""

from __future__ import annotations

import collections
import concurrent.futures
import functools
import itertools
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from typing import Protocol, TypeVar

import anyio
import anyio.to_thread

from ._entries import Entry
from ._errors import IntegrityError, UnsafeNameError
from ._filecrc import CRC_PIECE, _crc_of, _crc_pool
from ._filereads import COALESCE_BELOW, AbandonableSteps, coalesce
from ._pace import READ_BLOCK, Pace
from ._sources import Reader, Source, read_rest
from ._zipformat import crc32

T = TypeVar("T")

LOOK_AHEAD_ENTRIES = 16  # pending entries searched for the next files to CRC ahead
SEND_TARGET = 1 << 20  # bytes of output gathered before a send (small files, headers)
CRC_AHEAD_FILES = 2  # large files whose CRC is computed ahead, beside the one being sent
OPEN_AHEAD_BLOCKS = 2  # sources slow to open are opened ahead up to this many read blocks,
OPEN_AHEAD_ENTRIES = 8  # and at most these many entries

# Sources slow to open (``opens_ahead``: an object in a store, a round trip before its first
# byte) are opened here while the entries before them are sent.
_open_pool = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="mr-open")


class Encoder(Protocol):
    """An adapter around a pure writer, as the pump drives it: format-neutral.

    A format whose headers carry a checksum of the data (zip) says which entries want it
    first with a separate ``crc_first(entry, sample)`` method (see :data:`CrcFirst`), which
    the pump looks for; other formats (multipart) have none and are never asked.
    """

    def start(self, entry: Entry, crc: int | None, sample: bytes) -> bytes:
        """The bytes that open the entry (``crc``: its CRC-32 when it was computed first)."""
        ...

    def write(self, data: bytes) -> bytes:
        """The bytes that carry ``data``."""
        ...

    def end(self) -> bytes:
        """The bytes that close the entry."""
        ...

    def finish(self) -> bytes:
        """The bytes that close the body."""
        ...


CrcFirst = Callable[[Entry, "bytes | None"], bool]
"""Whether an entry's CRC-32 is to be known before its header, given its first bytes (None:
before any is read, when the answer must not depend on them)."""


def _crc_first(encoder: Encoder) -> CrcFirst:
    asks: CrcFirst | None = getattr(encoder, "crc_first", None)
    return asks if asks is not None else _never


def _never(entry: Entry, sample: bytes | None) -> bool:
    return False


class _BlockingWork(AbandonableSteps):
    """Entries with blocking sources, advanced one thread hop at a time.

    The pump calls :meth:`step` from one hop at a time; :meth:`close` may come while a step
    runs in a thread the response abandoned (see :class:`AbandonableSteps`). With ``settle``,
    each entry is settled (:meth:`~multiresp._sources.Source.settle`) when it is opened: an
    entry produced by a stream, which no response resolved before its headers.
    """

    def __init__(self, encoder: Encoder, *, settle: bool = False) -> None:
        super().__init__()
        self.encoder = encoder
        self.crc_first = _crc_first(encoder)
        self.settle = settle
        self.pending: collections.deque[Entry] = collections.deque()
        self._entry: Entry | None = None
        self._reader: Reader | None = None
        self._left: int | None = None  # bytes of a sized source left; None: read to its end
        # id(entry) -> its CRC, and maybe a reader over what was read for it
        self._ahead: dict[int, concurrent.futures.Future[tuple[int, Reader | None]]] = {}
        self._opened: dict[int, concurrent.futures.Future[Reader]] = {}  # id(entry) -> reader
        self._carry: list[bytes] = []  # a small last piece, joined to the next step's first
        self._taken = 0  # source bytes read by the current step
        self.current: str | None = None  # the name of the entry read last

    @property
    def busy(self) -> bool:
        return bool(self.pending) or self._entry is not None

    def close(self) -> None:
        """Release the open reader, stop the CRCs computed ahead and close every reader given
        back or opened ahead and never used, now or once its thread is done (after the end, a
        failure or a disconnect)."""
        self._stop.set()
        _discard_all(self._ahead, _close_spooled)
        _discard_all(self._opened, _close_reader)
        super().close()

    def _close_file(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        self._entry = None

    def _step(self, block: int) -> list[bytes]:
        """Produce about ``min(SEND_TARGET, block)`` bytes of output, reading at most about
        ``block`` bytes of sources (one small source or one iterable chunk may go past it), as
        pieces ready to send: small ones joined here, in the worker thread, large ones
        untouched. Bounding the input too keeps a step short when deflate shrinks a lot.

        A small last piece (an entry's end, say) is kept for the next step while work is
        pending, where it joins the next entry's header: one send instead of two."""
        budget = min(SEND_TARGET, block)
        out, self._carry = self._carry, []
        size = self._taken = 0
        while size < budget and self._taken < block and self.busy:
            if self._entry is None:
                pieces = self._open(self.pending.popleft(), block)
            elif self._left is not None:
                pieces = self._sized_block(block)
            else:
                pieces = self._one_shot_block(min(budget - size, block - self._taken))
            out += pieces
            size += sum(len(p) for p in pieces)
        out = coalesce(out)
        if self.busy and out and len(out[-1]) < COALESCE_BELOW and len(out) > 1:
            self._carry = [out.pop()]
        return out

    def _open(self, entry: Entry, block: int) -> list[bytes]:
        encoder, source, listed = self.encoder, entry.source, id(entry)
        opened = _taken(self._opened.pop(listed, None))
        self._open_ahead(block)
        if source is not None and self.settle:
            entry = source.settle(entry)
            source = entry.source
        self.current = entry.name
        if source is None:
            return [encoder.start(entry, 0, b""), encoder.end()]
        if not source.blocking:
            raise TypeError(f"entry {entry.name!r}: {type(source).__name__} is read on the loop")
        size = source.size
        if source.rereadable and size is not None:
            if size <= block:  # whole, in one read; a larger one in blocks (a slow client's too)
                return self._whole(entry, source, opened)
            return self._open_sized(entry, source, size, block, listed, opened)
        reader = source.open(entry)
        self._entry, self._reader, self._left = entry, reader, None
        try:
            first = reader.read(1)  # one chunk: the sample of "auto"
        except BaseException:
            self._close_file()
            raise
        self._taken += sum(len(p) for p in first)
        head = first[0] if first else b""
        return [encoder.start(entry, None, head), *map(encoder.write, first)]

    def _whole(self, entry: Entry, source: Source, opened: Reader | None) -> list[bytes]:
        read_from = time.time_ns()
        data = source.read_all(entry) if opened is None else read_rest(opened)
        if len(data) != entry.size:  # held to its size, whatever the encoder checks
            raise IntegrityError(
                f"entry {entry.name!r}: its source gave {len(data)} bytes, not the {entry.size} "
                "listed (size check)",
                entry=entry.name,
            )
        self._taken += len(data)
        crc = None
        if self.crc_first(entry, data):
            crc = crc32(data, 0)
            # A range over the central directory needs it; only in memory, as a small
            # file is read again faster than a row is written to a shared cache file.
            source.remember_crc(crc, read_from, shared=False)
        return [self.encoder.start(entry, crc, data), self.encoder.write(data),
                self.encoder.end()]  # fmt: skip

    def _open_sized(
        self, entry: Entry, source: Source, size: int, block: int, listed: int,
        opened: Reader | None,
    ) -> list[bytes]:  # fmt: skip
        """Open a large re-readable source (``listed``: the id of its entry as queued, under
        which a CRC computed ahead waits; ``opened``: its reader opened ahead, if any)."""
        encoder = self.encoder
        read_from = time.time_ns()
        reader = opened
        try:
            crc = None
            ahead = self._ahead.pop(listed, None)
            stored = self.crc_first(entry, None)  # whatever its bytes: its CRC leads
            if stored:
                crc, spooled = _crc_known(source, ahead)
                if spooled is not None:  # what was read for the CRC: not read again
                    reader = _replaced(reader, spooled)
            elif ahead is not None:
                _discard(ahead, _close_spooled)
            if stored and crc is None and reader is None and source.opens_ahead:
                # Slow to open: read once for its CRC, maybe kept, rather than twice.
                crc, reader = source.crc_ahead(entry, self._stop)
            if reader is None:
                reader = source.open(entry)
            first = reader.read(min(READ_BLOCK, block))
            head = _got(first, entry, size)
            self._taken += head
            if crc is None and self.crc_first(entry, first[0]):  # no CRC ahead, or "auto"
                crc = self._crc_in_place(reader, _crc_of(first, 0), entry, size - head)
                source.remember_crc(crc, read_from)
                reader.close()
                reader = source.open(entry, head)
            self._look_ahead()
        except BaseException:
            if reader is not None:
                reader.close()
            raise
        self._entry, self._reader, self._left = entry, reader, size - head
        return [encoder.start(entry, crc, first[0]), *map(encoder.write, first)]

    def _crc_in_place(self, reader: Reader, crc: int, entry: Entry, left: int) -> int:
        """Continue ``crc`` over the ``left`` bytes of ``reader``'s source that follow."""
        while left:
            pieces = reader.read(min(CRC_PIECE, left))
            left -= _got(pieces, entry, left)
            if self._stop.is_set():
                raise RuntimeError("cancelled")
            crc = _crc_of(pieces, crc)
        return crc

    def _open_ahead(self, block: int) -> None:
        """Start opening the next entries whose sources are slow to open (``opens_ahead``: a
        round trip before the first byte), the next one and more up to ``OPEN_AHEAD_BLOCKS``
        read blocks (a slow client's are small), so that their first bytes are on their way
        while the entries before them are sent."""
        ahead = 0
        for entry in itertools.islice(self.pending, OPEN_AHEAD_ENTRIES):
            source = entry.source
            if ahead >= OPEN_AHEAD_BLOCKS * block or source is None or entry.size is None:
                break
            if not source.opens_ahead:
                break
            ahead += entry.size
            # One whose CRC is (to be) read ahead is left to that read (it may give a reader
            # back), even once the CRC is known.
            listed = id(entry)
            if listed in self._opened or listed in self._ahead or self._reads_crc_ahead(entry):
                continue
            self._opened[listed] = _open_pool.submit(source.open, entry)

    def _look_ahead(self) -> None:
        """Start computing the CRCs of the next large re-readable sources while this one is
        sent (those whose CRC is not known without reading them)."""
        upcoming = (
            entry
            for entry in itertools.islice(self.pending, LOOK_AHEAD_ENTRIES)
            if _large(entry.source)
        )
        for entry in itertools.islice(upcoming, CRC_AHEAD_FILES):
            source = entry.source
            assert source is not None
            if id(entry) not in self._ahead and self._reads_crc_ahead(entry):
                self._ahead[id(entry)] = _crc_pool.submit(source.crc_ahead, entry, self._stop)

    def _reads_crc_ahead(self, entry: Entry) -> bool:
        """Whether an upcoming entry's CRC is read before it is sent: a large re-readable
        source whose CRC leads its header, and is not known without reading it."""
        source = entry.source
        return (
            source is not None
            and _large(source)
            and self.crc_first(entry, None)
            and source.known_crc() is None
        )

    def _sized_block(self, block: int) -> list[bytes]:
        reader, left = self._reader, self._left
        assert reader is not None and left is not None
        pieces = reader.read(min(left, block))
        got = _got(pieces, self._entry, left)
        self._taken += got
        out = [*map(self.encoder.write, pieces)]
        self._left = left - got
        if not self._left:
            self._close_file()
            out.append(self.encoder.end())
        return out

    def _one_shot_block(self, budget: int) -> list[bytes]:
        assert self._reader is not None
        pieces = self._reader.read(budget)
        self._taken += sum(len(p) for p in pieces)
        out = [*map(self.encoder.write, pieces)]
        if not pieces:
            self._close_file()
            out.append(self.encoder.end())
        return out


def _got(pieces: list[bytes], entry: Entry | None, left: int) -> int:
    """How many bytes ``pieces`` hold; none while ``left`` were due is a source ended early."""
    got = sum(len(p) for p in pieces)
    if not got:
        name = entry.name if entry is not None else "?"
        raise IntegrityError(
            f"entry {name!r}: its source ended {left} bytes short of its size (size check)",
            entry=name,
        )
    return got


def _taken(opened: concurrent.futures.Future[Reader] | None) -> Reader | None:
    """A reader opened ahead; None when there is none or its opening had not started yet."""
    if opened is None or opened.cancel():
        return None
    return opened.result()


def _crc_known(
    source: Source, ahead: concurrent.futures.Future[tuple[int, Reader | None]] | None
) -> tuple[int | None, Reader | None]:
    """A source's CRC (None: unknown) and the reader its read ahead gave back, if any: that
    read's when it is done (it remembered the CRC, and may have kept what it read) or runs
    while the CRC is not known otherwise; else the one the source knows. A read still queued
    (behind other responses' CRCs) is cancelled, and the CRC computed where it is needed."""
    if ahead is not None:
        if (ahead.done() or source.known_crc() is None) and not ahead.cancel():
            return ahead.result()
        _discard(ahead, _close_spooled)
    return source.known_crc(), None


def _discard(ahead: concurrent.futures.Future[T], release: Callable[[T], None]) -> None:
    """Cancel work started ahead and never used, or ``release`` what it gives (close its
    reader) now, if it is done, or once it is."""
    if not ahead.cancel():
        ahead.add_done_callback(functools.partial(_release, release))


def _discard_all(
    table: dict[int, concurrent.futures.Future[T]], release: Callable[[T], None]
) -> None:
    """:func:`_discard` every future in ``table``, emptying it. Taken one ``popitem`` at a
    time, not by a loop over the dict: a step the response abandoned may still pop from it
    in its thread, and each future is then taken (and released) by one side only."""
    while True:
        try:
            _, ahead = table.popitem()
        except KeyError:
            return
        _discard(ahead, release)


def _release(release: Callable[[T], None], ahead: concurrent.futures.Future[T]) -> None:
    if not ahead.cancelled() and ahead.exception() is None:
        release(ahead.result())


def _close_reader(reader: Reader) -> None:
    reader.close()


def _close_spooled(computed: tuple[int, Reader | None]) -> None:
    """Close the reader a CRC read ahead gave back, if any."""
    if computed[1] is not None:
        computed[1].close()


def _replaced(reader: Reader | None, by: Reader) -> Reader:
    """``by``, once ``reader`` (opened ahead, not needed now) is closed."""
    if reader is not None:
        reader.close()
    return by


def _large(source: Source | None) -> bool:
    """A source read again for its CRC, ahead: re-readable, blocking, larger than a block."""
    return (
        source is not None
        and source.rereadable
        and source.blocking
        and (source.size or 0) > READ_BLOCK
    )


def check_unique(entries: Iterable[Entry], seen: set[str]) -> None:
    """Refuse a name already in ``seen``; add each name to it."""
    for entry in entries:
        if entry.name in seen:
            raise UnsafeNameError(f"duplicate entry name {entry.name!r}", entry=entry.name)
        seen.add(entry.name)


class Pump:
    """Turns entries into encoded output, reading sources off the event loop.

    Args:
        entries: A list of entries, or an async iterable producing them while the body is
            already being sent.
        encoder: The format adapter.
        pace: How much each hop reads; full blocks from the start when left out.

    Sources are read in threads of the pump's own ``limiter`` (one at a time), never under
    anyio's default limiter, and a hop is abandoned when its task is cancelled: a source
    that hangs holds one thread until it returns, and neither this request (which ends on a
    disconnect) nor the server's other requests wait for it.
    """

    def __init__(
        self,
        entries: list[Entry] | AsyncIterable[Entry],
        encoder: Encoder,
        pace: Pace | None = None,
    ) -> None:
        self._entries = entries
        self._encoder = encoder
        self._names: set[str] = set()
        self.pace = pace
        self.limiter = anyio.CapacityLimiter(1)
        self.entries_started = 0
        self.current: str | None = None  # the name of the entry read last (a failure's)

    @property
    def block(self) -> int:
        """Source bytes read per hop now."""
        return READ_BLOCK if self.pace is None else self.pace.block

    async def run_sync(self, func: Callable[..., T], *args: object) -> T:
        """``func(*args)`` in a thread of this pump's limiter; abandoned on cancellation."""
        return await anyio.to_thread.run_sync(
            func, *args, limiter=self.limiter, abandon_on_cancel=True
        )

    async def _each(self) -> AsyncIterator[Entry]:
        if isinstance(self._entries, list):
            for entry in self._entries:
                yield entry
        else:
            async for entry in self._entries:
                if not isinstance(entry, Entry):
                    raise TypeError(f"an entry stream yielded {type(entry).__name__}, not Entry")
                yield entry

    async def batches(self) -> AsyncIterator[list[bytes]]:
        """Yield the encoded body as the pieces of one thread hop at a time: about
        ``SEND_TARGET`` of output, or ``READ_BLOCK`` of a large file."""
        streamed = not isinstance(self._entries, list)
        work = _BlockingWork(self._encoder, settle=streamed)
        try:
            async for entry in self._each():
                check_unique([entry], self._names)
                self.entries_started += 1
                if entry.source is not None and not entry.source.blocking:
                    if streamed:
                        entry = await self.run_sync(entry.source.settle, entry)
                    async for batch in self._drain(work):
                        yield batch
                    async for piece in self._async_entry(entry):
                        yield [piece]
                    continue
                work.pending.append(entry)
                if streamed:  # an entry produced late is sent as soon as it comes
                    async for batch in self._drain(work):
                        yield batch
            async for batch in self._drain(work):
                yield batch
            yield [self._encoder.finish()]
        finally:
            work.close()

    async def _drain(self, work: _BlockingWork) -> AsyncIterator[list[bytes]]:
        while work.busy:
            try:
                batch = await self.run_sync(work.step, self.block)
            finally:
                self.current = work.current
            if batch:
                yield batch

    async def _async_entry(self, entry: Entry) -> AsyncIterator[bytes]:
        source = entry.source
        assert source is not None
        self.current = entry.name
        encoder = self._encoder
        chunks = source.chunks(entry)
        first = b""
        async for chunk in chunks:
            first = chunk
            break
        prefix = [encoder.start(entry, None, first)]
        raw = [first] if first else []
        raw_size = len(first)
        async for data in chunks:
            raw.append(data)
            raw_size += len(data)
            # Deflate may be slow: encode off the loop, at most a block of input per hop.
            if raw_size >= min(SEND_TARGET, self.block):
                yield await self.run_sync(_encode, encoder, prefix, raw, False)
                prefix, raw, raw_size = [], [], 0
        yield await self.run_sync(_encode, encoder, prefix, raw, True)


def _encode(encoder: Encoder, prefix: list[bytes], raw: list[bytes], last: bool) -> bytes:
    out = prefix + [encoder.write(data) for data in raw]
    if last:
        out.append(encoder.end())
    return b"".join(out)
