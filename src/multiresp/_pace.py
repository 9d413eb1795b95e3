"""How much one hop reads for one connection: the read block follows the client's pace.

How it works: a response wraps its body in a :class:`Pace` and reports each batch's size and
the time its ``send`` took (:meth:`Pace.sent`). The pump (:mod:`multiresp._pump`) and the
range reader (:mod:`multiresp._rangereader`) read ``Pace.block`` bytes of sources per thread
hop, and the response reads the next batch ahead only while ``Pace.ahead``. A client that keeps
up gets blocks of up to ``READ_BLOCK``; a slow one gets small blocks and no read-ahead, so it
holds little of the server's memory. The bodies of clients that keep up share one process-wide
budget (``SHARED_BUDGET``), counted in a class attribute under a lock.
"""

from __future__ import annotations

import threading

READ_BLOCK = 4 << 20  # bytes read from a file per thread hop
# A connection's reads follow its client's pace (see Pace): a hop reads between MIN_BLOCK and
# READ_BLOCK bytes, about PACE_SECONDS of what the client took per second.
MIN_BLOCK = 128 << 10  # bytes read per hop for a slow client
FIRST_BLOCK = 256 << 10  # bytes read per hop at the start of a body
PACE_SECONDS = 0.05  # seconds of the client's measured rate read per hop
PROVEN_SHARE = 1 / 4  # a hop reads at most this share of what the client has taken so far
SHARED_BUDGET = 32 << 20  # bytes per hop shared by all bodies being sent in the process


class Pace:
    """How much one hop reads for one connection, following how fast its client takes it.

    A body starts with ``FIRST_BLOCK`` per hop. The block grows (doubling per batch) while the
    client takes batches quickly, but never past ``PROVEN_SHARE`` of the bytes it took so far:
    the kernel's socket buffers swallow the first few MiB of any client, slow or fast, and
    only what comes after shows its pace. Once sends block, a hop reads about
    ``PACE_SECONDS`` of the client's measured rate. The bodies being sent in the process to
    clients that keep up share ``SHARED_BUDGET``: with many at once, each reads less per hop
    (the CPU, not the hop, is then what limits them). Reading ahead (the next batch while this
    one is sent) happens only while the client keeps up, so a slow client holds about one
    small block of the server's memory, and a fast one keeps ``READ_BLOCK`` hops and the
    overlap of reading with sending.

    Use it as a context manager around the body, so that it counts as active meanwhile.
    """

    # Bodies being sent in this process whose clients keep up: they share SHARED_BUDGET (a
    # slow client's small blocks leave the others their share). Locked: servers may run
    # event loops in several threads of one process.
    active = 0
    _count_lock = threading.Lock()

    def __init__(self) -> None:
        self._block = FIRST_BLOCK
        self._taken = 0
        self._keeping_up = True

    def __enter__(self) -> Pace:
        self._count(1)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._keeping_up:
            self._count(-1)

    @classmethod
    def _count(cls, change: int) -> None:
        with cls._count_lock:
            cls.active += change

    @property
    def block(self) -> int:
        """Source bytes to read in the next hop."""
        share = max(MIN_BLOCK, SHARED_BUDGET // max(Pace.active, 1))
        return min(self._block, share)

    @property
    def full(self) -> bool:
        """True while the client keeps up with reads of ``READ_BLOCK``."""
        return self.block >= READ_BLOCK

    @property
    def ahead(self) -> bool:
        """True when the next batch may be read while this one is sent: the client took the
        last batch quickly, and the process is not sharing its budget among many bodies."""
        return self._keeping_up and self.block >= self._block

    def sent(self, size: int, seconds: float) -> None:
        """Record that ``size`` bytes took ``seconds`` inside the server's ``send``."""
        if not size:
            return
        self._taken += size
        wanted = size / max(seconds, 1e-6) * PACE_SECONDS
        keeping_up = wanted >= self._block
        if keeping_up != self._keeping_up:
            self._count(1 if keeping_up else -1)
        self._keeping_up = keeping_up
        if keeping_up:
            proven = max(MIN_BLOCK, int(self._taken * PROVEN_SHARE))
            self._block = min(self._block * 2, READ_BLOCK, max(proven, self._block))
        else:
            self._block = max(MIN_BLOCK, min(self._block, int(wanted)))
