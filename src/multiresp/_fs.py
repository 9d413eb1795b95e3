"""Files on disk: how a listed file is identified, opened and checked, and how a folder is walked.

How it works: :func:`multiresp.walk` records, for each file, the folder it was listed from (a
:class:`Root`: the folder's real path, device and inode) and the file's path relative to it,
with the stat fields that identify it (device, inode) and say it is unchanged (size, mtime,
ctime). When the file is read, :func:`open_source` opens it so that no file or folder
swapped in after the listing can lead the read outside the folder: no symbolic link is followed
on the way, wherever it points. The path was recorded with no link and no ``..`` in it (a link
to a file inside the root is recorded by its target), so a link met at read time means the
tree changed, and a path with neither cannot resolve outside the folder its first segments
name.

- Where the kernel has ``openat2(2)`` (Linux 5.6+), the root's path joined with the relative
  path is opened in one system call with ``RESOLVE_NO_SYMLINKS`` (which also refuses
  ``/proc`` magic links). ``RESOLVE_BENEATH`` would need a descriptor of the root: held
  across requests it outlives them (a descriptor per listed folder, released only when the
  last entry is collected), opened per file it costs three system calls more; neither buys
  anything here, since a path with no link and no ``..`` already stays beneath its prefix.
- Elsewhere (or with :data:`USE_OPENAT2` set to False), the root is opened and checked
  (device, inode), then each segment is opened from the one before with ``O_NOFOLLOW``: a
  link on the way is refused, as with openat2.

Then the file found must be the one listed (device and inode), so even a folder renamed into
the root's place cannot hand over another file.

Every file is opened with ``O_NONBLOCK`` (a FIFO swapped in cannot hold the thread), and
:func:`check` refuses, before any byte is read, anything that is not the regular file listed
(same device and inode) with the same size, mtime and ctime.

A file given by :meth:`multiresp.Entry.from_path` has no root: the application named it, so
it is opened by that path (links followed, as the application would), without blocking, and
must still be a regular file with the device, inode, size, mtime and ctime it had when the
entry was built.

:class:`PathSource` is the file's :class:`~multiresp._sources.Source`: a small file is read
whole in one read through a plain descriptor (:meth:`PathSource.read_all`, the per-file hot
path), a larger one through a reader (:meth:`PathSource.open`) in pieces of ``SEND_PIECE``
bytes; each read checks the file after its last byte too (:func:`check`), so a file that
changed while it was read aborts the transfer. Its CRC-32 is read through one reused buffer
(:meth:`PathSource.crc`) and kept in the CRC cache (:mod:`multiresp._crccache`) under its
device, inode, size, mtime and ctime, within this boot of this host.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import platform
import stat
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import _crccache
from ._crccache import FILE_KEY_VERSION, CrcKey, crc_cache
from ._errors import IntegrityError
from ._filereads import SEND_PIECE
from ._sources import SourceBase

if TYPE_CHECKING:
    from ._entries import Entry

# openat2(2): Linux's number on x86_64 and aarch64 (the generic syscall table); elsewhere the
# fallback walk is used.
_SYS_OPENAT2 = 437
_OPENAT2_MACHINES = frozenset({"x86_64", "amd64", "aarch64", "arm64"})
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
_RESOLVE = RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS
_AT_FDCWD = -100

# Set to False to use the per-segment walk even where openat2 is available (tests, or a
# seccomp profile that kills rather than refuses unknown system calls).
USE_OPENAT2 = True

_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
# A directory on the way is only looked through: O_PATH needs no read permission on it.
_O_SEARCH = getattr(os, "O_PATH", os.O_RDONLY)
FILE_FLAGS = os.O_RDONLY | getattr(os, "O_BINARY", 0) | _O_NONBLOCK | _O_CLOEXEC
_SEGMENT_FLAGS = _O_SEARCH | _O_DIRECTORY | _O_NOFOLLOW | _O_CLOEXEC
_ROOT_FLAGS = _O_SEARCH | _O_DIRECTORY | _O_CLOEXEC
_DIR_FD = os.open in os.supports_dir_fd
# What opening a listed path says when the tree changed under it: a link on the way (ELOOP;
# EMLINK on FreeBSD; EXDEV from openat2), a folder on the way now a link or a file (ENOTDIR,
# from O_DIRECTORY | O_NOFOLLOW), or the file gone.
_LINK_ERRORS = frozenset({errno.ELOOP, errno.EXDEV, errno.EMLINK, errno.ENOTDIR})


class _OpenHow(ctypes.Structure):
    _fields_ = (
        ("flags", ctypes.c_uint64),
        ("mode", ctypes.c_uint64),
        ("resolve", ctypes.c_uint64),
    )


def _load_openat2() -> Any:
    if sys.platform != "linux" or platform.machine().lower() not in _OPENAT2_MACHINES:
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    except OSError:
        return None
    syscall = libc.syscall
    syscall.restype = ctypes.c_long
    syscall.argtypes = (ctypes.c_long, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p,
                        ctypes.c_size_t)  # fmt: skip
    return syscall


_syscall: Any = None  # libc's syscall(), loaded at the first open beneath a root
_probed = False


def _openat2_function() -> Any:
    global _syscall, _probed
    if not _probed:
        _syscall, _probed = _load_openat2(), True
    return _syscall


_HOW = _OpenHow(FILE_FLAGS | _O_NOFOLLOW, 0, _RESOLVE)  # read-only for the kernel: shared
_HOW_ADDRESS = ctypes.addressof(_HOW)
_HOW_SIZE = ctypes.sizeof(_HOW)
# A folder to list: read (os.scandir needs more than O_PATH), never through a link.
_LIST_FLAGS = os.O_RDONLY | _O_DIRECTORY | _O_NOFOLLOW | _O_CLOEXEC
_LIST_HOW = _OpenHow(_LIST_FLAGS, 0, _RESOLVE)
_LIST_HOW_ADDRESS = ctypes.addressof(_LIST_HOW)
# What opening a folder met in a listing says when it was swapped or removed since: skipped.
_FOLDER_GONE = frozenset({errno.ELOOP, errno.EXDEV, errno.EMLINK, errno.ENOTDIR, errno.ENOENT})


def openat2_available() -> bool:
    """True while openat2 is used (the kernel has it and :data:`USE_OPENAT2` is set)."""
    return USE_OPENAT2 and _openat2_function() is not None


def _openat2(path: str, how: int = _HOW_ADDRESS) -> int:
    """Open the absolute ``path`` with no link followed in one call, or -1 without openat2.
    ``how`` is the address of the flags: a file's to read (the default), or a folder's to
    list (``_LIST_HOW_ADDRESS``)."""
    global _syscall
    assert _syscall is not None
    fd = int(_syscall(_SYS_OPENAT2, _AT_FDCWD, os.fsencode(path), how, _HOW_SIZE))
    if fd >= 0:
        return fd
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EPERM):  # an old kernel, or a seccomp filter
        _syscall = None
        return -1
    raise OSError(code, os.strerror(code), path)


def _open_by_segments(dir_fd: int, relative: str, flags: int = FILE_FLAGS) -> int:
    """Open ``relative`` beneath ``dir_fd``, one ``O_NOFOLLOW`` segment at a time; the last
    segment with ``flags``."""
    *folders, last = relative.split("/")
    fd = dir_fd
    try:
        for folder in folders:
            inner = os.open(folder, _SEGMENT_FLAGS, dir_fd=fd)
            if fd != dir_fd:
                os.close(fd)
            fd = inner
        return os.open(last, flags | _O_NOFOLLOW, dir_fd=fd)
    finally:
        if fd != dir_fd:
            os.close(fd)


@dataclass(frozen=True, slots=True)
class Root:
    """The folder a walk listed: its real path (no link in it), device and inode."""

    path: str
    device: int
    inode: int


def _open_root(root: Root, entry: str) -> int:
    """A descriptor of the folder, checked to be the one walked (the fallback's start)."""
    fd = os.open(root.path, _ROOT_FLAGS | _O_NOFOLLOW)
    st = os.fstat(fd)
    if (st.st_dev, st.st_ino) != (root.device, root.inode):
        os.close(fd)
        raise IntegrityError(
            f"entry {entry!r}: the folder {root.path} was replaced since it was listed "
            "(device/inode check)",
            entry=entry,
        )
    return fd


@dataclass(frozen=True, slots=True)
class PathSource(SourceBase):
    """A regular file: where it is, and the stat fields that identify it and date it.

    A re-readable, blocking :class:`~multiresp._sources.Source` whose mtime is exact to the
    nanosecond and whose identity is its entry's facts (nothing beyond them: its device and
    inode are local to this host).

    Attributes:
        path: The file's path (for messages, and for opening when there is no root).
        size: Size in bytes when listed.
        mtime_ns: Modification time when listed, in nanoseconds.
        inode: Inode number when listed.
        device: Device number when listed.
        ctime_ns: Status-change time when listed, in nanoseconds: an in-place rewrite that
            restores size and mtime (``cp -p``, ``rsync -t``, ``tar x``) still changes it.
        root: The folder the file was listed from, or None for a file the application named.
        relative: The path beneath ``root`` (``/``-separated, no link in it); ``""`` without
            a root.
    """

    path: str
    size: int
    mtime_ns: int = field()  # no default: not the inherited property's
    inode: int
    device: int
    ctime_ns: int
    root: Root | None = None
    relative: str = ""

    @classmethod
    def from_stat(
        cls, path: str, st: os.stat_result, root: Root | None = None, relative: str = ""
    ) -> PathSource:
        """The source for the file ``st`` describes."""
        return cls(path, st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev, st.st_ctime_ns,
                   root, relative)  # fmt: skip

    @property
    def key(self) -> tuple[int, int, int, int, int]:
        """What says the content is the same: device, inode, size, mtime and ctime."""
        return (self.device, self.inode, self.size, self.mtime_ns, self.ctime_ns)

    @property
    def crc_key(self) -> CrcKey:
        """Its key in the CRC cache: :attr:`key` within this boot of this host."""
        return ("file", FILE_KEY_VERSION, _crccache.host_scope(), *self.key)

    @property
    def changed_ns(self) -> int:
        """When it last changed, as listed: the newer of mtime and ctime."""
        return max(self.mtime_ns, self.ctime_ns)

    def known_crc(self) -> int | None:
        """Its CRC-32 from the CRC cache, else None."""
        return crc_cache.get(self)

    def remember_crc(self, crc: int, read_from_ns: int, *, shared: bool = True) -> None:
        """Keep ``crc`` in the CRC cache (see :meth:`~multiresp._crccache.CrcCache.put`)."""
        crc_cache.put(self, crc, read_from_ns=read_from_ns, shared=shared)

    def read_all(self, entry: Entry) -> bytes:
        """The whole file in one read, checked against its entry: the per-file hot path
        (plain descriptors, no file object; one stat before the read, one after)."""
        fd = open_source(self, entry.name)
        try:
            data = os.read(fd, self.size + 1)  # one byte more shows a file that grew
            while len(data) < self.size:
                more = os.read(fd, self.size + 1 - len(data))
                if not more:
                    break
                data += more
            st = os.fstat(fd)
        finally:
            os.close(fd)
        check(self, entry.name, st)
        if len(data) != self.size:
            raise _short(self, entry.name)
        return data

    def open(self, entry: Entry, offset: int = 0) -> FileReader:
        """A reader of the file from byte ``offset``, opened by :func:`open_source`."""
        return FileReader(self, entry.name, offset)

    def crc(self, entry: Entry, stop: threading.Event) -> int:
        """The CRC-32 of the whole file through one reused buffer, checked against its entry
        (identity, size, times); kept in the CRC cache.

        Raises:
            IntegrityError: the file changed since it was listed.
            RuntimeError: ``stop`` was set (cancelled).
        """
        from ._filecrc import file_crc_from  # with its thread pool: a server's module

        with open(open_source(self, entry.name), "rb", buffering=0) as f:
            crc = file_crc_from(f, self.size, 0, stop)
            if stop.is_set():
                raise RuntimeError("cancelled")
            check(self, entry.name, os.fstat(f.fileno()))
        crc_cache.put(self, crc)
        return crc


class FileReader:
    """A listed file open for reading from an offset, in pieces of ``SEND_PIECE`` bytes;
    checked against its listing (:func:`check`) when opened and after its last byte."""

    __slots__ = ("_fd", "_left", "_source", "entry")

    def __init__(self, source: PathSource, entry: str, offset: int = 0) -> None:
        self._source, self.entry = source, entry
        self._fd = open_source(source, entry)
        if offset:
            os.lseek(self._fd, offset, os.SEEK_SET)
        self._left = source.size - offset

    def read(self, size: int) -> list[bytes]:
        """The next ``min(size, left)`` bytes, as pieces of at most ``SEND_PIECE``; [] at the
        end.

        Raises:
            IntegrityError: the file ended early, or changed (checked after its last byte).
        """
        size = min(size, self._left)
        if size <= 0:
            return []
        pieces = [self._exact(min(SEND_PIECE, size - at)) for at in range(0, size, SEND_PIECE)]
        self._left -= size
        if not self._left:
            check(self._source, self.entry, os.fstat(self._fd))
        return pieces

    def _exact(self, size: int) -> bytes:
        data = os.read(self._fd, size)
        while len(data) < size:
            more = os.read(self._fd, size - len(data))
            if not more:
                raise _short(self._source, self.entry)
            data += more
        return data

    def close(self) -> None:
        """Close the descriptor (once)."""
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)


