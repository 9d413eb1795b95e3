"""The read side of every response: sources in, encoded bytes out, in large pieces.

How it works: the pure encoders (zip, multipart) need an entry's facts and then its bytes.
A :class:`Pump` walks the entries and feeds an :class:`Encoder`:

- Entries whose sources block (files, bytes, sync iterables) are handled by a
  :class:`_BlockingWork` object in worker threads, one hop per ``SEND_TARGET`` of output
  or per *block* of input, whichever comes first (deflate of zeros makes little output):
  small files are opened, read, CRC'd and framed many per hop; larger files are read a
  block per hop, in pieces of ``SEND_PIECE`` bytes.
- Async sources are read on the event loop, coalesced to a block; their encoding
  (deflate) runs in a thread.

The block is ``READ_BLOCK`` for a client that keeps up and shrinks for a slow one (see
:class:`~multiresp._pace.Pace`). The hops run on the pump's own one-thread limiter, not anyio's
shared default one, and are abandoned when the response is cancelled, so a source that hangs
costs its thread and nothing else. :meth:`Pump.batches` yields the output of one hop at a time,
so that the response can read the next batch while it sends this one.

Where the encoder wants a file's CRC-32 before its header (zip layout 1), a small file (up to a
block) is read once, its CRC taken from the same read. A larger file is read once ahead for its CRC
(in ``_crc_pool`` of :mod:`multiresp._filecrc`, through one reused 1 MiB buffer, while the file
before it is sent) and again to be sent, unless the CRC cache already knows that (device, inode,
size, mtime, ctime). Holding a whole large file until its CRC is known reads each byte once but was
slower (1 GiB of 16 MiB files in 0.70 s against 0.49 s on a quiet machine): every held file is fresh
memory that malloc gives back to the kernel once sent, and faults in again, page by page, for the
next. A file whose size, mtime or ctime differs from its entry's when it is opened or when its last
block is read aborts the transfer (:mod:`multiresp._filereads`): the archive must not carry a CRC or
size that its bytes belie. A range of a planned body is read by
:class:`~multiresp._rangereader.RangeReader` instead."""

from __future__ import annotations

import collections
import concurrent.futures
import itertools
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator
from typing import BinaryIO, Protocol, TypeVar

import anyio
import anyio.to_thread

from . import _fs
from ._crccache import crc_cache
from ._entries import AsyncIterSource, BytesSource, Entry, IterSource, PathSource
from ._errors import UnsafeNameError
from ._filecrc import _crc_of, _crc_pool, _path_crc, file_crc_from
from ._filereads import (
    COALESCE_BELOW,
    AbandonableSteps,
    _check_unchanged,
    _read_pieces,
    _small_file,
    coalesce,
)
from ._pace import READ_BLOCK, Pace
from ._zipformat import crc32

T = TypeVar("T")

