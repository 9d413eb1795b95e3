"""What the responses ask of a source: one protocol for every kind of source.

A *source* is where an entry's bytes come from: a file on disk, bytes in memory, an iterable
of chunks (sync or async), an object in a store. The pump, the archive plan, the range reader,
the validators and the CRC cache ask a source the questions of :class:`Source` and never which
class it is, so a new kind of source is one class, not a new branch in each of them.

What a source tells:

- ``size``: its length in bytes, or None when unknown until it is read;
- ``rereadable``: whether it can be read again, from any offset, giving the same bytes (a
  file, bytes, an object in a store), or only once (an iterable). Only a body of re-readable
  sources has a plan, an exact layout known before reading, a strong ``ETag`` and ranges;
- ``blocking``: whether it is read in worker threads (:meth:`Source.open`,
  :meth:`Source.read_all`) or on the event loop (:meth:`Source.chunks`);
- ``opens_ahead``: whether opening it costs a round trip before its first byte (an object in
  a store), so the pump opens it while the entries before it are sent;
- ``identity``: what names its content beside the entry's name, size, mtime and mode, for
  the ``ETag``: the same on every replica, never a fact local to one host (bytes: their
  CRC-32; an object: its store ETag or version). None when those facts suffice (a file);
- ``mtime_ns``: its modification time to the nanosecond, when known finer than a
  ``datetime`` holds; else None;
- :meth:`Source.known_crc`: its CRC-32 when known without reading its bytes (bytes in memory,
  a checksum kept by the store, the CRC cache), else None;
- :meth:`Source.remember_crc`: keep a CRC-32 computed by reading it, where
  :meth:`Source.known_crc` finds it again.

How it is read:

- :meth:`Source.settle` gives the complete entry when the response starts, for a source whose
  facts are fetched then (an object named without its listing): blocking, in the worker
  thread that resolves the response's entries, before the first byte is sent;
- :meth:`Source.read_all` reads a small source whole, in one call (the per-file hot path);
- :meth:`Source.open` gives a :class:`Reader` from an offset;
- :meth:`Source.chunks` gives the chunks of an async source, once;
- :meth:`Source.crc` reads the whole source for its CRC-32 and remembers it;
- :meth:`Source.crc_ahead` does the same for a source about to be sent, and may give back a
  reader over what it read (an object spooled to a temporary file), so that a source slow to
  read again is read once.

Every read is checked: a source that has changed since it was listed (a file's identity,
size or times; an object's ETag) or gives fewer or more bytes than its size raises
:class:`~multiresp.IntegrityError` naming the entry and the rule. :class:`SourceBase` gives the
defaults that most kinds share. No I/O here.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Hashable, Iterable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ._entries import Entry


class Reader(Protocol):
    """An open source, read in a worker thread from where it was opened."""

    def read(self, size: int) -> list[bytes]:
        """The next bytes, about ``size`` of them, as pieces of at most 2 MiB; [] at its end.

        A sized re-readable source gives ``min(size, left)`` bytes (a file: exactly; another
        may give fewer, but at least one while any is left: the pump and the range reader
        ask again for the rest, and take none as the source ended early), and once it has
        given its last byte, checks that it is still what was listed. An iterable gives
        whole chunks until about ``size`` bytes (one chunk may go past it).

        Raises:
            IntegrityError: it changed since it was listed, or ended early.
        """
        ...

    def close(self) -> None:
        """Release what it holds (a descriptor, a connection); safe to call twice."""
        ...


def read_rest(reader: Reader) -> bytes:
    """What is left of ``reader``, in one piece; the reader is closed (it checks the size)."""
    pieces: list[bytes] = []
    try:
        while more := reader.read(1 << 30):
            pieces += more
    finally:
        reader.close()
    return b"".join(pieces)


def settle_all(entries: Iterable[Entry]) -> list[Entry]:
    """Each entry as its source settles it (:meth:`Source.settle`: the facts of an object
    named by its key alone, fetched with a HEAD). Blocking: run in a worker thread, before
    anything is sent, so that a missing object fails the request there.

    Raises:
        IntegrityError: what a source's ``settle`` raises (an object not in its store).
    """
    return [entry if entry.source is None else entry.source.settle(entry) for entry in entries]


class Source(Protocol):
    """Where an entry's bytes come from (see the module's docstring)."""

    @property
    def size(self) -> int | None: ...

    @property
    def rereadable(self) -> bool: ...

    @property
    def blocking(self) -> bool: ...

    @property
    def opens_ahead(self) -> bool: ...

    @property
    def identity(self) -> Hashable | None: ...

    @property
    def mtime_ns(self) -> int | None: ...

    def known_crc(self) -> int | None:
        """Its CRC-32 when known without reading its bytes, else None."""
        ...

    def remember_crc(self, crc: int, read_from_ns: int, *, shared: bool = True) -> None:
        """Keep ``crc``, computed by a read that began at ``read_from_ns`` (``time.time_ns``),
        for :meth:`known_crc`; ``shared=False`` keeps it in this process only."""
        ...

    def settle(self, entry: Entry) -> Entry:
        """The entry with every fact the source fetches when the response starts (blocking);
        ``entry`` itself when they were known at construction.

        Raises:
            IntegrityError: the source is gone (an object not found), naming the entry.
        """
        ...

    def read_all(self, entry: Entry) -> bytes:
        """The whole content in one call, checked (blocking; for small sources)."""
        ...

    def open(self, entry: Entry, offset: int = 0) -> Reader:
        """A reader from byte ``offset`` (blocking). A one-shot source opens once, at 0.

        Raises:
            RuntimeError: a one-shot source was already read.
        """
        ...

    def chunks(self, entry: Entry) -> AsyncIterator[bytes]:
        """The chunks of an async source, read once on the event loop.

        Raises:
            RuntimeError: it was already read.
        """
        ...

    def crc(self, entry: Entry, stop: threading.Event) -> int:
        """Read the whole source for its CRC-32 (blocking; gives up when ``stop`` is set),
        remember it, and return it.

        Raises:
            IntegrityError: it changed while it was read.
            RuntimeError: ``stop`` was set (cancelled).
        """
        ...

    def crc_ahead(self, entry: Entry, stop: threading.Event) -> tuple[int, Reader | None]:
        """Read the whole source for its CRC-32 before it is sent (blocking; gives up when
        ``stop`` is set), remember it, and return it with, when the source chooses, a reader
        over the bytes just read, from offset 0, which the caller sends instead of opening
        the source again, and closes. None: the source is opened again to be sent (a file,
        read again cheaply).

        Raises:
            IntegrityError: it changed while it was read.
            RuntimeError: ``stop`` was set (cancelled).
        """
        ...


class SourceBase:
    """Defaults for a source: sized or not, no identity beyond the entry's facts, no CRC
    known ahead, facts known at construction, blocking reads through :meth:`open`."""

    __slots__ = ()

    rereadable = True
    blocking = True
    opens_ahead = False

    @property
    def identity(self) -> Hashable | None:
        return None

    @property
    def mtime_ns(self) -> int | None:
        return None

    def known_crc(self) -> int | None:
        return None

    def remember_crc(self, crc: int, read_from_ns: int, *, shared: bool = True) -> None:
        return None

    def settle(self, entry: Entry) -> Entry:
        return entry

    def open(self, entry: Entry, offset: int = 0) -> Reader:
        raise TypeError(f"entry {entry.name!r}: {type(self).__name__} is read on the event loop")

    def read_all(self, entry: Entry) -> bytes:
        return read_rest(self.open(entry))

    def chunks(self, entry: Entry) -> AsyncIterator[bytes]:
        raise TypeError(f"entry {entry.name!r}: {type(self).__name__} is read in a thread")

    def crc(self, entry: Entry, stop: threading.Event) -> int:
        import time

        from ._zipformat import crc32

        if not self.rereadable:
            raise TypeError(f"entry {entry.name!r}: a one-shot source's CRC cannot be known ahead")
        read_from = time.time_ns()
        reader = self.open(entry)
        crc = got = 0
        try:
            while not stop.is_set() and (pieces := reader.read(1 << 20)):
                for piece in pieces:
                    crc = crc32(piece, crc)
                    got += len(piece)
        finally:
            reader.close()
        if stop.is_set():
            raise RuntimeError("cancelled")
        size = entry.size
        if size is not None and got != size:  # never remember the CRC of other bytes
            from ._errors import IntegrityError

            raise IntegrityError(
                f"entry {entry.name!r}: its source gave {got} bytes, not its size {size} "
                "(size check)",
                entry=entry.name,
            )
        self.remember_crc(crc, read_from)
        return crc

    def crc_ahead(self, entry: Entry, stop: threading.Event) -> tuple[int, Reader | None]:
        return self.crc(entry, stop), None
