"""Pure incremental zip decoder: bytes in, entry events out, front to back.

How it works: :class:`ZipReader` follows the archive as it streams, h11 style. Bytes fed with
``receive_data`` queue up in a :class:`_Buffer` (a deque of the pieces as given, never joined
wholesale), and ``next_event`` runs the current *step* (a bound method) until one returns an
event or ``NEED_DATA``. An entry is found from its local header alone; its data ends

- after the size in the local header (STORE with known size, DEFLATE without a descriptor);
- where the deflate stream says it ends (DEFLATE with a data descriptor);
- at a data descriptor whose signature, CRC-32 and sizes all match the bytes before it and
  that is followed by a record signature (STORE with a descriptor and no size in the local
  header, as zipstream-ng and ``zipfile`` write to unseekable streams). Only a descriptor
  carrying the optional signature can be found this way; a STORE entry whose descriptor has
  none cannot be read in a stream and is refused.

Names are decoded as ``unzip`` decodes them (the Info-ZIP Unicode Path field, then UTF-8 when
flagged or valid, then cp437), lose one leading ``./`` (bsdtar writes it), and then meet the
name rule; bsdtar's bare ``./`` entry is read but gives no events.

Limits are applied to each piece before it is handed out, and the inflater's output per step is
bounded (``INFLATE_OUTPUT_STEP``), so a deflate bomb never exists in memory. After the last entry
the central directory and the end records are parsed and checked against what streamed: the same
names in the same order with the same CRC-32s and sizes, and no symbolic link or special file.
The permission bits it records for Unix files ride on the ``End`` event.
Only per-entry metadata is kept for that check, never the data.

The module is pure: no I/O, no event loop, no clock.
"""

from __future__ import annotations

import collections
import datetime as dt
import itertools
import stat
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from ._errors import IntegrityError, MultirespError, ProtocolError
from ._events import NEED_DATA, Data, End, EntryEnd, EntryStart, _Sentinel
from ._limits import LimitTracker
from ._types import Limits
from ._zipformat import (
    EXTRA_HEADER,
    EXTRA_TIMESTAMP,
    EXTRA_ZIP64,
    FLAG_DATA_DESCRIPTOR,
    FLAG_UTF8,
    METHOD_DEFLATE,
    METHOD_STORE,
    ZIP32_MAX,
    ZIP32_MAX_ENTRIES,
    _isal_zlib,
    crc32,
)

STORED_OUTPUT_STEP = 1 << 20  # bytes: most content one Data event of a stored entry carries
INFLATE_OUTPUT_STEP = 512 << 10  # bytes: most the inflater produces in one step (one Data event)
INFLATE_INPUT_STEP = 128 << 10  # bytes: most compressed input given to the inflater at once
MAX_ZIP64_EXTENSIBLE = 64 << 10  # bytes of "extensible data" accepted in the zip64 end record
RAW_DEFLATE_WBITS = -zlib.MAX_WBITS  # window bits for deflate without a zlib header
MAX_TRAILING_PADDING = 64 << 10  # bytes of NULs accepted after the end record (bsdtar's blocks)

METHOD_AES = 99  # WinZip AES encryption
FLAG_ENCRYPTED = 1 << 0
FLAG_PATCHED = 1 << 5  # "compressed patched data": needs a base file to rebuild
FLAG_STRONG_ENCRYPTION = 1 << 6
FLAG_MASKED_HEADER = 1 << 13  # central directory encryption hides local header values
REFUSED_FLAGS = {
    FLAG_ENCRYPTED: "it is encrypted (flag bit 0)",
    FLAG_PATCHED: "it holds patched data (flag bit 5)",
    FLAG_STRONG_ENCRYPTION: "it is encrypted (strong encryption, flag bit 6)",
    FLAG_MASKED_HEADER: "its local header is masked (central directory encryption, flag bit 13)",
}

SIG_LOCAL = b"PK\x03\x04"
SIG_CENTRAL = b"PK\x01\x02"
SIG_DESCRIPTOR = b"PK\x07\x08"
SIG_END = b"PK\x05\x06"
SIG_ZIP64_END = b"PK\x06\x06"
SIG_ZIP64_LOCATOR = b"PK\x06\x07"
SIGNATURE_SIZE = 4  # bytes
RECORD_NAMES = {
    SIG_LOCAL: "local header",
    SIG_CENTRAL: "central directory header",
    SIG_DESCRIPTOR: "data descriptor",
    SIG_END: "end of central directory record",
    SIG_ZIP64_END: "zip64 end of central directory record",
    SIG_ZIP64_LOCATOR: "zip64 end of central directory locator",
}

LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")  # 30 bytes, then name and extra field
CENTRAL_HEADER = struct.Struct("<4sHHHHHHIIIHHHHHII")  # 46 bytes, then name, extra, comment
END_RECORD = struct.Struct("<4sHHHHIIH")  # 22 bytes, then the archive comment
ZIP64_END_RECORD = struct.Struct("<4sQHHIIQQQQ")  # 56 bytes, then extensible data
ZIP64_END_FIXED = 44  # bytes of the zip64 end record counted by its own size field
ZIP64_LOCATOR = struct.Struct("<4sIQI")  # 20 bytes
DESCRIPTOR_LOOKAHEAD = 28  # bytes: the longest descriptor (signed, 64-bit) + the next signature
NEXT_RECORDS = (SIG_LOCAL, SIG_CENTRAL, SIG_END, SIG_ZIP64_END)  # what follows a descriptor
# Data descriptor fields after the optional signature: CRC-32, compressed size, size.
DESCRIPTOR32 = struct.Struct("<III")
DESCRIPTOR64 = struct.Struct("<IQQ")
UINT16 = struct.Struct("<H")
UINT64 = struct.Struct("<Q")