def changed(source: PathSource, entry: str, rule: str) -> IntegrityError:
    """The error for a file that is no longer what was listed."""
    return IntegrityError(f"entry {entry!r}: {source.path} {rule}", entry=entry)


def _short(source: PathSource, entry: str) -> IntegrityError:
    return changed(source, entry, "changed while it was read (size check)")


def check(source: PathSource, entry: str, st: os.stat_result) -> None:
    """Refuse ``st`` unless it is the regular file listed, unchanged.

    Raises:
        IntegrityError: not a regular file, another file (device/inode), or changed (size,
            mtime or ctime).
    """
    if not stat.S_ISREG(st.st_mode):
        raise changed(source, entry, "is no longer a regular file (regular-file check)")
    if st.st_ino != source.inode or st.st_dev != source.device:
        raise changed(source, entry, "is another file than the one listed (device/inode check)")
    if (
        st.st_size != source.size
        or st.st_mtime_ns != source.mtime_ns
        or st.st_ctime_ns != source.ctime_ns
    ):
        raise changed(
            source, entry, "changed since its size and times were taken (size/mtime/ctime check)"
        )


def open_source(source: PathSource, entry: str) -> int:
    """Open the file for reading, without blocking and without leaving its root; checked.

    Args:
        source: The file, as listed.
        entry: The entry's name, for messages.

    Returns:
        A descriptor of the file, which the caller closes.

    Raises:
        IntegrityError: the path leads through a symbolic link or out of the root, or the
            file is not the regular file listed, unchanged (see :func:`check`).
        OSError: the file cannot be opened (gone, no permission).
    """
    root = source.root
    try:
        if root is None:
            fd = os.open(source.path, FILE_FLAGS)
        elif not _DIR_FD:  # Windows: no descriptor-relative open; the identity check guards
            fd = os.open(os.path.join(root.path, source.relative), FILE_FLAGS)
        else:
            fd = -1
            if USE_OPENAT2 and _openat2_function() is not None:
                fd = _openat2(f"{root.path.rstrip(os.sep)}/{source.relative}")
            if fd < 0:
                dir_fd = _open_root(root, entry)
                try:
                    fd = _open_by_segments(dir_fd, source.relative)
                finally:
                    os.close(dir_fd)
    except OSError as error:
        if root is not None and error.errno in _LINK_ERRORS:
            raise changed(
                source,
                entry,
                f"now leads through a symbolic link, a file where a folder was, or out of "
                f"{root.path} (beneath-root rule)",
            ) from None
        if error.errno in (errno.ENOENT, errno.ENOTDIR):
            raise changed(source, entry, "is gone since it was listed (existence check)") from None
        raise
    try:
        check(source, entry, os.fstat(fd))
    except BaseException:
        os.close(fd)
        raise
    return fd


