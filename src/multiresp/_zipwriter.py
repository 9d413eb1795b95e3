"""Pure streaming zip encoder, with an exact size predictor that shares its header code.

How it works: the caller drives one :class:`ZipWriter` per archive, h11 style, and sends the
bytes each call returns, in order::

    header = writer.start_entry(info, sample)   # local file header
    body   = writer.write(chunk)                # entry data (stored chunks are returned as is)
    tail   = writer.end_entry()                 # deflate flush and/or data descriptor
    ...
    last   = writer.finish()                    # central directory, zip64 records, end record

Each entry takes the first layout its facts allow (docs/design.md, "Layouts"):

1. STORE with CRC-32 and sizes in the local header, no data descriptor: size and CRC known
   before the header (files on disk and bytes, whose CRC the caller computes ahead; every
   empty entry and every directory, whose CRC is 0).
2. DEFLATE with a data descriptor: the CRC or the size is not known ahead, or compression is
   asked for. An entry that is not compressed (under "store", or "auto" finding it does not
   pay) but whose CRC comes only after its data is written as a deflate stream of *stored
   blocks*: 5 bytes of framing per 65,535 bytes of data, plus a 5-byte empty final block.
   Only deflate marks its own end for a streaming reader, and Java's ``ZipInputStream``
   refuses STORE with a data descriptor, so no entry needs a reader to accept that. When the
   size is declared, the blocks are cut at fixed offsets from the entry's start (not where
   the chunks fall), so the length stays exactly predictable.

One function decides the layout, :func:`entry_layout`: the writer applies it, and so does the
archive plan (``multiresp._plan``), which places every record with :func:`entry_records`,
the writer's own encoding, so that lengths and offsets are known before any byte is read.

zip64 appears only where needed: in an entry whose size needs it, in the central-directory
record of an entry whose offset needs it, and in the end records when the archive needs it.
Names are UTF-8 with the language-encoding flag; the DOS date and time are UTC and the
extended-timestamp extra field carries the Unix mtime, so the bytes never depend on the time
zone or the clock: the same entries always give the same bytes.

The module is pure: no I/O, no event loop, no clock.
"""

from __future__ import annotations

import datetime as dt
import struct
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal, Protocol

from ._errors import IntegrityError, LimitExceeded
from ._names import check_name
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

Compression = Literal["store", "deflate", "auto"]
COMPRESSIONS: tuple[Compression, ...] = ("store", "deflate", "auto")

VERSION_STORE = 10  # 1.0: stored file
VERSION_DEFLATE = 20  # 2.0: deflate, directories
VERSION_ZIP64 = 45  # 4.5: zip64 extensions
VERSION_MADE_BY = (3 << 8) | VERSION_ZIP64  # Unix, spec 4.5: external attributes hold modes

FILE_ATTRIBUTES = 0o100644 << 16  # regular file, rw-r--r--
DIR_ATTRIBUTES = (0o40755 << 16) | 0x10  # directory, rwxr-xr-x, plus the MS-DOS directory bit
MSDOS_DIRECTORY = 0x10  # the low byte of the external attributes: MS-DOS's directory bit
PERMISSION_BITS = 0o777  # the Unix mode bits an entry may carry: never setuid, setgid, sticky
UNIX_REGULAR = 0o100000  # S_IFREG, the file type of a regular file in a Unix mode
UNIX_DIRECTORY = 0o040000  # S_IFDIR

STORED_BLOCK_MAX = 0xFFFF  # bytes in one deflate stored block
STORED_BLOCK_FINAL = b"\x01\x00\x00\xff\xff"  # an empty final stored block ends the stream

