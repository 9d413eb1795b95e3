"""Entries (what gets sent) and their sources.

An :class:`Entry` is a name plus metadata plus a *source* that can produce its bytes. Sources
come in four kinds; the responses read them in large blocks off the event loop:

- :class:`PathSource` - a file on disk; re-readable, identified by size and mtime;
- :class:`BytesSource` - bytes in memory; re-readable;
- :class:`IterSource` - a synchronous iterable of chunks; read once;
- :class:`AsyncIterSource` - an asynchronous iterable of chunks; read once.

Directory entries (names ending in ``/``) have no source.
"""

from __future__ import annotations

import datetime as dt
import functools
import mimetypes
import os
import pathlib
import stat
from collections.abc import AsyncIterable, Iterable
from dataclasses import dataclass, field

from ._names import check_name

_SEPARATORS = os.sep + (os.altsep or "")
DIRECTORY_MEDIA_TYPE = "inode/directory"
DEFAULT_MEDIA_TYPE = "application/octet-stream"


@dataclass(frozen=True, slots=True)
class PathSource:
    """A regular file, with the stat fields that say whether it changed since."""

    path: str
    size: int
    mtime_ns: int
    inode: int
    device: int


@dataclass(frozen=True, slots=True)
class BytesSource:
    """Bytes held in memory."""

    data: bytes


@dataclass(eq=False, slots=True)
class IterSource:
    """A synchronous iterable of byte chunks, read once."""

    chunks: Iterable[bytes]
    consumed: bool = False


@dataclass(eq=False, slots=True)
class AsyncIterSource:
    """An asynchronous iterable of byte chunks, read once."""

    chunks: AsyncIterable[bytes]
    consumed: bool = False


Source = PathSource | BytesSource | IterSource | AsyncIterSource | None


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