LOOK_AHEAD_ENTRIES = 16  # pending entries searched for the next files to CRC ahead
SEND_TARGET = 1 << 20  # bytes of output gathered before a send (small files, headers)
CRC_AHEAD_FILES = 2  # large files whose CRC is computed ahead, beside the one being sent


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
    runs in a thread the response abandoned (see :class:`AbandonableSteps`).
    """

    def __init__(self, encoder: Encoder) -> None:
        super().__init__()
        self.encoder = encoder
        self.crc_first = _crc_first(encoder)
        self.pending: collections.deque[Entry] = collections.deque()
        self._entry: Entry | None = None
        self._file: BinaryIO | None = None
        self._left = 0
        self._chunks: Iterator[bytes] | None = None
        self._ahead: dict[int, concurrent.futures.Future[int]] = {}  # id(entry) -> its CRC
        self._carry: list[bytes] = []  # a small last piece, joined to the next step's first
        self._taken = 0  # source bytes read by the current step
        self.current: str | None = None  # the name of the entry read last

    @property
    def busy(self) -> bool:
        return bool(self.pending) or self._entry is not None

    def close(self) -> None:
        """Release the open file and stop the CRCs computed ahead (after the end, a failure
        or a disconnect)."""
        self._stop.set()
        for future in self._ahead.values():
            future.cancel()
        self._ahead.clear()
        super().close()

    def _close_file(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._entry = None

    def _step(self, block: int) -> list[bytes]:
        """Produce about ``min(SEND_TARGET, block)`` bytes of output, reading at most about
        ``block`` bytes of sources (one small file or one iterable chunk may go past it), as
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
            elif self._file is not None:
                pieces = self._file_block(block)
            else:
                pieces = self._iter_block(min(budget - size, block - self._taken))
            out += pieces
            size += sum(len(p) for p in pieces)
        out = coalesce(out)
        if self.busy and out and len(out[-1]) < COALESCE_BELOW and len(out) > 1:
            self._carry = [out.pop()]
        return out

    def _open(self, entry: Entry, block: int) -> list[bytes]:
        encoder, source = self.encoder, entry.source
        self.current = entry.name
        if source is None:
            return [encoder.start(entry, 0, b""), encoder.end()]
        if isinstance(source, BytesSource):
            data = source.data
            self._taken += len(data)
            crc = crc32(data, 0) if self.crc_first(entry, data) else None
            return [encoder.start(entry, crc, data), encoder.write(data), encoder.end()]
        if isinstance(source, PathSource):
            return self._open_file(entry, source, block)
        if isinstance(source, IterSource):
            if source.consumed:
                raise RuntimeError(f"entry {entry.name!r}: its iterable was already read")
            source.consumed = True
            self._entry = entry
            self._chunks = iter(source.chunks)
            first = _as_bytes(next(self._chunks, b""), entry)
            self._taken += len(first)
            return [encoder.start(entry, None, first), encoder.write(first)]
        raise TypeError(f"entry {entry.name!r}: {type(source).__name__} is read on the loop")

    def _open_file(self, entry: Entry, source: PathSource, block: int) -> list[bytes]:
        size = source.size
        if size <= block:  # whole, in one read; a larger file in blocks (a slow client's too)
            read_from = time.time_ns()
            data = _small_file(entry, source)
            self._taken += len(data)
            crc = None
            if self.crc_first(entry, data):
                crc = crc32(data, 0)
                # A range over the central directory needs it; only in memory, as a small
                # file is read again faster than a row is written to a shared cache file.
                crc_cache.put(source, crc, read_from_ns=read_from, shared=False)
            return [self.encoder.start(entry, crc, data), self.encoder.write(data),
                    self.encoder.end()]  # fmt: skip
        encoder = self.encoder
        read_from = time.time_ns()
        f: BinaryIO = open(_fs.open_source(source, entry.name), "rb", buffering=0)
        try:
            crc = None
            ahead = self._ahead.pop(id(entry), None)
            stored = self.crc_first(entry, None)  # whatever its bytes: its CRC leads
            if stored:
                crc = crc_cache.get(source)
                # One still queued (behind other responses' CRCs) is taken here instead.
                if crc is None and ahead is not None and not ahead.cancel():
                    crc = ahead.result()
            head = min(READ_BLOCK, block)
            first = _read_pieces(f, head, entry, source)
            self._taken += head
            if crc is None and self.crc_first(entry, first[0]):  # no CRC ahead, or "auto"
                crc = file_crc_from(f, size - head, _crc_of(first, 0))
                crc_cache.put(source, crc, read_from_ns=read_from)
                f.seek(head)
            self._look_ahead()
        except BaseException:
            f.close()
            raise
        self._entry, self._file, self._left = entry, f, size - head
        return [encoder.start(entry, crc, first[0]), *map(encoder.write, first)]

    def _look_ahead(self) -> None:
        """Start computing the CRCs of the next large files while this one is sent."""
        upcoming = (
            entry
            for entry in itertools.islice(self.pending, LOOK_AHEAD_ENTRIES)
            if isinstance(entry.source, PathSource) and entry.source.size > READ_BLOCK
        )
        for entry in itertools.islice(upcoming, CRC_AHEAD_FILES):
            source = entry.source
            assert isinstance(source, PathSource)
            if id(entry) in self._ahead or not self.crc_first(entry, None):
                continue
            if crc_cache.get(source) is None:
                self._ahead[id(entry)] = _crc_pool.submit(_path_crc, entry, source, self._stop)

    def _file_block(self, block: int) -> list[bytes]:
        entry, f = self._entry, self._file
        assert entry is not None and f is not None and isinstance(entry.source, PathSource)
        size = min(self._left, block)
        self._taken += size
        out = [*map(self.encoder.write, _read_pieces(f, size, entry, entry.source))]
        self._left -= size
        if not self._left:
            _check_unchanged(entry, entry.source, f)
            self._close_file()
            out.append(self.encoder.end())
        return out

    def _iter_block(self, budget: int) -> list[bytes]:
        assert self._chunks is not None
        out: list[bytes] = []
        size = 0
        for chunk in self._chunks:
            out.append(self.encoder.write(_as_bytes(chunk, self._entry)))
            size += len(chunk)
            self._taken += len(chunk)
            if size >= budget:
                return out
        self._entry, self._chunks = None, None
        out.append(self.encoder.end())
        return out


def _as_bytes(chunk: object, entry: Entry | None) -> bytes:
    if isinstance(chunk, bytes):
        return chunk
    if isinstance(chunk, (bytearray, memoryview)):
        return bytes(chunk)
    name = entry.name if entry is not None else "?"
    raise TypeError(f"entry {name!r}: its iterable yielded {type(chunk).__name__}, not bytes")


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
        work = _BlockingWork(self._encoder)
        streamed = not isinstance(self._entries, list)
        try:
            async for entry in self._each():
                check_unique([entry], self._names)
                self.entries_started += 1
                if isinstance(entry.source, AsyncIterSource):
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
        assert isinstance(source, AsyncIterSource)
        self.current = entry.name
        if source.consumed:
            raise RuntimeError(f"entry {entry.name!r}: its async iterable was already read")
        source.consumed = True
        encoder = self._encoder
        chunks = source.chunks.__aiter__()
        first = b""
        async for chunk in chunks:
            first = _as_bytes(chunk, entry)
            break
        prefix = [encoder.start(entry, None, first)]
        raw = [first] if first else []
        raw_size = len(first)
        async for chunk in chunks:
            data = _as_bytes(chunk, entry)
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
