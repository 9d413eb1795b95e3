"""Reading a range of a planned body: only the sources and CRCs the range overlaps.

How it works: a body whose bytes are all known in advance (every size known, every source
re-readable) has a plan (:mod:`multiresp._plan`) that maps byte offsets to segments: fixed
bytes, zip records, and source contents. :class:`RangeReader` walks the pieces of the range
selected, copies fixed bytes from the plan, reads sources from their offset (``Source.open``),
and gets a zip record's CRC from the source (``known_crc``: bytes, the CRC cache, a store's
checksum) or by reading it whole once (``Source.crc``, which remembers it). The response runs
:meth:`RangeReader.step` in a worker thread, one hop at a time.
"""

from __future__ import annotations

from collections.abc import Iterator

from ._entries import Entry
from ._errors import IntegrityError
from ._filereads import SEND_PIECE, AbandonableSteps, coalesce
from ._plan import MultipartPlan, Piece, ZipPlan
from ._sources import Reader


class RangeReader(AbandonableSteps):
    """Reads bytes ``[start, stop)`` of a planned body: only what they overlap.

    The plan (:mod:`multiresp._plan`) says which segments the range covers. Fixed bytes come
    from the plan; a source's bytes are read through a reader opened at the right offset
    (kept open while the next piece continues where it stopped, closed at the segment's end);
    a zip record that carries a CRC gets it from the source when known, or reads its entry
    whole once to compute it. A source that changed since it was listed aborts the transfer,
    as in the pump.

    :meth:`step` runs in a worker thread, one hop at a time; :meth:`close` releases the open
    reader and stops a CRC being computed.
    """

    def __init__(self, plan: ZipPlan | MultipartPlan, entries: list[Entry]) -> None:
        super().__init__()
        self._plan = plan
        self._entries = entries
        self._crcs: dict[int, int] = {}
        self._pieces: Iterator[Piece] = iter(())
        self._open: tuple[int, int, Reader] | None = None  # (entry index, offset, reader)
        self._partial: tuple[Piece, int] | None = None  # a piece and how much of it was read
        self.current: str | None = None

    def select(self, start: int, stop: int) -> None:
        """Read bytes ``[start, stop)`` next."""
        self._pieces = self._plan.pieces(start, stop)
        self._partial = None

    def _close_file(self) -> None:
        if self._open is not None:
            self._open[2].close()
            self._open = None

    def _step(self, block: int) -> list[bytes]:
        """About ``block`` bytes of the selected range, in pieces of at most ``SEND_PIECE``
        (small ones joined), or [] at its end."""
        out: list[bytes] = []
        size = 0
        budget = max(block, 1)
        while size < budget and not self._stop.is_set():
            if self._partial is not None:
                piece, done = self._partial
            else:
                next_piece = next(self._pieces, None)
                if next_piece is None:
                    break
                piece, done = next_piece, 0
            data = self._read(piece, done, min(budget - size, SEND_PIECE))
            done += len(data)
            self._partial = (piece, done) if done < piece.length else None
            out.append(data)
            size += len(data)
        return coalesce(out)

    def _read(self, piece: Piece, done: int, most: int) -> bytes:
        segment = piece.segment
        start = piece.skip + done
        length = min(piece.length - done, most)
        if segment.kind == "bytes":
            return segment.payload[start : start + length]
        entry = self._entries[segment.index]
        self.current = entry.name
        if segment.kind in ("local", "central"):
            assert isinstance(self._plan, ZipPlan)
            record = self._plan.record(segment, self._crc(segment.index))
            return record[start : start + length]
        return self._source_bytes(segment.index, entry, start, length, segment.length)

    def _source_bytes(self, index: int, entry: Entry, start: int, length: int, size: int) -> bytes:
        """``length`` bytes of the entry's source from ``start`` (of its ``size``)."""
        source = entry.source
        if source is None or not source.rereadable:
            raise TypeError(f"entry {entry.name!r}: its source cannot be read at an offset")
        if self._open is None or self._open[:2] != (index, start):
            self._close_file()
            self._open = (index, start, source.open(entry, start))
        reader = self._open[2]
        data = b"".join(reader.read(length))
        if not data:
            raise IntegrityError(
                f"entry {entry.name!r}: its source ended {size - start} bytes short of its "
                "size (size check)",
                entry=entry.name,
            )
        end = start + len(data)
        if end >= size:  # its last bytes (checked by the reader): the segment's end
            self._close_file()
        else:
            self._open = (index, end, reader)
        return data

    def _crc(self, index: int) -> int:
        assert isinstance(self._plan, ZipPlan)
        if not self._plan.needs_crc(index):
            return 0
        crc = self._crcs.get(index)
        if crc is not None:
            return crc
        entry = self._entries[index]
        source = entry.source
        if source is None or not source.rereadable:
            raise TypeError(f"entry {entry.name!r}: its CRC cannot be known ahead")
        crc = source.known_crc()
        if crc is None:
            crc = source.crc(entry, self._stop)
        self._crcs[index] = crc
        return crc
