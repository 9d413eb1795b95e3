"""Helpers for zip tests: drive the pure writer, parse local headers."""

from __future__ import annotations

import io
import itertools
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from multiresp._zipwriter import Compression, ZipEntryInfo, ZipWriter


@dataclass
class Item:
    info: ZipEntryInfo
    data: bytes
    chunks: Sequence[int] = ()  # split points
    crc_ahead: bool = True


def build(items: Sequence[Item], compression: Compression = "store") -> bytes:
    writer = ZipWriter(compression=compression)
    out = []
    for item in items:
        info = item.info
        if item.crc_ahead and info.size is not None:
            info = ZipEntryInfo(
                name=info.name, size=info.size, mtime=info.mtime,
                crc32=zlib.crc32(item.data), media_type=info.media_type,
            )  # fmt: skip
        out.append(writer.start_entry(info, item.data[:65536]))
        cuts = [0, *sorted(c for c in item.chunks if 0 < c < len(item.data)), len(item.data)]
        for start, end in itertools.pairwise(cuts):
            out.append(writer.write(item.data[start:end]))
        out.append(writer.end_entry())
    out.append(writer.finish())
    body = b"".join(bytes(piece) for piece in out)
    assert writer.offset == len(body)
    return body


@dataclass
class Local:
    flags: int
    method: int
    crc: int
    compressed: int
    size: int
    name: str
    extra: bytes


def local_headers(body: bytes) -> list[Local]:
    """The local headers of an archive, found through its central directory."""
    import io
    import zipfile

    found = []
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        for info in archive.infolist():
            at = info.header_offset
            fields = struct.unpack_from("<IHHHHHIIIHH", body, at)
            name_len, extra_len = fields[9], fields[10]
            name = body[at + 30 : at + 30 + name_len].decode()
            extra = body[at + 30 + name_len : at + 30 + name_len + extra_len]
            found.append(Local(fields[2], fields[3], fields[6], fields[7], fields[8], name, extra))
    return found


class Unseekable(io.RawIOBase):
    """A write-only stream, so that zipfile writes data descriptors."""

    def __init__(self) -> None:
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        self.data += b
        return len(b)
