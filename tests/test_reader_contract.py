"""The readers' one contract (``multiresp._events``), held by ``ZipReader`` and ``MultipartReader``.

Each test runs the same scenario through both readers and expects the same behaviour: end of
input in every state, bytes after the end, calls after an error, and each bound of
:class:`~multiresp.Limits` at its exact value (n allowed, n + 1 refused, the entry named).
"""

from __future__ import annotations

import ast
import io
import pathlib
import zipfile
from collections.abc import Callable
from dataclasses import dataclass

import pytest

import multiresp
from multiresp import (
    IntegrityError,
    LimitExceeded,
    Limits,
    MultirespError,
    ProtocolError,
    UnsafeNameError,
)
from multiresp._events import NEED_DATA, Data, End, EntryEnd, EntryStart, Event, _Sentinel
from multiresp._multipart import MultipartWriter
from multiresp._multipart_reader import MultipartReader
from multiresp._zipreader import ZipReader

from ziputil import Unseekable

BOUNDARY = "c0ntract-b0undary"
ENTRIES = {"a.txt": b"hello\n" * 10, "dir/b.bin": bytes(range(256)), "empty": b""}
MAX_EVENTS = 10_000  # more than any body here can give: a reader that goes on has hung


@dataclass(frozen=True)
class Format:
    """How to write a body of one format and make its reader."""

    name: str
    build: Callable[[dict[str, bytes], bool], bytes]  # entries, sizes declared up front?
    reader: Callable[[Limits | None], ZipReader | MultipartReader]
    complete: Callable[[bytes], int]  # bytes of the body after which End may come


def zip_body(entries: dict[str, bytes], declared: bool) -> bytes:
    """A zip from the standard library: sizes in the local headers, or in descriptors."""
    out: io.BytesIO | Unseekable = io.BytesIO() if declared else Unseekable()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return out.getvalue() if isinstance(out, io.BytesIO) else bytes(out.data)


def multipart_body(entries: dict[str, bytes], declared: bool) -> bytes:
    writer = MultipartWriter(boundary=BOUNDARY)
    out = []
    for name, data in entries.items():
        out.append(
            writer.start_part(
                name, size=len(data) if declared else None, media_type="application/octet-stream"
            )
        )
        out.append(writer.write(data))
        out.append(writer.end_part())
    out.append(writer.finish())
    return b"".join(out)


def multipart_complete(body: bytes) -> int:
    """The closing delimiter ends a multipart body; the CRLF after it is optional."""
    closing = f"--{BOUNDARY}--".encode()
    return body.index(closing) + len(closing)


FORMATS = [
    Format("zip", zip_body, lambda limits: ZipReader(limits=limits), len),
    Format(
        "multipart",
        multipart_body,
        lambda limits: MultipartReader(BOUNDARY, limits=limits),
        multipart_complete,
    ),
]


@pytest.fixture(params=FORMATS, ids=lambda f: f.name)
def fmt(request: pytest.FixtureRequest) -> Format:
    format: Format = request.param
    return format


def drain(
    reader: ZipReader | MultipartReader, events: list[Event] | None = None
) -> Event | _Sentinel:
    """Take events (into ``events``) until NEED_DATA or End, and return that last one."""
    events = [] if events is None else events
    for _ in range(MAX_EVENTS):
        event = reader.next_event()
        if event is NEED_DATA:
            return event
        events.append(event)
        if type(event) is End:
            return event
    raise AssertionError("the reader never stopped giving events")


def read(
    fmt: Format, body: bytes, limits: Limits | None = None, step: int = 0
) -> tuple[list[Event], MultirespError | None]:
    """Feed ``body`` (whole, or in ``step``-byte pieces), then the end: events and error."""
    reader = fmt.reader(limits)
    events: list[Event] = []
    pieces = [body[i : i + step] for i in range(0, len(body), step)] if step else [body]
    try:
        for piece in [*pieces, b""]:
            reader.receive_data(piece)
            last = drain(reader, events)
            if piece == b"":
                assert last is not NEED_DATA, "NEED_DATA after the end of input"
            if type(last) is End:
                return events, None
    except MultirespError as error:
        return events, error
    raise AssertionError("the input ended, yet neither End nor an error came")


def merged(events: list[Event]) -> list[Event]:
    """The events with each run of Data joined into one (pieces depend on the feeding)."""
    out: list[Event] = []
    for event in events:
        if type(event) is Data and out and type(out[-1]) is Data:
            out[-1] = Data(out[-1].data + event.data)
        else:
            out.append(event)
    return out


