"""The writer's output, every layout and mode, read by the tools people use."""

from __future__ import annotations

import datetime as dt
import os
import pathlib
import subprocess
import zipfile
import zlib

import pytest
from stream_unzip import stream_unzip

from multiresp._zipwriter import ZipEntryInfo, ZipWriter

from conftest import require_tool
from ziputil import Item, build

T0 = dt.datetime(2023, 6, 1, 12, 0, 0, tzinfo=dt.timezone.utc)
RANDOM = os.urandom(200_000)
TEXT = b"the quick brown fox\n" * 20_000

ITEMS = [
    Item(ZipEntryInfo(name="crc-ahead.bin", size=len(RANDOM), mtime=T0), RANDOM, [1000, 70000]),
    Item(ZipEntryInfo(name="descriptor.txt", size=len(TEXT), mtime=T0), TEXT, [5], False),
    Item(ZipEntryInfo(name="unsized.txt", mtime=T0, media_type="text/plain"), TEXT, [99_999]),
    Item(ZipEntryInfo(name="empty", size=0, mtime=T0), b""),
    Item(ZipEntryInfo(name="folder/", mtime=T0), b""),
    Item(ZipEntryInfo(name="folder/ünïcødé 名前.txt", size=5, mtime=T0), b"hello"),
    Item(ZipEntryInfo(name="empty-unsized"), b""),
]
EXPECTED = {item.info.name: item.data for item in ITEMS}
MODES = ["store", "deflate", "auto"]


@pytest.fixture(params=MODES)
def archive(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / f"{request.param}.zip"
    path.write_bytes(build(ITEMS, request.param))
    return path


def check_tree(root: pathlib.Path) -> None:
    for name, data in EXPECTED.items():
        target = root / name
        if name.endswith("/"):
            assert target.is_dir(), name
        else:
            assert target.read_bytes() == data, name


def test_unzip(archive: pathlib.Path, tmp_path: pathlib.Path) -> None:
    unzip = require_tool("unzip")
    subprocess.run([unzip, "-tq", archive], check=True, capture_output=True)
    out = tmp_path / "out"
    subprocess.run([unzip, "-q", archive, "-d", out], check=True, capture_output=True)
    check_tree(out)
    when = dt.datetime.fromtimestamp((out / "crc-ahead.bin").stat().st_mtime, dt.timezone.utc)
    assert when == T0  # unzip takes the extended timestamp


def test_7zz(archive: pathlib.Path) -> None:
    sevenz = require_tool("7zz")
    result = subprocess.run([sevenz, "t", archive], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Everything is Ok" in result.stdout


def test_bsdtar_list_and_extract_from_a_pipe(archive: pathlib.Path, tmp_path: pathlib.Path) -> None:
    bsdtar = require_tool("bsdtar")
    listing = subprocess.run([bsdtar, "-tf", archive], check=True, capture_output=True, text=True)
    assert sorted(listing.stdout.split("\n")[:-1]) == sorted(n.rstrip("/") for n in EXPECTED) or \
        sorted(listing.stdout.split("\n")[:-1]) == sorted(EXPECTED)  # fmt: skip
    out = tmp_path / "piped"
    out.mkdir()
    with archive.open("rb") as stdin:  # a pipe: bsdtar can only read forwards
        subprocess.run([bsdtar, "-xf", "-", "-C", out], stdin=stdin, check=True)
    check_tree(out)


def test_zipfile(archive: pathlib.Path) -> None:
    with zipfile.ZipFile(archive) as z:
        assert z.testzip() is None
        assert {i.filename: z.read(i) for i in z.infolist()} == EXPECTED


def test_stream_unzip_reads_while_streaming(archive: pathlib.Path) -> None:
    body = archive.read_bytes()
    chunks = (body[i : i + 7919] for i in range(0, len(body), 7919))
    got = {name.decode(): b"".join(data) for name, _size, data in stream_unzip(chunks)}
    assert got == EXPECTED


@pytest.mark.slow
@pytest.mark.parametrize("compression", ["store", "deflate"])
def test_entry_over_4_gib(tmp_path: pathlib.Path, compression: str) -> None:
    """zip64 for one generated entry over 4 GiB; the entry after it needs a zip64 offset."""
    size = (4 << 30) + (3 << 20)
    block = bytes(64 << 20)
    crc = 0
    for _ in range(size // len(block)):
        crc = zlib.crc32(block, crc)
    crc = zlib.crc32(block[: size % len(block)], crc)
    writer = ZipWriter(compression=compression)  # type: ignore[arg-type]
    path = tmp_path / "big.zip"
    with path.open("wb") as f:
        f.write(writer.start_entry(ZipEntryInfo(name="first.txt", size=2, crc32=zlib.crc32(b"hi"))))
        f.write(writer.write(b"hi"))
        f.write(writer.end_entry())
        f.write(writer.start_entry(ZipEntryInfo(name="huge.bin", size=size, crc32=crc)))
        for _ in range(size // len(block)):
            f.write(writer.write(block))
        f.write(writer.write(block[: size % len(block)]))
        f.write(writer.end_entry())
        f.write(writer.start_entry(ZipEntryInfo(name="after.txt", size=2, crc32=zlib.crc32(b"ok"))))
        f.write(writer.write(b"ok"))
        f.write(writer.end_entry())
        f.write(writer.finish())
    with zipfile.ZipFile(path) as z:
        infos = z.infolist()
        assert [i.file_size for i in infos] == [2, size, 2]
        assert infos[0].extra[:2] != b"\x01\x00"  # the first entry stays zip32
        if compression == "store":
            assert infos[2].header_offset > 0xFFFFFFFF
        assert z.read("after.txt") == b"ok"
        with z.open("huge.bin") as member:  # reads 4 GiB and checks the CRC at the end
            while member.read(64 << 20):
                pass
    unzip = require_tool("unzip")
    result = subprocess.run([unzip, "-tq", path], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
