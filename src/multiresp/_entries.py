"""Entries (what gets sent) and their sources.

An :class:`Entry` is a name plus metadata plus a *source* that can produce its bytes: any
object that implements :class:`~multiresp._sources.Source` (the responses ask it, never its
class). The kinds built in:

- :class:`PathSource` - a file on disk; re-readable, identified by device and inode, unchanged
  while its size, mtime and ctime are (see ``_fs``: opened beneath its walk's root);
- :class:`BytesSource` - bytes in memory; re-readable, identified by their CRC-32;
- :class:`IterSource` - a synchronous iterable of chunks; read once, in worker threads;
- :class:`AsyncIterSource` - an asynchronous iterable of chunks; read once, on the event loop.

Directory entries (names ending in ``/``) have no source.
"""

from __future__ import annotations

import datetime as dt
import functools
import mimetypes
import os
import stat
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ._filereads import SEND_PIECE
from ._fs import PathSource as PathSource
from ._fs import Root, scan
from ._names import check_name
from ._sources import Source as Source
from ._sources import SourceBase
from ._zipformat import crc32

if TYPE_CHECKING:
    from obstore import ObjectMeta
    from obstore.store import ObjectStore

_SEPARATORS = os.sep + (os.altsep or "")
DIRECTORY_MEDIA_TYPE = "inode/directory"
DEFAULT_MEDIA_TYPE = "application/octet-stream"
PERMISSION_BITS = 0o777  # what an entry's mode keeps: never setuid, setgid or sticky
FILE_MODE = 0o644  # rw-r--r--: the mode of an entry made from bytes or an iterable
DIRECTORY_MODE = 0o755  # rwxr-xr-x: the mode of a directory entry not made from a folder


@dataclass(frozen=True, slots=True)
class BytesSource(SourceBase):
    """Bytes held in memory: re-readable, identified by their CRC-32 (computed once)."""

    data: bytes
    _crc: int | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def identity(self) -> int:
        """Their CRC-32: what names bytes alike on every replica."""
        return self.known_crc()

    def known_crc(self) -> int:
        """Their CRC-32, computed at the first call."""
        crc = self._crc
        if crc is None:
            crc = crc32(self.data, 0)
            object.__setattr__(self, "_crc", crc)  # a cache, not a fact: frozen otherwise
        return crc

    def read_all(self, entry: Entry) -> bytes:
        return self.data

    def open(self, entry: Entry, offset: int = 0) -> _BytesReader:
        return _BytesReader(self.data, offset)


class _BytesReader:
    """Bytes from an offset, in pieces of at most ``SEND_PIECE`` (slices of the bytes)."""

    __slots__ = ("_at", "_data")

    def __init__(self, data: bytes, offset: int) -> None:
        self._data, self._at = data, offset

    def read(self, size: int) -> list[bytes]:
        at, data = self._at, self._data
        stop = min(at + max(size, 0), len(data))
        self._at = max(stop, at)
        return [data[i : min(i + SEND_PIECE, stop)] for i in range(at, stop, SEND_PIECE)]

    def close(self) -> None:
        return None


def _as_bytes(chunk: object, entry: str) -> bytes:
    if isinstance(chunk, bytes):
        return chunk
    if isinstance(chunk, (bytearray, memoryview)):
        return bytes(chunk)
    raise TypeError(f"entry {entry!r}: its iterable yielded {type(chunk).__name__}, not bytes")


@dataclass(eq=False, slots=True)
class IterSource(SourceBase):
    """A synchronous iterable of byte chunks, read once (in worker threads)."""

    iterable: Iterable[bytes]
    consumed: bool = False

    rereadable = False

    @property
    def size(self) -> None:
        return None

    def open(self, entry: Entry, offset: int = 0) -> _IterReader:
        """A reader of the chunks; once.

        Raises:
            RuntimeError: it was already read.
        """
        if self.consumed:
            raise RuntimeError(f"entry {entry.name!r}: its iterable was already read")
        if offset:
            raise ValueError(f"entry {entry.name!r}: an iterable is read from its start only")
        self.consumed = True
        return _IterReader(iter(self.iterable), entry.name)


class _IterReader:
    """The chunks of an iterable, whole, about ``size`` bytes per read."""

    __slots__ = ("_chunks", "_entry")

    def __init__(self, chunks: Iterator[bytes], entry: str) -> None:
        self._chunks, self._entry = chunks, entry

    def read(self, size: int) -> list[bytes]:
        out: list[bytes] = []
        got = 0
        for chunk in self._chunks:
            data = _as_bytes(chunk, self._entry)
            if data:
                out.append(data)
                got += len(data)
                if got >= size:
                    break
        return out

    def close(self) -> None:
        return None


