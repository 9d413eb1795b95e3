"""Reading a listed file for a body: checked against its entry, in pieces ready to send.

How it works: a small file is read whole in one read through a plain descriptor
(:func:`_small_file`), a larger one in pieces of ``SEND_PIECE`` bytes (:func:`_read_pieces`). Each
file is opened through :func:`multiresp._fs.open_source` and checked against its entry's identity,
size, mtime and ctime (:func:`_check_unchanged`) so that a file that changed while it was read
aborts the transfer (:func:`_changed`). :func:`coalesce` joins runs of small pieces into one send
and passes large ones through without a copy.
"""

from __future__ import annotations

import os
import threading
from typing import BinaryIO

from . import _fs
from ._entries import Entry, PathSource
from ._errors import IntegrityError
from ._pace import READ_BLOCK

# Bytes per read and per send of a large file. On asyncio, the part of a send that the socket
# does not take at once is copied twice (a slice, then the transport's buffer): back-to-back
# 4 MiB sends, as large as the socket's whole send buffer here, had up to half their bytes
# copied. Pieces of 1 MiB made malloc give memory back and fault it in again, page by page,
# in some patterns of allocation; 2 MiB did not.
SEND_PIECE = 2 << 20
COALESCE_BELOW = 256 << 10  # pieces smaller than this are joined; larger ones sent as they are


def _changed(entry: Entry, source: PathSource) -> IntegrityError:
    return _fs.changed(source, entry.name, "changed while it was read (size check)")


def _check_unchanged(entry: Entry, source: PathSource, f: BinaryIO) -> None:
    _fs.check(source, entry.name, os.fstat(f.fileno()))


def _small_file(entry: Entry, source: PathSource) -> bytes:
    """A whole small file in one read, checked against its entry: the per-file hot path
    (plain descriptors, no file object; one stat before the read, one after)."""
    fd = _fs.open_source(source, entry.name)
    try:
        data = os.read(fd, source.size + 1)  # one byte more shows a file that grew
        while len(data) < source.size:
            more = os.read(fd, source.size + 1 - len(data))
            if not more:
                break
            data += more
        st = os.fstat(fd)
    finally:
        os.close(fd)
    _fs.check(source, entry.name, st)
    if len(data) != source.size:
        raise _changed(entry, source)
    return data


def _read_exact(f: BinaryIO, size: int, entry: Entry, source: PathSource) -> bytes:
    data = f.read(size)
    while len(data) < size:
        more = f.read(size - len(data))
        if not more:
            raise _changed(entry, source)
        data += more
    return data


def _read_pieces(f: BinaryIO, size: int, entry: Entry, source: PathSource) -> list[bytes]:
    """The next ``size`` bytes of ``f`` as pieces of ``SEND_PIECE`` bytes."""
    piece = SEND_PIECE
    return [_read_exact(f, min(piece, size - at), entry, source) for at in range(0, size, piece)]


def coalesce(pieces: list[bytes]) -> list[bytes]:
    """Join runs of small pieces into one; pass large pieces through without a copy."""
    out: list[bytes] = []
    run: list[bytes] = []
    for piece in pieces:
        if len(piece) >= COALESCE_BELOW:
            if run:
                out.append(b"".join(run))
                run = []
            out.append(piece)
        elif piece:
            run.append(piece)
    if run:
        out.append(b"".join(run))
    return out


class AbandonableSteps:
    """Work advanced one worker-thread step at a time, whose thread a response may abandon.

    :meth:`close` may come from the event loop while a step still runs in a thread the
    response abandoned (a source that hangs): the step then releases its open file itself
    when it returns, so no file is closed under a read. Subclasses give :meth:`_step` and
    :meth:`_close_file`.
    """

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()  # guards _running against close()
        self._running = False

    def step(self, block: int = READ_BLOCK) -> list[bytes]:
        """The pieces of one step, reading about ``block`` bytes; [] once closed."""
        with self._lock:
            if self._stop.is_set():
                self._close_file()
                return []
            self._running = True
        try:
            return self._step(block)
        finally:
            with self._lock:
                self._running = False
                if self._stop.is_set():
                    self._close_file()

    def close(self) -> None:
        """Stop; release the open file now, or when the step still running returns."""
        self._stop.set()
        with self._lock:
            if not self._running:
                self._close_file()

    def _step(self, block: int) -> list[bytes]:
        raise NotImplementedError

    def _close_file(self) -> None:
        raise NotImplementedError
