"""The pure zip reader: archives from independent writers, from our writer, and a hostile corpus.

Hand-built archives come from :func:`hand_zip`, which lays out local headers, data,
descriptors, the central directory and the end record with struct, so that each test can make
exactly one field lie.
"""

from __future__ import annotations

import ast
import datetime as dt
import io
import itertools
import os
import pathlib
import struct
import tracemalloc
import zipfile
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
import zipstream
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from multiresp import (
    IntegrityError,
    LimitExceeded,
    Limits,
    MultirespError,
    ProtocolError,
    UnsafeNameError,
)
from multiresp._events import NEED_DATA, Data, End, EntryEnd, EntryStart, Event
from multiresp._zipreader import INFLATE_OUTPUT_STEP, STORED_OUTPUT_STEP, ZipReader
from multiresp._zipwriter import ZipEntryInfo, ZipWriter

from ziputil import Unseekable

UTC = dt.timezone.utc
MIB = 1 << 20
T0 = dt.datetime(2024, 2, 29, 13, 37, 42, tzinfo=UTC)
DOS_T0 = ((13 << 11) | (37 << 5) | (42 // 2), ((2024 - 1980) << 9) | (2 << 5) | 29)
FILE_MODE = 0o100644 << 16
UNIX_20 = (3 << 8) | 20  # version made by: Unix, spec 2.0
FLAG_UTF8 = 1 << 11
FLAG_DESCRIPTOR = 1 << 3
SIG_DESCRIPTOR = b"PK\x07\x08"


# -- driving the reader ------------------------------------------------------------------------


def drain(reader: ZipReader, events: list[Event]) -> None:
    """Take events until NEED_DATA or End (End is recorded once)."""
    while True:
        event = reader.next_event()
        if event is NEED_DATA:
            return
        if type(event) is End:
            if not events or type(events[-1]) is not End:
                events.append(event)
            return
        events.append(event)


def pieces(body: bytes, cuts: Iterable[int] = ()) -> Iterator[bytes]:
    points = sorted({cut for cut in cuts if 0 < cut < len(body)})
    for start, end in itertools.pairwise([0, *points, len(body)]):
        yield body[start:end]


def read_events(
    body: bytes | Iterable[bytes], cuts: Iterable[int] = (), *, limits: Limits | None = None
) -> list[Event]:
    """Feed ``body`` (cut at ``cuts``, or an iterable of pieces) then b""; all the events."""
    reader = ZipReader(limits=limits)
    events: list[Event] = []
    chunks = pieces(body, cuts) if isinstance(body, bytes) else body
    for chunk in chunks:
        reader.receive_data(chunk)
        drain(reader, events)
    reader.receive_data(b"")
    drain(reader, events)
    return events


@dataclass
class Got:
    start: EntryStart
    data: bytes
    end: EntryEnd


def entries(events: Sequence[Event]) -> dict[str, Got]:
    """Group the events per entry, checking their order and the bounds on Data events."""
    found: dict[str, Got] = {}
    assert events and type(events[-1]) is End, events[-3:]
    current: EntryStart | None = None
    parts: list[bytes] = []
    for event in events[:-1]:
        if isinstance(event, EntryStart):
            assert current is None
            current, parts = event, []
        elif isinstance(event, Data):
            assert current is not None and event.data
            assert len(event.data) <= max(STORED_OUTPUT_STEP, INFLATE_OUTPUT_STEP)
            parts.append(event.data)
        else:
            assert isinstance(event, EntryEnd) and current is not None
            data = b"".join(parts)
            assert event.name == current.name and event.size == len(data)
            assert event.crc32 == zlib.crc32(data)
            if current.size is not None:
                assert current.size == len(data)
            found[current.name] = Got(current, data, event)
            current = None
    assert current is None
    return found


def read_zip(body: bytes, cuts: Iterable[int] = (), **kwargs: Any) -> dict[str, Got]:
    return entries(read_events(body, cuts, **kwargs))


def failure(body: bytes, cuts: Iterable[int] = (), **kwargs: Any) -> tuple[Exception, list[Event]]:
    """The error reading ``body`` raises, and the events given before it."""
    reader = ZipReader(**kwargs)
    events: list[Event] = []
    try:
        for chunk in [*pieces(body, cuts), b""]:
            reader.receive_data(chunk)
            drain(reader, events)
    except Exception as exc:
        return exc, events
    raise AssertionError(f"no error; events: {events[-3:]}")


def contents(found: dict[str, Got]) -> dict[str, bytes]:
    return {name: got.data for name, got in found.items()}


# -- archives from independent writers -----------------------------------------------------------


def stdlib_zip(
    files: dict[str, bytes],
    *,
    compression: int = zipfile.ZIP_STORED,
    seekable: bool = True,
    force_zip64: bool = False,
    date_time: tuple[int, ...] = (2024, 2, 29, 13, 37, 42),
) -> bytes:
    out: io.BytesIO | Unseekable = io.BytesIO() if seekable else Unseekable()
    with zipfile.ZipFile(out, "w", compression=compression) as archive:
        for name, data in files.items():
            info = zipfile.ZipInfo(name, date_time=date_time)  # type: ignore[arg-type]
            info.compress_type = compression
            if name.endswith("/"):  # a header with no data (ZipFile.mkdir is 3.11+)
                info.external_attr = (0o40755 << 16) | 0x10
                archive.writestr(info, b"")
                continue
            with archive.open(info, "w", force_zip64=force_zip64) as dest:
                dest.write(data)
    return out.getvalue() if isinstance(out, io.BytesIO) else bytes(out.data)


def zipstream_zip(files: dict[str, bytes], *, compression: int, iterables: bool) -> bytes:
    archive = zipstream.ZipStream(compress_type=compression)
    for name, data in files.items():
        if name.endswith("/"):
            archive.mkdir(name)
        elif iterables:  # size unknown: zip64 local extra, data descriptor
            archive.add(iter([data[: len(data) // 2], data[len(data) // 2 :]]), name)
        else:
            archive.add(data, name)
    return b"".join(archive)


# bidirectional overrides and isolates: check_name refuses them
BIDI_CONTROLS = "".join(map(chr, [*range(0x202A, 0x202F), *range(0x2066, 0x206A)]))
segment = st.text(
    st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/\\" + BIDI_CONTROLS),
    min_size=1,
    max_size=10,
).filter(lambda s: s not in (".", "..") and not (len(s) >= 2 and s[1] == ":"))
names = st.lists(segment, min_size=1, max_size=3).map("/".join)
content = st.one_of(
    st.binary(max_size=3000),
    st.integers(0, 200_000).map(lambda n: bytes(n % 251 for n in range(n))),
    st.sampled_from([b"", SIG_DESCRIPTOR * 40, b"PK\x07", b"x" * 70_000 + SIG_DESCRIPTOR]),
)


@st.composite
def file_sets(draw: st.DrawFn) -> dict[str, bytes]:
    chosen = draw(st.lists(names, max_size=5, unique_by=lambda n: n.casefold()))
    files = {name: draw(content) for name in chosen}
    if draw(st.booleans()):
        files["folder/"] = b""
    return files


@st.composite
def cut_points(draw: st.DrawFn, size: int) -> list[int]:
    if draw(st.booleans()):
        step = draw(st.integers(1, 4096))
        return list(range(step, size, step))
    return draw(st.lists(st.integers(0, size), max_size=20))


@pytest.mark.parametrize("force_zip64", [False, True], ids=["zip32", "zip64"])
@pytest.mark.parametrize("seekable", [True, False], ids=["seekable", "unseekable"])
@pytest.mark.parametrize(
    "compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED], ids=["stored", "deflated"]
)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(files=file_sets(), data=st.data())
def test_stdlib_zipfile_round_trip(
    files: dict[str, bytes],
    data: st.DataObject,
    compression: int,
    seekable: bool,
    force_zip64: bool,
) -> None:
    body = stdlib_zip(files, compression=compression, seekable=seekable, force_zip64=force_zip64)
    found = read_zip(body, data.draw(cut_points(len(body))))
    assert contents(found) == files
    for name, got in found.items():
        assert got.start.mtime == dt.datetime(2024, 2, 29, 13, 37, 42, tzinfo=UTC)
        assert got.start.is_dir == name.endswith("/")


@pytest.mark.parametrize("iterables", [False, True], ids=["bytes", "iterables"])
@pytest.mark.parametrize(
    "compression", [zipstream.ZIP_STORED, zipstream.ZIP_DEFLATED], ids=["stored", "deflated"]
)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(files=file_sets(), data=st.data())
def test_zipstream_ng_round_trip(
    files: dict[str, bytes], data: st.DataObject, compression: int, iterables: bool
) -> None:
    body = zipstream_zip(files, compression=compression, iterables=iterables)
    found = read_zip(body, data.draw(cut_points(len(body))))
    assert contents(found) == files
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        for info in archive.infolist():
            assert found[info.filename].start.mtime == dt.datetime(*info.date_time, tzinfo=UTC)


def test_stdlib_zipfile_large_entries_in_socket_sized_pieces() -> None:
    files = {"big.bin": os.urandom(3 * MIB), "zeros": bytes(5 * MIB), "text": b"lorem " * MIB}
    for compression in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        body = stdlib_zip(files, compression=compression, seekable=False)
        limits = Limits(max_compression_ratio=2000)  # zeros deflate about 1000:1
        found = read_zip(body, range(65536, len(body), 65536), limits=limits)
        assert contents(found) == files


def test_mtime_prefers_the_extended_timestamp() -> None:
    stamp = struct.pack("<HHBi", 0x5455, 5, 1, 1_700_000_001)
    found = read_zip(hand_zip([Raw("a", b"x", local_extra=stamp)]))
    assert found["a"].start.mtime == dt.datetime.fromtimestamp(1_700_000_001, UTC)
    found = read_zip(hand_zip([Raw("a", b"x", dos=(0, 0))]))
    assert found["a"].start.mtime is None  # a zeroed DOS date is no date


def test_legacy_and_unicode_names() -> None:
    cafe = b"caf\x82"  # cp437
    unicode_path = b"\x01" + struct.pack("<I", zlib.crc32(b"legacy")) + "ünï.txt".encode()
    body = hand_zip(
        [
            Raw(cafe, b"1", flags=0),
            Raw("日本/語.txt", b"2"),
            Raw(
                b"legacy",
                b"3",
                flags=0,
                local_extra=struct.pack("<HH", 0x7075, len(unicode_path)) + unicode_path,
                central_extra=struct.pack("<HH", 0x7075, len(unicode_path)) + unicode_path,
            ),
        ]
    )
    assert list(read_zip(body)) == ["café", "日本/語.txt", "ünï.txt"]


def test_directories_and_empty_files() -> None:
    body = hand_zip([Raw("d/"), Raw("d/e"), Raw("d/f", b"", method=8)])
    found = read_zip(body)
    assert [(n, g.start.is_dir, g.data) for n, g in found.items()] == [
        ("d/", True, b""),
        ("d/e", False, b""),
        ("d/f", False, b""),
    ]


@pytest.mark.parametrize("signature", [True, False], ids=["signed", "unsigned"])
@pytest.mark.parametrize("wide", [False, True], ids=["32-bit", "64-bit"])
def test_deflate_descriptors(signature: bool, wide: bool) -> None:
    data = b"hello world " * 1000
    extra = zip64_extra(0, 0) if wide else b""
    member = Raw("a", data, method=8, descriptor=True, signature=signature, local_extra=extra)
    body = hand_zip([member, Raw("b", b"next")])
    cuts: Iterable[int]
    for cuts in ([], range(1, len(body)), range(7, len(body), 13)):
        assert contents(read_zip(body, cuts)) == {"a": data, "b": b"next"}


@pytest.mark.parametrize("wide", [False, True], ids=["32-bit", "64-bit"])
def test_stored_with_sizes_and_descriptor(wide: bool) -> None:
    data = os.urandom(5000)
    extra = zip64_extra(len(data), len(data)) if wide else b""
    for signature in (True, False):
        member = Raw(
            "a",
            data,
            descriptor=True,
            signature=signature,
            crc=0,
            size=0xFFFFFFFF if wide else len(data),
            compressed=0xFFFFFFFF if wide else len(data),
            local_extra=extra,
        )
        body = hand_zip([member])
        assert contents(read_zip(body, range(3, len(body), 5))) == {"a": data}
        assert read_zip(body)["a"].start.size == len(data)


def test_zip64_sizes_in_local_header() -> None:
    data = b"z" * 1000
    member = Raw(
        "a", data, method=8, size=0xFFFFFFFF, compressed=0xFFFFFFFF, local_extra=None
    )  # local_extra None: a zip64 extra with the true sizes
    found = read_zip(hand_zip([member]))
    assert found["a"].data == data and found["a"].start.size == 1000


def test_stored_descriptor_look_alikes_in_content() -> None:
    """A STORE entry of unknown size ends only at a descriptor matching all it streamed."""
    tricky = SIG_DESCRIPTOR + struct.pack("<III", 0, 0, 0) + b"PK\x07" + SIG_DESCRIPTOR * 3
    data = b"start" + tricky + b"PK"
    body = stdlib_zip({"a": data, "b": tricky}, seekable=False)
    cuts: Iterable[int]
    for cuts in ([], range(1, len(body)), range(5, len(body), 9)):
        assert contents(read_zip(body, cuts)) == {"a": data, "b": tricky}


def test_end_repeats_and_trailing_bytes_are_refused() -> None:
    body = hand_zip([Raw("a", b"1")])
    reader = ZipReader()
    reader.receive_data(body)
    events: list[Event] = []
    drain(reader, events)
    assert type(reader.next_event()) is End and type(reader.next_event()) is End
    reader.receive_data(b"junk")
    with pytest.raises(ProtocolError, match="follow the end"):
        reader.next_event()


def test_empty_archive() -> None:
    assert read_zip(hand_zip([])) == {}


def test_errors_are_sticky_and_misuse_is_a_programmer_error() -> None:
    reader = ZipReader()
    reader.receive_data(b"GIF89a..")
    with pytest.raises(ProtocolError) as first:
        reader.next_event()
    with pytest.raises(ProtocolError) as second:
        reader.next_event()
    assert first.value is second.value
    reader = ZipReader()
    reader.receive_data(b"")
    with pytest.raises(RuntimeError):
        reader.receive_data(b"PK")


def test_module_is_pure() -> None:
    import multiresp._zipreader as module

    tree = ast.parse(pathlib.Path(module.__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            imported.add(node.module.split(".")[0])
    assert not imported & {"anyio", "starlette", "httpx", "aiofiles", "socket", "asyncio"}
    assert "open(" not in pathlib.Path(module.__file__).read_text()


# -- hand-built archives -------------------------------------------------------------------------


def raw_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


def zip64_extra(*values: int) -> bytes:
    return struct.pack(f"<HH{len(values)}Q", 0x0001, 8 * len(values), *values)


def descriptor_bytes(crc: int, compressed: int, size: int, *, signature: bool, wide: bool) -> bytes:
    body = struct.pack("<IQQ" if wide else "<III", crc, compressed, size)
    return (SIG_DESCRIPTOR if signature else b"") + body


@dataclass
class Raw:
    """One member of a hand-built archive. Fields left None take their true value."""

    name: str | bytes
    data: bytes = b""
    method: int = 0
    flags: int = FLAG_UTF8
    payload: bytes | None = None  # what follows the local header; default: data, deflated for 8
    crc: int | None = None  # local header fields
    size: int | None = None
    compressed: int | None = None
    local_extra: bytes | None = b""  # None: a zip64 extra with the true sizes
    descriptor: bool = False  # flag bit 3 plus a descriptor after the payload
    signature: bool = True  # the descriptor has its PK\x07\x08
    descriptor_crc: int | None = None
    dos: tuple[int, int] = DOS_T0
    central_name: str | bytes | None = None
    central_crc: int | None = None
    central_size: int | None = None
    central_extra: bytes = b""
    external: int = FILE_MODE
    made_by: int = UNIX_20
    in_central: bool = True
    in_local: bool = True

    def raw_name(self, name: str | bytes | None = None) -> bytes:
        name = self.name if name is None else name
        return name.encode() if isinstance(name, str) else name


def hand_zip(
    members: Sequence[Raw],
    *,
    count: int | None = None,
    tail: bytes = b"",
    comment: bytes = b"",
) -> bytes:
    """Lay out an archive, front to back, exactly as the members say."""
    out = bytearray()
    central = bytearray()
    for m in members:
        payload = m.payload
        if payload is None:
            payload = raw_deflate(m.data) if m.method == 8 else m.data
        crc = zlib.crc32(m.data)
        flags = m.flags | (FLAG_DESCRIPTOR if m.descriptor else 0)
        if m.descriptor:
            header_values = (0, 0, 0)
        else:
            header_values = (crc, len(payload), len(m.data))
        local_crc = header_values[0] if m.crc is None else m.crc
        local_compressed = header_values[1] if m.compressed is None else m.compressed
        local_size = header_values[2] if m.size is None else m.size
        extra = (
            m.local_extra if m.local_extra is not None else zip64_extra(len(m.data), len(payload))
        )
        name = m.raw_name()
        offset = len(out)
        local = bytearray()
        local += struct.pack(
            "<4sHHHHHIIIHH", b"PK\x03\x04", 20, flags, m.method, *m.dos,
            local_crc, local_compressed, local_size, len(name), len(extra),
        )  # fmt: skip
        local += name + extra + payload
        if m.descriptor:
            wide = extra.startswith(b"\x01\x00")
            descriptor_crc = crc if m.descriptor_crc is None else m.descriptor_crc
            local += descriptor_bytes(
                descriptor_crc, len(payload), len(m.data), signature=m.signature, wide=wide
            )
        if m.in_local:
            out += local
        if not m.in_central:
            continue
        central_name = m.raw_name(m.central_name)
        central += struct.pack(
            "<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", m.made_by, 20, flags, m.method, *m.dos,
            crc if m.central_crc is None else m.central_crc, len(payload),
            len(m.data) if m.central_size is None else m.central_size,
            len(central_name), len(m.central_extra), 0, 0, 0, m.external, offset,
        )  # fmt: skip
        central += central_name + m.central_extra
    start = len(out)
    entries_count = sum(m.in_central for m in members) if count is None else count
    out += central
    out += struct.pack(
        "<4sHHHHIIH", b"PK\x05\x06", 0, 0, entries_count, entries_count,
        len(central), start, len(comment),
    )  # fmt: skip
    return bytes(out + comment + tail)


def test_hand_zip_is_a_valid_archive() -> None:
    data = b"hello " * 100
    body = hand_zip([Raw("a", data), Raw("b/c", data, method=8), Raw("d", data, descriptor=True)])
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        assert archive.testzip() is None
        assert [archive.read(n) for n in ("a", "b/c", "d")] == [data] * 3
    assert contents(read_zip(body)) == {"a": data, "b/c": data, "d": data}


# -- the hostile corpus --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["../evil", "a/../../evil", "/etc/passwd", "C:/x", "C:x", "a\\b", "..\\x", "a\x00b", "a//b",
     "", "a/./b", "x\x1b[2J", "x\x9b2J", "x\u202etxt.exe", "a\u2066b", "COM1/\x85"],
)  # fmt: skip
def test_unsafe_names_are_refused_before_any_event(name: str) -> None:
    body = hand_zip([Raw("fine", b"1"), Raw(name, b"secret")])
    error, events = failure(body)
    assert isinstance(error, UnsafeNameError)
    assert error.entry == name and repr(name) in str(error)
    assert [type(e) for e in events] == [EntryStart, Data, EntryEnd]  # the safe entry only


def test_over_long_name_is_a_limit() -> None:
    name = "n" * 1025
    error, events = failure(hand_zip([Raw(name, b"x")]))
    assert isinstance(error, LimitExceeded) and error.entry == name
    assert "max_name_length" in str(error) and not events
    error, _ = failure(hand_zip([Raw("abcdefghijk", b"x")]), limits=Limits(max_name_length=10))
    assert isinstance(error, LimitExceeded) and "abcdefghijk" in str(error)


def test_name_flagged_utf8_that_is_not() -> None:
    error, _ = failure(hand_zip([Raw(b"bad\xff", b"x")]))
    assert isinstance(error, ProtocolError) and "bad" in str(error) and "UTF-8" in str(error)


@pytest.mark.parametrize(
    ("mode", "kind"),
    [(0o120777, "symbolic link"), (0o010644, "FIFO"), (0o020644, "character device"),
     (0o060644, "block device"), (0o140644, "socket")],
)  # fmt: skip
def test_special_files_in_the_central_directory_fail_at_the_end(mode: int, kind: str) -> None:
    body = hand_zip([Raw("ok", b"1"), Raw("link", b"/etc/passwd", external=mode << 16)])
    error, events = failure(body)
    assert isinstance(error, ProtocolError) and error.entry == "link"
    assert kind in str(error) and "'link'" in str(error)
    assert [type(e) for e in events] == [EntryStart, Data, EntryEnd] * 2  # as plain files
    # the same mode from a host whose attributes are not Unix modes means nothing
    body = hand_zip([Raw("link", b"x", external=mode << 16, made_by=20)])
    assert contents(read_zip(body)) == {"link": b"x"}


def test_symlink_in_local_unix_extra_is_refused_before_data() -> None:
    unix_n = struct.pack("<HHIHIHH", 0x756E, 14, 0, 0o120777, 0, 0, 0)
    error, events = failure(hand_zip([Raw("link", b"/etc/passwd", local_extra=unix_n)]))
    assert isinstance(error, ProtocolError) and error.entry == "link"
    assert "symbolic link" in str(error) and not events
    regular = struct.pack("<HHIHIHH", 0x756E, 14, 0, 0o100644, 0, 0, 0)
    assert contents(read_zip(hand_zip([Raw("f", b"1", local_extra=regular)]))) == {"f": b"1"}


@pytest.mark.parametrize(
    "member",
    [
        Raw("store", b"content", crc=0x12345678),
        Raw("deflate", b"content" * 50, method=8, crc=0x12345678),
        Raw("descriptor", b"content" * 50, method=8, descriptor=True, descriptor_crc=7),
        Raw("unsigned", b"content", method=8, descriptor=True, signature=False, descriptor_crc=7),
        Raw("scan", b"content", descriptor=True, descriptor_crc=7, central_crc=7),
    ],
    ids=lambda m: m.raw_name().decode(),
)
def test_bad_crc(member: Raw) -> None:
    error, events = failure(hand_zip([member, Raw("after", b"1")]))
    name = member.raw_name().decode()
    assert isinstance(error, IntegrityError) and error.entry == name
    assert "CRC-32" in str(error) and repr(name) in str(error)
    assert not any(isinstance(e, EntryEnd) for e in events)


@pytest.mark.parametrize(
    ("member", "error_type"),
    [
        (Raw("longer", b"abcdef", size=10, compressed=10), IntegrityError),
        (Raw("shorter", b"abcdef", size=3, compressed=3), IntegrityError),
        (Raw("mismatch", b"abcdef", size=6, compressed=5), IntegrityError),
        (Raw("inflated", b"abc" * 100, method=8, size=10), IntegrityError),
        (Raw("short", b"abc" * 100, method=8, size=1000), IntegrityError),
        (Raw("packed", os.urandom(300), method=8, compressed=20), IntegrityError),
        (Raw("padded", b"abc" * 100, method=8, compressed=100), IntegrityError),
        (Raw("central", b"abc", central_size=4), IntegrityError),
        (Raw("central-crc", b"abc", central_crc=1), IntegrityError),
        (Raw("renamed", b"abc", central_name="other"), ProtocolError),
        (Raw("missing", b"abc", in_central=False), ProtocolError),
        (Raw("dir/", b"abc"), ProtocolError),
    ],
    ids=lambda v: v.raw_name().decode() if isinstance(v, Raw) else "",
)
def test_sizes_and_records_that_lie(member: Raw, error_type: type[Exception]) -> None:
    error, _ = failure(hand_zip([member, Raw("after", b"tail")]))
    name = member.raw_name().decode()
    assert type(error) is error_type, error
    assert isinstance(error, MultirespError) and error.entry == name, error
    assert repr(name) in str(error)


def test_corrupt_byte_in_a_stored_entry_of_unknown_size() -> None:
    """The descriptor is still found by its sizes and the signature after it."""
    body = bytearray(stdlib_zip({"a": b"1", "b": os.urandom(5000), "c": b"3"}, seekable=False))
    body[body.index(b"PK\x03\x04", 10) + 40] ^= 0xFF
    error, events = failure(bytes(body), range(0, len(body), 100))
    assert isinstance(error, IntegrityError) and error.entry == "b" and "CRC-32" in str(error)
    assert [e.name for e in events if isinstance(e, EntryEnd)] == ["a"]


def test_stored_entry_of_unknown_size_whose_descriptor_lies_about_its_size() -> None:
    member = Raw("scan", b"content", descriptor=True, payload=b"content!")
    error, _ = failure(hand_zip([member, Raw("after", b"1")]))
    assert isinstance(error, ProtocolError) and error.entry == "scan"
    assert "data descriptor" in str(error)


def test_directory_with_content_in_a_descriptor_entry() -> None:
    error, _ = failure(hand_zip([Raw("d/", b"abc", method=8, descriptor=True)]))
    assert isinstance(error, ProtocolError) and error.entry == "d/"


def test_central_directory_disagreements() -> None:
    a, b = Raw("a", b"1"), Raw("b", b"2")
    error, _ = failure(hand_zip([a, b], count=3))
    assert isinstance(error, ProtocolError) and "entry count" in str(error)
    error, _ = failure(hand_zip([a, b, Raw("c", b"3", in_local=False)]))
    assert isinstance(error, ProtocolError) and error.entry == "c" and "'c'" in str(error)
    swapped = hand_zip([Raw("a", b"1", central_name="b"), Raw("b", b"2", central_name="a")])
    error, _ = failure(swapped)
    assert isinstance(error, ProtocolError) and error.entry == "a"


@pytest.mark.parametrize(
    ("member", "error_type", "words"),
    [
        (Raw("enc", b"x", flags=FLAG_UTF8 | 1), ProtocolError, "encrypted"),
        (Raw("aes", b"x", method=99), ProtocolError, "AES"),
        (Raw("strong", b"x", flags=FLAG_UTF8 | 1 << 6), ProtocolError, "encrypted"),
        (Raw("bzip2", b"x", method=12), ProtocolError, "method 12"),
        (Raw("lzma", b"x", method=14), ProtocolError, "method 14"),
        (
            Raw("corrupt", b"x" * 100, method=8, payload=b"\xff" * 40),
            ProtocolError,
            "corrupt deflate",
        ),
        (  # the deflate stream does not end within its declared compressed size
            Raw("no-end", b"x" * 100, method=8, payload=raw_deflate(b"x" * 100)[:-3]),
            IntegrityError,
            "compressed size",
        ),
        (  # a stored entry of unknown size whose descriptor has no signature
            Raw("stored-unsigned", b"abc", descriptor=True, signature=False),
            ProtocolError,
            "data descriptor",
        ),
        (  # sizes say "see the zip64 extra field", and there is none
            Raw("no-zip64", b"abc", size=0xFFFFFFFF, compressed=0xFFFFFFFF),
            ProtocolError,
            "zip64",
        ),
    ],
    ids=lambda v: v.raw_name().decode() if isinstance(v, Raw) else "",
)
def test_unreadable_entries(member: Raw, error_type: type[Exception], words: str) -> None:
    error, events = failure(hand_zip([member]))
    name = member.raw_name().decode()
    assert type(error) is error_type, error
    assert isinstance(error, ProtocolError | IntegrityError)
    assert error.entry == name and repr(name) in str(error)
    assert words in str(error)
    assert not any(isinstance(e, EntryEnd) for e in events)


@pytest.mark.parametrize(
    ("body", "where"),
    [
        (b"GIF89a" + bytes(100), "at the start"),
        (hand_zip([Raw("a", b"1")]).replace(b"PK\x01\x02", b"XX\x01\x02"), "after entry 'a'"),
        (hand_zip([Raw("a", b"1")], tail=b"trailing"), "follow the end"),
        (hand_zip([Raw("a", b"1")]) + hand_zip([Raw("b", b"2")]), "follow the end"),
    ],
    ids=["not-zip", "after-entry", "trailing", "two-archives"],
)
def test_garbage_where_a_signature_should_be(body: bytes, where: str) -> None:
    error, _ = failure(body)
    assert isinstance(error, ProtocolError) and where in str(error)


TRUNCATION_SAMPLES = {
    "stored": lambda: hand_zip([Raw("a", b"abc" * 20), Raw("b/", b"")], comment=b"hi"),
    "deflate-descriptor": lambda: stdlib_zip(
        {"a": b"abc" * 20, "b": b""}, compression=zipfile.ZIP_DEFLATED, seekable=False
    ),
    "stored-scan": lambda: zipstream_zip(
        {"a": b"abc" * 20, "b": b""}, compression=zipstream.ZIP_STORED, iterables=True
    ),
    "zip64": lambda: stdlib_zip({"a": b"abc" * 20}, force_zip64=True),
}


@pytest.mark.parametrize("kind", list(TRUNCATION_SAMPLES))
def test_every_prefix_is_a_protocol_error(kind: str) -> None:
    body = TRUNCATION_SAMPLES[kind]()
    assert read_zip(body)
    name_length, extra_length = struct.unpack_from("<HH", body, 26)
    start = 30 + name_length + extra_length  # where the data of entry 'a' starts
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        end = start + archive.getinfo("a").compress_size
    for length in range(len(body)):
        error, events = failure(body[:length])
        assert isinstance(error, ProtocolError), (length, error)
        assert "truncated" in str(error) or length < 4, (length, error)
        assert not any(type(e) is End for e in events)
        if start <= length < end:  # inside the data of entry 'a'
            assert error.entry == "a" and "'a'" in str(error), (length, error)


def test_truncation_in_pieces() -> None:
    body = stdlib_zip({"x": os.urandom(100_000)}, compression=zipfile.ZIP_DEFLATED)
    for length in (50, 20_000, 99_000):
        error, _ = failure(body[:length], range(1000, length, 1000))
        assert isinstance(error, ProtocolError) and error.entry == "x"


# -- limits --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bomb() -> bytes:
    """300 MB of zeros deflated to about 300 KB, as a zip with a data descriptor."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    block = bytes(MIB)
    payload = b"".join(compressor.compress(block) for _ in range(300)) + compressor.flush()
    assert len(payload) < MIB
    member = Raw("bomb.bin", b"", method=8, payload=payload, descriptor=True)
    return hand_zip([member])


def test_deflate_bomb_is_stopped_early_with_bounded_memory(bomb: bytes) -> None:
    tracemalloc.start()
    try:
        error, events = failure(bomb, range(65536, len(bomb), 65536))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert isinstance(error, LimitExceeded) and error.entry == "bomb.bin"
    assert "max_compression_ratio" in str(error)
    assert sum(len(e.data) for e in events if isinstance(e, Data)) <= 2 * MIB
    assert peak < 8 * MIB, peak


def test_deflate_bomb_under_a_size_limit_only(bomb: bytes) -> None:
    """With the ratio check off, max_file_size still stops it, never past the bound."""
    limits = Limits(max_compression_ratio=float("inf"), max_file_size=50 * MIB)
    reader = ZipReader(limits=limits)
    reader.receive_data(bomb)
    inflated = 0
    with pytest.raises(LimitExceeded, match="max_file_size") as caught:
        while (event := reader.next_event()) is not NEED_DATA:
            if isinstance(event, Data):
                assert len(event.data) <= INFLATE_OUTPUT_STEP
                inflated += len(event.data)
    assert caught.value.entry == "bomb.bin"
    assert 50 * MIB - INFLATE_OUTPUT_STEP <= inflated <= 50 * MIB


def test_max_files_counts_entries_before_their_start() -> None:
    body = hand_zip([Raw(f"f{i}", b"x") for i in range(4)] + [Raw("d/")])
    error, events = failure(body, limits=Limits(max_files=3))
    assert isinstance(error, LimitExceeded) and error.entry == "f3" and "max_files" in str(error)
    assert sum(isinstance(e, EntryStart) for e in events) == 3
    assert len(read_zip(body, limits=Limits(max_files=5))) == 5


def test_max_file_size_declared_and_streamed() -> None:
    limits = Limits(max_file_size=1000)
    error, events = failure(hand_zip([Raw("big", b"x" * 1001)]), limits=limits)
    assert isinstance(error, LimitExceeded) and error.entry == "big" and not events
    body = stdlib_zip({"ok": b"y" * 1000, "big": b"x" * 5000}, compression=8, seekable=False)
    error, events = failure(body, range(100, len(body), 100), limits=limits)
    assert isinstance(error, LimitExceeded) and error.entry == "big"
    assert sum(len(e.data) for e in events if isinstance(e, Data)) <= 2000


def test_max_total_size() -> None:
    files = {f"f{i}": os.urandom(400) for i in range(5)}
    for compression in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        body = stdlib_zip(files, compression=compression, seekable=False)
        error, events = failure(body, limits=Limits(max_total_size=1000))
        assert isinstance(error, LimitExceeded) and error.entry == "f2"
        assert "max_total_size" in str(error)
        assert sum(len(e.data) for e in events if isinstance(e, Data)) <= 1000


# -- round trips through our writer ---------------------------------------------------------------

mtimes = st.none() | st.datetimes(
    min_value=dt.datetime(1980, 1, 1),
    max_value=dt.datetime(2037, 12, 31),
    timezones=st.just(UTC),
).map(lambda t: t.replace(microsecond=0))


@dataclass
class Planned:
    name: str
    data: bytes
    declared: bool  # the writer is told the size
    crc_ahead: bool  # ... and the CRC-32
    mtime: dt.datetime | None
    splits: list[int]


def write_zip(planned: Sequence[Planned], compression: Any) -> Iterator[bytes]:
    """Drive :class:`ZipWriter` lazily, one piece per call, as a response would."""
    writer = ZipWriter(compression=compression)
    for p in planned:
        info = ZipEntryInfo(
            name=p.name,
            size=len(p.data) if p.declared else None,
            mtime=p.mtime,
            crc32=zlib.crc32(p.data) if p.declared and p.crc_ahead else None,
        )
        yield writer.start_entry(info, p.data[:65536])
        for piece in pieces(p.data, p.splits):
            yield writer.write(piece)
        yield writer.end_entry()
    yield writer.finish()


@st.composite
def plans(draw: st.DrawFn) -> list[Planned]:
    chosen = draw(st.lists(names, max_size=5, unique_by=lambda n: n.casefold()))
    planned = [
        Planned(
            name,
            data := draw(content),
            draw(st.booleans()),
            draw(st.booleans()),
            draw(mtimes),
            draw(st.lists(st.integers(0, len(data)), max_size=4)),
        )
        for name in chosen
    ]
    if draw(st.booleans()):
        planned.append(Planned("empty/", b"", True, True, draw(mtimes), []))
    return planned


@pytest.mark.parametrize("compression", ["store", "deflate", "auto"])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(planned=plans(), data=st.data())
def test_our_writer_round_trip(
    planned: list[Planned], data: st.DataObject, compression: str
) -> None:
    body = b"".join(write_zip(planned, compression))
    found = read_zip(body, data.draw(cut_points(len(body))))
    assert contents(found) == {p.name: p.data for p in planned}
    for p in planned:
        start = found[p.name].start
        expected = p.mtime if p.mtime is not None else dt.datetime(1980, 1, 1, tzinfo=UTC)
        assert start.mtime == expected
        assert start.is_dir == p.name.endswith("/")
        # Sizes lead only in layout 1 (STORE, CRC ahead): a descriptor's local sizes are 0.
        if p.declared and (not p.data or (compression == "store" and p.crc_ahead)):
            assert start.size == len(p.data)


@pytest.mark.parametrize("compression", ["store", "deflate"])
def test_our_writer_streams_through_in_bounded_memory(compression: str) -> None:
    """64 MiB go through writer and reader piece by piece; neither keeps the archive."""
    block = os.urandom(MIB) if compression == "store" else b"lorem ipsum dolor " * 58_254
    planned = [
        Planned(f"f{i}", block * 16, i % 2 == 0, True, T0, list(range(MIB, 16 * MIB, MIB)))
        for i in range(4)
    ]
    tracemalloc.start()
    try:
        content = 0
        reader = ZipReader()
        for piece in itertools.chain(filter(None, write_zip(planned, compression)), [b""]):
            reader.receive_data(piece)  # b"" (only at the end) marks the end of input
            while (event := reader.next_event()) is not NEED_DATA:
                if isinstance(event, Data):
                    content += len(event.data)
                elif isinstance(event, End):
                    break
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert content == 4 * 16 * len(block)
    assert peak < 12 * MIB, peak


def test_zip64_end_records_from_our_writer() -> None:
    """65,536 entries: the writer adds the zip64 end record and locator, the reader checks them."""
    planned = [Planned(f"f{i:05}", b"x" * (i % 2), True, True, T0, []) for i in range(65_536)]
    body = b"".join(write_zip(planned, "store"))
    assert b"PK\x06\x06" in body[-200:]
    found = read_zip(body, range(65536, len(body), 65536), limits=Limits(max_files=70_000))
    assert len(found) == 65_536 and found["f65535"].data == b"x"


def zip64_ending(body: bytes, *, locator_offset: int | None = None) -> bytes:
    """Rewrite the end of a hand-built archive as zip64 end record + locator + end record."""
    end_at = body.rindex(b"PK\x05\x06")
    _, _, _, _, count, cd_size, cd_offset, _ = struct.unpack_from("<4sHHHHIIH", body, end_at)
    record = struct.pack(
        "<4sQHHIIQQQQ", b"PK\x06\x06", 44, 45, 45, 0, 0, count, count, cd_size, cd_offset
    )
    at = end_at if locator_offset is None else locator_offset
    locator = struct.pack("<4sIQI", b"PK\x06\x07", 0, at, 1)
    end = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    return body[:end_at] + record + locator + end


def test_zip64_end_records_hand_built() -> None:
    body = hand_zip([Raw("a", b"1"), Raw("b", b"22", method=8)])
    assert contents(read_zip(zip64_ending(body))) == {"a": b"1", "b": b"22"}
    error, _ = failure(zip64_ending(body, locator_offset=3))
    assert isinstance(error, ProtocolError) and "locator" in str(error)
    wrong_count = zip64_ending(hand_zip([Raw("a", b"1"), Raw("b", b"2")], count=1))
    error, _ = failure(wrong_count)
    assert isinstance(error, ProtocolError) and "entry count" in str(error)
    for length in range(len(body) - 22, len(zip64_ending(body))):
        error, _ = failure(zip64_ending(body)[:length])
        assert isinstance(error, ProtocolError) and "central directory" in str(error)


MUTATION_SAMPLES = [
    stdlib_zip({"a.txt": b"hello " * 50, "d/": b"", "e": b""}, compression=zipfile.ZIP_DEFLATED),
    stdlib_zip({"a.txt": b"hello " * 50, "b": b"PK\x07\x08" * 9}, seekable=False),
    stdlib_zip({"z": b"zip64 " * 30}, compression=zipfile.ZIP_DEFLATED, force_zip64=True),
    zipstream_zip(
        {"s": b"stored " * 40, "t": b""}, compression=zipstream.ZIP_STORED, iterables=True
    ),
]


@settings(max_examples=300, deadline=None)
@given(
    sample=st.sampled_from(MUTATION_SAMPLES),
    flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 255)), min_size=1, max_size=3),
    data=st.data(),
)
def test_corrupted_archives_fail_cleanly(
    sample: bytes, flips: list[tuple[int, int]], data: st.DataObject
) -> None:
    """Any corruption either reads (the bytes did not matter) or raises a MultirespError."""
    body = bytearray(sample)
    for at, mask in flips:
        body[at % len(body)] ^= mask
    reader = ZipReader()
    events: list[Event] = []
    try:
        for chunk in [*pieces(bytes(body), data.draw(cut_points(len(body)))), b""]:
            reader.receive_data(chunk)
            drain(reader, events)
    except MultirespError:
        return
    found = entries(events)  # a clean read must be a consistent one
    assert all(got.end.crc32 == zlib.crc32(got.data) for got in found.values())


# -- other writers' habits (issue 15) and file modes (issue 10) --------------------------------


def test_unflagged_utf8_names_are_utf8_and_cp437_stays_the_fallback() -> None:
    body = hand_zip(
        [
            Raw("ünicøde/名前.txt".encode(), b"1", flags=0),  # Info-ZIP zip 3.0
            Raw(b"caf\x82", b"2", flags=0),  # not UTF-8: cp437
            Raw(b"plain", b"3", flags=0),
        ]
    )
    assert list(read_zip(body)) == ["ünicøde/名前.txt", "café", "plain"]


def test_a_unicode_path_field_with_a_wrong_crc_is_ignored() -> None:
    field = b"\x01" + struct.pack("<I", zlib.crc32(b"other")) + b"evil/../x"
    extra = struct.pack("<HH", 0x7075, len(field)) + field
    found = read_zip(hand_zip([Raw(b"legacy", b"3", flags=0, local_extra=extra)]))
    assert list(found) == ["legacy"]


def test_the_decoded_name_meets_the_name_rule() -> None:
    error, _ = failure(hand_zip([Raw("a/\u202etxt.exe".encode(), b"x", flags=0)]))
    assert isinstance(error, UnsafeNameError)
    field = b"\x01" + struct.pack("<I", zlib.crc32(b"ok")) + b"../up"
    extra = struct.pack("<HH", 0x7075, len(field)) + field
    error, _ = failure(hand_zip([Raw(b"ok", b"x", flags=0, local_extra=extra)]))
    assert isinstance(error, UnsafeNameError) and error.entry == "../up"


def test_dot_slash_names_and_the_root_entry() -> None:
    body = hand_zip([Raw("./"), Raw("./d/"), Raw("./d/a", b"1"), Raw("./b", b"2", method=8)])
    events = read_events(body, range(1, len(body), 7))
    assert [e.name for e in events if isinstance(e, EntryStart)] == ["d/", "d/a", "b"]
    assert contents(entries(events)) == {"d/": b"", "d/a": b"1", "b": b"2"}


def test_root_entry_does_not_count_as_a_file() -> None:
    body = hand_zip([Raw("./"), Raw("./a", b"1")])
    assert list(read_zip(body, limits=Limits(max_files=1))) == ["a"]


def test_nul_padding_after_the_end_is_accepted_up_to_a_bound() -> None:
    body = hand_zip([Raw("a", b"1")])
    padded = body + bytes(10240 - len(body))
    assert contents(read_zip(padded, range(0, len(padded), 1000))) == {"a": b"1"}
    error, _ = failure(body + bytes((64 << 10) + 1), [len(body) + 1])
    assert isinstance(error, ProtocolError) and "padding" in str(error)
    error, _ = failure(body + bytes(100) + b"x")
    assert isinstance(error, ProtocolError) and "follow the end" in str(error)


def test_end_carries_the_permission_bits_of_unix_files() -> None:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, mode in [("run", 0o104755), ("plain", 0o100640), ("d/", 0o40755)]:
            info = zipfile.ZipInfo(name)
            info.create_system = 3
            info.external_attr = mode << 16
            archive.writestr(info, b"" if name.endswith("/") else b"x")
        dos = zipfile.ZipInfo("dos")
        dos.create_system = 0  # made on MS-DOS: its attributes hold no Unix mode
        dos.external_attr = 0o100755 << 16
        archive.writestr(dos, b"y")
    end = read_events(out.getvalue())[-1]
    assert end == End(modes=(("run", 0o755), ("plain", 0o640)))
