"""Events the pure readers (zip and multipart) give out, h11 style.

A reader is fed bytes with ``receive_data(data)`` (``b""`` marks the end of input) and asked
for events with ``next_event()``, which returns one of the classes below, or ``NEED_DATA``
when it cannot go further without more bytes. For every entry the order is one
:class:`EntryStart`, any number of :class:`Data`, one :class:`EntryEnd`; after the last entry
comes :class:`End`.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass


class _Sentinel(enum.Enum):
    NEED_DATA = "NEED_DATA"


NEED_DATA = _Sentinel.NEED_DATA
"""Returned by ``next_event()`` when the reader needs more bytes."""


@dataclass(frozen=True, slots=True, kw_only=True)
class EntryStart:
    """An entry (zip member or multipart part) begins.

    Attributes:
        name: The entry name as sent, already checked with ``check_name``. (A zip name is
            decoded as ``unzip`` decodes it, and one leading ``./`` is dropped.)
        size: Its declared size in bytes, or None when the sender did not say.
        media_type: Its media type when the format carries one (multipart), else None.
        mtime: Its modification time when the format carries one (zip), else None.
        is_dir: True for a directory entry (no data).
        headers: The part's headers, lower-cased names (multipart); empty for zip.
    """

    name: str
    size: int | None = None
    media_type: str | None = None
    mtime: dt.datetime | None = None
    is_dir: bool = False
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Data:
    """A piece of the current entry's content (already inflated)."""

    data: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class EntryEnd:
    """The current entry ended, and its size (and CRC-32 where the format has one) checked.

    Attributes:
        name: The entry name.
        size: The number of content bytes it had.
        crc32: The verified CRC-32 (zip), or None.
    """

    name: str
    size: int
    crc32: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class End:
    """The body ended well: end of central directory / closing boundary seen.

    Attributes:
        modes: ``(name, permission bits)`` for each file entry whose Unix mode the archive
            records (zip: a central directory record made on Unix). Only the permission bits
            (``0o777``) are given, never setuid, setgid or sticky. A streamed zip records
            modes only in its central directory, after the data: so they arrive here, once
            every entry has been written. Empty for multipart.
    """

    modes: tuple[tuple[str, int], ...] = ()


Event = EntryStart | Data | EntryEnd | End
