"""The pump: every source kind and chunking, encoded and read back; sizes predicted."""

from __future__ import annotations

import datetime as dt
import io
import itertools
import os
import pathlib
import threading
import zipfile
from collections.abc import AsyncIterator, Iterator

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from multiresp import Entry
from multiresp._encoders import _ZipEncoder
from multiresp._fs import FileReader
from multiresp._pace import MIN_BLOCK, READ_BLOCK, SHARED_BUDGET, Pace
from multiresp._pump import Pump, _BlockingWork
from multiresp._validators import predict_zip_size

KINDS = ["path", "bytes", "iter", "aiter", "iter-sized", "aiter-sized"]


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = [0, *sorted(c for c in cuts if 0 < c < len(data)), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(points)]


def make_entry(kind: str, name: str, data: bytes, cuts: list[int], tmp: pathlib.Path) -> Entry:
    mtime = dt.datetime(2022, 1, 2, 3, 4, 6, tzinfo=dt.timezone.utc)
    pieces = split(data, cuts)
    if kind == "path":
        path = tmp / name.replace("/", "_")
        path.write_bytes(data)
        return Entry.from_path(path, name)
    if kind == "bytes":
        return Entry.from_bytes(data, name, mtime=mtime)
    size = len(data) if kind.endswith("sized") else None
    if kind.startswith("iter"):
        return Entry.from_iter(iter(pieces), name, size=size, mtime=mtime)

    async def agen() -> AsyncIterator[bytes]:
        for piece in pieces:
            yield piece

    return Entry.from_iter(agen(), name, size=size, mtime=mtime)