@dataclass(eq=False, slots=True)
class AsyncIterSource(SourceBase):
    """An asynchronous iterable of byte chunks, read once (on the event loop)."""

    iterable: AsyncIterable[bytes]
    consumed: bool = False

    rereadable = False
    blocking = False

    @property
    def size(self) -> None:
        return None

    def chunks(self, entry: Entry) -> AsyncIterator[bytes]:
        """Its chunks, as bytes; once.

        Raises:
            RuntimeError: it was already read.
        """
        if self.consumed:
            raise RuntimeError(f"entry {entry.name!r}: its async iterable was already read")
        self.consumed = True
        return _async_bytes(self.iterable, entry.name)


async def _async_bytes(iterable: AsyncIterable[bytes], entry: str) -> AsyncIterator[bytes]:
    async for chunk in iterable:
        yield _as_bytes(chunk, entry)


def _guess_media_type(name: str) -> str:
    if name.endswith("/"):
        return DIRECTORY_MEDIA_TYPE
    base = name.rpartition("/")[2]
    dot = base.rfind(".")  # a leading dot is a hidden file's, not an extension
    return _media_type_of_suffix(base[dot:].lower() if dot > 0 else "")


@functools.lru_cache(maxsize=1024)
def _media_type_of_suffix(suffix: str) -> str:
    guessed, encoding = mimetypes.guess_type("x" + suffix, strict=False)
    if encoding is not None:  # "a.csv.gz" is gzip data, whatever it holds
        return _ENCODED_TYPES.get(encoding, DEFAULT_MEDIA_TYPE)
    return guessed or DEFAULT_MEDIA_TYPE


_ENCODED_TYPES = {
    "gzip": "application/gzip",
    "bzip2": "application/x-bzip2",
    "xz": "application/x-xz",
    "br": "application/x-brotli",
    "compress": "application/x-compress",
}


def _aware(mtime: dt.datetime | None) -> dt.datetime | None:
    if mtime is not None and mtime.utcoffset() is None:
        raise ValueError("mtime must be a timezone-aware datetime")
    return mtime


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_MIN_DATETIME = dt.datetime.min.replace(tzinfo=dt.timezone.utc)
_MAX_DATETIME = dt.datetime.max.replace(tzinfo=dt.timezone.utc)


def _mtime_from_ns(mtime_ns: int) -> dt.datetime:
    """The datetime of an mtime, clamped to what ``datetime`` holds (years 1 to 9999): a
    file dated in year 11476 gets 9999-12-31 23:59:59.999999 UTC, and its source keeps the
    exact nanoseconds. A zip holds less still (DOS dates 1980-2107, its extended timestamp
    1901-2038); the writer clamps to those."""
    micro = mtime_ns // 1000
    if micro < _MIN_MICRO:
        return _MIN_DATETIME
    if micro > _MAX_MICRO:
        return _MAX_DATETIME
    return _EPOCH + dt.timedelta(microseconds=micro)


def ns_from_datetime(moment: dt.datetime) -> int:
    """Nanoseconds since the epoch of a timezone-aware datetime (exact, no float)."""
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


_MIN_MICRO = ns_from_datetime(_MIN_DATETIME) // 1000
_MAX_MICRO = ns_from_datetime(_MAX_DATETIME) // 1000


def _str_arg(value: object, parameter: str) -> str:
    """``value`` as a ``str`` path or name; a bytes or int one is a ``TypeError`` naming it."""
    text = os.fspath(value) if isinstance(value, os.PathLike) else value
    if not isinstance(text, str):
        raise TypeError(
            f"{parameter} must be a str or os.PathLike[str], not {type(value).__name__}"
        )
    return text


