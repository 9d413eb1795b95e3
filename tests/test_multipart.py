"""Tests of the pure multipart writer and reader (multiresp._multipart, _multipart_reader)."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from multiresp import IntegrityError, LimitExceeded, Limits, ProtocolError, UnsafeNameError
from multiresp._events import NEED_DATA, Data, End, EntryEnd, EntryStart
from multiresp._multipart import MultipartWriter, multipart_size
from multiresp._multipart_reader import (
    MAX_EPILOGUE_BYTES,
    MAX_PADDING_BYTES,
    MAX_PREAMBLE_BYTES,
    MultipartReader,
    boundary_from_content_type,
)
from multiresp._names import check_name, content_disposition, parse_header_params

BOUNDARY = "b0undary"
TRAVERSAL_NAMES = ["../x", "/etc/passwd", "a\\b", "C:x", "a/../b", "./a", "a//b", "..", ""]
SPECIAL_BOUNDARY = "a'()+_,-./:=? b"  # every kind of bchar RFC 2046 allows


# -- helpers -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Part:
    """One part to write: its name, its content, and whether its size is announced."""

    name: str
    content: bytes = b""
    known: bool = True
    media_type: str = "application/octet-stream"


@dataclass(frozen=True, slots=True)
class ReadPart:
    """One part as the reader gave it."""

    start: EntryStart
    content: bytes
    end: EntryEnd


def write(parts: Iterable[Part], *, boundary: str = BOUNDARY, subtype: str = "mixed") -> bytes:
    writer = MultipartWriter(subtype=subtype, boundary=boundary)
    out = bytearray()
    for part in parts:
        size = len(part.content) if part.known else None
        out += writer.start_part(part.name, size=size, media_type=part.media_type)
        if part.content:
            assert writer.write(part.content) is part.content
        out += part.content
        out += writer.end_part()
    out += writer.finish()
    return bytes(out)


def events(chunks: Iterable[bytes], reader: MultipartReader) -> list[object]:
    """Feed every chunk, then the end; return all events up to End (NEED_DATA left out)."""
    out: list[object] = []
    for chunk in [*(c for c in chunks if c), b""]:
        reader.receive_data(chunk)
        while (event := reader.next_event()) is not NEED_DATA:
            out.append(event)
            if isinstance(event, End):
                return out
    raise AssertionError("the reader asked for data after the end of the body")


def parts_of(event_list: Sequence[object]) -> list[ReadPart]:
    """Check the order of events and group them into parts."""
    parts: list[ReadPart] = []
    start: EntryStart | None = None
    content = bytearray()
    for event in event_list:
        if isinstance(event, EntryStart):
            assert start is None, "EntryStart inside a part"
            start, content = event, bytearray()
        elif isinstance(event, Data):
            assert start is not None, "Data outside a part"
            assert event.data, "empty Data event"
            content += event.data
        elif isinstance(event, EntryEnd):
            assert start is not None, "EntryEnd outside a part"
            assert event.name == start.name
            assert event.size == len(content)
            parts.append(ReadPart(start, bytes(content), event))
            start = None
        else:
            assert isinstance(event, End)
            assert start is None, "End inside a part"
    assert isinstance(event_list[-1], End)
    return parts


def read(chunks: Iterable[bytes], boundary: str = BOUNDARY, **options: object) -> list[ReadPart]:
    reader = MultipartReader(boundary, **options)  # type: ignore[arg-type]
    return parts_of(events(chunks, reader))


def assert_same(parts: Sequence[Part], got: Sequence[ReadPart]) -> None:
    assert [p.name for p in parts] == [g.start.name for g in got]
    for part, gotten in zip(parts, got, strict=True):
        assert gotten.content == part.content
        assert gotten.start.size == (len(part.content) if part.known else None)
        assert gotten.start.media_type == part.media_type
        assert gotten.start.is_dir == part.name.endswith("/")


def split_at(body: bytes, cuts: Iterable[int]) -> list[bytes]:
    points = sorted({0, len(body), *(min(max(c, 0), len(body)) for c in cuts)})
    return [body[a:b] for a, b in itertools.pairwise(points) if b > a]


def raw_part(headers: Sequence[str], data: bytes = b"", *, boundary: str = BOUNDARY) -> bytes:
    """A part framed by hand, to build bodies the writer would refuse to write."""
    head = "".join(f"{line}\r\n" for line in headers)
    return f"--{boundary}\r\n{head}\r\n".encode() + data + b"\r\n"


def raw_body(*parts: bytes, boundary: str = BOUNDARY) -> bytes:
    return b"".join(parts) + f"--{boundary}--\r\n".encode()


def file_headers(name: str = "f.bin", size: int | None = None) -> list[str]:
    headers = [
        "Content-Type: application/octet-stream",
        f'Content-Disposition: attachment; filename="{name}"',
    ]
    if size is not None:
        headers.append(f"Content-Length: {size}")
    return headers


def is_valid_name(name: str) -> bool:
    try:
        check_name(name)
    except UnsafeNameError:
        return False
    return True


SMALL_PARTS = [
    Part("a.txt", b"hello\r\n--b0undar", media_type="text/plain"),
    Part("dir/\u00e9t\u00e9 \u2603.bin", b"\r\n--b0undar\r\r\n--b0undarX-", known=False),
    Part("empty", b""),
    Part("empty-unknown", b"", known=False),
    Part("d/", b"", media_type="inode/directory"),
    Part("last", b"\r", known=False),
]


# -- hypothesis strategies ---------------------------------------------------------------

# bidirectional overrides and isolates: check_name refuses them
BIDI_CONTROLS = "".join(map(chr, [*range(0x202A, 0x202F), *range(0x2066, 0x206A)]))
segments = st.text(
    st.characters(exclude_categories=("Cs", "Cc"), exclude_characters="/\\" + BIDI_CONTROLS),
    min_size=1,
    max_size=12,
)
names = st.lists(segments, min_size=1, max_size=3).map("/".join).filter(is_valid_name)
boundaries = st.sampled_from([BOUNDARY, SPECIAL_BOUNDARY, "x", "-" * 70, "ab" * 35])


@st.composite
def contents(draw: st.DrawFn, delimiter: bytes) -> bytes:
    """Bytes of any size up to ~200 KB, rich in CR, LF, dashes and pieces of the delimiter."""
    size = draw(
        st.one_of(st.integers(0, 80), st.integers(0, 200_000), st.integers(100_000, 200_000))
    )
    tricky = [b"\r", b"\n", b"\r\n", b"-", b"--", b"\r\n--", delimiter[:-1], delimiter[2:]]
    pieces = draw(
        st.lists(st.one_of(st.binary(max_size=16), st.sampled_from(tricky)), min_size=1, max_size=6)
    )
    seed = b"".join(pieces) or b"\r"
    content = (seed * (size // len(seed) + 1))[:size]
    assume(delimiter not in content)  # the sender's promise for parts without a size
    return content


@st.composite
def bodies(draw: st.DrawFn) -> tuple[str, list[Part], list[bytes]]:
    """A boundary, parts, and the written body split into reads."""
    boundary = draw(boundaries)
    delimiter = b"\r\n--" + boundary.encode()
    parts = []
    for _ in range(draw(st.integers(0, 4))):
        name = draw(names)
        if draw(st.booleans()) and draw(st.booleans()):
            parts.append(Part(name + "/", media_type="inode/directory", known=draw(st.booleans())))
            continue
        media_type = draw(
            st.sampled_from(["application/octet-stream", "text/plain; charset=utf-8"])
        )
        content, known = draw(contents(delimiter)), draw(st.booleans())
        # A line that starts with the boundary ends a part without Content-Length, even the
        # first line of its content (right after the blank line).
        assume(known or not content.startswith(delimiter[2:]))
        parts.append(Part(name, content, known, media_type))
    body = write(parts, boundary=boundary)
    cuts = draw(st.lists(st.integers(0, len(body)), max_size=12))
    # Splits in and around every delimiter: the classic place for a reader to go wrong.
    for match in re.finditer(re.escape(delimiter[2:]), body):
        cuts.append(match.start() + draw(st.integers(-3, len(delimiter) + 3)))
    return boundary, parts, split_at(body, cuts)


# -- writer ------------------------------------------------------------------------------


def test_writer_frames_a_part_exactly() -> None:
    writer = MultipartWriter(boundary=BOUNDARY)
    assert writer.content_type == f"multipart/mixed; boundary={BOUNDARY}"
    head = writer.start_part("a.txt", size=5, media_type="text/plain")
    assert head == (
        b"--b0undary\r\n"
        b"Content-Type: text/plain\r\n"
        b'Content-Disposition: attachment; filename="a.txt"\r\n'
        b"Content-Length: 5\r\n"
        b"\r\n"
    )
    data = b"hello"
    assert writer.write(data) is data
    assert writer.end_part() == b"\r\n"
    assert writer.finish() == b"--b0undary--\r\n"


def test_writer_leaves_out_content_length_when_size_is_unknown() -> None:
    head = MultipartWriter(boundary=BOUNDARY).start_part("a", size=None, media_type="x/y")
    assert b"Content-Length" not in head


def test_writer_sends_non_ascii_names_with_an_ascii_fallback_and_filename_star() -> None:
    name = "r\u00e9sum\u00e9 \u2603.txt"
    head = MultipartWriter(boundary=BOUNDARY).start_part(name, size=0, media_type="text/plain")
    assert head.isascii()
    [line] = [x for x in head.split(b"\r\n") if x.startswith(b"Content-Disposition:")]
    value = line.decode().partition(": ")[2]
    assert value == content_disposition(name)  # the one builder both sides share
    kind, params = parse_header_params(value)
    assert kind == "attachment"
    assert params["filename"] == "resume _.txt"
    assert params["filename*"] == name
    assert "filename*=UTF-8''r%C3%A9sum%C3%A9%20%E2%98%83.txt" in value


def test_writer_sends_a_directory_as_an_empty_part() -> None:
    body = write([Part("d/", media_type="inode/directory")])
    assert b"Content-Type: inode/directory\r\n" in body
    [part] = read([body])
    assert part.start.is_dir and part.start.size == 0 and part.content == b""


def test_writer_refuses_content_for_a_directory() -> None:
    writer = MultipartWriter(boundary=BOUNDARY)
    with pytest.raises(ValueError, match="directory"):
        writer.start_part("d/", size=3, media_type="inode/directory")
    writer.start_part("d/", size=None, media_type="inode/directory")
    with pytest.raises(IntegrityError, match="'d/'"):
        writer.write(b"x")


def test_random_boundaries_are_valid_and_differ() -> None:
    writers = [MultipartWriter() for _ in range(50)]
    assert len({w.boundary for w in writers}) == 50
    for writer in writers:
        assert len(writer.boundary) >= 32
        assert boundary_from_content_type(writer.content_type) == writer.boundary


def test_a_boundary_with_special_characters_is_quoted() -> None:
    writer = MultipartWriter(subtype="related", boundary=SPECIAL_BOUNDARY)
    assert writer.content_type == f'multipart/related; boundary="{SPECIAL_BOUNDARY}"'
    assert boundary_from_content_type(writer.content_type) == SPECIAL_BOUNDARY


@pytest.mark.parametrize(
    "boundary",
    ["", "x" * 71, "trailing ", "semi;colon", 'quo"te', "back\\slash", "\u00e9", "a\r\nb"],
)
def test_writer_and_reader_refuse_boundaries_rfc_2046_forbids(boundary: str) -> None:
    with pytest.raises(ValueError, match="boundary"):
        MultipartWriter(boundary=boundary)
    with pytest.raises(ValueError, match="boundary"):
        MultipartReader(boundary)


@pytest.mark.parametrize("subtype", ["", "mixed; x=1", "a b", "mi\r\nxed"])
def test_writer_refuses_a_subtype_that_is_not_a_token(subtype: str) -> None:
    with pytest.raises(ValueError, match="subtype"):
        MultipartWriter(subtype=subtype)


def test_writer_refuses_more_bytes_than_declared_naming_the_part() -> None:
    writer = MultipartWriter(boundary=BOUNDARY)
    writer.start_part("big.bin", size=4, media_type="x/y")
    writer.write(b"abc")
    with pytest.raises(IntegrityError, match=r"'big\.bin'.*5 bytes, more than the 4") as info:
        writer.write(b"de")
    assert info.value.entry == "big.bin"


def test_writer_refuses_fewer_bytes_than_declared_naming_the_part() -> None:
    writer = MultipartWriter(boundary=BOUNDARY)
    writer.start_part("short.bin", size=4, media_type="x/y")
    writer.write(b"abc")
    with pytest.raises(IntegrityError, match=r"'short\.bin'.*3 bytes, fewer than the 4") as info:
        writer.end_part()
    assert info.value.entry == "short.bin"


def test_writer_refuses_calls_out_of_order() -> None:
    writer = MultipartWriter(boundary=BOUNDARY)
    with pytest.raises(RuntimeError):
        writer.write(b"x")
    with pytest.raises(RuntimeError):
        writer.end_part()
    writer.start_part("a", size=None, media_type="x/y")
    with pytest.raises(RuntimeError, match="'a' is still open"):
        writer.start_part("b", size=None, media_type="x/y")
    with pytest.raises(RuntimeError, match="'a' is still open"):
        writer.finish()
    writer.end_part()
    writer.finish()
    with pytest.raises(RuntimeError, match="finished"):
        writer.finish()
    with pytest.raises(RuntimeError, match="finished"):
        writer.start_part("c", size=0, media_type="x/y")


@pytest.mark.parametrize("name", ["a\r\nContent-Type: x", "a\nb", "a\rb", "a\x00b"])
def test_writer_refuses_cr_lf_and_nul_in_names(name: str) -> None:
    with pytest.raises(UnsafeNameError):
        MultipartWriter(boundary=BOUNDARY).start_part(name, size=0, media_type="x/y")


@pytest.mark.parametrize(
    "media_type", ["text/plain\r\nX-Evil: 1", "a\nb", "a\x00", "", "t\u00e9xt/x"]
)
def test_writer_refuses_media_types_that_break_the_header(media_type: str) -> None:
    with pytest.raises(ValueError, match="media type"):
        MultipartWriter(boundary=BOUNDARY).start_part("a", size=0, media_type=media_type)


@pytest.mark.parametrize("name", TRAVERSAL_NAMES)
def test_writer_refuses_unsafe_names(name: str) -> None:
    with pytest.raises(UnsafeNameError):
        MultipartWriter(boundary=BOUNDARY).start_part(name, size=0, media_type="x/y")


def test_empty_body_is_just_the_closing_delimiter() -> None:
    body = write([])
    assert body == b"--b0undary--\r\n"
    assert multipart_size([], boundary=BOUNDARY) == len(body)
    assert read([body]) == []


@settings(max_examples=200, deadline=None)
@given(
    boundary=boundaries,
    subtype=st.sampled_from(["mixed", "form-data", "x-custom"]),
    parts=st.lists(
        st.tuples(
            names,
            st.one_of(st.integers(0, 100), st.integers(0, 10**13)),
            st.sampled_from(["a/b", "text/plain; charset=utf-8"]),
        ),
        max_size=5,
    ),
)
def test_multipart_size_is_the_written_length(
    boundary: str, subtype: str, parts: list[tuple[str, int, str]]
) -> None:
    writer = MultipartWriter(subtype=subtype, boundary=boundary)
    written = 0
    for name, size, media_type in parts:
        written += len(writer.start_part(name, size=size, media_type=media_type))
        written += len(writer.write(b"\0" * min(size, 100)))
        if size > 100:  # too big to materialise: declare it in steps the writer counts
            writer._count(size - 100)
            written += size - 100
        written += len(writer.end_part())
    written += len(writer.finish())
    assert multipart_size(parts, boundary=boundary, subtype=subtype) == written


def test_multipart_size_counts_directories_and_non_ascii_names() -> None:
    parts = [Part("d/", media_type="inode/directory"), Part("\u00e9/\u2603", b"abc")]
    body = write(parts)
    spec = [(p.name, len(p.content), p.media_type) for p in parts]
    assert multipart_size(spec, boundary=BOUNDARY) == len(body)


def test_multipart_size_refuses_what_the_writer_refuses() -> None:
    with pytest.raises(UnsafeNameError):
        multipart_size([("../x", 1, "a/b")], boundary=BOUNDARY)


# -- boundary_from_content_type ----------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "boundary"),
    [
        ("multipart/mixed; boundary=abc", "abc"),
        ("Multipart/Mixed;boundary=abc", "abc"),
        ('multipart/mixed; boundary="a b:c"', "a b:c"),
        ("multipart/form-data; charset=utf-8; BOUNDARY=xyz", "xyz"),
        ("multipart/byteranges; boundary=--x--", "--x--"),
    ],
)
def test_boundary_is_read_from_the_content_type(content_type: str, boundary: str) -> None:
    assert boundary_from_content_type(content_type) == boundary


@pytest.mark.parametrize(
    ("content_type", "rule"),
    [
        ("text/plain; boundary=x", "not multipart"),
        ("multipart; boundary=x", "not multipart"),
        ("multipart/; boundary=x", "not multipart"),
        ("multipart/mixed", "no boundary"),
        ("multipart/mixed; charset=utf-8", "no boundary"),
        ('multipart/mixed; boundary=""', "1 to 70"),
        ("multipart/mixed; boundary=" + "x" * 71, "1 to 70"),
        ('multipart/mixed; boundary="trailing "', "end with a space"),
        ("multipart/mixed; boundary=a@b", "RFC 2046"),
    ],
)
def test_bad_content_types_are_protocol_errors(content_type: str, rule: str) -> None:
    with pytest.raises(ProtocolError, match=rule):
        boundary_from_content_type(content_type)


# -- round trips -------------------------------------------------------------------------


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(bodies())
def test_round_trip_through_any_reads(case: tuple[str, list[Part], list[bytes]]) -> None:
    boundary, parts, chunks = case
    assert_same(parts, read(chunks, boundary))
    if all(p.known for p in parts):
        spec = [(p.name, len(p.content), p.media_type) for p in parts]
        assert multipart_size(spec, boundary=boundary) == sum(map(len, chunks))


def test_round_trip_split_at_every_single_point() -> None:
    body = write(SMALL_PARTS)
    for cut in range(1, len(body)):
        assert_same(SMALL_PARTS, read([body[:cut], body[cut:]]))


def test_round_trip_one_byte_at_a_time() -> None:
    body = write(SMALL_PARTS)
    assert_same(SMALL_PARTS, read([body[i : i + 1] for i in range(len(body))]))


def test_round_trip_with_every_kind_of_bchar_in_the_boundary() -> None:
    body = write(SMALL_PARTS, boundary=SPECIAL_BOUNDARY)
    for cut in range(1, len(body), 7):
        assert_same(SMALL_PARTS, read([body[:cut], body[cut:]], SPECIAL_BOUNDARY))


def test_reader_accepts_bytearray_and_memoryview_reads() -> None:
    body = write(SMALL_PARTS)
    half = len(body) // 2
    assert_same(SMALL_PARTS, read([bytearray(body[:half]), memoryview(body)[half:]]))  # type: ignore[list-item]


def test_reader_gives_headers_with_lower_cased_names() -> None:
    [part] = read([write([Part("a.txt", b"x", media_type="text/plain")])])
    assert dict(part.start.headers) == {
        "content-type": "text/plain",
        "content-disposition": 'attachment; filename="a.txt"',
        "content-length": "1",
    }


def test_reader_hands_out_data_as_it_arrives() -> None:
    read_size = 64 * 1024
    content = bytes(range(256)) * (4 * 1024 * 1024 // 256)
    for known in (True, False):
        body = write([Part("big", content, known=known)])
        reader = MultipartReader(BOUNDARY)
        fed = handed_out = 0
        for offset in range(0, len(body), read_size):
            chunk = body[offset : offset + read_size]
            reader.receive_data(chunk)
            fed += len(chunk)
            while (event := reader.next_event()) is not NEED_DATA:
                if isinstance(event, Data):
                    assert len(event.data) <= read_size
                    handed_out += len(event.data)
                if isinstance(event, End):
                    break
            # All but the headers and at most a delimiter's length is already handed out.
            assert fed - handed_out <= 200 + len(BOUNDARY) + 4
        assert handed_out == len(content)


def test_reader_hands_over_a_whole_read_without_copying_it() -> None:
    body = write([Part("big", b"x" * 1000)])
    head_end = body.index(b"\r\n\r\n") + 4
    reader = MultipartReader(BOUNDARY)
    reader.receive_data(body[:head_end])
    assert isinstance(reader.next_event(), EntryStart)
    middle = body[head_end : head_end + 500]
    reader.receive_data(middle)
    event = reader.next_event()
    assert isinstance(event, Data) and event.data is middle


def test_preamble_and_epilogue_are_ignored() -> None:
    body = b"This is a preamble.\r\n" + write(SMALL_PARTS) + b"and an epilogue\r\n" * 100
    assert_same(SMALL_PARTS, read([body]))


def test_transport_padding_after_a_delimiter_is_allowed() -> None:
    body = raw_body(raw_part(file_headers("a", 1), b"x")).replace(
        b"--b0undary\r\n", b"--b0undary \t \r\n"
    )
    [part] = read([body])
    assert part.content == b"x"


def test_form_data_field_names_stand_in_for_missing_filenames() -> None:
    body = raw_body(raw_part(['Content-Disposition: form-data; name="field"'], b"value"))
    [part] = read([body])
    assert part.start.name == "field"
    assert part.start.media_type is None
    assert part.content == b"value"


@pytest.mark.parametrize(
    ("disposition", "kind", "filename", "name"),
    [
        ('form-data; name="f"; filename="a/b.txt"', "form-data", "a/b.txt", "a/b.txt"),
        ('form-data; name="notes"', "form-data", None, "notes"),  # a text field
        ('form-data; name="f"; filename=""', "form-data", "", "f"),  # a file input left empty
        (
            "Attachment; filename*=UTF-8''%C3%A9.txt; filename=\"e.txt\"",
            "attachment",
            "é.txt",
            "é.txt",
        ),
        ('form-data; name="f"; filename*=UTF-8\'\'; filename="a.txt"', "form-data", "", "f"),
    ],
)
def test_entry_start_carries_the_parsed_disposition(
    disposition: str, kind: str, filename: str | None, name: str
) -> None:
    """The Content-Disposition is parsed once, by the reader: its type and file name come
    with the event, so that a form receiver does not parse it again, and reads it alike."""
    [part] = read([raw_body(raw_part([f"Content-Disposition: {disposition}"], b"x"))])
    assert (part.start.disposition, part.start.filename, part.start.name) == (
        kind,
        filename,
        name,
    )


def test_a_part_with_content_length_may_hold_the_delimiter() -> None:
    # Content-Length is trusted: its bytes are handed over without being searched.
    content = b"before\r\n--b0undary\r\nafter"
    [part] = read([write([Part("a", content)])])
    assert part.content == content


def test_a_boundary_line_right_after_the_headers_ends_an_undeclared_part() -> None:
    # The blank line's CRLF doubles as the delimiter's CRLF, as in every scanning reader.
    body = (
        b'--b0undary\r\nContent-Disposition: attachment; filename="a"\r\n\r\n'
        b'--b0undary\r\nContent-Disposition: attachment; filename="b"\r\n\r\nB\r\n'
        b"--b0undary--\r\n"
    )
    for cut in range(1, len(body)):
        first, second = read([body[:cut], body[cut:]])
        assert (first.start.name, first.content) == ("a", b"")
        assert (second.start.name, second.content) == ("b", b"B")


def test_a_declared_part_may_start_with_the_boundary_line() -> None:
    content = b"--b0undary\r\nnot a part"
    [part] = read([write([Part("a", content)])])
    assert part.content == content


def test_the_filename_star_parameter_wins_over_filename() -> None:
    disposition = "attachment; filename=\"fallback.txt\"; filename*=UTF-8''r%C3%A9el.txt"
    body = raw_body(raw_part([f"Content-Disposition: {disposition}"], b"x"))
    [part] = read([body])
    assert part.start.name == "r\u00e9el.txt"


# -- hostile bodies ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [b"", b"no boundary here", b"--other\r\n\r\n\r\n--other--\r\n", b"--b0undar\r\n"],
)
def test_a_body_without_the_boundary_is_a_protocol_error(body: bytes) -> None:
    with pytest.raises(ProtocolError, match="no boundary"):
        read([body])


def test_a_long_preamble_is_refused() -> None:
    body = b"x" * (MAX_PREAMBLE_BYTES + 1) + b"\r\n" + write(SMALL_PARTS)
    with pytest.raises(ProtocolError, match="preamble"):
        read([body[i : i + 4096] for i in range(0, len(body), 4096)])


def test_a_long_epilogue_is_refused_after_the_end() -> None:
    reader = MultipartReader(BOUNDARY)
    reader.receive_data(write([Part("a", b"x")]))
    got = []
    while not isinstance(event := reader.next_event(), End):
        got.append(event)
    for _ in range(MAX_EPILOGUE_BYTES // 1024 + 1):
        reader.receive_data(b"e" * 1024)
    with pytest.raises(ProtocolError, match="epilogue"):
        reader.next_event()


def test_truncation_anywhere_before_the_closing_delimiter_is_a_protocol_error() -> None:
    body = write(SMALL_PARTS) + b"epilogue"
    complete = body.rindex(b"--b0undary--") + len(b"--b0undary--")
    for cut in range(len(body) + 1):
        if cut < complete:
            with pytest.raises(ProtocolError, match=r"truncated|no boundary"):
                read([body[:cut]])
        else:
            assert_same(SMALL_PARTS, read([body[:cut]]))


def test_truncation_names_the_part_it_cut() -> None:
    body = write([Part("first", b"1"), Part("second.bin", b"2" * 100)])
    with pytest.raises(ProtocolError, match=r"'second\.bin' after 50 of the 100 bytes") as info:
        read([body[: body.index(b"2" * 100) + 50]])
    assert info.value.entry == "second.bin"
    body = write([Part("unknown.bin", b"2" * 100, known=False)])
    with pytest.raises(ProtocolError, match=r"'unknown\.bin' after 100 bytes"):
        read([body[: body.index(b"2" * 100) + 100]])


def test_a_content_length_shorter_than_the_part_is_an_integrity_error() -> None:
    body = raw_body(raw_part(file_headers("liar.bin", 3), b"hello"))
    with pytest.raises(IntegrityError, match=r"'liar\.bin'.*3 bytes its Content-Length") as info:
        read([body])
    assert info.value.entry == "liar.bin"


def test_a_content_length_longer_than_the_part_is_refused() -> None:
    middle = raw_body(
        raw_part(file_headers("liar.bin", 10), b"hi"), raw_part(file_headers("b"), b"x")
    )
    with pytest.raises(IntegrityError, match=r"'liar\.bin'.*10 bytes its Content-Length"):
        read([middle])
    last = raw_body(raw_part(file_headers("liar.bin", 100), b"hi"))
    with pytest.raises(ProtocolError, match=r"truncated in part 'liar\.bin'"):
        read([last])


@pytest.mark.parametrize("value", ["12a", "-1", "+5", "1.0", "0x10", "\u0665", "1 2", "9" * 21, ""])
def test_a_content_length_that_is_not_a_size_is_refused(value: str) -> None:
    body = raw_body(raw_part([*file_headers("a"), f"Content-Length: {value}"], b"x"))
    with pytest.raises(ProtocolError, match=r"'a'.*Content-Length"):
        read([body])


def test_two_content_lengths_are_refused() -> None:
    body = raw_body(raw_part([*file_headers("a", 1), "content-length: 2"], b"x"))
    with pytest.raises(ProtocolError, match="part #1: more than one content-length header"):
        read([body])


def test_huge_headers_are_refused_before_their_end_arrives() -> None:
    reader = MultipartReader(BOUNDARY, max_header_bytes=1024)
    reader.receive_data(b"--b0undary\r\nX-Big: " + b"x" * 1000)
    assert reader.next_event() is NEED_DATA
    reader.receive_data(b"x" * 100)
    with pytest.raises(
        LimitExceeded, match=r"part #1: headers over 1024 bytes \(max_header_bytes\)"
    ):
        reader.next_event()


def test_headers_exactly_at_the_limit_are_accepted() -> None:
    part = raw_part(file_headers("a", 1), b"x")
    header_bytes = part.index(b"\r\n\r\n") + 4 - len(b"--b0undary\r\n")
    [got] = read([raw_body(part)], max_header_bytes=header_bytes)
    assert got.content == b"x"
    with pytest.raises(LimitExceeded, match="max_header_bytes"):
        read([raw_body(part)], max_header_bytes=header_bytes - 1)


def test_headers_fed_one_byte_at_a_time_are_found() -> None:
    part = raw_part([*file_headers("a", 1), *(f"X-{i}: {'v' * 400}" for i in range(28))], b"x")
    [got] = read([part[i : i + 1] for i in range(len(part))] + [b"--b0undary--"])
    assert got.content == b"x"


def test_too_many_headers_are_refused() -> None:
    body = raw_body(raw_part([*file_headers("a", 1), *(f"X-{i}: v" for i in range(30))], b"x"))
    with pytest.raises(LimitExceeded, match=r"part #1: 33 header lines, over 32 \(max_headers\)"):
        read([body])
    assert len(read([body], max_headers=33)) == 1


def test_a_browser_header_block_still_counts_against_max_headers() -> None:
    part = raw_part(['Content-Disposition: form-data; name="f"; filename="a"', "Content-Type: a/b"])
    with pytest.raises(LimitExceeded, match=r"part #1: 2 header lines, over 1 \(max_headers\)"):
        read([raw_body(part)], max_headers=1)
    [got] = read([raw_body(part)], max_headers=2)
    assert got.start.headers == (
        ("content-disposition", 'form-data; name="f"; filename="a"'),
        ("content-type", "a/b"),
    )


# Header lines as the reader read them one by one with this expression before it took the
# usual blocks in one match and with string methods: both paths must agree with it.
REFERENCE_HEADER_LINE = re.compile(
    r"([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*([^ \t\r\n\x00][^\r\n\x00]*)?"
)
SINGLE_HEADERS = {
    "content-disposition",
    "content-type",
    "content-length",
    "content-transfer-encoding",
}


def reference_headers(block: str) -> list[tuple[str, str]] | str:
    """The headers of a block, or the rule it breaks."""
    headers: list[tuple[str, str]] = []
    for line in block.split("\r\n") if block else []:
        match = REFERENCE_HEADER_LINE.fullmatch(line)
        if match is None:
            return "header line"
        name = match[1].lower()
        if name in SINGLE_HEADERS and name in dict(headers):
            return f"more than one {name} header"
        headers.append((name, (match[2] or "").rstrip(" \t")))
    return headers


header_names = st.sampled_from(
    [
        *("Content-Disposition", "Content-Type", "content-type", "CONTENT-DISPOSITION", "X-A"),
        *("Content-Length", "bad name", "", " Content-Type", "Content-Type ", "\u00e9", "X\x00"),
    ]
)
header_values = st.text(
    st.sampled_from([" ", "\t", "\r", "\n", "\x00", "\x0b", "\xa0", "\u00e9", "a", ";", '"', ":"]),
    max_size=8,
).map(lambda noise: f'form-data; name="f"; filename="a{noise}"')


@settings(max_examples=400, deadline=None)
@given(
    lines=st.lists(
        st.tuples(
            header_names, st.sampled_from([":", ": ", ":\t", ": \xa0", ":\x0b"]), header_values
        ),
        min_size=1,
        max_size=3,
    ),
    trailing=st.sampled_from(["", " ", "\t", " \t ", "\xa0", " \x0b"]),
)
def test_header_blocks_are_read_as_line_by_line(
    lines: list[tuple[str, str, str]], trailing: str
) -> None:
    block = "\r\n".join(name + colon + value + trailing for name, colon, value in lines)
    expected = reference_headers(block)
    body = raw_body(raw_part([block], b"x"))
    if isinstance(expected, str):
        with pytest.raises(ProtocolError, match=expected):
            read([body])
        return
    try:
        [got] = read([body])
    except (ProtocolError, UnsafeNameError) as error:  # a rule on the headers it acts on
        assert "header line" not in str(error) and "more than one" not in str(error)
    else:
        assert list(got.start.headers) == expected


def test_data_comes_out_as_bytes_whatever_the_reads() -> None:
    """A part's headers longer than MAX_BYTES_JOIN, in small reads, pass through a bytearray."""
    padding = [f"X-{i}: {'v' * 400}" for i in range(20)]  # about 8 KiB of headers
    body = raw_body(
        raw_part(['Content-Disposition: form-data; name="f"; filename="a"', *padding], b"x" * 999)
    )
    for size in (1, 100, 5000):
        reader = MultipartReader(BOUNDARY)
        pieces = [body[i : i + size] for i in range(0, len(body), size)]
        data = [e for e in events(pieces, reader) if isinstance(e, Data)]
        assert b"".join(e.data for e in data) == b"x" * 999
        assert {type(e.data) for e in data} == {bytes}


