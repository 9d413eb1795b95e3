"""What every body's reads share: the size of a piece, joining small pieces, abandonable steps.

How it works: a source is read in pieces of at most ``SEND_PIECE`` bytes (a file's reader, see
:mod:`multiresp._fs`; bytes in memory), sent as they are; :func:`coalesce` joins runs of small
pieces into one send and passes large ones through without a copy. :class:`AbandonableSteps`
is the guard of the pump's and the range reader's worker-thread steps, which a response may
abandon while one still runs.
"""

from __future__ import annotations

import threading

from ._pace import READ_BLOCK

# Bytes per read and per send of a large file. On asyncio, the part of a send that the socket
# does not take at once is copied twice (a slice, then the transport's buffer): back-to-back
# 4 MiB sends, as large as the socket's whole send buffer here, had up to half their bytes
# copied. Pieces of 1 MiB made malloc give memory back and fault it in again, page by page,
# in some patterns of allocation; 2 MiB did not.
SEND_PIECE = 2 << 20
COALESCE_BELOW = 256 << 10  # pieces smaller than this are joined; larger ones sent as they are


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
