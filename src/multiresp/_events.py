"""Events the pure readers (zip and multipart) give out, h11 style, and the readers' contract.

A reader (``ZipReader``, ``MultipartReader``) is fed bytes with ``receive_data(data)`` and
asked for events with ``next_event()``, which returns one of the classes below, or
``NEED_DATA`` when it cannot go further without more bytes. Both readers keep one contract:

- **Input.** ``receive_data`` takes pieces of any size, ``b""`` marks the end of input;
  ``b""`` again changes nothing. Bytes after the end are a programmer mistake:
  ``RuntimeError``.
- **Events.** For every entry, one :class:`EntryStart`, any number of :class:`Data`, one
  :class:`EntryEnd` once the entry's sizes (and CRC-32, for zip) were verified; after the last
  entry, :class:`End` once the format's own end was read and checked. After ``End`` every call
  returns ``End`` again; bytes that follow the format's end are dropped if the format allows
  them (zip: NUL padding, as bsdtar writes to a pipe; multipart: an epilogue), up to 64 KiB,
  else ``ProtocolError``.
- **End of input.** Once the end was marked, ``next_event`` never returns ``NEED_DATA``: it
  gives the events the bytes complete, then ``End`` or, if the body stopped short of the
  format's end, ``ProtocolError`` saying it is truncated and naming the entry it ended in (or
  after). So a truncated body is refused at the first call that needs the missing bytes,
  never earlier: every entry that ended before the cut was handed out whole.
- **Errors.** A fault in the bytes raises a ``MultirespError`` (``UnsafeNameError``,
  ``LimitExceeded``, ``IntegrityError``, ``ProtocolError``) whose message names the entry and
  the rule or bound, and whose ``entry`` is that name when there is one. It is raised before
  the bytes at fault are handed out: ``EntryStart`` comes only for a name that passed, ``Data``
  only for bytes within the bounds. The reader then stops: every later call of
  ``next_event`` or ``receive_data`` raises that same error object again.
- **Limits.** Both readers hold every per-entry bound through one
  :class:`~multiresp._limits.LimitTracker`: ``max_files``, ``max_name_length`` and
  ``max_depth`` before ``EntryStart``; ``max_file_size`` and ``max_total_size`` against the
  declared size before ``EntryStart`` and against the bytes before each ``Data``;
  ``max_compression_ratio`` on each inflate step (zip; multipart has no compression of its
  own). ``max_total_ratio`` and ``max_folders`` need what a reader does not see (the bytes as
  sent; the folders on disk): ``BodyDecoder`` and ``FileSink`` hold them.

Readers are pure: no I/O, no clock, no thread. They hold the bytes fed and not yet handed out
(a caller that takes events until ``NEED_DATA`` after each piece keeps that to about one piece
plus one header), and a few values per entry (zip: to check its central directory).
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
        disposition: The type of its Content-Disposition, lower-cased (multipart:
            ``"form-data"``, ``"attachment"``...); None for zip.
        filename: Its Content-Disposition's file name as sent (multipart: ``filename*``
            decoded, else ``filename``; ``""`` for a form's file input left empty), None when
            it has none (a form's text field: ``name`` is then the field's name); None for zip.
            It is not checked: ``name`` is.
    """

    name: str
    size: int | None = None
    media_type: str | None = None
    mtime: dt.datetime | None = None
    is_dir: bool = False
    headers: tuple[tuple[str, str], ...] = ()
    disposition: str | None = None
    filename: str | None = None


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