EXTRA_UNIX_N = 0x756E  # "nu": ASi Unix extra field, holds the file mode
EXTRA_UNICODE_PATH = 0x7075  # "up": Info-ZIP Unicode path (UTF-8 name + CRC of the raw name)
ROOT_ENTRY = "./"  # the folder an archive was made from, as bsdtar lists it: nothing to create
UNIX_HOSTS = frozenset({3, 19})  # "version made by" hosts whose external attributes hold a mode
PERMISSION_BITS = 0o777  # of a Unix mode: setuid, setgid and sticky are never passed on
REFUSED_FILE_TYPES = {
    stat.S_IFLNK: "a symbolic link",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFSOCK: "a socket",
}
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)

_INFLATE_ERRORS: tuple[type[Exception], ...] = (zlib.error,)
if _isal_zlib is not None:
    _INFLATE_ERRORS += (_isal_zlib.error,)


class _Inflater(Protocol):
    eof: bool
    unused_data: bytes
    unconsumed_tail: bytes

    def decompress(self, data: bytes | memoryview, max_length: int = ..., /) -> bytes: ...


def _new_inflater() -> _Inflater:
    module = _isal_zlib if _isal_zlib is not None else zlib
    inflater: _Inflater = module.decompressobj(RAW_DEFLATE_WBITS)
    return inflater


# -- the input buffer ----------------------------------------------------------------------


class _Buffer:
    """The unread input: the pieces as fed, plus a read position in the first one.

    Pieces are never concatenated as a whole; headers are joined from the few pieces they
    span, and entry data is handed out as the pieces themselves (or slices of them).
    """

    __slots__ = ("_chunks", "_pos", "consumed", "size")

    def __init__(self) -> None:
        self._chunks: collections.deque[bytes] = collections.deque()
        self._pos = 0  # read position in self._chunks[0]
        self.size = 0  # unread bytes
        self.consumed = 0  # bytes read since the start of the archive

    def append(self, data: bytes) -> None:
        self._chunks.append(data)
        self.size += len(data)

    def peek(self, n: int) -> bytes:
        """The next ``n`` bytes (fewer if fewer are buffered), without consuming them."""
        first, pos = self._chunks[0], self._pos
        if len(first) - pos >= n:
            return first[pos : pos + n]
        parts = [first[pos:]]
        have = len(parts[0])
        for chunk in itertools.islice(self._chunks, 1, None):
            if have >= n:
                break
            parts.append(chunk[: n - have])
            have += len(parts[-1])
        return b"".join(parts)

    def skip(self, n: int) -> None:
        self.size -= n
        self.consumed += n
        pos = self._pos + n
        chunks = self._chunks
        while chunks and pos >= len(chunks[0]):
            pos -= len(chunks.popleft())
        self._pos = pos

    def take(self, n: int) -> bytes:
        data = self.peek(n)
        self.skip(n)
        return data

    def front(self, limit: int) -> bytes:
        """Up to ``limit`` bytes from the first piece, consumed; the piece itself when whole."""
        first, pos = self._chunks[0], self._pos
        data = first if pos == 0 and len(first) <= limit else first[pos : pos + limit]
        self.skip(len(data))
        return data

    def front_view(self, limit: int) -> memoryview:
        """Up to ``limit`` bytes from the first piece, not consumed, without a copy."""
        pos = self._pos
        return memoryview(self._chunks[0])[pos : pos + limit]

    def find_in_front(self, needle: bytes) -> tuple[int, int, int]:
        """Look for ``needle`` in the rest of the first piece.

        Returns:
            Where it starts, relative to the read position (-1 when absent); how many bytes
            the first piece has left; and how many of its last bytes could begin ``needle``.
        """
        first, pos = self._chunks[0], self._pos
        found = first.find(needle, pos)
        if found >= 0:
            return found - pos, len(first) - pos, 0
        partial = next(
            (n for n in range(len(needle) - 1, 0, -1) if first.endswith(needle[:n], pos)), 0
        )
        return -1, len(first) - pos, partial

    def merge_front(self) -> bool:
        """Join the rest of the first piece with the second; False when there is no second."""
        chunks = self._chunks
        if len(chunks) < 2:
            return False
        first = chunks.popleft()[self._pos :]
        chunks[0] = first + chunks[0]
        self._pos = 0
        return True


# -- per-entry bookkeeping -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Streamed:
    """What an entry turned out to be, kept to check the central directory against."""

    name: str
    crc: int
    compressed: int
    size: int