def test_too_many_parts_are_refused() -> None:
    body = write([Part(f"f{i}", b"x") for i in range(3)])
    reader = MultipartReader(BOUNDARY, limits=Limits(max_files=2))
    reader.receive_data(body)
    got = [reader.next_event() for _ in range(6)]
    assert [e.name for e in got if isinstance(e, EntryEnd)] == ["f0", "f1"]
    with pytest.raises(LimitExceeded, match=r"'f2' is entry number 3, .* of 2 .*\(max_files\)"):
        reader.next_event()


def test_a_declared_part_over_max_file_size_is_refused_before_its_data() -> None:
    body = write([Part("big.bin", b"x" * 101)])
    reader = MultipartReader(BOUNDARY, limits=Limits(max_file_size=100))
    reader.receive_data(body)
    with pytest.raises(
        LimitExceeded,
        match=r"'big\.bin' declares 101 bytes, over the limit of 100 .*\(max_file_size\)",
    ) as info:
        reader.next_event()
    assert info.value.entry == "big.bin"


def test_an_undeclared_part_over_max_file_size_is_refused_before_the_excess() -> None:
    body = write([Part("big.bin", b"x" * 1000, known=False)])
    reader = MultipartReader(BOUNDARY, limits=Limits(max_file_size=500))
    handed_out = 0
    with pytest.raises(
        LimitExceeded, match=r"'big\.bin' reaches .* of 500 bytes .*\(max_file_size\)"
    ):
        for offset in range(0, len(body), 100):
            reader.receive_data(body[offset : offset + 100])
            while (event := reader.next_event()) is not NEED_DATA:
                if isinstance(event, Data):
                    handed_out += len(event.data)
    assert handed_out <= 500