@dataclass(frozen=True, slots=True)
class Entry:
    """One file (or empty directory) to send.

    Build entries with :meth:`from_path`, :meth:`from_bytes` or :meth:`from_iter`; the name is
    checked at construction.

    Attributes:
        name: Relative POSIX path inside the archive, or the part's filename. A trailing ``/``
            marks a directory entry.
        size: Size in bytes, or None when unknown.
        mtime: Timezone-aware modification time, or None. A zip entry without one is dated
            1980-01-01 00:00 UTC (the first date a zip can hold) and carries no extended
            timestamp: a fixed date, never the clock, so that the same entries give the same
            bytes and the same ``ETag`` in every request and on every replica.
        media_type: Media type, guessed from the name when not given.
        mode: Permission bits (``0o000``-``0o777``; never setuid, setgid or sticky), written
            to the zip's external attributes: a file's own for :meth:`from_path`, else
            ``0o644`` for a file and ``0o755`` for a directory.
    """

    name: str
    size: int | None
    mtime: dt.datetime | None
    media_type: str
    source: Source | None = field(repr=False, compare=False)
    mode: int = FILE_MODE

    def __post_init__(self) -> None:
        check_name(self.name)
        if self.size is not None and self.size < 0:
            raise ValueError(f"entry {self.name!r}: size must be >= 0, not {self.size}")
        if self.is_dir and self.size not in (0, None):
            raise ValueError(f"directory entry {self.name!r} cannot have a size")
        if not isinstance(self.mode, int) or self.mode & ~PERMISSION_BITS or self.mode < 0:
            raise ValueError(
                f"entry {self.name!r}: mode must be permission bits (0o000-0o777), "
                f"not {self.mode!r}"
            )

    @property
    def is_dir(self) -> bool:
        """True for a directory entry (its name ends with ``/``)."""
        return self.name.endswith("/")

    @property
    def mtime_ns(self) -> int | None:
        """The modification time in nanoseconds since the epoch, as precise as known (a
        file's own mtime to the nanosecond, even beyond what ``datetime`` holds)."""
        if self.mtime is None:
            return None
        exact = None if self.source is None else self.source.mtime_ns
        if exact is not None and self.mtime == _mtime_from_ns(exact):
            return exact
        return ns_from_datetime(self.mtime)

    @property
    def rereadable(self) -> bool:
        """True when the source can be read again with the same result (a file, bytes)."""
        return self.source is None or self.source.rereadable

    @classmethod
    def from_path(
        cls,
        path: str | os.PathLike[str],
        name: str | None = None,
        *,
        media_type: str | None = None,
        mtime: dt.datetime | None = None,
    ) -> Entry:
        """An entry for a file on disk; its size, mtime and mode come from ``stat``.

        A directory gives a directory entry (an empty folder in the archive); to send a
        folder's content, use :func:`walk` or pass the folder's path to a response.

        The file is read by the path given, as the application named it (links followed),
        not beneath a folder as :func:`walk`'s files are. It is opened without blocking and
        must still be the same regular file (device and inode) with the same size, mtime and
        ctime as when the entry was built, else the response aborts with an
        :class:`~multiresp.IntegrityError` naming the entry.

        Args:
            path: The file.
            name: The name in the archive; defaults to the file's basename.
            media_type: Defaults to a guess from the name.
            mtime: A timezone-aware datetime to send instead of the file's mtime (the file's
                own mtime still tells whether it changed before it is read).

        Raises:
            UnsafeNameError: the name is not a safe relative path.
            ValueError: ``mtime`` is a naive datetime.
            OSError: the file cannot be stat'ed, or is neither a regular file nor a directory.
        """
        path = _str_arg(path, "path")
        if name is not None:
            name = _str_arg(name, "name")
        return cls._from_stat(path, os.stat(path), name, media_type, mtime=_aware(mtime))

    @classmethod
    def _from_stat(
        cls,
        path: str,
        st: os.stat_result,
        name: str | None,
        media_type: str | None,
        root: Root | None = None,
        relative: str = "",
        mtime: dt.datetime | None = None,
    ) -> Entry:
        if name is None:
            name = os.path.basename(path.rstrip(_SEPARATORS))
        mode = st.st_mode & PERMISSION_BITS
        if mtime is None:
            mtime = _mtime_from_ns(st.st_mtime_ns)
        if stat.S_ISDIR(st.st_mode):
            name = name if name.endswith("/") else name + "/"
            return cls(name, 0, mtime, DIRECTORY_MEDIA_TYPE, None, mode)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(f"{path}: not a regular file")
        source = PathSource.from_stat(path, st, root, relative)
        return cls(name, st.st_size, mtime, media_type or _guess_media_type(name), source, mode)

    @classmethod
    def from_bytes(
        cls,
        data: bytes,
        name: str,
        *,
        media_type: str | None = None,
        mtime: dt.datetime | None = None,
    ) -> Entry:
        """An entry whose content is ``data``.

        Raises:
            UnsafeNameError: the name is not a safe relative path.
            ValueError: ``mtime`` is a naive datetime.
        """
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data must be bytes, not {type(data).__name__}")
        name = _str_arg(name, "name")
        data = bytes(data)
        if name.endswith("/") and data:
            raise ValueError(f"directory entry {name!r} cannot have content")
        return cls(
            name,
            len(data),
            _aware(mtime),
            media_type or _guess_media_type(name),
            BytesSource(data) if not name.endswith("/") else None,
            DIRECTORY_MODE if name.endswith("/") else FILE_MODE,
        )

    @classmethod
    def from_iter(
        cls,
        chunks: Iterable[bytes] | AsyncIterable[bytes],
        name: str,
        *,
        size: int | None = None,
        media_type: str | None = None,
        mtime: dt.datetime | None = None,
    ) -> Entry:
        """An entry whose content is produced by an iterable (sync or async) of chunks.

        The iterable is read once; an archive holding such an entry is always sent whole.

        Args:
            chunks: ``Iterable[bytes]`` or ``AsyncIterable[bytes]``.
            name: The name in the archive.
            size: The declared length, or None when unknown. A source that yields more or
                fewer bytes than declared aborts the response.
            media_type: Defaults to a guess from the name.
            mtime: Timezone-aware modification time, or None.
        """
        source: Source
        name = _str_arg(name, "name")
        if isinstance(chunks, (bytes, bytearray, memoryview, str)):
            raise TypeError("chunks must be an iterable of bytes; use Entry.from_bytes for bytes")
        if isinstance(chunks, AsyncIterable):
            source = AsyncIterSource(chunks)
        elif isinstance(chunks, Iterable):
            source = IterSource(chunks)
        else:
            raise TypeError(f"chunks must be an iterable of bytes, not {type(chunks).__name__}")
        return cls(name, size, _aware(mtime), media_type or _guess_media_type(name), source)

    @classmethod
    def from_object(
        cls,
        store: ObjectStore,
        key: str,
        name: str | None = None,
        *,
        meta: ObjectMeta | None = None,
    ) -> Entry:
        """An entry for an object in an obstore store (the ``s3`` extra).

        Its size, ETag and mtime (the object's Last-Modified, to the second) come from
        ``meta`` when it was listed, else from a HEAD when the response starts: an object not
        found then fails the response before its first byte, with an
        :class:`~multiresp.IntegrityError` naming the entry and the key. Every read is sent
        with ``If-Match`` on that ETag, so an object changed since aborts the response.

        Args:
            store: Any obstore store (``S3Store``, ``GCSStore``, ``AzureStore``,
                ``LocalStore``, ``MemoryStore``).
            key: The object's path in the store.
            name: The name in the archive; defaults to the key's last segment.
            meta: The object's ``ObjectMeta`` from a listing (``obstore.list``,
                ``obstore.head``), when already known.

        Raises:
            UnsafeNameError: the name is not a safe relative path.
            ValueError: the key ends in ``/`` (a folder), or ``meta`` is another object's.
        """
        from ._objects import object_entry

        return object_entry(store, key, name, meta=meta)


