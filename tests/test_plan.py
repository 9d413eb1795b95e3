"""The archive plan agrees with the writer, byte for byte; the range rules of RFC 9110."""

from __future__ import annotations

import ast
import datetime as dt
import pathlib
import random
import zlib

import pytest

import multiresp
from multiresp._multipart import MultipartWriter
from multiresp._plan import PartFacts, Segment, ZipPlan, plan_multipart, plan_zip
from multiresp._ranges import (
    UNSATISFIABLE,
    ByteRange,
    byteranges,
    derived_boundary,
    if_range_holds,
    manifest_etag,
    not_modified,
    parse_range,
)
from multiresp._zipwriter import ZipEntryInfo, ZipWriter, zip_size

WHEN = dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=dt.timezone.utc)


def _entries(seed: int) -> list[tuple[ZipEntryInfo, bytes]]:
    rng = random.Random(seed)
    out = [(ZipEntryInfo(name="d/", mtime=WHEN), b"")]
    for number in range(rng.randint(1, 6)):
        data = rng.randbytes(rng.choice([0, 1, 17, 70_000]))
        mtime = rng.choice([None, WHEN])
        out.append((ZipEntryInfo(name=f"d/é{number}.bin", size=len(data), mtime=mtime,
                                 mode=rng.choice([None, 0o600])), data))  # fmt: skip
    return out


def _written(entries: list[tuple[ZipEntryInfo, bytes]]) -> bytes:
    writer = ZipWriter()
    body = []
    for info, data in entries:
        crc = zlib.crc32(data)
        told = ZipEntryInfo(
            name=info.name, size=info.size, mtime=info.mtime, crc32=crc, mode=info.mode
        )
        body.append(writer.start_entry(told))
        body.append(writer.write(data))
        body.append(writer.end_entry())
    body.append(writer.finish())
    return b"".join(body)


def _render(
    plan: ZipPlan, entries: list[tuple[ZipEntryInfo, bytes]], start: int, stop: int
) -> bytes:
    out = []
    for piece in plan.pieces(start, stop):
        segment: Segment = piece.segment
        if segment.kind == "bytes":
            whole = segment.payload
        elif segment.kind == "data":
            whole = entries[segment.index][1]
        else:
            whole = plan.record(segment, zlib.crc32(entries[segment.index][1]))
        out.append(whole[piece.skip : piece.skip + piece.length])
    return b"".join(out)


@pytest.mark.parametrize("seed", range(8))
def test_the_plan_renders_what_the_writer_writes(seed: int) -> None:
    entries = _entries(seed)
    full = _written(entries)
    plan = plan_zip("store", (info for info, _ in entries))
    assert plan is not None and plan.total == len(full)
    assert _render(plan, entries, 0, plan.total) == full
    rng = random.Random(seed)
    for _ in range(50):
        a = rng.randrange(len(full))
        b = rng.randrange(a, len(full)) + 1
        assert _render(plan, entries, a, b) == full[a:b], (a, b)


def test_the_plan_places_zip64_archives_as_the_size_predictor_does() -> None:
    infos = [ZipEntryInfo(name=f"big{n}", size=(5 << 30) + n, mtime=WHEN) for n in range(3)]
    plan = plan_zip("store", infos)
    with_crc = [ZipEntryInfo(name=i.name, size=i.size, mtime=WHEN, crc32=0) for i in infos]
    assert plan is not None and plan.total == zip_size(with_crc)
    assert plan.local_at[2] > 10 << 30


def test_no_plan_when_the_length_depends_on_the_bytes() -> None:
    text = ZipEntryInfo(name="a.txt", size=10, media_type="text/plain")
    image = ZipEntryInfo(name="a.png", size=10, media_type="image/png")
    assert plan_zip("deflate", [image]) is None
    assert plan_zip("auto", [image, text]) is None
    assert plan_zip("store", [ZipEntryInfo(name="x", size=None)]) is None
    auto = plan_zip("auto", [image, ZipEntryInfo(name="d/"), ZipEntryInfo(name="e.txt", size=0)])
    assert auto is not None and auto.total == plan_zip("store", auto.infos).total  # type: ignore[union-attr]


def test_the_multipart_plan_matches_the_writer() -> None:
    parts = [PartFacts("a.txt", 3, "text/plain"), PartFacts("d/", 0, "inode/directory"),
             PartFacts("ü.bin", 70_000, "application/octet-stream")]  # fmt: skip
    data = [b"abc", b"", bytes(range(256)) * 273 + b"x" * 112]
    writer = MultipartWriter(boundary="b0und")
    body = b"".join(
        writer.start_part(p.name, size=p.size, media_type=p.media_type)
        + writer.write(d) + writer.end_part()
        for p, d in zip(parts, data, strict=True)
    ) + writer.finish()  # fmt: skip
    plan = plan_multipart(parts, boundary="b0und", subtype="mixed")
    assert plan.total == len(body) and plan.content_type == writer.content_type
    rendered = b"".join(
        (p.segment.payload if p.segment.kind == "bytes" else data[p.segment.index])[
            p.skip : p.skip + p.length
        ]
        for p in plan.pieces(0, plan.total)
    )
    assert rendered == body