def files(events: list[Event]) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    name = None
    for event in events:
        if type(event) is EntryStart:
            name = event.name
            out[name] = b""
        elif type(event) is Data:
            assert name is not None
            out[name] += event.data
    return out


# -- end of input ---------------------------------------------------------------------------


@pytest.mark.parametrize("declared", [True, False], ids=["declared", "undeclared"])
def test_a_whole_body_ends_with_end(fmt: Format, declared: bool) -> None:
    events, error = read(fmt, fmt.build(ENTRIES, declared))
    assert error is None and type(events[-1]) is End
    assert files(events) == ENTRIES


@pytest.mark.parametrize("declared", [True, False], ids=["declared", "undeclared"])
def test_end_of_input_in_every_state_is_a_protocol_error(fmt: Format, declared: bool) -> None:
    """Cut anywhere before the format's end: the complete events, then ProtocolError.

    Never NEED_DATA once the end was marked, never another error type, and every entry whose
    EntryEnd came has all its bytes.
    """
    body = fmt.build(ENTRIES, declared)
    full, _ = read(fmt, body)
    for cut in range(fmt.complete(body)):
        for step in (0, 1) if cut < 200 else (0,):
            events, error = read(fmt, body[:cut], step=step)
            assert type(error) is ProtocolError, (cut, step, error)
            got, expected = merged(events), merged(full)
            if got and type(got[-1]) is Data:  # the cut entry: a prefix of its content
                assert expected[len(got) - 1].data.startswith(got[-1].data), (cut, step)  # type: ignore[union-attr]
                got = got[:-1]
            assert got == expected[: len(got)], (cut, step)
            starts = [e.name for e in events if type(e) is EntryStart]
            if len(starts) > len([e for e in events if type(e) is EntryEnd]):
                assert error.entry == starts[-1] and repr(starts[-1]) in str(error), error
            ended = [e.name for e in events if type(e) is EntryEnd]
            assert all(files(events)[name] == ENTRIES[name] for name in ended)


def test_the_format_end_then_end_of_input_gives_end(fmt: Format) -> None:
    body = fmt.build(ENTRIES, True)
    events, error = read(fmt, body[: fmt.complete(body)])
    assert error is None and files(events) == ENTRIES


def test_end_is_given_again_and_the_end_may_be_marked_twice(fmt: Format) -> None:
    reader = fmt.reader(None)
    reader.receive_data(fmt.build(ENTRIES, True))
    reader.receive_data(b"")
    reader.receive_data(b"")
    assert type(drain(reader)) is End
    assert [type(reader.next_event()) for _ in range(3)] == [End] * 3
    reader.receive_data(b"")
    assert type(reader.next_event()) is End


def test_bytes_after_the_end_of_input_are_a_programmer_error(fmt: Format) -> None:
    for fed in (b"", fmt.build(ENTRIES, True)[:10], fmt.build(ENTRIES, True)):
        reader = fmt.reader(None)
        reader.receive_data(fed)
        reader.receive_data(b"")
        with pytest.raises(RuntimeError, match="after the end of input"):
            reader.receive_data(b"x")


def test_an_empty_body_is_a_protocol_error(fmt: Format) -> None:
    events, error = read(fmt, b"")
    assert type(error) is ProtocolError and events == []


# -- errors ---------------------------------------------------------------------------------


def corrupt(fmt: Format) -> bytes:
    """A body whose second entry's bytes disagree with its CRC-32 or its Content-Length."""
    data = ENTRIES["dir/b.bin"]
    if fmt.name == "zip":
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as archive:
            for name, content in ENTRIES.items():
                archive.writestr(name, content)
        return out.getvalue().replace(data, data[::-1], 1)
    return fmt.build(ENTRIES, True).replace(data, data[:-1], 1)


ERROR_CASES: dict[str, tuple[type[MultirespError], Callable[[Format], bytes], Limits | None]] = {
    "protocol": (ProtocolError, lambda fmt: b"\0" * 200, None),
    "limit": (LimitExceeded, lambda fmt: fmt.build(ENTRIES, True), Limits(max_files=1)),
    "unsafe name": (
        UnsafeNameError,
        lambda fmt: fmt.build({"zz/x": b"x"}, True).replace(b"zz/x", b"../x"),
        None,
    ),
    "integrity": (IntegrityError, corrupt, None),
}


