"""A cold archive of objects reads each object once: what is read for its CRC is kept, in memory
within the process's budget (``MEMORY_SPOOLS``) or else spooled to an anonymous temporary file,
and sent from there; no spool outlives the response, whether it ends, its client leaves or it
fails, and the memory budget is given back. The tests of the files set the budget to nothing.

moto's server and uvicorn run in the test process (tests/s3.py, the ``live_server`` fixture),
so the spools the responses open show in this process's /proc/self/fd.
"""

from __future__ import annotations

import collections
import concurrent.futures
import io
import os
import pathlib
import tempfile
import threading
import time
import types
import zipfile
import zlib
from collections.abc import Callable, Iterator
from typing import IO, Any

import httpx
import obstore
import pytest
from obstore.store import S3Store
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

import multiresp
from multiresp import Entry, _objects, _pump, walk_store
from multiresp._encoders import _ZipEncoder
from multiresp._pace import READ_BLOCK
from multiresp._pump import _BlockingWork
from multiresp._sources import SourceBase
from multiresp.client import download
from s3 import S3Server, put, running

from conftest import open_fds

MIB = 1 << 20  # bytes
SETTLE_TIMEOUT = 20.0  # seconds for the threads of a closed response to finish their reads


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with running() as server:
        yield server


def app_for(store: S3Store) -> Starlette:
    async def archive(request: Request) -> Response:
        return multiresp.ZipStreamResponse(await walk_store(store, "set"))

    return Starlette(routes=[Route("/set", archive)])


class Spools:
    """Every spool file the object sources make, through a stand-in for the ``tempfile``
    module of :mod:`multiresp._objects` (moto's own temporary files, made by the real module,
    are not counted; they may take a freed spool's inode). Each is held here, so that one
    left open is seen open, never closed by the garbage collector."""

    def __init__(self) -> None:
        self.made: list[IO[bytes]] = []

    def temporary_file(self) -> IO[bytes]:
        spool = tempfile.TemporaryFile()
        self.made.append(spool)
        return spool

    def open(self) -> int:
        """How many of them are still open."""
        return sum(not spool.closed for spool in self.made)


@pytest.fixture
def spools(monkeypatch: pytest.MonkeyPatch) -> Spools:
    """Every spool file made; no object held in memory."""
    monkeypatch.setattr(_objects, "MEMORY_SPOOLS", 0)
    found = Spools()
    monkeypatch.setattr(
        _objects, "tempfile", types.SimpleNamespace(TemporaryFile=found.temporary_file)
    )
    return found


def deleted() -> set[str]:
    """The files this process holds open that have no name (a spool, moto's own)."""
    return {path for path in open_fds() if path.endswith(" (deleted)")}