@dataclass(slots=True)
class _Current:
    """The entry being read (mutable bookkeeping, not a value object)."""

    name: str
    hidden: bool  # the bare "./" entry: read and checked, but no events
    is_dir: bool
    descriptor: bool  # flag bit 3: CRC and sizes follow the data
    zip64: bool  # the local header has a zip64 extra field: a descriptor has 64-bit sizes
    header_crc: int | None  # the CRC-32 the local header promises, None when deferred
    declared_size: int | None
    declared_compressed: int | None
    remaining: int | None  # compressed bytes still to read, when known
    inflater: _Inflater | None = None
    full: bool = False  # the last inflate step filled its output: more may be pending
    crc: int = 0
    size: int = 0  # content bytes handed out
    compressed: int = 0  # bytes of entry data consumed from the input


@dataclass(frozen=True, slots=True)
class _ExtraFields:
    """What an extra field (local or central) says that matters here."""

    zip64: tuple[int, ...] = ()
    mtime: dt.datetime | None = None
    unix_mode: int | None = None
    unicode_name: str | None = None


_ENTRIES, _CENTRAL, _ZIP64_END, _LOCATOR = range(4)  # where in the archive the reader is


def _dos_mtime(dos_time: int, dos_date: int) -> dt.datetime | None:
    try:
        return dt.datetime(
            1980 + (dos_date >> 9), (dos_date >> 5) & 0xF, dos_date & 0x1F,
            dos_time >> 11, (dos_time >> 5) & 0x3F, (dos_time & 0x1F) * 2,
            tzinfo=dt.timezone.utc,
        )  # fmt: skip
    except ValueError:  # a zeroed or impossible DOS date: no usable mtime
        return None


def _parse_extra(extra: bytes, raw_name: bytes) -> _ExtraFields:
    """Read the extra fields we use; a field that runs past the end stops the scan."""
    zip64: tuple[int, ...] = ()
    mtime = None
    unix_mode = None
    unicode_name = None
    at = 0
    while at + EXTRA_HEADER.size <= len(extra):
        tag, length = EXTRA_HEADER.unpack_from(extra, at)
        body = extra[at + EXTRA_HEADER.size : at + EXTRA_HEADER.size + length]
        at += EXTRA_HEADER.size + length
        if len(body) < length:
            break
        if tag == EXTRA_ZIP64:
            zip64 = tuple(UINT64.unpack_from(body, i)[0] for i in range(0, length - 7, 8))
        elif tag == EXTRA_TIMESTAMP and length >= 5 and body[0] & 1:
            seconds = int.from_bytes(body[1:5], "little", signed=True)
            mtime = EPOCH + dt.timedelta(seconds=seconds)
        elif tag == EXTRA_UNIX_N and length >= 6:
            (unix_mode,) = UINT16.unpack_from(body, 4)
        elif tag == EXTRA_UNICODE_PATH and length >= 5 and body[0] == 1:
            if int.from_bytes(body[1:5], "little") == zlib.crc32(raw_name):
                try:
                    unicode_name = body[5:].decode("utf-8")
                except UnicodeDecodeError:
                    pass
    return _ExtraFields(zip64, mtime, unix_mode, unicode_name)


def _decode_name(raw: bytes, flags: int, fields: _ExtraFields) -> str:
    """The entry name, read as ``unzip``, ``bsdtar`` and ``7zz`` read it.

    In order: the Info-ZIP Unicode Path extra field when its CRC-32 matches the raw name; the
    raw name as UTF-8 when the language-encoding flag (bit 11) says so; else UTF-8 when the
    bytes are valid UTF-8 (Info-ZIP ``zip`` 3.0 writes UTF-8 names without the flag, and
    cp437 text with bytes over 0x7F is almost never valid UTF-8); else cp437.
    """
    if fields.unicode_name is not None:
        return fields.unicode_name
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        if flags & FLAG_UTF8:
            shown = raw.decode("utf-8", "replace")
            raise ProtocolError(
                f"entry {shown!r}: its name is flagged UTF-8 but is not valid UTF-8",
                entry=shown,
            ) from None
    return raw.decode("cp437")


def _strip_dot(name: str) -> str:
    """``name`` without one leading ``./``, as ``bsdtar -cf - .`` writes every name.

    Only one is removed: ``././a`` keeps a ``.`` segment, which the name rule refuses. The
    bare ``./`` entry (the archive's root folder itself) is returned as is and skipped.
    """
    return name[2:] if name.startswith("./") and name != ROOT_ENTRY else name


def _zip64_values(name: str, fields: tuple[int, ...], *values: tuple[int, int]) -> tuple[int, ...]:
    """Replace each ``(value, sentinel)`` equal to its sentinel by the next zip64 field."""
    out = []
    extra = iter(fields)
    for value, sentinel in values:
        if value == sentinel:
            replacement = next(extra, None)
            if replacement is None:
                raise ProtocolError(
                    f"entry {name!r}: a size or offset says zip64, but the zip64 extra field"
                    " is missing or too short",
                    entry=name,
                )
            value = replacement
        out.append(value)
    return tuple(out)


def _refuse_file_type(name: str, mode: int, where: str) -> None:
    kind = REFUSED_FILE_TYPES.get(stat.S_IFMT(mode))
    if kind is not None:
        raise ProtocolError(
            f"entry {name!r} is {kind} ({where}): only regular files and directories are accepted",
            entry=name,
        )


