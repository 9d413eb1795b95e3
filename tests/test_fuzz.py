"""A bounded fuzz of the pure readers: mutated zips and multipart bodies, in any chunking.

Whatever the bytes, a reader either raises a :class:`~multiresp.MultirespError` (and then the
same error again on the next call) or ends with ``End``; it never raises anything else, never
asks for data after the end of input, never hangs, and never hands out data that does not
check: every accepted zip entry's bytes match their CRC-32 and size (and are the bytes of an
entry that was written), every accepted multipart part's bytes match the size it declared.
The seed is fixed, so a failure reproduces; the case count keeps the run to a few seconds.
"""

from __future__ import annotations

import io
import random
import zipfile
import zlib
from collections.abc import Callable, Iterator
from email import encoders, policy
from email.mime.application import MIMEApplication
from email.mime.multipart import MIMEMultipart

import pytest
import zipstream

from multiresp import Limits, MultirespError
from multiresp._events import NEED_DATA, Data, End, EntryEnd, EntryStart
from multiresp._multipart import MultipartWriter
from multiresp._multipart_reader import MultipartReader
from multiresp._zipreader import ZipReader
from multiresp._zipwriter import ZipEntryInfo, ZipWriter

from ziputil import Unseekable

SEED = 20260915
MUTANTS_PER_SEED = 10  # mutated variants of each seed body
LIMITS = Limits(max_files=50, max_total_size=4 << 20, max_name_length=200)
MAX_EVENTS_PER_BYTE = 4  # events a reader may give per byte fed (+ a constant) before it hangs

rng_contents = random.Random(SEED)
CONTENTS = {
    "a.txt": b"hello, world\n" * 20,
    "dir/b.bin": rng_contents.randbytes(3000),
    "dir/sub/empty": b"",
    "ünicøde/名前.txt": b"PK\x07\x08 look-alike\r\n--b\r\n" * 10,
    "zeros": bytes(8_000),
}
WRITTEN = set(CONTENTS.values())


def our_zip(compression: str, sized: bool) -> bytes:
    writer = ZipWriter(compression=compression)  # type: ignore[arg-type]
    out = []
    for name, data in CONTENTS.items():
        info = ZipEntryInfo(
            name=name,
            size=len(data) if sized else None,
            crc32=zlib.crc32(data) if sized else None,
        )
        out.append(bytes(writer.start_entry(info, data[:65536])))
        out.append(bytes(writer.write(data)))
        out.append(bytes(writer.end_entry()))
    out.append(bytes(writer.finish()))
    return b"".join(out)


def stdlib_zip(method: int, seekable: bool) -> bytes:
    out: io.BytesIO | Unseekable = io.BytesIO() if seekable else Unseekable()
    with zipfile.ZipFile(out, "w", compression=method) as archive:
        archive.mkdir("dir") if hasattr(archive, "mkdir") else None
        for name, data in CONTENTS.items():
            with archive.open(name, "w") as dest:
                dest.write(data)
    return out.getvalue() if isinstance(out, io.BytesIO) else bytes(out.data)


def zipstream_zip(method: int) -> bytes:
    archive = zipstream.ZipStream(compress_type=method)
    for name, data in CONTENTS.items():
        archive.add(iter([data]), name)
    return b"".join(archive)


ZIP_SEEDS: dict[str, Callable[[], bytes]] = {
    "ours store": lambda: our_zip("store", True),
    "ours deflate": lambda: our_zip("deflate", True),
    "ours unknown size": lambda: our_zip("deflate", False),
    "ours store unknown size": lambda: our_zip("store", False),
    "zipfile": lambda: stdlib_zip(zipfile.ZIP_DEFLATED, True),
    "zipfile unseekable": lambda: stdlib_zip(zipfile.ZIP_STORED, False),
    "zipstream-ng": lambda: zipstream_zip(zipfile.ZIP_DEFLATED),
    "zipstream-ng stored": lambda: zipstream_zip(zipfile.ZIP_STORED),
}


def our_multipart(sized: bool) -> tuple[str, bytes]:
    writer = MultipartWriter(boundary="fuzz-boundary")
    out = bytearray()
    for name, data in CONTENTS.items():
        size = len(data) if sized else None
        out += writer.start_part(name, size=size, media_type="application/octet-stream")
        out += writer.write(data) + writer.end_part()
    out += writer.finish()
    return writer.boundary, bytes(out)


def email_multipart(encoder: Callable[[MIMEApplication], None]) -> tuple[str, bytes]:
    message = MIMEMultipart("mixed", boundary="mail-boundary")
    for name, data in CONTENTS.items():
        part = MIMEApplication(data, _encoder=encoder)
        part.add_header("Content-Disposition", "attachment", filename=name)
        message.attach(part)
    body = message.as_bytes(policy=policy.HTTP).partition(b"\r\n\r\n")[2]
    return "mail-boundary", body


MULTIPART_SEEDS: dict[str, Callable[[], tuple[str, bytes]]] = {
    "ours sized": lambda: our_multipart(True),
    "ours unsized": lambda: our_multipart(False),
    "email base64": lambda: email_multipart(encoders.encode_base64),
    "email quoted-printable": lambda: email_multipart(encoders.encode_quopri),
}