async def collect(entries: list[Entry] | AsyncIterator[Entry], compression: str) -> bytes:
    pump = Pump(entries, _ZipEncoder(compression, None))  # type: ignore[arg-type]
    return b"".join([piece async for batch in pump.batches() for piece in batch])


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(KINDS),
            st.integers(0, 300_000),
            st.lists(st.integers(0, 300_000), max_size=4),
        ),
        max_size=6,
    ),
    st.sampled_from(["store", "deflate", "auto"]),
    st.booleans(),
)
def test_every_source_kind_round_trips(
    tmp_path_factory: pytest.TempPathFactory,
    specs: list[tuple[str, int, list[int]]],
    compression: str,
    streamed: bool,
) -> None:
    tmp = tmp_path_factory.mktemp("pump")
    expected = {}
    entries = []
    for i, (kind, size, cuts) in enumerate(specs):
        data = (b"%d-%s " % (i, kind.encode())) * (size // 8 + 1)
        data = data[:size]
        name = f"d{i}/{kind}-{i}.bin"
        expected[name] = data
        entries.append(make_entry(kind, name, data, cuts, tmp))
    predicted = predict_zip_size(entries)

    async def stream() -> AsyncIterator[Entry]:
        for entry in entries:
            yield entry

    body = anyio.run(collect, stream() if streamed else entries, compression)
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        assert archive.testzip() is None
        assert {i.filename: archive.read(i) for i in archive.infolist()} == expected
    if compression == "store" and predicted is not None:
        assert predicted == len(body)
    assert (predicted is None) == any(e.size is None for e in entries)


def test_large_file_crc_ahead_and_cache(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "large.bin"
    path.write_bytes(bytes(range(256)) * ((READ_BLOCK * 2 + 12345) // 256))
    entry = Entry.from_path(path)
    first = anyio.run(collect, [entry], "store")
    second = anyio.run(collect, [entry], "store")  # CRC from the cache this time
    assert first == second
    assert len(first) == predict_zip_size([entry])
    with zipfile.ZipFile(io.BytesIO(first)) as archive:
        assert archive.read("large.bin") == path.read_bytes()
        assert not archive.getinfo("large.bin").flag_bits & 8  # CRC in the local header


def test_an_iterable_cannot_be_sent_twice() -> None:
    def gen() -> Iterator[bytes]:
        yield b"x"

    entry = Entry.from_iter(gen(), "once.bin")
    anyio.run(collect, [entry], "store")
    with pytest.raises(RuntimeError, match="already read"):
        anyio.run(collect, [entry], "store")


def test_duplicate_names_in_a_stream_are_refused() -> None:
    from multiresp import UnsafeNameError

    async def stream() -> AsyncIterator[Entry]:
        yield Entry.from_bytes(b"a", "same.txt")
        yield Entry.from_bytes(b"b", "same.txt")

    with pytest.raises(UnsafeNameError, match="duplicate"):
        anyio.run(collect, stream(), "store")


def test_crcs_of_upcoming_files_are_computed_ahead(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from multiresp._fs import PathSource

    entries = []
    for i in range(4):
        path = tmp_path / f"large-{i}.bin"
        path.write_bytes(bytes([i]) * (READ_BLOCK + 1000 * i + 1))
        entries.append(Entry.from_path(path))
    computed_ahead = []
    original = PathSource.crc  # the look-ahead asks each source for its CRC

    def spy(source: PathSource, entry: Entry, stop: threading.Event) -> int:
        computed_ahead.append(entry.name)
        return original(source, entry, stop)

    monkeypatch.setattr(PathSource, "crc", spy)
    body = anyio.run(collect, entries, "store")
    # The first two start at once on the pool's two threads, in either order; the third may
    # still be queued when its turn comes on a busy machine, and is then computed where it is
    # needed instead.
    assert sorted(computed_ahead[:2]) == ["large-1.bin", "large-2.bin"], computed_ahead
    assert set(computed_ahead) <= {"large-1.bin", "large-2.bin", "large-3.bin"}
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        assert archive.testzip() is None
        assert all(not info.flag_bits & 8 for info in archive.infolist())


def test_an_entry_end_joins_the_next_header(tmp_path: pathlib.Path) -> None:
    from multiresp._encoders import _MultipartEncoder
    from multiresp._filereads import COALESCE_BELOW, SEND_PIECE
    from multiresp._multipart import MultipartWriter

    entries = []
    for i in range(3):
        path = tmp_path / f"part-{i}.bin"
        path.write_bytes(bytes([i]) * (READ_BLOCK + SEND_PIECE))
        entries.append(Entry.from_path(path))

    async def pieces() -> list[bytes]:
        pump = Pump(entries, _MultipartEncoder(MultipartWriter(boundary="b0undary")))
        return [piece async for batch in pump.batches() for piece in batch]

    got = anyio.run(pieces)
    expected = MultipartWriter(boundary="b0undary")
    body = b"".join(
        expected.start_part(e.name, size=e.size, media_type=e.media_type)
        + expected.write((tmp_path / e.name).read_bytes())
        + expected.end_part()
        for e in entries
    )
    assert b"".join(got) == body + expected.finish()
    small = [piece for piece in got if len(piece) < COALESCE_BELOW]
    # the first header, each end with the next header, the last end, the closing delimiter
    assert len(small) == len(entries) + 2


def test_auto_compresses_each_sample_once(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import multiresp._zipwriter as zipwriter

    calls = []
    original = zipwriter.deflate_pays

    def spy(sample: bytes) -> bool:
        calls.append(len(sample))
        return original(sample)

    monkeypatch.setattr(zipwriter, "deflate_pays", spy)
    entries = []
    for i in range(5):
        path = tmp_path / f"f{i}.txt"
        path.write_bytes(b"compressible text %d\n" % i * 2000 if i % 2 else os.urandom(40_000))
        entries.append(Entry.from_path(path))
    body = anyio.run(collect, entries, "auto")
    assert len(calls) == len(entries)
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        assert archive.testzip() is None
        methods = [info.compress_type for info in archive.infolist()]
    assert methods == [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED] * 2 + [zipfile.ZIP_STORED]


def test_one_deflate_step_reads_at_most_a_block_of_zeros(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "sparse.bin"
    with open(path, "wb") as f:
        f.truncate(16 * READ_BLOCK)  # zeros: deflate makes ~1,000 times less of them
    work = _BlockingWork(_ZipEncoder("deflate", None))
    work.pending.append(Entry.from_path(path))
    try:
        work.step()
        assert work._left is not None
        assert 16 * READ_BLOCK - work._left <= READ_BLOCK  # one block, not 1 MiB of output's
    finally:
        work.close()


def test_one_step_reads_at_most_its_block_of_an_iterable() -> None:
    pulled = []

    def zeros() -> Iterator[bytes]:
        while True:
            pulled.append(1)
            yield bytes(64 << 10)

    work = _BlockingWork(_ZipEncoder("deflate", None))
    work.pending.append(Entry.from_iter(zeros(), "zeros.bin"))
    work.step(MIN_BLOCK)
    assert len(pulled) * (64 << 10) <= MIN_BLOCK + (64 << 10)


def test_pace_grows_while_the_client_keeps_up_and_shrinks_when_it_does_not() -> None:
    with Pace() as pace:
        assert pace.block < READ_BLOCK and pace.ahead
        taken = 0
        while taken < (4 << 20):  # what socket buffers swallow at once, even for a slow client
            taken += pace.block
            pace.sent(pace.block, 0.0001)
        assert pace.block <= taken // 4
        while not pace.full:
            pace.sent(pace.block, 0.0001)  # taken at once, again and again
        assert pace.block == READ_BLOCK and pace.ahead
        pace.sent(1 << 20, 1.0)  # 1 MiB/s
        assert pace.block == MIN_BLOCK and not pace.ahead


def test_paces_share_one_budget() -> None:
    with Pace() as pace:
        while not pace.full:
            pace.sent(pace.block, 0.0001)
        others = [Pace().__enter__() for _ in range(31)]
        try:
            assert pace.block * 32 <= SHARED_BUDGET and not pace.full and not pace.ahead
            for other in others:
                other.sent(1 << 20, 1.0)  # slow clients: they leave the others their share
            assert pace.full
        finally:
            for other in others:
                other.__exit__()
        assert pace.full
    assert Pace.active == 0


def test_close_during_an_abandoned_step_leaves_the_file_to_the_step(
    tmp_path: pathlib.Path,
) -> None:
    path = tmp_path / "big.bin"
    path.write_bytes(bytes(3 * READ_BLOCK))
    work = _BlockingWork(_ZipEncoder("store", None))
    work.pending.append(Entry.from_path(path))
    work.step()
    reader = work._reader
    assert isinstance(reader, FileReader)
    work._running = True  # as if a hop were still reading in an abandoned thread
    work.close()
    assert reader._fd >= 0  # never closed under a running read
    work._running = False
    assert work.step() == []  # the step that ends after close() releases it
    assert reader._fd == -1