@dataclass(frozen=True, slots=True)
class _DescriptorMatch:
    """How the bytes at a data descriptor's place read.

    Attributes:
        strict: Length of a descriptor whose CRC-32 and sizes equal the data's and that a
            record signature follows, or None.
        loose: Length of one whose values equal the data's but that no signature follows.
        framed: The values of one whose sizes are right and that a record signature follows,
            but whose CRC-32 differs: the descriptor of corrupt data.
        expected_layout: The values read with the layout the local header announced.
    """

    strict: int | None = None
    loose: int | None = None
    framed: tuple[int, int, int] | None = None
    expected_layout: tuple[int, int, int] | None = None


def _match_descriptor(current: _Current, head: bytes) -> _DescriptorMatch:
    """Read ``head`` as each possible data descriptor layout of ``current``.

    The signature is optional, and the local zip64 extra says which width to expect; the other
    width is accepted too when it matches, for writers that choose it from the sizes alone.
    """
    expected = (current.crc, current.compressed, current.size)
    starts = (SIGNATURE_SIZE, 0) if head.startswith(SIG_DESCRIPTOR) else (0,)
    widths = (DESCRIPTOR64, DESCRIPTOR32) if current.zip64 else (DESCRIPTOR32, DESCRIPTOR64)
    loose = framed = expected_layout = None
    for start, layout in itertools.product(starts, widths):
        end = start + layout.size
        if len(head) < end:
            continue
        values: tuple[int, int, int] = layout.unpack_from(head, start)
        if start == starts[0] and layout is widths[0]:
            expected_layout = values
        followed = head[end : end + SIGNATURE_SIZE] in NEXT_RECORDS
        if values == expected and followed:
            return _DescriptorMatch(strict=end)
        if values == expected:
            loose = loose or end
        elif followed and values[1:] == expected[1:]:
            framed = framed or values
    return _DescriptorMatch(None, loose, framed, expected_layout)


# -- the reader ----------------------------------------------------------------------------