def scan(top: str) -> Iterator[tuple[str, str, list[os.DirEntry[str]]]]:
    """Each folder under ``top`` (``top`` first) with its items, without recursion.

    Yields ``(path, relative, items)``, ``relative`` being ``""`` for ``top`` and ending with
    ``/`` below it. An explicit stack, not recursion, so that any depth works. Folder links
    are not entered, at listing time or later: each folder is opened from ``top`` (a path with
    no link in it) with no link followed on the way, as :func:`open_source` opens files, and
    listed through that descriptor, so a folder swapped for a link to elsewhere after its
    parent was listed is skipped, never listed (as is one removed). Items come from a
    descriptor: ``item.path`` is the name alone, and ``item.stat()`` works only until the
    loop moves on to the next folder.
    """
    if not _DIR_FD:  # Windows: no descriptor-relative open or listing
        yield from _scan_by_path(top)
        return
    stack = [""]
    while stack:
        relative = stack.pop()
        try:
            fd = _open_folder(top, relative)
        except OSError as error:
            if not relative or error.errno not in _FOLDER_GONE:
                raise
            continue
        try:
            with os.scandir(fd) as listing:
                items = list(listing)
            stack.extend(
                relative + item.name + "/" for item in items if item.is_dir(follow_symlinks=False)
            )
            yield f"{top}/{relative[:-1]}" if relative else top, relative, items
        finally:
            os.close(fd)


def _open_folder(top: str, relative: str) -> int:
    """A descriptor to list ``top`` joined with ``relative`` (``""``, or ending with ``/``),
    reached with no link followed: openat2, else one ``O_NOFOLLOW`` segment at a time."""
    if USE_OPENAT2 and _openat2_function() is not None:
        fd = _openat2(f"{top.rstrip(os.sep)}/{relative}", _LIST_HOW_ADDRESS)
        if fd >= 0:
            return fd
    top_fd = os.open(top, _LIST_FLAGS)
    if not relative:
        return top_fd
    try:
        return _open_by_segments(top_fd, relative[:-1], _LIST_FLAGS)
    finally:
        os.close(top_fd)


def _scan_by_path(top: str) -> Iterator[tuple[str, str, list[os.DirEntry[str]]]]:
    stack: list[tuple[str, str]] = [(top, "")]
    while stack:
        directory, relative = stack.pop()
        with os.scandir(directory) as listing:
            items = list(listing)
        stack.extend(
            (item.path, relative + item.name + "/")
            for item in items
            if item.is_dir(follow_symlinks=False)
        )
        yield directory, relative, items