def _mtime_from_ns(mtime_ns: int) -> dt.datetime:
    return _EPOCH + dt.timedelta(microseconds=mtime_ns // 1000)


def ns_from_datetime(moment: dt.datetime) -> int:
    """Nanoseconds since the epoch of a timezone-aware datetime (exact, no float)."""
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


@dataclass(frozen=True, slots=True)
class Entry:
    """One file (or empty directory) to send.

    Build entries with :meth:`from_path`, :meth:`from_bytes` or :meth:`from_iter`; the name is
    checked at construction.

    Attributes:
        name: Relative POSIX path inside the archive, or the part's filename. A trailing ``/``
            marks a directory entry.
        size: Size in bytes, or None when unknown.
        mtime: Timezone-aware modification time, or None.
        media_type: Media type, guessed from the name when not given.
    """

    name: str
    size: int | None
    mtime: dt.datetime | None
    media_type: str
    source: Source = field(repr=False, compare=False)

    def __post_init__(self) -> None:
        check_name(self.name)
        if self.size is not None and self.size < 0:
            raise ValueError(f"entry {self.name!r}: size must be >= 0, not {self.size}")
        if self.is_dir and self.size not in (0, None):
            raise ValueError(f"directory entry {self.name!r} cannot have a size")

    @property
    def is_dir(self) -> bool:
        """True for a directory entry (its name ends with ``/``)."""
        return self.name.endswith("/")

    @property
    def mtime_ns(self) -> int | None:
        """The modification time in nanoseconds since the epoch, as precise as known."""
        if isinstance(self.source, PathSource):
            return self.source.mtime_ns
        if self.mtime is None:
            return None
        return ns_from_datetime(self.mtime)

    @property
    def rereadable(self) -> bool:
        """True when the source can be read again with the same result (paths, bytes)."""
        return self.source is None or isinstance(self.source, (PathSource, BytesSource))

    @classmethod
    def from_path(
        cls,
        path: str | os.PathLike[str],
        name: str | None = None,
        *,
        media_type: str | None = None,
    ) -> Entry:
        """An entry for a file on disk; its size and mtime come from ``stat``.

        A directory gives a directory entry (an empty folder in the archive); to send a
        folder's content, use :func:`walk` or pass the folder's path to a response.

        Args:
            path: The file.
            name: The name in the archive; defaults to the file's basename.
            media_type: Defaults to a guess from the name.

        Raises:
            UnsafeNameError: the name is not a safe relative path.
            OSError: the file cannot be stat'ed, or is neither a regular file nor a directory.
        """
        path = os.fspath(path)
        return cls._from_stat(path, os.stat(path), name, media_type)

    @classmethod
    def _from_stat(
        cls, path: str, st: os.stat_result, name: str | None, media_type: str | None
    ) -> Entry:
        if name is None:
            name = os.path.basename(path.rstrip(_SEPARATORS))
        if stat.S_ISDIR(st.st_mode):
            name = name if name.endswith("/") else name + "/"
            return cls(name, 0, _mtime_from_ns(st.st_mtime_ns), DIRECTORY_MEDIA_TYPE, None)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(f"{path}: not a regular file")
        source = PathSource(path, st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev)
        return cls(
            name,
            st.st_size,
            _mtime_from_ns(st.st_mtime_ns),
            media_type or _guess_media_type(name),
            source,
        )

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
        data = bytes(data)
        if name.endswith("/") and data:
            raise ValueError(f"directory entry {name!r} cannot have content")
        return cls(
            name,
            len(data),
            _aware(mtime),
            media_type or _guess_media_type(name),
            BytesSource(data) if not name.endswith("/") else None,
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
        if isinstance(chunks, (bytes, bytearray, memoryview, str)):
            raise TypeError("chunks must be an iterable of bytes; use Entry.from_bytes for bytes")
        if isinstance(chunks, AsyncIterable):
            source = AsyncIterSource(chunks)
        elif isinstance(chunks, Iterable):
            source = IterSource(chunks)
        else:
            raise TypeError(f"chunks must be an iterable of bytes, not {type(chunks).__name__}")
        return cls(name, size, _aware(mtime), media_type or _guess_media_type(name), source)


def entries_for_path(path: str | os.PathLike[str]) -> list[Entry]:
    """What a plain path means where entries are expected: a file's entry, or a folder's
    content under the folder's own name (``walk(folder, prefix=its name)``)."""
    path = os.fspath(path)
    st = os.stat(path)
    if stat.S_ISDIR(st.st_mode):
        return walk(path, prefix=os.path.basename(path.rstrip(_SEPARATORS)))
    return [Entry._from_stat(path, st, None, None)]


def _join(prefix: str, relative: str) -> str:
    return f"{prefix.rstrip('/')}/{relative}" if prefix else relative


def walk(root: str | os.PathLike[str], *, prefix: str = "") -> list[Entry]:
    """Entries for every file and every empty directory under ``root``, sorted by name.

    Names are relative to ``root`` (under ``prefix`` when given). Symbolic links are followed
    only when they resolve to a regular file inside ``root``; directory links are not entered,
    and special files (sockets, FIFOs, devices) are skipped, so nothing outside ``root`` is
    ever included. Each file is stat'ed once.

    Args:
        root: The folder.
        prefix: A relative path to put in front of every name (``"photos"`` gives
            ``"photos/a.jpg"``).

    Raises:
        NotADirectoryError: ``root`` is not a folder.
        UnsafeNameError: ``prefix`` is not a safe relative path.
    """
    root = pathlib.Path(root)
    if prefix:
        check_name(prefix)
    if not root.is_dir():
        raise NotADirectoryError(f"{root}: not a directory")
    entries: list[Entry] = []
    _scan(os.fspath(root), "", os.path.realpath(root), prefix, entries)
    entries.sort(key=lambda e: e.name)
    return entries


def _scan(directory: str, relative: str, real_root: str, prefix: str, out: list[Entry]) -> None:
    kept = 0
    with os.scandir(directory) as items:
        for item in items:
            name = _join(prefix, relative + item.name)
            if item.is_symlink():
                target = os.path.realpath(item.path)
                inside = os.path.commonpath([real_root, target]) == real_root
                if inside and os.path.isfile(target):
                    out.append(Entry._from_stat(item.path, os.stat(item.path), name, None))
                    kept += 1
            elif item.is_dir(follow_symlinks=False):
                _scan(item.path, relative + item.name + "/", real_root, prefix, out)
                kept += 1
            elif item.is_file(follow_symlinks=False):
                out.append(
                    Entry._from_stat(item.path, item.stat(follow_symlinks=False), name, None)
                )
                kept += 1
    if relative and not kept:
        out.append(Entry._from_stat(directory, os.stat(directory), _join(prefix, relative), None))