@pytest.mark.parametrize("known", [True, False])
def test_parts_over_max_total_size_are_refused(known: bool) -> None:
    body = write([Part("a", b"x" * 60, known), Part("b", b"y" * 60, known)])
    with pytest.raises(
        LimitExceeded, match=r"'b' .* over the limit of 100 bytes in all \(max_total_size\)"
    ):
        read([body], limits=Limits(max_total_size=100))
    assert len(read([body], limits=Limits(max_total_size=120))) == 2


@pytest.mark.parametrize("name", TRAVERSAL_NAMES[:-1])
def test_traversal_names_in_filename_are_refused(name: str) -> None:
    quoted = name.replace("\\", "\\\\")
    body = raw_body(raw_part([f'Content-Disposition: attachment; filename="{quoted}"'], b"x"))
    with pytest.raises(UnsafeNameError) as info:
        read([body])
    assert info.value.entry == name


@pytest.mark.parametrize("name", [*TRAVERSAL_NAMES[:-1], "a\x00b", "a\r\nb", "a\x1bb"])
def test_traversal_names_in_filename_star_are_refused(name: str) -> None:
    disposition = f"attachment; filename=\"safe.txt\"; filename*=UTF-8''{quote(name, safe='')}"
    body = raw_body(raw_part([f"Content-Disposition: {disposition}"], b"x"))
    with pytest.raises(UnsafeNameError) as info:
        read([body])
    assert info.value.entry == name


