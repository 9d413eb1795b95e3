"""The CRC-32 of a source, when a zip record wants it before the source's bytes.

How it works: :func:`file_crc_from` continues a CRC over the next bytes of an open file
through one reused buffer of ``CRC_PIECE`` bytes, and stops early when asked to (a file's
:meth:`~multiresp._fs.PathSource.crc` reads through it). The pump submits the CRCs of upcoming
large re-readable sources (``Source.crc``) to ``_crc_pool``, whose threads run beside the one
that reads what is being sent.
"""

from __future__ import annotations

import concurrent.futures
import threading
from typing import BinaryIO

from ._zipformat import crc32

CRC_PIECE = 1 << 20  # bytes read per CRC step of a file read only for its CRC (fits in L2)

# CRCs of upcoming files are computed here, beside the thread that reads what is being sent.
_crc_pool = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="mr-crc")


def file_crc_from(f: BinaryIO, size: int, crc: int, stop: threading.Event | None = None) -> int:
    """Continue ``crc`` over the next ``size`` bytes of ``f`` (until ``stop`` is set)."""
    buffer = bytearray(min(CRC_PIECE, max(size, 1)))
    view = memoryview(buffer)
    left = size
    while left and not (stop is not None and stop.is_set()):
        n = f.readinto(view[: min(left, len(buffer))])  # type: ignore[attr-defined]
        if not n:
            break
        crc = crc32(view[:n], crc)  # type: ignore[arg-type]
        left -= n
    return crc


def _crc_of(pieces: list[bytes], crc: int) -> int:
    for piece in pieces:
        crc = crc32(piece, crc)
    return crc
