from __future__ import annotations

import datetime as dt
import hashlib
import io
import os
import pathlib
import struct
import subprocess
import sys
import zipfile
import zlib

import pytest
import zipstream
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from multiresp import IntegrityError, LimitExceeded, UnsafeNameError
from multiresp._zipwriter import ZipEntryInfo, ZipWriter, zip_size

from ziputil import Item, build, local_headers

UTC = dt.timezone.utc
T0 = dt.datetime(2024, 2, 29, 13, 37, 43, tzinfo=UTC)

segment = st.text(
    st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/\\:"),
    min_size=1,
    max_size=12,
).filter(
    lambda s: (
        s not in (".", "..")
        and not any(0x202A <= ord(c) <= 0x202E or 0x2066 <= ord(c) <= 0x2069 for c in s)
    )
)  # bidi controls: refused by check_name
names = st.lists(segment, min_size=1, max_size=3).map("/".join)
mtimes = st.none() | st.datetimes(
    min_value=dt.datetime(1970, 1, 1), max_value=dt.datetime(2037, 12, 31), timezones=st.just(UTC)
)


@st.composite
def items(draw: st.DrawFn, max_size: int = 300_000) -> list[Item]:
    chosen = draw(st.lists(names, min_size=0, max_size=6, unique_by=lambda n: n.casefold()))
    result = []
    for name in chosen:
        size = draw(st.integers(0, max_size) | st.sampled_from([0, 1, 65535, 65536]))
        pattern = draw(st.sampled_from(["zeros", "random", "text"]))
        seed = draw(st.binary(min_size=8, max_size=8))
        if pattern == "zeros":
            data = bytes(size)
        elif pattern == "text":
            data = (b"lorem ipsum %d\n" * (size // 10 + 1))[:size]
        else:
            data = (hashlib.sha256(seed).digest() * (size // 32 + 1))[:size]
            data = bytes(b ^ (i * 7 % 251) for i, b in enumerate(data[:4096])) + data[4096:]
        known = draw(st.booleans())
        info = ZipEntryInfo(
            name=name, size=size if known else None, mtime=draw(mtimes),
            media_type=draw(st.sampled_from(["text/plain", "image/png", "application/json"])),
        )  # fmt: skip
        chunks = draw(st.lists(st.integers(0, size), max_size=5))
        result.append(Item(info, data, chunks, crc_ahead=draw(st.booleans())))
    return result


def read_all(body: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        assert archive.testzip() is None
        return {info.filename: archive.read(info) for info in archive.infolist()}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(items(), st.sampled_from(["store", "deflate", "auto"]))
def test_any_entries_read_back_by_zipfile(entries: list[Item], compression: str) -> None:
    body = build(entries, compression)  # type: ignore[arg-type]
    assert read_all(body) == {item.info.name: item.data for item in entries}
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        for item, info in zip(entries, archive.infolist(), strict=True):
            if item.info.mtime is not None:
                expected = max(item.info.mtime, dt.datetime(1980, 1, 1, tzinfo=UTC))
                assert info.date_time[:5] == expected.timetuple()[:5]
            assert info.flag_bits & 0x800  # UTF-8 names


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(items())
def test_predicted_size_equals_written_size(entries: list[Item]) -> None:
    sized = [
        Item(ZipEntryInfo(name=i.info.name, size=len(i.data), mtime=i.info.mtime), i.data,
             i.chunks, i.crc_ahead)
        for i in entries
    ]  # fmt: skip
    body = build(sized, "store")
    infos = [
        ZipEntryInfo(name=i.info.name, size=len(i.data), mtime=i.info.mtime,
                     crc32=0 if i.crc_ahead else None)
        for i in sized
    ]  # fmt: skip
    assert zip_size(infos) == len(body)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(names, st.integers(1, 100_000)), max_size=8, unique_by=lambda t: t[0]))
def test_predicted_size_agrees_with_zipstream_ng(files: list[tuple[str, int]]) -> None:
    """A second opinion: zipstream-ng's len() for sized STORE entries (no extra fields) must
    equal our prediction for layout 1 plus the 16-byte data descriptor zipstream-ng adds to
    each entry."""
    stream = zipstream.ZipStream(compress_type=zipstream.ZIP_STORED, sized=True)
    for name, size in files:
        stream.add(bytes(size), name)
    ours = zip_size(ZipEntryInfo(name=name, size=size, crc32=0) for name, size in files)
    assert ours + 16 * len(files) == len(stream)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(items(max_size=140_000), st.sampled_from(["store", "deflate", "auto"]))
def test_no_entry_is_stored_with_a_data_descriptor(entries: list[Item], compression: str) -> None:
    """Java's ZipInputStream (and other streaming readers) refuse STORE with a descriptor, so
    the writer never produces it; and a declared size frames stored blocks the same whatever
    the chunks, so the prediction holds for any chunking."""
    body = build(entries, compression)  # type: ignore[arg-type]
    for item, local in zip(entries, local_headers(body), strict=True):
        assert not (local.method == 0 and local.flags & 8), item.info.name
        if local.method == 0:
            assert (local.size, local.crc) == (len(item.data), zlib.crc32(item.data))
    # An undeclared size is framed per chunk: only declared sizes are cut at fixed offsets.
    rechunked = [Item(i.info, i.data, i.chunks if i.info.size is None else [], i.crc_ahead)
                 for i in entries]  # fmt: skip
    if compression == "store":
        assert build(rechunked, "store") == body


@settings(max_examples=30, deadline=None)
@given(items(max_size=20_000), st.sampled_from(["store", "deflate", "auto"]))
def test_same_entries_same_bytes(entries: list[Item], compression: str) -> None:
    assert build(entries, compression) == build(entries, compression)  # type: ignore[arg-type]


def test_bytes_do_not_depend_on_the_time_zone(tmp_path: pathlib.Path) -> None:
    script = (
        "import datetime as dt, hashlib, sys\n"
        "sys.path.insert(0, 'tests')\n"
        "from ziputil import Item, build\n"
        "from multiresp._zipwriter import ZipEntryInfo\n"
        "t = dt.datetime(2024, 2, 29, 23, 59, 59, tzinfo=dt.timezone.utc)\n"
        "items = [Item(ZipEntryInfo(name='a.txt', size=3, mtime=t), b'abc'),\n"
        "         Item(ZipEntryInfo(name='d/', size=0, mtime=t), b'')]\n"
        "print(hashlib.sha256(build(items)).hexdigest())\n"
    )
    digests = set()
    for zone in ["UTC", "Asia/Tokyo", "America/Los_Angeles", "Pacific/Chatham"]:
        env = {**os.environ, "TZ": zone}
        out = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True,
            cwd=pathlib.Path(__file__).parent.parent,
        )  # fmt: skip
        digests.add(out.stdout.strip())
    assert len(digests) == 1


def test_layouts_follow_the_design() -> None:
    entries = [
        Item(ZipEntryInfo(name="known.txt", size=5, mtime=T0), b"hello"),
        Item(ZipEntryInfo(name="nocrc.txt", size=5), b"hello", crc_ahead=False),
        Item(ZipEntryInfo(name="unsized.txt"), b"hello"),
        Item(ZipEntryInfo(name="empty.txt", size=0), b"", crc_ahead=False),
        Item(ZipEntryInfo(name="dir/"), b""),
    ]
    body = build(entries, "store")
    known, nocrc, unsized, empty, directory = local_headers(body)
    # 1. CRC and sizes in the local header, no descriptor
    assert (known.flags & 8, known.method, known.size, known.compressed) == (0, 0, 5, 5)
    assert known.crc == 0x3610A686
    # 2. CRC or size not known ahead under "store": deflate stored blocks, with a descriptor
    assert (nocrc.flags & 8, nocrc.method, nocrc.size, nocrc.crc) == (8, 8, 0, 0)
    assert (unsized.flags & 8, unsized.method) == (8, 8)
    # empty entries and directories always take layout 1
    assert (empty.flags & 8, empty.method, directory.flags & 8) == (0, 0, 0)
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        for name in ("nocrc.txt", "unsized.txt"):  # one stored block + the empty final block
            assert archive.getinfo(name).compress_size == 5 + 5 + 5
        assert archive.getinfo("dir/").is_dir()
        assert archive.getinfo("dir/").external_attr >> 16 == 0o40755
        assert archive.getinfo("known.txt").external_attr >> 16 == 0o100644
    # the extended timestamp carries the Unix mtime
    assert struct.unpack("<HHBi", known.extra) == (0x5455, 5, 1, int(T0.timestamp()))
    assert b"PK\x06\x06" not in body  # no zip64 anywhere


def test_auto_stores_what_does_not_compress() -> None:
    png = Item(ZipEntryInfo(name="a.png", size=4, media_type="image/png"), b"\x89PNG")
    text = Item(ZipEntryInfo(name="b.txt", size=3000, media_type="text/plain"), b"a" * 3000)
    noise = os.urandom(3000)
    rand = Item(ZipEntryInfo(name="c.bin", size=3000), noise)
    a, b, c = local_headers(build([png, text, rand], "auto"))
    assert (a.method, b.method, c.method) == (0, 8, 0)


def test_lying_sources_are_integrity_errors() -> None:
    writer = ZipWriter()
    writer.start_entry(ZipEntryInfo(name="short.txt", size=10))
    writer.write(b"abc")
    with pytest.raises(IntegrityError, match=r"short\.txt.*3 bytes, not its declared 10"):
        writer.end_entry()
    writer = ZipWriter()
    writer.start_entry(ZipEntryInfo(name="long.txt", size=2))
    with pytest.raises(IntegrityError, match=r"long\.txt.*more than its declared size of 2"):
        writer.write(b"abc")


def test_misuse_and_bad_names() -> None:
    writer = ZipWriter()
    with pytest.raises(UnsafeNameError):
        writer.start_entry(ZipEntryInfo(name="../x"))
    with pytest.raises(RuntimeError):
        writer.write(b"x")
    with pytest.raises(ValueError, match="compression"):
        ZipWriter(compression="lzma")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="level"):
        ZipWriter(level=12)
    with pytest.raises(ValueError, match="no size"):
        zip_size([ZipEntryInfo(name="a")])


def test_unsized_entry_past_4_gib_is_refused_clearly() -> None:
    writer = ZipWriter()
    writer.start_entry(ZipEntryInfo(name="huge.bin"))
    writer._current.size = 0xFFFFFFFF - 10  # type: ignore[union-attr]  # skip 4 GiB of writes
    with pytest.raises(LimitExceeded, match=r"huge\.bin.*4 GiB"):
        writer.write(b"x" * 100)


def test_dos_times_clamp_and_mtime_none() -> None:
    early = dt.datetime(1970, 1, 2, tzinfo=UTC)
    late = dt.datetime(2150, 1, 1, tzinfo=UTC)
    body = build([
        Item(ZipEntryInfo(name="early", size=0, mtime=early), b""),
        Item(ZipEntryInfo(name="late", size=0, mtime=late), b""),
        Item(ZipEntryInfo(name="none", size=0), b""),
    ])  # fmt: skip
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        times = [info.date_time for info in archive.infolist()]
    assert times == [(1980, 1, 1, 0, 0, 0), (2107, 12, 31, 23, 59, 58), (1980, 1, 1, 0, 0, 0)]
    early_h, late_h, none_h = local_headers(body)
    assert len(early_h.extra) == 9 and late_h.extra == b"" and none_h.extra == b""


def test_many_entries_switch_to_zip64_end_records_only() -> None:
    count = 65_536
    writer = ZipWriter()
    out = []
    for i in range(count):
        out.append(writer.start_entry(ZipEntryInfo(name=f"{i:05x}", size=1, crc32=0xE8B7BE43)))
        out.append(writer.write(b"a"))
        out.append(writer.end_entry())
    out.append(writer.finish())
    body = b"".join(out)
    assert body.count(b"PK\x06\x06") == 1 and body.count(b"PK\x06\x07") == 1
    assert zip_size([ZipEntryInfo(name=f"{i:05x}", size=1, crc32=0) for i in range(count)]) == len(
        body
    )
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        infos = archive.infolist()
        assert len(infos) == count
        assert archive.read(infos[-1]) == b"a"
        assert not infos[0].extra.startswith(b"\x01\x00")  # the first entry stays zip32


@pytest.mark.parametrize(
    "size",
    [1, 65_535, 65_536, 131_070, 131_071, 0xFFFF_FFFF - 5 * 65_537 - 10, 0xFFFF_FFFF - 10],
)
def test_stored_blocks_of_declared_size_are_predicted_exactly(size: int) -> None:
    """A sized entry without a CRC ahead: 5 bytes per started 65,535-byte block plus the
    final empty block, and zip64 as soon as the framed data reaches 4 GiB, not the data."""
    blocks = -(-size // 65_535)
    framed = size + 5 * blocks + 5
    writer = ZipWriter()
    header = writer.start_entry(ZipEntryInfo(name="once.bin", size=size))
    method, zip64 = struct.unpack_from("<H", header, 8)[0], b"\x01\x00\x10\x00" in header
    assert (method, zip64) == (8, framed >= 0xFFFF_FFFF)
    writer.skip(size)
    tail = writer.end_entry()
    assert len(tail) == 5 + (24 if zip64 else 16)  # final block + descriptor
    assert writer.offset == len(header) + framed + 16 + (8 if zip64 else 0)
    if size < 300_000:  # the real bytes, in odd chunks, take exactly the predicted length
        data = os.urandom(size)
        body = build([Item(ZipEntryInfo(name="once.bin", size=size), data, [1, 70_000], False)])
        assert zip_size([ZipEntryInfo(name="once.bin", size=size)]) == len(body)
        with zipfile.ZipFile(io.BytesIO(body)) as archive:
            assert archive.getinfo("once.bin").compress_size == framed
            assert archive.read("once.bin") == data