LOCAL_HEADER = struct.Struct("<IHHHHHIIIHH")
CENTRAL_HEADER = struct.Struct("<IHHHHHHIIIHHHHHII")
END_RECORD = struct.Struct("<IHHHHIIH")
ZIP64_END_RECORD = struct.Struct("<IQHHIIQQQQ")
ZIP64_LOCATOR = struct.Struct("<IIQI")
DESCRIPTOR32 = struct.Struct("<IIII")
DESCRIPTOR64 = struct.Struct("<IIQQ")
EXTENDED_TIMESTAMP = struct.Struct("<HHBi")  # tag 0x5455, size 5, flags (bit 0: mtime), mtime

SIG_LOCAL = 0x04034B50
SIG_CENTRAL = 0x02014B50
SIG_DESCRIPTOR = 0x08074B50
SIG_END = 0x06054B50
SIG_ZIP64_END = 0x06064B50
SIG_ZIP64_LOCATOR = 0x07064B50

DOS_EPOCH = (1980, 1, 1, 0, 0, 0)
DOS_LAST = (2107, 12, 31, 23, 59, 58)
INT32_RANGE = range(-(1 << 31), 1 << 31)

AUTO_SAMPLE = 64 * 1024  # bytes of an entry's start that "auto" test-compresses
AUTO_MIN_SAVING = 0.10  # "auto" deflates only when the sample shrinks by at least this much
DEFAULT_ZLIB_LEVEL = 6
DEFAULT_ISAL_LEVEL = 1
# Media types whose content is already compressed: "auto" stores them without sampling.
INCOMPRESSIBLE_TYPES = frozenset(
    {
        "application/zip", "application/gzip", "application/x-gzip", "application/x-bzip2",
        "application/x-xz", "application/zstd", "application/x-7z-compressed",
        "application/x-rar-compressed", "application/vnd.rar", "application/x-zip-compressed",
        "application/java-archive", "application/epub+zip", "application/pdf",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "application/vnd.openxmlformats-officedocument.presentationml.presentation",
        "font/woff", "font/woff2",
    }
)  # fmt: skip
INCOMPRESSIBLE_PREFIXES = ("image/", "video/", "audio/")
COMPRESSIBLE_IMAGES = frozenset({"image/svg+xml", "image/bmp", "image/x-ms-bmp", "image/tiff"})


@dataclass(frozen=True, slots=True, kw_only=True)
class ZipEntryInfo:
    """What the writer must know about an entry before its first byte.

    Attributes:
        name: The entry name; a trailing ``/`` marks a directory.
        size: The size in bytes, or None when unknown.
        mtime: Timezone-aware modification time, or None (then the DOS epoch, no extra field).
        crc32: The CRC-32 of the content when known ahead, else None.
        media_type: Used by ``compression="auto"``.
        mode: Unix permission bits for the external attributes (masked to ``0o777``), or
            None for ``0o644`` (a file) or ``0o755`` (a directory).
    """

    name: str
    size: int | None = None
    mtime: dt.datetime | None = None
    crc32: int | None = None
    media_type: str = "application/octet-stream"
    mode: int | None = None


def _attributes(info: ZipEntryInfo, is_dir: bool) -> int:
    """The central directory's external attributes: the Unix file type and permission bits
    in the high 16 bits (as "made by" Unix says), MS-DOS's directory bit for a directory."""
    if info.mode is None:
        return DIR_ATTRIBUTES if is_dir else FILE_ATTRIBUTES
    if is_dir:
        return ((UNIX_DIRECTORY | (info.mode & PERMISSION_BITS)) << 16) | MSDOS_DIRECTORY
    return (UNIX_REGULAR | (info.mode & PERMISSION_BITS)) << 16


def is_incompressible(media_type: str) -> bool:
    """True for media types whose content is already compressed (images, video, archives)."""
    kind = media_type.split(";")[0].strip().lower()
    if kind in COMPRESSIBLE_IMAGES:
        return False
    return kind in INCOMPRESSIBLE_TYPES or kind.startswith(INCOMPRESSIBLE_PREFIXES)


