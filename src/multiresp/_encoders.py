"""The format adapters the pump drives: the pure zip and multipart writers as encoders.

How it works: :class:`~multiresp._pump.Pump` feeds any object with ``start``, ``write``,
``end`` and ``finish`` (its ``Encoder`` protocol). :class:`_ZipEncoder` turns an entry into
the zip writer's :class:`~multiresp._zipwriter.ZipEntryInfo` and tells the pump, by the
writer's own layout rule, which entries want their CRC-32 before their header;
:class:`_MultipartEncoder` opens one part per entry. Neither does I/O.
"""

from __future__ import annotations

from ._entries import Entry
from ._multipart import MultipartWriter
from ._zipwriter import (
    Compression,
    ZipEntryInfo,
    ZipWriter,
)


class _ZipEncoder:
    """Adapts the pure :class:`ZipWriter` to the pump."""

    def __init__(self, compression: Compression, level: int | None) -> None:
        self.writer = ZipWriter(compression=compression, level=level)

    @staticmethod
    def info(entry: Entry, crc: int | None) -> ZipEntryInfo:
        return ZipEntryInfo(
            name=entry.name, size=entry.size, mtime=entry.mtime, crc32=crc,
            media_type=entry.media_type, mode=entry.mode,
        )  # fmt: skip

    def crc_first(self, entry: Entry, sample: bytes | None) -> bool:
        """True when the entry takes layout 1, by the writer's one rule: its CRC is then
        computed before its header (only a re-readable source's can be)."""
        if not entry.size:
            return False
        info = self.info(entry, 0 if entry.rereadable else None)
        return self.writer.layout(info, sample) == "store"

    def start(self, entry: Entry, crc: int | None, sample: bytes) -> bytes:
        return self.writer.start_entry(self.info(entry, crc), sample)

    def write(self, data: bytes) -> bytes:
        return self.writer.write(data)

    def end(self) -> bytes:
        return self.writer.end_entry()

    def finish(self) -> bytes:
        return self.writer.finish()


class _MultipartEncoder:
    """Adapts the pure :class:`MultipartWriter` to the pump."""

    def __init__(self, writer: MultipartWriter) -> None:
        self.writer = writer

    def start(self, entry: Entry, crc: int | None, sample: bytes) -> bytes:
        return self.writer.start_part(entry.name, size=entry.size, media_type=entry.media_type)

    def write(self, data: bytes) -> bytes:
        return self.writer.write(data)

    def end(self) -> bytes:
        return self.writer.end_part()

    def finish(self) -> bytes:
        return self.writer.finish()