def mutate(body: bytes, rng: random.Random) -> bytes:
    """One to three random edits: flip, overwrite, insert, delete, duplicate, truncate."""
    data = bytearray(body)
    for _ in range(rng.randint(1, 3)):
        at = rng.randrange(len(data)) if data else 0
        kind = rng.randrange(7)
        if kind == 0 and data:
            data[at] ^= 1 << rng.randrange(8)
        elif kind == 1 and data:
            data[at] = rng.choice([0x00, 0xFF, 0x7F, 0x80, ord("P"), ord("K"), ord("-"), 0x0D])
        elif kind == 2:
            data[at:at] = rng.randbytes(rng.randint(1, 8))
        elif kind == 3:
            del data[at : at + rng.randint(1, 64)]
        elif kind == 4:
            length = rng.randint(1, 200)
            data[at:at] = data[rng.randrange(len(data) or 1) :][:length]
        elif kind == 5:
            del data[at:]
        else:  # a 32-bit field set to an edge value
            data[at : at + 4] = rng.choice([b"\xff\xff\xff\xff", b"\0\0\0\0", b"\0\0\0\x80"])
    return bytes(data)


def chunks(body: bytes, rng: random.Random) -> Iterator[bytes]:
    mode = rng.randrange(3)
    at = 0
    while at < len(body):
        size = 1 if mode == 0 else rng.randint(1, 64) if mode == 1 else rng.randint(1, 70_000)
        yield body[at : at + size]
        at += size


def feed(reader: ZipReader | MultipartReader, body: bytes, rng: random.Random) -> list[object]:
    """All events up to End, feeding ``body`` in random pieces; bounded, so a hang fails."""
    events: list[object] = []
    budget = MAX_EVENTS_PER_BYTE * len(body) + 1000
    for piece in [*chunks(body, rng), b""]:
        reader.receive_data(piece)
        while (event := reader.next_event()) is not NEED_DATA:
            events.append(event)
            assert len(events) <= budget, "the reader keeps giving events: a hang"
            if type(event) is End:
                return events
    raise AssertionError("the input ended, yet the reader neither ended nor raised")


def check_accepted(events: list[object], *, zip_crc: bool) -> None:
    data = bytearray()
    start: EntryStart | None = None
    for event in events:
        if isinstance(event, EntryStart):
            start, data = event, bytearray()
        elif isinstance(event, Data):
            data += event.data
        elif isinstance(event, EntryEnd):
            assert start is not None and event.name == start.name
            assert event.size == len(data)
            if start.size is not None:
                assert start.size == len(data)
            if zip_crc:
                assert event.crc32 == zlib.crc32(data)
                assert bytes(data) in WRITTEN or not data, "accepted bytes nobody wrote"
            start = None


def run(
    label: str, make: Callable[[], ZipReader | MultipartReader], body: bytes, zip_crc: bool
) -> int:
    rng = random.Random(f"{SEED}-{label}")
    accepted = 0
    for case in [body, *(mutate(body, rng) for _ in range(MUTANTS_PER_SEED))]:
        reader = make()
        try:
            events = feed(reader, case, rng)
        except MultirespError as error:
            with pytest.raises(MultirespError) as again:  # the readers' contract: it stopped
                reader.next_event()
            assert again.value is error
            continue
        check_accepted(events, zip_crc=zip_crc)
        accepted += 1
    return accepted


@pytest.mark.parametrize("seed", ZIP_SEEDS)
def test_mutated_zips_raise_only_multiresp_errors(seed: str) -> None:
    body = ZIP_SEEDS[seed]()
    assert run(seed, lambda: ZipReader(limits=LIMITS), body, zip_crc=True) >= 1  # the original


@pytest.mark.parametrize("seed", MULTIPART_SEEDS)
def test_mutated_multipart_bodies_raise_only_multiresp_errors(seed: str) -> None:
    boundary, body = MULTIPART_SEEDS[seed]()
    made = lambda: MultipartReader(boundary, limits=LIMITS)  # noqa: E731
    assert run(seed, made, body, zip_crc=False) >= 1


def email_reads(boundary: str, body: bytes) -> dict[str, bytes]:
    """What the email package's own reader makes of a body."""
    from email.parser import BytesParser

    head = f"Content-Type: multipart/mixed; boundary={boundary}\r\n\r\n".encode()
    message = BytesParser(policy=policy.HTTP).parsebytes(head + body)
    return {
        str(part.get_filename()): bytes(part.get_payload(decode=True) or b"")  # type: ignore[arg-type]
        for part in message.iter_parts()  # type: ignore[attr-defined]
    }


def test_the_seed_bodies_are_read_back_exactly() -> None:
    """The fuzz starts from bodies that the readers accept and read byte for byte."""
    rng = random.Random(SEED)
    for make in ZIP_SEEDS.values():
        events = feed(ZipReader(limits=LIMITS), make(), rng)
        assert {e.name for e in events if isinstance(e, EntryStart)} >= set(CONTENTS)
    for label, boundary_and_body in MULTIPART_SEEDS.items():
        boundary, body = boundary_and_body()
        events = feed(MultipartReader(boundary, limits=LIMITS), body, rng)
        got: dict[str, bytes] = {}
        for event in events:
            if isinstance(event, EntryStart):
                name = event.name
                got[name] = b""
            elif isinstance(event, Data):
                got[name] += event.data
        # The email package's quoted-printable writes each LF of the data as a line break,
        # which its own reader gives back as CRLF: there, agree with that reader.
        expected = email_reads(boundary, body) if "quoted" in label else CONTENTS
        assert got == expected