@pytest.mark.parametrize("case", ERROR_CASES, ids=list(ERROR_CASES))
def test_after_an_error_every_call_raises_it_again(fmt: Format, case: str) -> None:
    kind, body, limits = ERROR_CASES[case]
    reader = fmt.reader(limits)
    reader.receive_data(body(fmt))
    reader.receive_data(b"")
    with pytest.raises(kind) as first:
        drain(reader)
    for call in (reader.next_event, lambda: reader.receive_data(b"more"), reader.next_event):
        with pytest.raises(MultirespError) as again:
            call()
        assert again.value is first.value
    with pytest.raises(MultirespError) as again:
        reader.receive_data(b"")
    assert again.value is first.value


def test_a_corrupt_entry_is_refused_by_its_integrity_check(fmt: Format) -> None:
    events, error = read(fmt, corrupt(fmt))
    assert isinstance(error, IntegrityError), error
    assert error.entry == "dir/b.bin" and "'dir/b.bin'" in str(error)
    assert [e.name for e in events if type(e) is EntryEnd] == ["a.txt"]


# -- limits at their exact bounds -----------------------------------------------------------


def refused(fmt: Format, entries: dict[str, bytes], declared: bool, limits: Limits) -> str:
    """The name of the entry the limits refuse (LimitExceeded naming it and the bound)."""
    events, error = read(fmt, fmt.build(entries, declared), limits)
    assert isinstance(error, LimitExceeded), error
    assert error.entry is not None and repr(error.entry) in str(error)
    handed = files(events)
    assert sum(map(len, handed.values())) <= (limits.max_total_size or 1 << 62)
    assert all(len(data) <= (limits.max_file_size or 1 << 62) for data in handed.values())
    return error.entry


def accepted(fmt: Format, entries: dict[str, bytes], declared: bool, limits: Limits) -> None:
    events, error = read(fmt, fmt.build(entries, declared), limits)
    assert error is None and files(events) == entries


DECLARED = pytest.mark.parametrize("declared", [True, False], ids=["declared", "undeclared"])


@DECLARED
def test_max_files(fmt: Format, declared: bool) -> None:
    entries = {f"f{i}": b"x" for i in range(4)}
    accepted(fmt, entries, declared, Limits(max_files=4))
    assert refused(fmt, entries, declared, Limits(max_files=3)) == "f3"


@DECLARED
def test_max_file_size(fmt: Format, declared: bool) -> None:
    entries = {"small": b"s" * 100, "big": bytes(range(256)) * 8}
    accepted(fmt, entries, declared, Limits(max_file_size=2048))
    assert refused(fmt, entries, declared, Limits(max_file_size=2047)) == "big"


@DECLARED
def test_max_total_size(fmt: Format, declared: bool) -> None:
    entries = {"a": b"a" * 1000, "b": b"b" * 1000, "c": b"c" * 24}
    accepted(fmt, entries, declared, Limits(max_total_size=2024))
    assert refused(fmt, entries, declared, Limits(max_total_size=2023)) == "c"


@DECLARED
def test_max_name_length(fmt: Format, declared: bool) -> None:
    entries = {"short": b"1", "n" * 40: b"2"}
    accepted(fmt, entries, declared, Limits(max_name_length=40))
    assert refused(fmt, entries, declared, Limits(max_name_length=39)) == "n" * 40


@DECLARED
def test_max_depth(fmt: Format, declared: bool) -> None:
    entries = {"top": b"1", "a/b/c/d.txt": b"2"}
    accepted(fmt, entries, declared, Limits(max_depth=4))
    assert refused(fmt, entries, declared, Limits(max_depth=3)) == "a/b/c/d.txt"


@pytest.mark.parametrize(
    ("limits", "bound"),
    [
        (Limits(max_files=1), "max_files"),
        (Limits(max_file_size=10), "max_file_size"),
        (Limits(max_total_size=70), "max_total_size"),
        (Limits(max_name_length=5), "max_name_length"),
        (Limits(max_depth=1), "max_depth"),
    ],
)
def test_both_readers_refuse_the_same_entry_with_the_same_words(limits: Limits, bound: str) -> None:
    errors = []
    for fmt in FORMATS:
        _, error = read(fmt, fmt.build(ENTRIES, True), limits)
        assert isinstance(error, LimitExceeded) and f"({bound})" in str(error)
        errors.append((error.entry, str(error)))
    assert errors[0] == errors[1]


def test_the_limit_tracker_is_pure() -> None:
    path = pathlib.Path(multiresp.__file__).parent / "_limits.py"
    imported = {
        node.module
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ImportFrom)
    } | {
        alias.name
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    assert imported <= {"__future__", "_errors", "_names", "_types"}
