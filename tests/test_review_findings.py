"""Found in review: the memory spools give their count back once, whoever closes them."""

from __future__ import annotations

import threading
from typing import Any

from multiresp import _objects

SPOOL_BYTES = 10  # bytes counted by the spool under test
RACE_WAIT = 0.5  # seconds one close waits for the other to read the count too
_COUNT: Any = vars(_objects.MemorySpool)["_counted"]  # the slot that keeps a spool's count


class _RacingSpool(_objects.MemorySpool):
    """A spool whose count, when read, waits for a second reader: two closes from two
    threads (a response's closing and its abandoned step) then read it at the same time
    if nothing keeps them apart."""

    __slots__ = ()
    _meet = threading.Barrier(2)

    @property
    def _counted(self) -> int:
        counted: int = _COUNT.__get__(self)
        try:
            self._meet.wait(RACE_WAIT)
        except threading.BrokenBarrierError:  # the other close waits on the lock: none met
            pass
        return counted

    @_counted.setter
    def _counted(self, value: int) -> None:
        _COUNT.__set__(self, value)


def test_a_memory_spool_closed_from_two_threads_at_once_is_counted_back_once() -> None:
    before = _objects.MemorySpool.held
    spool = _objects.MemorySpool.take(SPOOL_BYTES)
    assert spool is not None and _objects.MemorySpool.held == before + SPOOL_BYTES
    spool.__class__ = _RacingSpool  # counted by take as any spool, raced at close
    closes = [threading.Thread(target=spool.close) for _ in range(2)]
    for close in closes:
        close.start()
    for close in closes:
        close.join()
    held, _objects.MemorySpool.held = _objects.MemorySpool.held, before  # for the next tests
    assert held == before
