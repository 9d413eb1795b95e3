"""The archive plan: every byte offset of a body, known from its entries' facts alone.

A plan is made before any source is read. For a zip it places each entry's local header,
data and central-directory record, and the end records; for a multipart body each part's
headers, data and closing line. ``Content-Length``, ``HEAD`` and every byte range read it,
and the layout rule it applies is the writer's own (:func:`~multiresp._zipwriter.entry_layout`),
its records encoded by the writer's code, so the plan cannot disagree with the bytes sent.

A body is laid out as *segments*. A range is served by walking the segments it overlaps:

- ``"bytes"``: fixed bytes held by the plan (multipart headers, the zip end records);
- ``"data"``: bytes of entry ``index``'s source, from offset ``skip``;
- ``"local"`` / ``"central"``: entry ``index``'s zip local header or central-directory
  record, which carry its CRC-32: rendered by :meth:`ZipPlan.record` once the CRC is known.

The module is pure: no I/O.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

from ._multipart import MultipartWriter
from ._zipwriter import Compression, ZipEntryInfo, end_records, entry_layout, entry_records

SegmentKind = Literal["bytes", "data", "local", "central"]


@dataclass(frozen=True, slots=True)
class Segment:
    """A run of the body's bytes ``[at, at + length)``.

    Attributes:
        at: Where it starts in the body.
        length: Its length in bytes.
        kind: What it holds (see the module's docstring).
        index: The entry's index for ``"data"``, ``"local"`` and ``"central"``; else -1.
        payload: The bytes of a ``"bytes"`` segment; else empty.
    """

    at: int
    length: int
    kind: SegmentKind
    index: int = -1
    payload: bytes = b""


@dataclass(frozen=True, slots=True)
class Piece:
    """The part of one segment that a byte range covers: ``length`` bytes from ``skip``."""

    segment: Segment
    skip: int
    length: int


@dataclass(frozen=True, slots=True)
class _Layout:
    """Segments in body order, and the body's length."""

    segments: tuple[Segment, ...]
    starts: tuple[int, ...]
    total: int

    def pieces(self, start: int, stop: int) -> Iterator[Piece]:
        """The pieces of the segments that bytes ``[start, stop)`` of the body overlap."""
        at = max(bisect.bisect_right(self.starts, start) - 1, 0)
        for segment in self.segments[at:]:
            if segment.at >= stop:
                return
            skip = max(start - segment.at, 0)
            length = min(stop, segment.at + segment.length) - segment.at - skip
            if length > 0:
                yield Piece(segment, skip, length)


def _layout(segments: list[Segment], total: int) -> _Layout:
    kept = tuple(s for s in segments if s.length)
    return _Layout(kept, tuple(s.at for s in kept), total)


@dataclass(frozen=True, slots=True)
class ZipPlan:
    """Where everything of a stored zip archive lies.

    Attributes:
        compression: The archive's compression.
        infos: The entries' facts, CRC-32 left out (each entry's CRC is learnt or computed
            when a range needs it; directories and empty files have CRC 0).
        layout: The segments and the total length.
        local_at: Where each entry's local header starts.
    """

    compression: Compression
    infos: tuple[ZipEntryInfo, ...]
    layout: _Layout
    local_at: tuple[int, ...]

    @property
    def total(self) -> int:
        """The archive's exact length in bytes."""
        return self.layout.total

    def pieces(self, start: int, stop: int) -> Iterator[Piece]:
        """The pieces of bytes ``[start, stop)``, in order."""
        return self.layout.pieces(start, stop)

    def needs_crc(self, index: int) -> bool:
        """True when entry ``index`` has content, so its records carry a CRC to compute."""
        info = self.infos[index]
        return bool(info.size) and not info.name.endswith("/")

    def record(self, segment: Segment, crc: int) -> bytes:
        """The bytes of a ``"local"`` or ``"central"`` segment, for the entry's real CRC."""
        info = self.infos[segment.index]
        at = self._header_at(segment)
        local, _, central = entry_records(
            self.compression, _with_crc(info, crc if self.needs_crc(segment.index) else 0), at
        )
        return local if segment.kind == "local" else central

    def _header_at(self, segment: Segment) -> int:
        return segment.at if segment.kind == "local" else self.local_at[segment.index]


def _with_crc(info: ZipEntryInfo, crc: int, size: int | None = None) -> ZipEntryInfo:
    return ZipEntryInfo(
        name=info.name, size=info.size if size is None else size, mtime=info.mtime, crc32=crc,
        media_type=info.media_type, mode=info.mode,
    )  # fmt: skip


def plan_zip(compression: Compression, infos: Iterable[ZipEntryInfo]) -> ZipPlan | None:
    """The plan of a zip archive whose every entry is stored with its CRC ahead (layout 1).

    Args:
        compression: The archive's compression ("deflate" never has a plan; "auto" has one
            when every entry with content has an incompressible media type).
        infos: The entries' facts. ``crc32`` is ignored: the plan is for sources whose CRC
            can be known before their header (paths, bytes).

    Returns:
        The plan, or None when an entry's size is unknown or its length depends on its
        bytes (compressed, or sampled by "auto").
    """
    facts: list[ZipEntryInfo] = []
    segments: list[Segment] = []
    centrals: list[int] = []
    local_at: list[int] = []
    offset = 0
    for index, info in enumerate(infos):
        is_dir = info.name.endswith("/")
        if info.size is None and not is_dir:
            return None
        planned = _with_crc(info, 0, 0 if is_dir else info.size)
        if entry_layout(compression, planned, None) != "store":
            return None
        local, data_size, central = entry_records(compression, planned, offset)
        facts.append(planned)
        local_at.append(offset)
        segments.append(Segment(offset, len(local), "local", index))
        segments.append(Segment(offset + len(local), data_size, "data", index))
        centrals.append(len(central))
        offset += len(local) + data_size
    directory_at = offset
    for index, size in enumerate(centrals):
        segments.append(Segment(offset, size, "central", index))
        offset += size
    end = end_records(len(centrals), directory_at, offset - directory_at)
    segments.append(Segment(offset, len(end), "bytes", payload=end))
    return ZipPlan(compression, tuple(facts), _layout(segments, offset + len(end)), tuple(local_at))


@dataclass(frozen=True, slots=True)
class PartFacts:
    """What a multipart part's headers say: its name, size and media type."""

    name: str
    size: int
    media_type: str


@dataclass(frozen=True, slots=True)
class MultipartPlan:
    """Where everything of a multipart body of known sizes lies.

    Attributes:
        content_type: The body's ``Content-Type`` (with its boundary).
        layout: The segments and the total length.
    """

    content_type: str
    layout: _Layout

    @property
    def total(self) -> int:
        """The body's exact length in bytes."""
        return self.layout.total

    def pieces(self, start: int, stop: int) -> Iterator[Piece]:
        """The pieces of bytes ``[start, stop)``, in order."""
        return self.layout.pieces(start, stop)


def plan_multipart(parts: Iterable[PartFacts], *, boundary: str, subtype: str) -> MultipartPlan:
    """The plan of the body :class:`MultipartWriter` writes for these parts.

    Raises:
        UnsafeNameError, ValueError: as :meth:`MultipartWriter.start_part` would.
    """
    writer = MultipartWriter(subtype=subtype, boundary=boundary)
    segments: list[Segment] = []
    offset = 0
    for index, part in enumerate(parts):
        head = writer.start_part(part.name, size=part.size, media_type=part.media_type)
        writer.skip(part.size)
        tail = writer.end_part()
        segments.append(Segment(offset, len(head), "bytes", payload=head))
        segments.append(Segment(offset + len(head), part.size, "data", index))
        offset += len(head) + part.size
        segments.append(Segment(offset, len(tail), "bytes", payload=tail))
        offset += len(tail)
    close = writer.finish()
    segments.append(Segment(offset, len(close), "bytes", payload=close))
    return MultipartPlan(writer.content_type, _layout(segments, offset + len(close)))