def _fast_compress(data: bytes) -> bytes:
    # isal level 1 tests a sample about 8 times faster than zlib level 1 (on incompressible
    # data zlib is at its slowest) and is what deflates the entry when isal is installed.
    if _isal_zlib is not None:
        compressed: bytes = _isal_zlib.compress(data, DEFAULT_ISAL_LEVEL)
        return compressed
    return zlib.compress(data, 1)


def deflate_pays(sample: bytes) -> bool:
    """True when a fast deflate of ``sample`` saves at least ``AUTO_MIN_SAVING`` of it."""
    sample = sample[:AUTO_SAMPLE]
    if not sample:
        return False
    compressed = _fast_compress(sample)
    return len(compressed) <= len(sample) * (1 - AUTO_MIN_SAVING)


Layout = Literal["store", "stored-deflate", "deflate"]
"""An entry's layout: ``"store"`` is layout 1 (CRC and sizes in the local header, no
descriptor); ``"stored-deflate"`` and ``"deflate"`` are layout 2 (a data descriptor), the
first with uncompressed data framed as deflate stored blocks."""


def entry_layout(
    compression: Compression,
    info: ZipEntryInfo,
    sample: bytes | None = b"",
    pays: Callable[[bytes], bool] = deflate_pays,
) -> Layout | None:
    """The one rule that decides an entry's layout, for the writer and the archive plan.

    An entry is compressed under "deflate", and under "auto" when its media type is not an
    incompressible one and ``sample`` (its first bytes) shrinks enough. An uncompressed entry
    takes layout 1 when its size and CRC are known before its header (``info.crc32`` given,
    with any value while only planning), and always when it is empty or a directory;
    otherwise it is framed as deflate stored blocks.

    Args:
        compression: The archive's compression.
        info: The entry's facts.
        sample: The entry's first bytes, or None when they are not read yet.
        pays: Tells whether deflating a sample pays (:func:`deflate_pays`, or a memo of it).

    Returns:
        The layout, or None when it depends on a sample not given ("auto", a compressible
        media type, ``sample`` None).
    """
    empty = info.name.endswith("/") or info.size == 0
    if not empty and compression != "store":
        if compression == "deflate":
            return "deflate"
        if not is_incompressible(info.media_type):
            if sample is None:
                return None
            if pays(sample):
                return "deflate"
    if empty or (info.size is not None and info.crc32 is not None):
        return "store"
    return "stored-deflate"


