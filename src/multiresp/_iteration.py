"""Entry-by-entry reading of a body: what :func:`~multiresp.client.iter_entries` gives.

A :class:`Walker` holds the :class:`~multiresp._decoding.BodyDecoder` of one body and its
source of raw pieces (a sync or an async iterator), and knows which entry is current and
whether its bytes were read; :class:`ReceivedEntry` is the entry the caller sees. Nothing here
knows HTTP: the source is any iterator of body pieces.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field

from ._decoding import BodyDecoder
from ._entries import _guess_media_type
from ._events import NEED_DATA, Data, End, EntryEnd, EntryStart, _Sentinel


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
    _walker: Walker = field(repr=False, compare=False)

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
                walker.pull()
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


class Walker:
    """The state behind :func:`iter_entries`: which entry is current and whether it was read."""

    def __init__(
        self,
        decoder: BodyDecoder,
        *,
        raw: Iterator[bytes] | None = None,
        araw: AsyncIterator[bytes] | None = None,
    ) -> None:
        self.decoder = decoder
        self.raw = raw
        self.araw = araw
        self.current: ReceivedEntry | None = None
        self.claimed = False  # the current entry's bytes are being (or were) read
        self.done = False  # the current entry's EntryEnd was seen

    def pull(self) -> None:
        """Feed the decoder the next raw piece (``b""`` once the source is exhausted)."""
        assert self.raw is not None
        self.decoder.receive(next(self.raw, b""))

    async def apull(self) -> None:
        """The async twin of :meth:`pull`."""
        assert self.araw is not None
        self.decoder.receive(await anext(self.araw, b""))

    def next_entry(self) -> ReceivedEntry | _Sentinel | None:
        """The next entry, ``NEED_DATA``, or None after the last; skips what is left unread."""
        while True:
            event = self.decoder.next_event()
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
            event = self.decoder.next_event()
            if event is NEED_DATA:
                return NEED_DATA
            if type(event) is Data:
                if event.data:
                    return event.data
            elif type(event) is EntryEnd:
                self.done = True
            else:  # pragma: no cover - the readers always end an entry before the next
                raise RuntimeError(f"reader gave {event!r} inside entry {entry.name!r}")


def iter_walker(walker: Walker) -> Iterator[ReceivedEntry]:
    """The entries of a walker fed from a sync source, in order."""
    while (entry := walker.next_entry()) is not None:
        if entry is NEED_DATA:
            walker.pull()
        else:
            yield entry


class AsyncEntries:
    """The entries of a walker fed from an async source; made on first use by ``make``.

    A plain object, not an async generator, so leaving the loop early needs no ``aclosing()``.
    """

    def __init__(self, make: Callable[[], Walker]) -> None:
        self._make = make
        self._walker: Walker | None = None

    def __aiter__(self) -> AsyncEntries:
        return self

    async def __anext__(self) -> ReceivedEntry:
        if self._walker is None:
            self._walker = self._make()
        walker = self._walker
        while (entry := walker.next_entry()) is not None:
            if entry is NEED_DATA:
                await walker.apull()
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
                await walker.apull()
            else:
                return chunk
        raise StopAsyncIteration