class ZipReader:
    """Decode a zip archive incrementally, front to back, h11 style.

    Feed bytes with :meth:`receive_data` and take events with :meth:`next_event` until it
    returns ``NEED_DATA`` (feed more) or :class:`~multiresp._events.End`. For each entry the
    events are one :class:`~multiresp._events.EntryStart`, any number of
    :class:`~multiresp._events.Data` (inflated content, at most about 1 MiB each), and one
    :class:`~multiresp._events.EntryEnd` once its CRC-32 and sizes were verified. ``End``
    comes after the central directory and the end records were read and checked.

    Example::

        reader = ZipReader()
        for chunk in itertools.chain(chunks, [b""]):  # b"": the input ended
            reader.receive_data(chunk)
            while (event := reader.next_event()) is not NEED_DATA:
                if type(event) is End:
                    break
                ...

    Args:
        limits: Bounds on entry count (``max_files``), entry size (``max_file_size``), the sum
            of entry sizes (``max_total_size``), inflated/compressed ratio per entry
            (``max_compression_ratio``, past the first MiB), name length
            (``max_name_length``) and depth (``max_depth``), held by one
            :class:`~multiresp._limits.LimitTracker`; the defaults of
            :class:`~multiresp.Limits` when None.
    """

    __slots__ = (
        "_buf",
        "_cd_start",
        "_central_count",
        "_current",
        "_eof",
        "_error",
        "_last",
        "_modes",
        "_modes_seen",
        "_padding",
        "_phase",
        "_root_seen",
        "_step",
        "_streamed",
        "_tracker",
        "_zip64_end",
        "_zip64_end_at",
    )

    def __init__(self, *, limits: Limits | None = None) -> None:
        self._tracker = LimitTracker(limits if limits is not None else Limits())
        self._buf = _Buffer()
        self._eof = False
        self._error: MultirespError | None = None
        self._step: Callable[[], EntryStart | Data | EntryEnd | End | _Sentinel | None]
        self._step = self._step_signature
        self._phase = _ENTRIES
        self._current: _Current | None = None
        self._last: str | None = None  # the last entry that ended
        self._streamed: collections.deque[_Streamed] = collections.deque()
        self._central_count = 0
        self._modes: list[tuple[str, int]] = []  # (name, permission bits) from the directory
        self._modes_seen: tuple[tuple[str, int], ...] = ()  # the same, once all were read
        self._padding = 0  # NUL bytes seen after the end record
        self._root_seen = False  # the bare "./" entry was read (it may come once)
        self._cd_start: int | None = None
        self._zip64_end: tuple[int, int, int] | None = None  # entries, cd size, cd offset
        self._zip64_end_at: int | None = None

    def receive_data(self, data: bytes) -> None:
        """Add bytes of the archive; ``b""`` says the input ended.

        Args:
            data: The next bytes, in any size of piece.

        Raises:
            RuntimeError: bytes given after the end of input was signalled.
            MultirespError: the error an earlier call raised (the reader stopped there).
        """
        if self._error is not None:
            raise self._error
        if not data:
            self._eof = True
            return
        if self._eof:
            raise RuntimeError("receive_data() called with bytes after the end of input")
        self._buf.append(data if type(data) is bytes else bytes(data))

    def next_event(self) -> EntryStart | Data | EntryEnd | End | _Sentinel:
        """The next event, or ``NEED_DATA`` when more bytes must be fed first.

        Follows the readers' contract (:mod:`multiresp._events`): never ``NEED_DATA`` once the
        end of input was marked; after ``End``, ``End`` again (NUL padding after the end
        record, as bsdtar writes, is dropped); after an error, that error again.

        Raises:
            UnsafeNameError: an entry name could escape its directory (checked before its data).
            LimitExceeded: a bound of the limits was crossed (checked before the bytes are
                handed out).
            IntegrityError: an entry's CRC-32 or sizes disagree with its data, descriptor or
                central directory record.
            ProtocolError: the archive is malformed, truncated, encrypted, uses a compression
                method other than store and deflate, or holds a symbolic link or special file.
        """
        if self._error is not None:
            raise self._error
        try:
            while True:
                event = self._step()
                if event is not None:
                    return event
        except MultirespError as exc:
            self._error = exc
            raise

    # -- helpers -----------------------------------------------------------------------------

    def _starve(self) -> _Sentinel:
        """``NEED_DATA``, or the truncation error when the input has ended."""
        if not self._eof:
            return NEED_DATA
        buf = self._buf
        current = self._current
        entry: str | None
        if current is not None:
            where, entry = f"in entry {current.name!r}", current.name
            if self._step == self._step_scan:
                where += (
                    ", a stored entry of unknown size, which ends only at a data descriptor"
                    " that has its signature and matches the data: none did"
                )
        elif self._step == self._step_local:
            entry = self._partial_local_name()
            where = f"in the local header of entry {entry!r}" if entry else "in a local header"
        elif self._phase != _ENTRIES or self._cd_start is not None:
            where, entry = "in the central directory", None
        elif self._last is not None:
            where, entry = f"after entry {self._last!r}", self._last
        else:
            where, entry = "before the first entry", None
        raise ProtocolError(
            f"the zip archive is truncated: it ended {where} ({buf.consumed + buf.size} bytes)",
            entry=entry,
        )

    def _partial_local_name(self) -> str | None:
        buf = self._buf
        if buf.size < LOCAL_HEADER.size:
            return None
        fields = LOCAL_HEADER.unpack(buf.peek(LOCAL_HEADER.size))
        end = LOCAL_HEADER.size + fields[9]
        if buf.size < end:
            return None
        raw = buf.peek(end)[LOCAL_HEADER.size :]
        try:
            return _decode_name(raw, fields[2], _ExtraFields())
        except ProtocolError:
            return raw.decode("utf-8", "replace")

    # -- signatures ----------------------------------------------------------------------------

    def _step_signature(self) -> _Sentinel | None:
        buf = self._buf
        if buf.size < SIGNATURE_SIZE:
            return self._starve()
        signature = buf.peek(SIGNATURE_SIZE)
        phase = self._phase
        if signature == SIG_LOCAL and phase == _ENTRIES:
            self._step = self._step_local
            return None
        if phase == _ENTRIES and signature in (SIG_CENTRAL, SIG_ZIP64_END, SIG_END):
            self._cd_start = buf.consumed
        if signature == SIG_CENTRAL and phase in (_ENTRIES, _CENTRAL):
            self._phase, self._step = _CENTRAL, self._step_central
        elif signature == SIG_ZIP64_END and phase in (_ENTRIES, _CENTRAL):
            self._phase, self._step = _ZIP64_END, self._step_zip64_end
            self._zip64_end_at = buf.consumed
        elif signature == SIG_ZIP64_LOCATOR and phase == _ZIP64_END:
            self._phase, self._step = _LOCATOR, self._step_locator
        elif signature == SIG_END and phase != _ZIP64_END:
            self._step = self._step_end_record
        else:
            if phase == _ENTRIES:
                where = f"after entry {self._last!r}" if self._last else "at the start"
            else:
                where = "in the central directory"
            record = RECORD_NAMES.get(signature)
            what = f"a {record} cannot come here" if record else "is not a zip record signature"
            raise ProtocolError(
                f"not a zip archive, or a corrupt one: {signature!r} {where} (offset"
                f" {buf.consumed}): {what}",
                entry=self._last if phase == _ENTRIES else None,
            )
        return None

    # -- local headers -------------------------------------------------------------------------

    def _step_local(self) -> EntryStart | _Sentinel | None:
        buf = self._buf
        if buf.size < LOCAL_HEADER.size:
            return self._starve()
        (
            _, _, flags, method, dos_time, dos_date, crc, compressed, size, name_len, extra_len,
        ) = LOCAL_HEADER.unpack(buf.peek(LOCAL_HEADER.size))  # fmt: skip
        length = LOCAL_HEADER.size + name_len + extra_len
        if buf.size < length:
            return self._starve()
        header = buf.take(length)
        raw_name = header[LOCAL_HEADER.size : LOCAL_HEADER.size + name_len]
        fields = _parse_extra(header[LOCAL_HEADER.size + name_len :], raw_name)
        name = _strip_dot(_decode_name(raw_name, flags, fields))
        hidden = name == ROOT_ENTRY

        for flag, why in REFUSED_FLAGS.items():
            if flags & flag:
                raise ProtocolError(f"entry {name!r} cannot be read: {why}", entry=name)
        if method == METHOD_AES:
            raise ProtocolError(
                f"entry {name!r} cannot be read: it is encrypted (AES, method 99)", entry=name
            )
        if method not in (METHOD_STORE, METHOD_DEFLATE):
            raise ProtocolError(
                f"entry {name!r} uses compression method {method}: only store (0) and"
                " deflate (8) are supported",
                entry=name,
            )
        if not hidden:
            self._tracker.admit(name)
        elif self._root_seen:
            # It counts toward no limit, but its record is kept for the central directory:
            # repeated, a small body (a gzip of them, say) would hold any amount of memory.
            raise ProtocolError(f"entry {name!r} repeats the archive's root entry", entry=name)
        else:
            self._root_seen = True
        if fields.unix_mode is not None:
            _refuse_file_type(name, fields.unix_mode, "mode in its local 'n' extra field")

        descriptor = bool(flags & FLAG_DATA_DESCRIPTOR)
        size, compressed = _zip64_values(
            name, fields.zip64, (size, ZIP32_MAX), (compressed, ZIP32_MAX)
        )
        is_dir = name.endswith("/")
        declared_size: int | None = size
        declared_compressed: int | None = compressed
        if descriptor:  # values in the header are only a promise when not zero
            declared_size = size or None
            declared_compressed = compressed or None
        if method == METHOD_STORE:
            if declared_size is None:
                declared_size = declared_compressed
            if declared_compressed is None:
                declared_compressed = declared_size
            if declared_size != declared_compressed:
                raise IntegrityError(
                    f"entry {name!r}: stored, yet its local header gives a size of"
                    f" {declared_size} and a compressed size of {declared_compressed}",
                    entry=name,
                )
        if is_dir and declared_size:
            raise ProtocolError(
                f"directory entry {name!r} declares {declared_size} bytes of content",
                entry=name,
            )
        if declared_size is not None:
            self._tracker.declare(name, declared_size)

        current = _Current(
            name=name,
            hidden=hidden,
            is_dir=is_dir,
            descriptor=descriptor,
            zip64=bool(fields.zip64),
            header_crc=crc if not descriptor or crc else None,
            declared_size=declared_size,
            declared_compressed=declared_compressed,
            remaining=declared_compressed,
        )
        if method == METHOD_DEFLATE and declared_compressed != 0:
            current.inflater = _new_inflater()
            self._step = self._step_inflate
        elif declared_compressed is not None:  # stored, or deflated to nothing at all
            self._step = self._step_stored
        elif descriptor:
            self._step = self._step_scan
        self._current = current
        if hidden:
            return None
        return EntryStart(
            name=name,
            size=declared_size,
            mtime=fields.mtime or _dos_mtime(dos_time, dos_date),
            is_dir=is_dir,
        )

    # -- entry data ----------------------------------------------------------------------------

    def _emit(self, current: _Current, piece: bytes) -> Data:
        """Check ``piece`` against the limits and the entry's promises, then hand it out."""
        after = current.size + len(piece)
        if current.is_dir:
            raise ProtocolError(f"directory entry {current.name!r} has content", entry=current.name)
        if current.declared_size is not None and after > current.declared_size:
            raise IntegrityError(
                f"entry {current.name!r} has more than the {current.declared_size} bytes its"
                " local header declares",
                entry=current.name,
            )
        self._tracker.grow(current.name, after, len(piece))
        current.size = after
        current.crc = crc32(piece, current.crc)
        return Data(piece)

    def _step_stored(self) -> Data | EntryEnd | _Sentinel | None:
        """STORE with a known size: hand out exactly that many bytes."""
        current = self._current
        assert current is not None and current.remaining is not None
        if current.remaining == 0:
            return self._data_done(current)
        if not self._buf.size:
            return self._starve()
        piece = self._buf.front(min(current.remaining, STORED_OUTPUT_STEP))
        current.remaining -= len(piece)
        current.compressed += len(piece)
        return self._emit(current, piece)

    def _step_scan(self) -> Data | EntryEnd | _Sentinel | None:
        """STORE of unknown size: content runs to the first descriptor that matches it."""
        current = self._current
        assert current is not None
        buf = self._buf
        if not buf.size:
            return self._starve()
        found, available, keep = buf.find_in_front(SIG_DESCRIPTOR)
        if found == 0:
            if buf.size < DESCRIPTOR_LOOKAHEAD and not self._eof:
                return NEED_DATA
            match = _match_descriptor(current, buf.peek(DESCRIPTOR_LOOKAHEAD))
            if match.strict is not None:
                buf.skip(match.strict)
                return self._end_entry(current)
            if match.framed is not None:  # the descriptor, sizes right: the CRC-32 is wrong
                self._compare(current, "its data descriptor", match.framed)
            piece = buf.take(SIGNATURE_SIZE)  # a look-alike inside the content
        elif found > 0:
            piece = buf.front(min(found, STORED_OUTPUT_STEP))
        else:
            # the last bytes of this piece may start a signature that the next piece ends
            if available > keep:
                piece = buf.front(min(available - keep, STORED_OUTPUT_STEP))
            elif buf.merge_front():
                return None
            elif self._eof:
                return self._starve()
            else:
                return NEED_DATA
        current.compressed += len(piece)
        return self._emit(current, piece)

    def _step_inflate(self) -> Data | EntryEnd | _Sentinel | None:
        """DEFLATE: inflate in bounded steps until the stream says it ended."""
        current = self._current
        assert current is not None and current.inflater is not None
        inflater = current.inflater
        if inflater.eof:
            return self._data_done(current)
        buf = self._buf
        remaining = current.remaining
        limit = INFLATE_INPUT_STEP if remaining is None else min(INFLATE_INPUT_STEP, remaining)
        if buf.size and limit:
            view: bytes | memoryview = buf.front_view(limit)
        elif current.full:  # no new input, but output may still be pending
            view = b""
        elif remaining == 0:
            raise IntegrityError(
                f"entry {current.name!r}: its deflate stream runs past the compressed size of"
                f" {current.declared_compressed} bytes its local header declares",
                entry=current.name,
            )
        else:
            return self._starve()
        try:
            out = inflater.decompress(view, INFLATE_OUTPUT_STEP)
        except _INFLATE_ERRORS as exc:
            raise ProtocolError(
                f"entry {current.name!r}: corrupt deflate data ({exc})", entry=current.name
            ) from None
        left = inflater.unused_data if inflater.eof else inflater.unconsumed_tail
        consumed = len(view) - len(left)
        buf.skip(consumed)
        current.compressed += consumed
        if remaining is not None:
            current.remaining = remaining - consumed
        current.full = len(out) == INFLATE_OUTPUT_STEP
        if out:
            self._tracker.check_ratio(current.name, current.compressed, current.size + len(out))
            return self._emit(current, out)
        if view and not consumed and not inflater.eof:
            raise ProtocolError(
                f"entry {current.name!r}: the deflate stream makes no progress",
                entry=current.name,
            )
        return None

    def _data_done(self, current: _Current) -> EntryEnd | None:
        """The content ended: check the header's promises, or go read the descriptor."""
        if current.descriptor:
            self._step = self._step_descriptor
            return None
        return self._end_entry(current)

    def _step_descriptor(self) -> EntryEnd | _Sentinel | None:
        current = self._current
        assert current is not None
        buf = self._buf
        if buf.size < DESCRIPTOR_LOOKAHEAD and not self._eof:
            return NEED_DATA
        head = buf.peek(DESCRIPTOR_LOOKAHEAD) if buf.size else b""
        match = _match_descriptor(current, head)
        if match.strict is None and len(head) < DESCRIPTOR_LOOKAHEAD:
            return self._starve()
        length = match.strict if match.strict is not None else match.loose
        if length is not None:
            buf.skip(length)
            return self._end_entry(current)
        said = match.framed or match.expected_layout
        assert said is not None  # the lookahead is long enough for any layout
        self._compare(current, "its data descriptor", said)
        raise AssertionError("unreachable: the descriptor differs, so _compare raised")

    def _compare(self, current: _Current, source: str, said: tuple[int, int, int]) -> None:
        """Raise IntegrityError naming the first of CRC-32, compressed size, size that differs."""
        actual = (current.crc, current.compressed, current.size)
        for what, claimed, real in zip(
            ("CRC-32", "compressed size", "size"), said, actual, strict=True
        ):
            if claimed != real:
                shown = (
                    (f"{claimed:#010x}", f"{real:#010x}") if what == "CRC-32" else (claimed, real)
                )
                raise IntegrityError(
                    f"entry {current.name!r}: {source} gives a {what} of {shown[0]}, the data"
                    f" has {shown[1]}",
                    entry=current.name,
                )

    def _end_entry(self, current: _Current) -> EntryEnd | None:
        header_crc = current.header_crc
        said = (
            current.crc if header_crc is None else header_crc,
            current.compressed
            if current.declared_compressed is None
            else current.declared_compressed,
            current.size if current.declared_size is None else current.declared_size,
        )
        self._compare(current, "its local header", said)
        self._streamed.append(
            _Streamed(current.name, current.crc, current.compressed, current.size)
        )
        self._current = None
        self._last = current.name
        self._step = self._step_signature
        if current.hidden:
            return None
        return EntryEnd(name=current.name, size=current.size, crc32=current.crc)

    # -- central directory and end records ------------------------------------------------------

    def _step_central(self) -> _Sentinel | None:
        buf = self._buf
        if buf.size < CENTRAL_HEADER.size:
            return self._starve()
        (
            _, made_by, _, flags, _, _, _, crc, compressed, size, name_len, extra_len,
            comment_len, _, _, external, offset,
        ) = CENTRAL_HEADER.unpack(buf.peek(CENTRAL_HEADER.size))  # fmt: skip
        length = CENTRAL_HEADER.size + name_len + extra_len + comment_len
        if buf.size < length:
            return self._starve()
        record = buf.take(length)
        raw_name = record[CENTRAL_HEADER.size : CENTRAL_HEADER.size + name_len]
        extra = record[CENTRAL_HEADER.size + name_len : CENTRAL_HEADER.size + name_len + extra_len]
        fields = _parse_extra(extra, raw_name)
        name = _strip_dot(_decode_name(raw_name, flags, fields))
        self._central_count += 1
        if not self._streamed:
            raise ProtocolError(
                f"the central directory lists entry {name!r}, which did not stream: it has"
                f" more entries than the archive held",
                entry=name,
            )
        streamed = self._streamed.popleft()
        if name != streamed.name:
            raise ProtocolError(
                f"central directory entry {self._central_count} is {name!r}, but the archive"
                f" streamed {streamed.name!r} there",
                entry=streamed.name,
            )
        size, compressed, _ = _zip64_values(
            name, fields.zip64, (size, ZIP32_MAX), (compressed, ZIP32_MAX), (offset, ZIP32_MAX)
        )
        for what, claimed, real in (
            ("CRC-32", crc, streamed.crc),
            ("compressed size", compressed, streamed.compressed),
            ("size", size, streamed.size),
        ):
            if claimed != real:
                raise IntegrityError(
                    f"entry {name!r}: the central directory gives a {what} of {claimed}, the"
                    f" data had {real}",
                    entry=name,
                )
        if made_by >> 8 in UNIX_HOSTS:
            mode = external >> 16
            _refuse_file_type(name, mode, "mode in its central directory record")
            if (
                stat.S_IFMT(mode) in (stat.S_IFREG, 0)
                and mode & PERMISSION_BITS
                and not name.endswith("/")
            ):
                self._modes.append((name, mode & PERMISSION_BITS))
        self._step = self._step_signature
        return None

    def _step_zip64_end(self) -> _Sentinel | None:
        buf = self._buf
        if buf.size < ZIP64_END_RECORD.size:
            return self._starve()
        (
            _, record_size, _, _, _, _, _, entries, cd_size, cd_offset,
        ) = ZIP64_END_RECORD.unpack(buf.peek(ZIP64_END_RECORD.size))  # fmt: skip
        if not ZIP64_END_FIXED <= record_size <= ZIP64_END_FIXED + MAX_ZIP64_EXTENSIBLE:
            raise ProtocolError(
                f"the zip64 end of central directory record claims {record_size} bytes"
            )
        length = ZIP64_END_RECORD.size - ZIP64_END_FIXED + record_size
        if buf.size < length:
            return self._starve()
        buf.skip(length)
        self._zip64_end = (entries, cd_size, cd_offset)
        self._step = self._step_signature
        return None

    def _step_locator(self) -> _Sentinel | None:
        buf = self._buf
        if buf.size < ZIP64_LOCATOR.size:
            return self._starve()
        _, _, zip64_end_at, _ = ZIP64_LOCATOR.unpack(buf.take(ZIP64_LOCATOR.size))
        if zip64_end_at != self._zip64_end_at:
            raise ProtocolError(
                f"the zip64 locator points to offset {zip64_end_at}, but the zip64 end record"
                f" is at {self._zip64_end_at}"
            )
        self._step = self._step_signature
        return None

    def _step_end_record(self) -> End | _Sentinel:
        buf = self._buf
        if buf.size < END_RECORD.size:
            return self._starve()
        (
            _, _, _, _, entries, cd_size, cd_offset, comment_len,
        ) = END_RECORD.unpack(buf.peek(END_RECORD.size))  # fmt: skip
        if buf.size < END_RECORD.size + comment_len:
            return self._starve()
        end_at = buf.consumed
        buf.skip(END_RECORD.size + comment_len)
        if self._streamed:
            missing = self._streamed[0].name
            raise ProtocolError(
                f"entry {missing!r} streamed but is missing from the central directory",
                entry=missing,
            )
        count = self._central_count
        cd_start = self._cd_start if self._cd_start is not None else end_at
        cd_end = self._zip64_end_at if self._zip64_end_at is not None else end_at
        found = (count, cd_end - cd_start, cd_start)
        if self._zip64_end is not None:
            said = self._zip64_end
        else:  # keep only the low bits, as a zip32 field does
            said = (entries, cd_size, cd_offset)
            found = (count & ZIP32_MAX_ENTRIES, found[1] & ZIP32_MAX, found[2] & ZIP32_MAX)
        for what, claimed, real in zip(
            ("entry count", "central directory size", "central directory offset"),
            said,
            found,
            strict=True,
        ):
            if claimed != real:
                raise ProtocolError(
                    f"the end of central directory record gives a {what} of {claimed}, the"
                    f" archive has {real}"
                )
        self._step = self._step_done
        self._modes_seen = tuple(self._modes)
        return self._step_done()

    def _step_done(self) -> End:
        buf = self._buf
        if buf.size:
            # bsdtar writing to a pipe pads its output with NULs to a whole block (10,240
            # bytes by default), as it does for tar; anything else after the end is refused.
            size = buf.size
            trailing = buf.take(min(size, MAX_TRAILING_PADDING + 1))
            self._padding += len(trailing)
            if trailing.strip(b"\0") or size > len(trailing):
                raise ProtocolError(
                    f"{size} bytes follow the end of the zip archive", entry=self._last
                )
            if self._padding > MAX_TRAILING_PADDING:
                raise ProtocolError(
                    f"over {MAX_TRAILING_PADDING} bytes of padding follow the end of the zip"
                    " archive",
                    entry=self._last,
                )
        return End(modes=self._modes_seen)