def wait_for(condition: Callable[[], bool], timeout: float = SETTLE_TIMEOUT) -> bool:
    """Whether ``condition`` came true within ``timeout`` (threads finish in their time)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.fixture
def gets(monkeypatch: pytest.MonkeyPatch) -> collections.Counter[str]:
    """The GETs sent to the store, by key."""
    counted: collections.Counter[str] = collections.Counter()
    real_get = obstore.get

    def counting_get(store: Any, path: str, **options: Any) -> Any:
        counted[path] += 1
        return real_get(store, path, **options)

    monkeypatch.setattr(obstore, "get", counting_get)
    return counted


def fail_mid_download(url: str, store: S3Store, tmp_path: pathlib.Path) -> None:
    """Download ``url``/set while ``set/4.bin`` is overwritten once the first bytes are in:
    the transfer fails."""
    overwritten: list[int] = []

    def overwrite_once(progress: Any) -> None:
        if not overwritten and progress.bytes_done:
            put(store, {"set/4.bin": b"changed"})
            overwritten.append(progress.bytes_done)

    with pytest.raises(multiresp.MultirespError):
        download(f"{url}/set", tmp_path / "out", progress=overwrite_once, resume=False)


def test_a_cold_archive_gets_each_object_once_and_is_byte_identical(
    s3: S3Server,
    tmp_path: pathlib.Path,
    live_server: Any,
    gets: collections.Counter[str],
    spools: Spools,
) -> None:
    store = s3.store()
    objects = {f"set/{n}.bin": os.urandom(READ_BLOCK + 1 + n * 999_999) for n in range(4)}
    objects["set/small.txt"] = b"small\n"
    put(store, objects)
    server = live_server(app_for(store))
    download(f"{server.url}/set", tmp_path / "out")  # every CRC unknown: all read ahead
    assert gets == {key: 1 for key in objects}
    assert len(spools.made) == 4  # every large object was spooled, and sent from its spool
    for key, data in objects.items():
        assert (tmp_path / "out" / key.removeprefix("set/")).read_bytes() == data
    assert wait_for(lambda: spools.open() == 0)
    gets.clear()
    body = httpx.get(f"{server.url}/set").content  # warm: every CRC known, nothing spooled
    assert gets == {key: 1 for key in objects} and len(spools.made) == 4
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        assert {f"set/{i.filename}": archive.read(i) for i in archive.infolist()} == objects
        assert all(not info.flag_bits & 8 for info in archive.infolist())  # CRCs up front


def test_a_client_that_leaves_mid_archive_leaves_no_spool(
    s3: S3Server, live_server: Any, spools: Spools
) -> None:
    store = s3.store()
    put(store, {f"set/{n}.bin": os.urandom(6 * MIB + n) for n in range(6)})
    server = live_server(app_for(store))
    httpx.get(f"{server.url}/set").raise_for_status()  # connection pools, threads
    # Other objects now: the CRCs are unknown again.
    put(store, {f"set/{n}.bin": os.urandom(6 * MIB + n) for n in range(6)})
    assert wait_for(lambda: spools.open() == 0)
    before_files, before_deleted = open_fds(), deleted()
    with httpx.stream("GET", f"{server.url}/set") as response:
        next(response.iter_raw())
        assert wait_for(lambda: spools.open() > 0)  # later objects spooled, unsent
    # The client left: the response is cancelled and every spool closed, even those whose
    # CRC read was still running.
    assert wait_for(lambda: spools.open() == 0), spools.open()
    assert wait_for(lambda: deleted() <= before_deleted), deleted() - before_deleted
    assert wait_for(lambda: len(open_fds()) <= len(before_files)), open_fds() - before_files


def test_a_failure_mid_archive_leaves_no_spool(
    s3: S3Server,
    tmp_path: pathlib.Path,
    live_server: Any,
    spools: Spools,
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = s3.store()
    # 1.bin is spooled, then sent while 2.bin and 3.bin are spooled; 4.bin's GET is sent once
    # 2.bin's turn comes, after the client has most of 1.bin: it finds 4.bin overwritten, and
    # its failure is raised at its turn, when 5.bin is spooled or on its way.
    objects = {"set/1.bin": os.urandom(24 * MIB)}
    objects |= {f"set/{n}.bin": os.urandom(5 * MIB + n) for n in range(2, 6)}
    put(store, objects)
    server = live_server(app_for(store))
    before_files, before_deleted = open_fds(), deleted()
    fail_mid_download(server.url, store, tmp_path)
    failures = [r.getMessage() for r in caplog.records if r.name == "multiresp"]
    assert any("'4.bin'" in m and "changed since it was listed" in m for m in failures)
    assert len(spools.made) >= 3  # 1, 2 and 3 at least
    assert wait_for(lambda: spools.open() == 0), spools.open()
    assert wait_for(lambda: deleted() <= before_deleted), deleted() - before_deleted
    assert wait_for(lambda: len(open_fds()) <= len(before_files)), open_fds() - before_files


def test_a_full_disk_falls_back_to_reading_the_object_again(
    s3: S3Server, monkeypatch: pytest.MonkeyPatch, gets: collections.Counter[str]
) -> None:
    store = s3.store()
    data = os.urandom(3 * MIB + 1)
    put(store, {"full.bin": data})
    entry = Entry.from_object(store, "full.bin", meta=obstore.head(store, "full.bin"))
    source: Any = entry.source

    class Full:
        closed = False

        def write(self, data: bytes) -> int:
            raise OSError(28, "No space left on device")

        def close(self) -> None:
            Full.closed = True

    monkeypatch.setattr(_objects, "tempfile", types.SimpleNamespace(TemporaryFile=Full))
    monkeypatch.setattr(_objects, "MEMORY_SPOOLS", 0)
    crc, reader = source.crc_ahead(entry, threading.Event())
    assert (crc, reader) == (zlib.crc32(data), None) and Full.closed
    assert source.known_crc() == zlib.crc32(data)


# --- in memory, within the process's budget ---------------------------------------------------


class Held:
    """The most bytes the memory spools held at once, sampled while a response runs."""

    def __init__(self) -> None:
        self.most = 0

    def sample(self, progress: object = None) -> None:
        self.most = max(self.most, _objects.MemorySpool.held)


def test_a_cold_archive_holds_objects_in_memory_within_the_budget_and_gives_it_back(
    s3: S3Server,
    tmp_path: pathlib.Path,
    live_server: Any,
    gets: collections.Counter[str],
    spools: Spools,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    budget = 13 * MIB  # two of the objects, not three: the others go to disk
    monkeypatch.setattr(_objects, "MEMORY_SPOOLS", budget)
    store = s3.store()
    objects = {f"set/{n}.bin": os.urandom(6 * MIB + n) for n in range(6)}
    put(store, objects)
    server = live_server(app_for(store))
    held = Held()
    download(f"{server.url}/set", tmp_path / "out", progress=held.sample)
    assert gets == {key: 1 for key in objects}  # each read once, from memory or disk
    for key, data in objects.items():
        assert (tmp_path / "out" / key.removeprefix("set/")).read_bytes() == data
    assert 0 < held.most <= budget
    assert 0 < len(spools.made) < len(objects)  # the budget was full at times
    assert wait_for(lambda: _objects.MemorySpool.held == 0 and spools.open() == 0)


def test_a_client_that_leaves_or_a_failure_gives_the_memory_back(
    s3: S3Server, tmp_path: pathlib.Path, live_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_objects, "MEMORY_SPOOLS", 64 * MIB)
    store = s3.store()
    put(store, {f"set/{n}.bin": os.urandom(6 * MIB + n) for n in range(6)})
    server = live_server(app_for(store))
    with httpx.stream("GET", f"{server.url}/set") as response:
        next(response.iter_raw())
        assert wait_for(lambda: _objects.MemorySpool.held > 0)  # later objects held, unsent
    assert wait_for(lambda: _objects.MemorySpool.held == 0), _objects.MemorySpool.held
    # A failure: an object overwritten once the first is on its way.
    put(store, {f"set/{n}.bin": os.urandom(6 * MIB + n) for n in range(6)})
    fail_mid_download(server.url, store, tmp_path)
    assert wait_for(lambda: _objects.MemorySpool.held == 0), _objects.MemorySpool.held


def test_a_memory_spool_gives_its_bytes_back_as_they_came_split_only_past_the_size() -> None:
    spool = _objects.MemorySpool.take(10)
    assert spool is not None and _objects.MemorySpool.held >= 10
    spool.keep([b"abc", b"defg"])
    spool.keep([b"hij"])
    assert spool.read(2) == [b"ab"]  # a piece larger than asked is split
    assert spool.read(5) == [b"c", b"defg"]
    assert spool.read(100) == [b"hij"] and spool.read(100) == []
    before = _objects.MemorySpool.held
    spool.close()
    spool.close()  # twice: counted back once
    assert _objects.MemorySpool.held == before - 10
    assert _objects.MemorySpool.take(0) is None  # nothing to keep
    assert _objects.MemorySpool.take(_objects.MEMORY_SPOOLS + 1) is None  # past the budget


def test_a_memory_spool_read_in_small_blocks_copies_only_what_it_gives() -> None:
    """A slow client reads a large piece in small blocks: the rest of the piece is kept as it
    is, not copied again at every read (a 2 MiB piece in 128 KiB blocks copied 16 MiB)."""
    large, small = os.urandom(2 << 20), os.urandom(1000)
    spool = _objects.MemorySpool.take(len(large) + len(small))
    assert spool is not None
    spool.keep([large, small])
    given = []
    while pieces := spool.read(128 << 10):
        assert sum(map(len, pieces)) <= 128 << 10
        if spool._pieces and spool._pieces[0] is not small:
            assert spool._pieces[0] is large  # the same object: its rest was not copied
        given += pieces
    spool.close()
    assert b"".join(given) == large + small


# --- the pump, with a source that spools -----------------------------------------------------


class Tracked:
    """A reader over bytes that says whether it was closed."""

    def __init__(self, data: bytes) -> None:
        self.data, self.at, self.closed = data, 0, False

    def read(self, size: int) -> list[bytes]:
        piece = self.data[self.at : self.at + min(size, 2 * MIB)]
        self.at += len(piece)
        return [piece] if piece else []

    def close(self) -> None:
        self.closed = True


class Spooling(SourceBase):
    """A large source, slow to open, whose CRC read gives back a reader (held by ``gate``)."""

    opens_ahead = True

    def __init__(self, data: bytes, gate: threading.Event | None = None) -> None:
        self.data, self.gate = data, gate
        self.opened = 0
        self.known: int | None = None
        self.started = threading.Event()
        self.given: list[Tracked] = []

    @property
    def size(self) -> int:
        return len(self.data)

    def open(self, entry: Entry, offset: int = 0) -> Tracked:
        self.opened += 1
        return Tracked(self.data[offset:])

    def crc_ahead(self, entry: Entry, stop: threading.Event) -> tuple[int, Tracked]:
        self.started.set()
        if self.gate is not None:
            assert self.gate.wait(SETTLE_TIMEOUT)
        reader = Tracked(self.data)
        self.given.append(reader)
        self.known = zlib.crc32(self.data)  # remembered: known from now on
        return self.known, reader

    def known_crc(self) -> int | None:
        return self.known


def test_the_pump_sends_a_spooled_reader_and_closes_those_it_never_used() -> None:
    gate = threading.Event()
    sources = [Spooling(bytes([n]) * (READ_BLOCK + 1 + n)) for n in range(2)]
    sources.append(Spooling(b"\x02" * (READ_BLOCK + 3), gate))  # its CRC read still runs
    entries = [Entry(f"{n}.bin", s.size, None, "application/octet-stream", s)
               for n, s in enumerate(sources)]  # fmt: skip
    work = _BlockingWork(_ZipEncoder("store", None))
    work.pending.extend(entries)
    work.step()  # the first: read for its CRC where it is needed; the next two ahead
    assert sources[0].opened == 0 and len(sources[0].given) == 1
    assert work._reader is sources[0].given[0]  # sent from what was read for its CRC
    assert wait_for(lambda: len(sources[1].given) == 1) and sources[2].started.wait(5)
    while work._entry is entries[0]:
        work.step()  # the rest of the first, then the second, from its reader given back
    assert work._reader is sources[1].given[0] and sources[1].opened == 0
    work.close()  # a client that leaves, a failure: nothing more is sent
    assert sources[0].given[0].closed and sources[1].given[0].closed
    assert not sources[2].given
    gate.set()  # its CRC read ends after the pump closed: its reader is closed then
    assert wait_for(lambda: len(sources[2].given) == 1 and sources[2].given[0].closed)
    assert [s.opened for s in sources] == [0, 0, 0]  # none opened again


RACED_SPOOL_BYTES = 10  # bytes counted by the spool under test
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
    spool = _objects.MemorySpool.take(RACED_SPOOL_BYTES)
    assert spool is not None and _objects.MemorySpool.held == before + RACED_SPOOL_BYTES
    spool.__class__ = _RacingSpool  # counted by take as any spool, raced at close
    closes = [threading.Thread(target=spool.close) for _ in range(2)]
    for close in closes:
        close.start()
    for close in closes:
        close.join()
    held, _objects.MemorySpool.held = _objects.MemorySpool.held, before  # for the next tests
    assert held == before


class _CountedReader:
    def __init__(self) -> None:
        self.closes = 0

    def close(self) -> None:
        self.closes += 1


def test_a_pump_closed_while_its_abandoned_step_takes_a_reader_opened_ahead(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The response closes the pump (a client that left) while a step it abandoned, still in
    its thread, takes one of the readers opened ahead: the close neither fails on the table
    changing under it nor releases that reader, and releases each of the others once."""
    work = _BlockingWork(_ZipEncoder("store", None))
    readers = [_CountedReader() for _ in range(4)]
    for number, reader in enumerate(readers):
        opened: concurrent.futures.Future[Any] = concurrent.futures.Future()
        opened.set_result(reader)
        work._opened[number] = opened
    taken: list[Any] = []
    discard = _pump._discard

    def discard_while_the_step_takes_one(ahead: Any, release: Any) -> None:
        if work._opened and not taken:
            taken.append(work._opened.pop(next(iter(work._opened))).result())
        discard(ahead, release)

    monkeypatch.setattr(_pump, "_discard", discard_while_the_step_takes_one)
    work.close()
    assert not work._opened and len(taken) == 1
    assert [r.closes for r in readers if r is not taken[0]] == [1, 1, 1]
    assert taken[0].closes == 0  # the step's to close