def entries_for_path(path: str | os.PathLike[str]) -> list[Entry]:
    """What a plain path means where entries are expected, as ``zip -r`` has it.

    A file gives its entry (:meth:`Entry.from_path`). A folder gives its content under the
    folder's own name (``photos`` gives ``photos/a.jpg``), an empty folder the directory entry
    ``photos/``; a path whose last segment is ``.`` or ``..`` (or ``/``) gives the content
    with no folder name in front, as ``zip -r out.zip .`` does.
    """
    path = _str_arg(path, "path")
    st = os.stat(path)
    if stat.S_ISDIR(st.st_mode):
        name = os.path.basename(path.rstrip(_SEPARATORS))
        return walk(path, prefix="" if name in ("", ".", "..") else name)
    return [Entry._from_stat(path, st, None, None)]


def _join(prefix: str, relative: str) -> str:
    return f"{prefix.rstrip('/')}/{relative}" if prefix else relative


def walk(root: str | os.PathLike[str], *, prefix: str = "") -> list[Entry]:
    """Entries for every file and every empty directory under ``root``, sorted by name.

    Names are relative to ``root`` (under ``prefix`` when given). Nothing outside ``root`` is
    ever included, at listing time or later, when the files are read:

    - a symbolic link is kept only when it resolves to a regular file inside ``root`` (the
      entry then reads the link's target, by its path inside ``root``);
    - directory links are not entered, and links that lead out of ``root`` or nowhere are
      skipped;
    - FIFOs, sockets and devices are skipped.

    Each file's entry records ``root`` and its path beneath it, its device and inode: when
    it is read, it is opened beneath ``root`` with no symbolic link followed, and refused
    (the response aborts with :class:`~multiresp.IntegrityError`) unless it is still that
    regular file with the same size, mtime and ctime. A file dated beyond what ``datetime``
    holds gets the nearest datetime (its source keeps the exact nanoseconds). Any depth of
    folders works (no recursion). Each file is stat'ed once.

    Args:
        root: The folder.
        prefix: A relative path to put in front of every name (``"photos"`` gives
            ``"photos/a.jpg"``). An empty ``root`` then gives the directory entry
            ``"photos/"``; without a prefix it gives no entry.

    Raises:
        NotADirectoryError: ``root`` is not a folder.
        UnsafeNameError: ``prefix`` is not a safe relative path.
    """
    top = _str_arg(root, "root")
    prefix = _str_arg(prefix, "prefix")
    if prefix:
        check_name(prefix)
    if not os.path.isdir(top):
        raise NotADirectoryError(f"{top}: not a directory")
    real_root = os.path.realpath(top)
    root_stat = os.stat(real_root)
    return walk_beneath(Root(real_root, root_stat.st_dev, root_stat.st_ino), "", prefix=prefix)