def test_a_traversal_name_in_a_form_data_field_is_refused() -> None:
    body = raw_body(raw_part(['Content-Disposition: form-data; name="../x"'], b"x"))
    with pytest.raises(UnsafeNameError):
        read([body])


@pytest.mark.parametrize(
    ("headers", "rule"),
    [
        (["Content-Type: text/plain"], "part #1: no Content-Disposition"),
        (["Content-Disposition: attachment"], "part #1: Content-Disposition has neither"),
        ([*file_headers("a"), " folded: value"], "part #1: folded header"),
        ([*file_headers("a"), "no colon"], "part #1: malformed header"),
        ([*file_headers("a"), "bad name: v"], "part #1: malformed header"),
        ([*file_headers("a"), "X-A: 1\nX-B: 2"], "part #1: CR, LF or NUL"),
        (
            [*file_headers("a"), "Content-Transfer-Encoding: x-uuencode"],
            "'a': Content-Transfer-Encoding 'x-uuencode' is not supported",
        ),
        (['Content-Disposition: attachment; filename="l"', "Content-Type: inode/symlink"], "'l'"),
        (
            ['Content-Disposition: attachment; filename="d/"', "Content-Length: 3"],
            "'d/': a directory",
        ),
        ([*file_headers("a"), *file_headers("b")], "part #1: more than one content-type header"),
    ],
)
def test_bad_part_headers_are_protocol_errors(headers: list[str], rule: str) -> None:
    with pytest.raises(ProtocolError, match=re.escape(rule)):
        read([raw_body(raw_part(headers, b"abc"))])


