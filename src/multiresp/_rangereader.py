"""Reading a range of a planned body: only the sources and CRCs the range overlaps.

How it works: a body whose bytes are all known in advance (every size known, every source
re-readable) has a plan (:mod:`multiresp._plan`) that maps byte offsets to segments: fixed
bytes, zip records, and source contents. :class:`RangeReader` walks the pieces of the range
selected, copies fixed bytes from the plan, reads sources at their offset, and gets a zip
record's CRC from the CRC cache or by reading its entry whole once (:mod:`multiresp._filecrc`).
The response runs :meth:`RangeReader.step` in a worker thread, one hop at a time.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from . import _fs
from ._crccache import crc_cache
from ._entries import BytesSource, Entry, PathSource
from ._filecrc import _path_crc
from ._filereads import SEND_PIECE, AbandonableSteps, _changed, coalesce
from ._plan import MultipartPlan, Piece, ZipPlan
from ._zipformat import crc32


class RangeReader(AbandonableSteps):
    """Reads bytes ``[start, stop)`` of a planned body: only what they overlap.

    The plan (:mod:`multiresp._plan`) says which segments the range covers. Fixed bytes come
    from the plan; a source's bytes are read from the right offset (a file is opened through
    :func:`multiresp._fs.open_source`, then seeked); a zip record that carries a CRC gets it
    from the CRC cache, or reads its entry whole once to compute it (and caches it). A file
    that changed since it was listed aborts the transfer, as in the pump.

    :meth:`step` runs in a worker thread, one hop at a time; :meth:`close` releases the open
    file and stops a CRC being computed.
    """

    def __init__(self, plan: ZipPlan | MultipartPlan, entries: list[Entry]) -> None:
        super().__init__()
        self._plan = plan
        self._entries = entries
        self._crcs: dict[int, int] = {}
        self._pieces: Iterator[Piece] = iter(())
        self._open: tuple[int, int] | None = None  # (entry index, descriptor)
        self._partial: tuple[Piece, int] | None = None  # a piece and how much of it was read
        self.current: str | None = None

    def select(self, start: int, stop: int) -> None:
        """Read bytes ``[start, stop)`` next."""
        self._pieces = self._plan.pieces(start, stop)
        self._partial = None

    def _close_file(self) -> None:
        if self._open is not None:
            os.close(self._open[1])
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
        source = entry.source
        if isinstance(source, BytesSource):
            return source.data[start : start + length]
        if not isinstance(source, PathSource):
            raise TypeError(f"entry {entry.name!r}: its source cannot be read at an offset")
        return self._file_bytes(segment.index, entry, source, start, length)

    def _file_bytes(
        self, index: int, entry: Entry, source: PathSource, start: int, length: int
    ) -> bytes:
        if self._open is None or self._open[0] != index:
            self._close_file()
            self._open = (index, _fs.open_source(source, entry.name))
        fd = self._open[1]
        data = os.pread(fd, length, start)
        while len(data) < length:
            more = os.pread(fd, length - len(data), start + len(data))
            if not more:
                raise _changed(entry, source)
            data += more
        if start + length == source.size:  # its last bytes: still the file listed?
            _fs.check(source, entry.name, os.fstat(fd))
            self._close_file()
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
        if isinstance(source, BytesSource):
            crc = crc32(source.data, 0)
        elif isinstance(source, PathSource):
            crc = crc_cache.get(source)
            if crc is None:
                crc = _path_crc(entry, source, self._stop)
        else:
            raise TypeError(f"entry {entry.name!r}: its CRC cannot be known ahead")
        self._crcs[index] = crc
        return crc