@pytest.mark.parametrize("module", ["_plan", "_ranges"])
def test_the_new_core_modules_import_no_io(module: str) -> None:
    path = pathlib.Path(multiresp.__file__).parent / f"{module}.py"
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            imported.add(node.module.split(".")[0])
    assert not imported & {"anyio", "starlette", "httpx", "socket", "asyncio", "os", "uvicorn"}


# -- RFC 9110 rules ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=0-0", [ByteRange(0, 1)]),
        ("bytes=-3", [ByteRange(97, 100)]),
        ("bytes=-300", [ByteRange(0, 100)]),
        ("bytes=90-", [ByteRange(90, 100)]),
        ("bytes=90-500", [ByteRange(90, 100)]),
        ("BYTES = 1-2 , 5-6", [ByteRange(1, 3), ByteRange(5, 7)]),
        ("bytes=5-6,1-2", [ByteRange(5, 7), ByteRange(1, 3)]),
        ("bytes=100-", UNSATISFIABLE),
        ("bytes=-0", UNSATISFIABLE),
        ("bytes=100-200,-0", UNSATISFIABLE),
        ("bytes=100-200,0-0", [ByteRange(0, 1)]),
        (None, None),
        ("bytes=", None),
        ("lines=1-2", None),
        ("bytes=2-1", None),
        ("bytes=a-b", None),
        ("bytes=1-5,3-9", None),  # overlap
        ("bytes=" + ",".join(f"{i}-{i}" for i in range(0, 40, 2)), None),  # past the cap
    ],
)
def test_parse_range(header: str | None, expected: object) -> None:
    assert parse_range(header, 100) == expected


def test_an_empty_body_satisfies_no_range() -> None:
    assert parse_range("bytes=0-", 0) == UNSATISFIABLE
    assert parse_range("bytes=-5", 0) == UNSATISFIABLE


def test_conditions() -> None:
    etag = '"abc"'
    assert not_modified("GET", '"abc"', None, etag, None)
    assert not_modified("HEAD", 'W/"abc", "x"', None, etag, None)
    assert not not_modified("POST", '"abc"', None, etag, None)
    assert not not_modified("GET", '"x"', "Sun, 06 Nov 2050 08:49:37 GMT", etag, WHEN)
    assert not_modified("GET", None, "Mon, 06 May 2024 07:08:09 GMT", etag, WHEN)
    assert not not_modified("GET", None, "Mon, 06 May 2024 07:08:08 GMT", etag, WHEN)
    assert not not_modified("GET", None, "not a date", etag, WHEN)
    assert if_range_holds(None, etag, WHEN)
    assert if_range_holds('"abc"', etag, WHEN)
    assert not if_range_holds('W/"abc"', etag, WHEN)
    assert if_range_holds("Mon, 06 May 2024 07:08:09 GMT", etag, WHEN)
    assert not if_range_holds("Mon, 06 May 2024 07:08:10 GMT", etag, WHEN)
    assert not if_range_holds("garbage", etag, WHEN)
    date = "Mon, 06 May 2024 07:08:09 GMT"
    assert if_range_holds(date, etag, WHEN, WHEN + dt.timedelta(seconds=1))
    assert not if_range_holds(date, etag, WHEN, WHEN + dt.timedelta(milliseconds=999))


def test_validators_and_boundaries() -> None:
    facts = [("a", 1, 5, 0o644, "text/plain", None)]
    assert manifest_etag("zip store", facts) == manifest_etag("zip store", list(facts))
    assert manifest_etag("zip store", facts) != manifest_etag("zip auto", facts)
    assert manifest_etag("zip store", facts) != manifest_etag(
        "zip store", [("a", 1, 6, 0o644, "text/plain", None)]
    )
    one, two = derived_boundary(b"k1", '"e"'), derived_boundary(b"k2", '"e"')
    assert one != two and one == derived_boundary(b"k1", '"e"')
    MultipartWriter(boundary=one)  # a valid RFC 2046 boundary


def test_byteranges_length_is_exact() -> None:
    framed = byteranges([ByteRange(0, 3), ByteRange(7, 9)], 10, "application/zip", "bnd")
    body = framed.parts[0].head + b"abc" + framed.parts[1].head + b"hi" + framed.close
    assert framed.length == len(body)
    assert body.startswith(b"--bnd\r\nContent-Type: application/zip\r\nContent-Range: bytes 0-2/10")