def test_headers_that_are_not_utf8_are_refused() -> None:
    part = raw_part(file_headers("a", 1), b"x").replace(b'"a"', b'"\xff"')
    with pytest.raises(ProtocolError, match="part #1: header 'Content-Disposition' is not UTF-8"):
        read([raw_body(part)])


def test_a_directory_part_with_content_is_refused() -> None:
    body = raw_body(raw_part(['Content-Disposition: attachment; filename="d/"'], b"abc"))
    with pytest.raises(ProtocolError, match="directory part 'd/' has content"):
        read([body])


def test_a_line_that_only_starts_with_the_delimiter_is_refused() -> None:
    body = raw_body(raw_part(file_headers("a"), b"x\r\n--b0undaryX\r\ny"))
    with pytest.raises(ProtocolError, match="after part 'a' is followed by neither"):
        read([body])


def test_too_much_transport_padding_is_refused() -> None:
    body = raw_body(raw_part(file_headers("a"), b"x")).replace(
        b"--b0undary\r\n", b"--b0undary" + b" " * (MAX_PADDING_BYTES + 1) + b"\r\n"
    )
    with pytest.raises(ProtocolError, match="that opens the body is followed by neither"):
        read([body])


def test_bare_lf_framing_is_refused() -> None:
    body = write(SMALL_PARTS).replace(b"\r\n", b"\n")
    with pytest.raises(ProtocolError):
        read([body])