def _dos_datetime(mtime: dt.datetime | None) -> tuple[int, int]:
    fields = DOS_EPOCH
    if mtime is not None:
        utc = mtime if mtime.tzinfo is dt.timezone.utc else mtime.astimezone(dt.timezone.utc)
        fields = (utc.year, utc.month, utc.day, utc.hour, utc.minute, utc.second)
        fields = max(DOS_EPOCH, min(DOS_LAST, fields))
    year, month, day, hour, minute, second = fields
    return (hour << 11) | (minute << 5) | (second // 2), ((year - 1980) << 9) | (month << 5) | day


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_SECOND = dt.timedelta(seconds=1)


def _unix_time(mtime: dt.datetime | None) -> int | None:
    if mtime is None:
        return None
    seconds = (mtime - _EPOCH) // _SECOND
    return seconds if seconds in INT32_RANGE else None


def _time_extra(unix_time: int) -> bytes:
    return EXTENDED_TIMESTAMP.pack(EXTRA_TIMESTAMP, 5, 1, unix_time)


def _stored_block_count(start: int, stop: int) -> int:
    """How many stored blocks begin in data bytes ``[start, stop)``, blocks being cut every
    ``STORED_BLOCK_MAX`` bytes from 0."""
    return -(-stop // STORED_BLOCK_MAX) - -(-start // STORED_BLOCK_MAX)


def _stored_deflate_size(size: int) -> int:
    """The exact length of ``size`` bytes as deflate stored blocks, final empty block included."""
    return size + len(STORED_BLOCK_FINAL) * (_stored_block_count(0, size) + 1)


def _deflate_bound(size: int) -> int:
    """Most bytes a deflate stream of ``size`` bytes can take (zlib's deflateBound, stored)."""
    return size + (size >> 12) + (size >> 14) + (size >> 25) + 13 + 5 * (size // STORED_BLOCK_MAX)


class _Compressor(Protocol):
    def compress(self, data: bytes, /) -> bytes: ...
    def flush(self) -> bytes: ...


@dataclass(slots=True)
class _Current:
    """Bookkeeping for the entry being written."""

    name: str
    name_bytes: bytes
    declared: int | None
    method: int
    flags: int
    version: int
    dos_time: int
    dos_date: int
    time_extra: bytes  # the extended-timestamp extra field, in both headers; b"" when none
    crc: int
    crc_given: bool
    zip64_local: bool
    offset: int
    attributes: int
    stored_deflate: bool  # uncompressed data framed as deflate stored blocks (layout 2)
    compressor: _Compressor | None
    size: int = 0
    compressed: int = 0


class ZipWriter:
    """Encodes a zip archive as a stream of bytes, one call per piece.

    Args:
        compression: ``"store"``, ``"deflate"`` or ``"auto"`` (deflate what compresses).
        level: The zlib level (0-9) for deflate. None takes isal level 1 when the ``fast``
            extra is installed, else zlib level 6.

    Raises:
        ValueError: an unknown compression or level.
    """

    def __init__(self, *, compression: Compression = "store", level: int | None = None) -> None:
        if compression not in COMPRESSIONS:
            raise ValueError(f"compression must be one of {COMPRESSIONS}, not {compression!r}")
        if level is not None and not 0 <= level <= 9:
            raise ValueError(f"level must be 0-9, not {level}")
        self.compression: Compression = compression
        self.level = level
        self.offset = 0  # bytes returned so far
        self._central: list[bytes] = []
        self._current: _Current | None = None
        self._finished = False
        # The last sample "auto" tested and the verdict: the caller asks layout() and then
        # start_entry() with the same sample, which is compressed once.
        self._sampled: tuple[bytes, bool] | None = None

    # -- decisions -------------------------------------------------------------------------

    def layout(self, info: ZipEntryInfo, sample: bytes | None = b"") -> Layout | None:
        """The entry's layout (see :func:`entry_layout`), consulting ``sample`` for "auto".

        A sample is test-compressed once when the caller asks about it and then calls
        :meth:`start_entry` with the same sample.
        """
        return entry_layout(self.compression, info, sample, self._pays)

    def _pays(self, sample: bytes) -> bool:
        if self._sampled is None or self._sampled[0] is not sample:
            self._sampled = (sample, deflate_pays(sample))
        return self._sampled[1]

    def _compressor(self) -> _Compressor:
        if self.level is None and _isal_zlib is not None:
            compressor: _Compressor = _isal_zlib.compressobj(
                DEFAULT_ISAL_LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS
            )
            return compressor
        level = DEFAULT_ZLIB_LEVEL if self.level is None else self.level
        return zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS)

    # -- encoding --------------------------------------------------------------------------

    def start_entry(self, info: ZipEntryInfo, sample: bytes = b"") -> bytes:
        """Begin an entry and return its local file header.

        Args:
            info: The entry's name, size, mtime, CRC (when known ahead) and media type.
            sample: The entry's first bytes, consulted by ``compression="auto"``.

        Raises:
            RuntimeError: the previous entry was not ended, or the archive is finished.
            UnsafeNameError: the name is not a safe relative path.
        """
        if self._current is not None or self._finished:
            raise RuntimeError("start_entry() called before end_entry() or after finish()")
        name = info.name
        check_name(name)
        is_dir = name.endswith("/")
        declared = 0 if is_dir else info.size
        layout = self.layout(info, sample)
        deflate = layout == "deflate"
        crc_given = layout == "store"
        stored_deflate = layout == "stored-deflate"
        if declared is None:
            method, bound = METHOD_DEFLATE, None
        elif deflate:
            method, bound = METHOD_DEFLATE, _deflate_bound(declared)
        elif stored_deflate:
            method, bound = METHOD_DEFLATE, _stored_deflate_size(declared)
        else:
            method, bound = METHOD_STORE, declared
        zip64_local = bound is not None and bound >= ZIP32_MAX
        flags = FLAG_UTF8 if crc_given else FLAG_UTF8 | FLAG_DATA_DESCRIPTOR
        if zip64_local:
            version = VERSION_ZIP64
        elif method == METHOD_DEFLATE or is_dir:
            version = VERSION_DEFLATE
        else:
            version = VERSION_STORE
        mtime = info.mtime
        dos_time, dos_date = _dos_datetime(mtime)
        unix_time = _unix_time(mtime)
        time_extra = b"" if unix_time is None else _time_extra(unix_time)
        name_bytes = name.encode("utf-8")
        crc = info.crc32 if crc_given and declared and info.crc32 is not None else 0
        self._current = _Current(
            name, name_bytes, declared, method, flags, version, dos_time, dos_date, time_extra,
            crc, crc_given, zip64_local, self.offset,
            _attributes(info, is_dir), stored_deflate,
            self._compressor() if deflate else None,
        )  # fmt: skip

        crc_field = crc if crc_given else 0
        size_field = declared if method == METHOD_STORE and declared is not None else 0  # 1
        extra = time_extra
        if zip64_local:
            extra = (
                EXTRA_HEADER.pack(EXTRA_ZIP64, 16)
                + struct.pack("<QQ", size_field, size_field)
                + time_extra
            )
            size_field = ZIP32_MAX
        header = LOCAL_HEADER.pack(
            SIG_LOCAL, version, flags, method, dos_time, dos_date, crc_field,
            size_field, size_field, len(name_bytes), len(extra),
        )  # fmt: skip
        self.offset += len(header) + len(name_bytes) + len(extra)
        return header + name_bytes + extra

    def write(self, data: bytes) -> bytes:
        """Add content to the current entry; return the bytes to send (``data`` itself for
        stored entries, so no block is copied).

        Raises:
            IntegrityError: the entry now holds more bytes than its declared size.
            LimitExceeded: an entry of undeclared size passed the zip32 limit of 4 GiB.
        """
        current = self._current
        if current is None:
            raise RuntimeError("write() called outside an entry")
        if not data:
            return b""
        current.size += len(data)
        if current.declared is not None and current.size > current.declared:
            raise IntegrityError(
                f"entry {current.name!r}: the source gave more than its declared size of "
                f"{current.declared} bytes",
                entry=current.name,
            )
        if not current.crc_given:
            current.crc = crc32(data, current.crc)
        if current.compressor is not None:
            out = current.compressor.compress(data)
        elif current.stored_deflate:
            out = self._stored_blocks(current, data)
        else:
            out = data
        current.compressed += len(out)
        self._check_zip32(current)
        return self._emit(out)

    def skip(self, size: int) -> None:
        """Account for ``size`` bytes of an uncompressed entry of declared size without
        producing them (stored, or deflate stored blocks, whose framing it counts).

        Used to predict sizes and map byte ranges: the layout depends on lengths only.
        """
        current = self._current
        if current is None or current.compressor is not None or current.declared is None:
            raise RuntimeError("skip() works only inside an uncompressed entry of declared size")
        start = current.size
        current.size += size
        framed = size
        if current.stored_deflate:
            framed += len(STORED_BLOCK_FINAL) * _stored_block_count(start, current.size)
        current.compressed += framed
        self.offset += framed

    def end_entry(self) -> bytes:
        """End the current entry; return what follows its data (flush, data descriptor).

        Raises:
            IntegrityError: the entry holds fewer bytes than its declared size.
        """
        current = self._current
        if current is None:
            raise RuntimeError("end_entry() called outside an entry")
        if current.declared is not None and current.size != current.declared:
            raise IntegrityError(
                f"entry {current.name!r}: the source gave {current.size} bytes, "
                f"not its declared {current.declared}",
                entry=current.name,
            )
        tail = b""
        if current.compressor is not None:
            tail = current.compressor.flush()
        elif current.stored_deflate:
            tail = STORED_BLOCK_FINAL
        if tail:
            current.compressed += len(tail)
            self._check_zip32(current)
        if current.flags & FLAG_DATA_DESCRIPTOR:
            descriptor = DESCRIPTOR64 if current.zip64_local else DESCRIPTOR32
            tail += descriptor.pack(SIG_DESCRIPTOR, current.crc, current.compressed, current.size)
        self._central.append(self._central_record(current))
        self._current = None
        self.offset += len(tail)
        return tail

    def finish(self) -> bytes:
        """Return the central directory and end records; the archive is then complete."""
        if self._current is not None or self._finished:
            raise RuntimeError("finish() called inside an entry or twice")
        self._finished = True
        directory = b"".join(self._central)
        end = end_records(len(self._central), self.offset, len(directory))
        return self._emit(directory + end)

    # -- helpers ---------------------------------------------------------------------------

    def _emit(self, data: bytes) -> bytes:
        self.offset += len(data)
        return data

    @staticmethod
    def _stored_blocks(current: _Current, data: bytes) -> bytes:
        """``data`` (already counted in ``current.size``) framed as deflate stored blocks.

        With a declared size the blocks are cut every 65,535 bytes from the entry's start,
        wherever the chunks fall, so the framing depends on the size only (see :meth:`skip`);
        without one, from the chunk's start. ``data`` is returned as is when no block begins
        in it.
        """
        if current.declared is None:
            start, end = 0, len(data)
        else:
            start, end = current.size - len(data), current.declared
        stop = start + len(data)
        first = -(-start // STORED_BLOCK_MAX) * STORED_BLOCK_MAX
        if first >= stop:
            return data
        view = memoryview(data)
        parts: list[bytes | memoryview] = [view[: first - start]]
        for at in range(first, stop, STORED_BLOCK_MAX):
            length = min(STORED_BLOCK_MAX, end - at)
            parts.append(struct.pack("<BHH", 0, length, length ^ 0xFFFF))
            parts.append(view[at - start : at - start + STORED_BLOCK_MAX])
        return b"".join(parts)

    @staticmethod
    def _check_zip32(current: _Current) -> None:
        if not current.zip64_local and max(current.size, current.compressed) >= ZIP32_MAX:
            raise LimitExceeded(
                f"entry {current.name!r}: an entry of undeclared size cannot pass 4 GiB "
                "(declare its size to get a zip64 entry)",
                entry=current.name,
            )

    def _central_record(self, current: _Current) -> bytes:
        size_field, compressed_field, offset_field = (
            current.size, current.compressed, current.offset
        )  # fmt: skip
        if max(size_field, compressed_field, offset_field) < ZIP32_MAX:  # the common case
            return (
                CENTRAL_HEADER.pack(
                    SIG_CENTRAL, VERSION_MADE_BY, current.version, current.flags,
                    current.method, current.dos_time, current.dos_date, current.crc,
                    compressed_field, size_field, len(current.name_bytes),
                    len(current.time_extra), 0, 0, 0, current.attributes, offset_field,
                )
                + current.name_bytes
                + current.time_extra
            )  # fmt: skip
        zip64_fields = []
        if current.size >= ZIP32_MAX:
            zip64_fields.append(current.size)
            size_field = ZIP32_MAX
        if current.compressed >= ZIP32_MAX:
            zip64_fields.append(current.compressed)
            compressed_field = ZIP32_MAX
        if current.offset >= ZIP32_MAX:
            zip64_fields.append(current.offset)
            offset_field = ZIP32_MAX
        extra = b""
        version = current.version
        if zip64_fields:
            extra += EXTRA_HEADER.pack(EXTRA_ZIP64, 8 * len(zip64_fields))
            extra += struct.pack(f"<{len(zip64_fields)}Q", *zip64_fields)
            version = VERSION_ZIP64
        extra += current.time_extra
        header = CENTRAL_HEADER.pack(
            SIG_CENTRAL, VERSION_MADE_BY, version, current.flags, current.method,
            current.dos_time, current.dos_date, current.crc, compressed_field, size_field,
            len(current.name_bytes), len(extra), 0, 0, 0, current.attributes, offset_field,
        )  # fmt: skip
        return header + current.name_bytes + extra


def zip_size(infos: Iterable[ZipEntryInfo]) -> int:
    """The exact length of a stored archive of these entries, before any byte is read.

    The prediction runs a :class:`ZipWriter` over the entries without their data, so it
    cannot disagree with what the writer produces. Each info must have a size; give ``crc32``
    (any value) for the entries whose CRC will be known ahead, as the writer will be told
    (layout 1); the others are counted as deflate stored blocks (layout 2).

    Raises:
        ValueError: an entry has no size.
    """
    writer = ZipWriter(compression="store")
    for info in infos:
        if info.size is None:
            raise ValueError(f"entry {info.name!r} has no size: the archive size is unknown")
        writer.start_entry(info)
        if not info.name.endswith("/"):
            writer.skip(info.size)
        writer.end_entry()
    writer.finish()
    return writer.offset


def entry_records(
    compression: Compression, info: ZipEntryInfo, offset: int
) -> tuple[bytes, int, bytes]:
    """An uncompressed entry of declared size placed at ``offset``, encoded without its data.

    The archive plan calls this with a placeholder CRC to learn the lengths, and again with
    the real CRC to render the records a byte range covers: the writer's own code encodes
    both, so a plan cannot disagree with the archive the writer sends.

    Returns:
        The local header, the length of the data on the wire (with framing), and what ends
        the entry in the central directory (its record there).

    Raises:
        ValueError: the entry has no size, or "auto" would need to sample it.
        RuntimeError: the entry is compressed.
    """
    if info.size is None:
        raise ValueError(f"entry {info.name!r} has no size: its layout is not known ahead")
    writer = ZipWriter(compression=compression)
    if writer.layout(info, None) in (None, "deflate"):
        raise ValueError(f"entry {info.name!r} is compressed: its length is not known ahead")
    writer.offset = offset
    local = writer.start_entry(info)
    before = writer.offset
    if not info.name.endswith("/"):
        writer.skip(info.size)
    writer.end_entry()
    return local, writer.offset - before, writer._central[-1]


def end_records(count: int, start: int, size: int) -> bytes:
    """What follows a central directory of ``count`` records and ``size`` bytes that starts
    at ``start``: the zip64 end record and locator when needed, then the end record."""
    end = b""
    if count >= ZIP32_MAX_ENTRIES or start >= ZIP32_MAX or size >= ZIP32_MAX:
        end += ZIP64_END_RECORD.pack(
            SIG_ZIP64_END, ZIP64_END_RECORD.size - 12, VERSION_MADE_BY, VERSION_ZIP64,
            0, 0, count, count, size, start,
        )  # fmt: skip
        end += ZIP64_LOCATOR.pack(SIG_ZIP64_LOCATOR, 0, start + size, 1)
    end += END_RECORD.pack(
        SIG_END, 0, 0, min(count, ZIP32_MAX_ENTRIES), min(count, ZIP32_MAX_ENTRIES),
        min(size, ZIP32_MAX), min(start, ZIP32_MAX), 0,
    )  # fmt: skip
    return end