def entry_beneath(root: Root, relative: str, name: str) -> Entry:
    """An entry for the file or folder ``relative`` beneath ``root`` (no link and no ``..``
    in it), stat'ed without following a link and, for a file, read beneath ``root`` as
    :func:`walk`'s files are.

    Raises:
        OSError: it cannot be stat'ed, or is neither a regular file nor a folder (a symbolic
            link included).
    """
    path = f"{root.path.rstrip(os.sep)}{os.sep}{relative}"
    st = os.stat(path, follow_symlinks=False)
    return Entry._from_stat(path, st, name, None, root, relative)


def walk_beneath(root: Root, folder: str, *, prefix: str = "") -> list[Entry]:
    """What :func:`walk` lists in ``folder`` beneath ``root``, each file recorded beneath
    ``root`` itself: a file is then opened from ``root``'s path with no symbolic link followed
    on the way, ``folder`` included, so a folder swapped for a link after a caller checked it
    cannot lead a read outside ``root``. Links are kept, as by :func:`walk`, only when they
    resolve to a regular file inside ``folder``.

    Args:
        root: The folder nothing is read outside of (its real path, device and inode).
        folder: A path beneath it with no link and no ``..`` in it; ``""`` for ``root``.
        prefix: As for :func:`walk`, already checked to be a safe relative path.
    """
    top = f"{root.path.rstrip(os.sep)}{os.sep}{folder}" if folder else root.path
    within = f"{folder}/" if folder else ""
    entries: list[Entry] = []
    for directory, relative, items in scan(top):
        kept = 0
        for item in items:
            name = _join(prefix, relative + item.name)
            path = f"{directory}{os.sep}{item.name}"  # item.path may be the name alone
            if item.is_dir(follow_symlinks=False):
                kept += 1
            elif item.is_symlink():
                entry = _linked_file(path, name, root, top)
                if entry is not None:
                    entries.append(entry)
                    kept += 1
            elif item.is_file(follow_symlinks=False):
                st = item.stat(follow_symlinks=False)
                entries.append(
                    Entry._from_stat(path, st, name, None, root, within + relative + item.name)
                )
                kept += 1
        if not kept and (relative or prefix):
            try:  # its date and mode: never through a link it was swapped for since
                st = os.stat(directory, follow_symlinks=False)
            except FileNotFoundError:
                continue
            if stat.S_ISDIR(st.st_mode):
                entries.append(Entry._from_stat(directory, st, _join(prefix, relative), None))
    entries.sort(key=lambda e: e.name)
    return entries


def _linked_file(link: str, name: str, root: Root, top: str) -> Entry | None:
    """The entry for a link to a regular file inside ``top`` (a folder beneath ``root``),
    read by the target's path beneath ``root``."""
    target = os.path.realpath(link)
    if os.path.commonpath([top, target]) != top or target == top:
        return None
    try:
        st = os.stat(target)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    relative = os.path.relpath(target, root.path).replace(os.sep, "/")
    return Entry._from_stat(target, st, name, None, root, relative)