def test_the_reader_raises_its_error_again_after_an_error() -> None:
    reader = MultipartReader(BOUNDARY)
    reader.receive_data(b"nothing")
    reader.receive_data(b"")
    with pytest.raises(ProtocolError) as first:
        reader.next_event()
    with pytest.raises(ProtocolError) as again:
        reader.next_event()
    assert again.value is first.value


def test_bytes_after_the_end_of_input_are_a_programming_error() -> None:
    reader = MultipartReader(BOUNDARY)
    reader.receive_data(b"")
    with pytest.raises(RuntimeError, match="after the end"):
        reader.receive_data(b"x")


def test_end_is_given_again_after_the_end() -> None:
    reader = MultipartReader(BOUNDARY)
    reader.receive_data(write([]))
    assert isinstance(reader.next_event(), End)
    reader.receive_data(b"\r\ntrailing")
    assert isinstance(reader.next_event(), End)
    reader.receive_data(b"")
    assert isinstance(reader.next_event(), End)


@pytest.mark.parametrize("bad", [{"max_header_bytes": 0}, {"max_headers": 0}])
def test_reader_bounds_must_be_positive(bad: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="positive"):
        MultipartReader(BOUNDARY, **bad)


# -- Content-Transfer-Encoding: base64 and quoted-printable (RFC 2045) ------------------------


def encoded_part(name: str, encoding: str, encoded: bytes, *, length: bool = False) -> bytes:
    headers = [*file_headers(name), f"Content-Transfer-Encoding: {encoding}"]
    if length:
        headers.append(f"Content-Length: {len(encoded)}")
    return raw_part(headers, encoded)


def one_byte_pieces(body: bytes) -> list[bytes]:
    return [body[i : i + 1] for i in range(len(body))]


@pytest.mark.parametrize("length", [False, True], ids=["scanned", "content-length"])
@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=600), cuts=st.lists(st.integers(0, 2000), max_size=12))
def test_base64_parts_decode_in_any_chunking(data: bytes, cuts: list[int], length: bool) -> None:
    import base64

    encoded = base64.encodebytes(data).replace(b"\n", b"\r\n")
    body = raw_body(encoded_part("a.bin", "base64", encoded, length=length))
    (got,) = read(split_at(body, cuts))
    assert got.content == data
    assert got.start.size is None  # Content-Length counts the encoded bytes
    assert got.end.size == len(data)


@pytest.mark.parametrize("crlf", [False, True], ids=["LF", "CRLF"])
@pytest.mark.parametrize("length", [False, True], ids=["scanned", "content-length"])
@settings(max_examples=60, deadline=None)
@given(
    data=st.binary(max_size=600) | st.text(max_size=300).map(str.encode),
    cuts=st.lists(st.integers(0, 3000), max_size=12),
)
def test_quoted_printable_parts_decode_as_python_decodes_them(
    data: bytes, cuts: list[int], length: bool, crlf: bool
) -> None:
    import quopri

    encoded = quopri.encodestring(data, quotetabs=True)  # each LF of the data: a line break
    if crlf:  # as sent on the wire: hard line breaks are CRLF, and stay CRLF
        encoded = encoded.replace(b"\n", b"\r\n")
    body = raw_body(encoded_part("a.bin", "Quoted-Printable", encoded, length=length))
    (got,) = read(split_at(body, cuts))
    assert got.content == quopri.decodestring(encoded)
    if b"\r" not in data:  # quopri.encodestring loses a CR before an LF
        assert got.content == (data.replace(b"\n", b"\r\n") if crlf else data)


def test_encoded_parts_one_byte_at_a_time() -> None:
    import base64
    import binascii

    data = bytes(range(256)) * 4 + b"tail  \n=\r\n"
    body = raw_body(
        encoded_part("b64", "base64", base64.encodebytes(data).replace(b"\n", b"\r\n")),
        encoded_part("qp", "quoted-printable", binascii.b2a_qp(data, istext=False)),
        encoded_part("plain", "8bit", data),
    )
    got = read(one_byte_pieces(body))
    assert [(g.start.name, g.content) for g in got] == [
        ("b64", data),
        ("qp", data),
        ("plain", data),
    ]


@pytest.mark.parametrize(
    ("encoded", "content"),
    [
        (b"soft=\r\nbreak", b"softbreak"),
        (b"blanks  \t\r\nend", b"blanks\r\nend"),
        (b"space before soft =\r\nx", b"space before soft x"),
        (b"=41=42=4a=4A", b"ABJJ"),
        (b"last line blanks   ", b"last line blanks"),
        (b"ends in a soft break=", b"ends in a soft break"),
        (b"bare\nLF", b"bare\nLF"),
        (b"", b""),
    ],
)
def test_quoted_printable_rules(encoded: bytes, content: bytes) -> None:
    body = raw_body(encoded_part("q", "quoted-printable", encoded))
    assert [g.content for g in read([body])] == [content]
    assert [g.content for g in read(one_byte_pieces(body))] == [content]


@pytest.mark.parametrize(
    ("encoding", "encoded", "rule"),
    [
        ("base64", b"QUJD*EVG", "outside the base64 alphabet"),
        ("base64", b"QQ==QUJD", "padding"),
        ("base64", b"QUJDRA", "incomplete group"),
        ("base64", b"QQ==\r\nQUJD", "padding"),
        ("quoted-printable", b"a=4", "=4"),
        ("quoted-printable", b"a=zz", "neither an =XX escape"),
        ("quoted-printable", b"a==41", "neither an =XX escape"),
        ("quoted-printable", b"a" + b" " * 70_000 + b"\r\nb", "a line over 65536 bytes"),
        ("quoted-printable", b"a\r\n" + b"b" * 70_000, "a line over 65536 bytes"),
        ("x-uuencode", b"x", "'x-uuencode' is not supported"),
        ("gzip", b"x", "'gzip' is not supported"),
    ],
)
def test_bad_encoded_parts_are_protocol_errors_naming_the_part(
    encoding: str, encoded: bytes, rule: str
) -> None:
    body = raw_body(encoded_part("bad.bin", encoding, encoded))
    for chunks in ([body], one_byte_pieces(body)):
        with pytest.raises(ProtocolError, match=re.escape(rule)) as info:
            read(chunks)
        assert "'bad.bin'" in str(info.value)


@pytest.mark.parametrize("encoding", ["7bit", "8bit", "binary", "BINARY"])
def test_identity_encodings_pass_through(encoding: str) -> None:
    body = raw_body(encoded_part("a", encoding, b"=41 \r\nQQ=="))
    assert [g.content for g in read([body])] == [b"=41 \r\nQQ=="]


def test_limits_apply_to_the_decoded_bytes() -> None:
    import base64

    data = bytes(3000)
    encoded = base64.encodebytes(data).replace(b"\n", b"\r\n")  # about 4,100 bytes
    body = raw_body(encoded_part("a", "base64", encoded, length=True))
    assert read([body], limits=Limits(max_file_size=3000))[0].content == data
    with pytest.raises(LimitExceeded, match="max_file_size"):
        read([body], limits=Limits(max_file_size=2999))
    with pytest.raises(LimitExceeded, match="max_total_size"):
        read([body + body[:0]], limits=Limits(max_total_size=2999))
    # A declared Content-Length frames the encoded bytes; it is not checked against a limit
    # meant for content, which 4,100 encoded bytes would pass over.
    assert read([body], limits=Limits(max_total_size=3000))[0].content == data


def test_a_bad_rfc_8187_charset_names_the_part() -> None:
    disposition = "Content-Disposition: attachment; filename=\"a\"; filename*=undefined''%41"
    with pytest.raises(ProtocolError, match=r"part #1: Content-Disposition parameter filename\*"):
        read([raw_body(raw_part([disposition], b"x"))])


@pytest.mark.parametrize("name", ["a\x85b", "x\u202etxt.exe", "d/\u2066x"])
def test_c1_and_bidi_names_are_refused_by_the_reader(name: str) -> None:
    disposition = f"Content-Disposition: attachment; filename*=UTF-8''{quote(name, safe='')}"
    with pytest.raises(UnsafeNameError) as info:
        read([raw_body(raw_part([disposition], b"x"))])
    assert info.value.entry == name
