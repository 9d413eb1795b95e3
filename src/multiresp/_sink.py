"""The safe file sink: reader events in, verified files under ``dest`` out.

How this works: the sink is told what arrives, in the order the readers produce it
(:class:`~multiresp._events.EntryStart`, :class:`~multiresp._events.Data`,
:class:`~multiresp._events.EntryEnd`). For every entry it

1. checks the name (:func:`~multiresp._names.check_portable`), the limits, and that the name
   neither repeats an earlier entry nor turns one of its files into a folder (or the reverse);
2. walks to the entry's folder one component at a time, creating what is missing. Where the
   platform allows it (POSIX), every step opens the next folder relative to the previous one
   with ``O_NOFOLLOW | O_DIRECTORY``, so an existing symbolic link is refused instead of
   followed, and no path string is ever resolved through anything in ``dest``;
3. writes the content to a temporary file in that folder, with one ``writev`` per batch of
   chunks instead of one ``write`` per chunk, and hashes it (SHA-256): small writes on the
   spot, large ones on a thread of the sink's own, so that hashing one batch overlaps with
   writing the next (both release the GIL, and after receiving they are the largest costs
   of a download). The temporary file is hidden, created with
   ``O_CREAT | O_EXCL | O_NOFOLLOW``; under the policies that never replace a file
   (``if_exists="error"`` or ``"skip"``, as uploads use) it has no name at all where Linux
   allows it (``O_TMPFILE``), so nothing partial is ever visible and a small file costs one
   change to its folder instead of three;
4. at the entry's end, checks the byte count against the reader's and the declared size (and
   the SHA-256 against a multipart part's ``Repr-Digest`` / ``Content-Digest`` / ``Digest``
   header, when it sent one), and only then gives the file its name: a rename over any
   file there (``"replace"``), or else a hard link, which the file system refuses over a
   taken name, so that no file that appears meanwhile is ever replaced.

Anything that goes wrong removes the current temporary file, and the folders made for that
entry alone when they are still empty; files already renamed into place were complete and
verified, and stay. The sink does no network I/O and never blocks on anything but the file
system and its hashing thread: the client runs :meth:`FileSink.handle` in a worker thread,
one hop per batch of events.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import errno
import hashlib
import os
import pathlib
import queue
import re
import secrets
import stat
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal, NoReturn

from ._entries import ns_from_datetime
from ._errors import IntegrityError, LimitExceeded, ProtocolError, UnsafeNameError
from ._events import Data, EntryEnd, EntryStart, Event
from ._names import check_portable
from ._types import Limits, SavedFile

TEMP_SUFFIX = ".multiresp-part"
TEMP_TOKEN_BYTES = 6  # random bytes in a temporary file name (12 hex digits)
TEMP_STEM_BYTES = 100  # bytes of UTF-8 kept from the file name in its temporary name
TEMP_NAME_ATTEMPTS = 5  # fresh random names tried before giving up on a clash
FILE_MODE = 0o666  # permission bits of created files, before the umask
DIR_MODE = 0o777  # permission bits of created folders, before the umask
POSIX_IOV_MAX = 16  # buffers per writev that POSIX guarantees
HASH_INLINE_MAX = 256 << 10  # bytes: a write this small is hashed on the spot, no thread hop
HASH_BACKLOG = 2  # writes waiting for the hashing thread (more only churns the heap)

IfExists = Literal["replace", "skip", "error"]
IF_EXISTS: tuple[IfExists, ...] = ("replace", "skip", "error")


def _iov_max() -> int:
    try:
        return max(POSIX_IOV_MAX, os.sysconf("SC_IOV_MAX"))
    except (AttributeError, ValueError, OSError):  # pragma: no cover - no sysconf
        return POSIX_IOV_MAX


IOV_MAX = _iov_max()  # buffers per writev on this system

# os.replace takes dir fds wherever os.rename does (both are renameat), but only os.rename is
# listed in supports_dir_fd.
_USE_DIR_FD = (
    {os.open, os.mkdir, os.rmdir, os.stat, os.unlink, os.rename} <= os.supports_dir_fd
    and hasattr(os, "O_DIRECTORY")
    and hasattr(os, "O_NOFOLLOW")
)
_O_BINARY = getattr(os, "O_BINARY", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW | _O_CLOEXEC | _O_BINARY
_OPEN_DIR_FLAGS = os.O_RDONLY | _O_DIRECTORY | _O_NOFOLLOW | _O_CLOEXEC
_UTIME_FD = os.utime in os.supports_fd
_LINKS = hasattr(os, "link") and (not _USE_DIR_FD or os.link in os.supports_dir_fd)
_FD_LINKS = "/proc/self/fd"  # where Linux names an open file, to link() it by descriptor
# Unnamed files (Linux), named through /proc once complete; relative to a folder descriptor.
_TMPFILES = _USE_DIR_FD and hasattr(os, "O_TMPFILE") and os.path.isdir(_FD_LINKS)
_TMPFILE_FLAGS = os.O_WRONLY | getattr(os, "O_TMPFILE", 0) | _O_CLOEXEC
# What open(O_TMPFILE) raises where the file system has none (EISDIR: a kernel before 3.11).
_NO_TMPFILE = frozenset(
    getattr(errno, code)
    for code in ("EOPNOTSUPP", "ENOTSUP", "EISDIR", "EINVAL", "ENOSYS")
    if hasattr(errno, code)
)
# What link() raises where the file system (or the platform) has no hard links (EINVAL:
# Windows on FAT).
_NO_LINKS = frozenset(
    getattr(errno, code)
    for code in ("EPERM", "EACCES", "EXDEV", "EMLINK", "ENOSYS", "ENOTSUP", "EOPNOTSUPP", "EINVAL")
    if hasattr(errno, code)
)
_REPARSE_POINT = stat.FILE_ATTRIBUTE_REPARSE_POINT
# sha-256 in a structured-field digest (RFC 9530: Repr-Digest, Content-Digest) and in the
# older Digest header (RFC 3230), which has no colons around the base64.
_SF_SHA256 = re.compile(r"(?:^|,)\s*sha-256\s*=\s*:([A-Za-z0-9+/]+=*):", re.IGNORECASE)
_LEGACY_SHA256 = re.compile(r"(?:^|,)\s*sha-256\s*=\s*([A-Za-z0-9+/]+=*)", re.IGNORECASE)
_DIGEST_HEADERS = {
    "repr-digest": _SF_SHA256,
    "content-digest": _SF_SHA256,
    "digest": _LEGACY_SHA256,
}


@dataclass(frozen=True, slots=True)
class _Folder:
    """A folder under ``dest``: an open descriptor where the platform has ``*at`` calls.

    ``ref(name)`` gives the ``(path, dir_fd)`` pair the ``os`` functions take, so the same
    code runs relative to a descriptor (POSIX) or on checked path strings (elsewhere).
    """

    path: str
    fd: int | None

    def ref(self, name: str) -> tuple[str, int | None]:
        if self.fd is None:
            return os.path.join(self.path, name), None
        return name, self.fd

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)


@dataclass(slots=True)
class _OpenFile:
    """The entry being written: its temporary file and what was counted so far."""

    start: EntryStart
    folder: _Folder
    final_name: str
    temp_name: str | None  # None: an anonymous file (O_TMPFILE), named only when complete
    fd: int
    hasher: hashlib._Hash = field(default_factory=hashlib.sha256)
    size: int = 0
    offloaded: bool = False  # its hashing went to the hashing thread: wait for it at the end


@dataclass(slots=True)
class _OpenDir:
    """A directory entry between its start and its end."""

    start: EntryStart


@dataclass(slots=True)
class _Skipped:
    """A file entry whose name is taken in the destination, under ``if_exists="skip"``.

    Its bytes are counted (and the reader verifies them), but not written.
    """

    start: EntryStart
    size: int = 0


def _temp_name(final_name: str) -> str:
    stem = final_name.encode("utf-8")[:TEMP_STEM_BYTES].decode("utf-8", "ignore")
    return f".{stem}.{secrets.token_hex(TEMP_TOKEN_BYTES)}{TEMP_SUFFIX}"


def _declared_sha256(start: EntryStart) -> bytes | None:
    """The SHA-256 a multipart part's headers announce for its content, if any."""
    for key, value in start.headers:
        pattern = _DIGEST_HEADERS.get(key)
        match = pattern.search(value) if pattern is not None else None
        if match is not None:
            try:
                return base64.b64decode(match.group(1), validate=True)
            except binascii.Error:
                raise IntegrityError(
                    f"entry {start.name!r}: unreadable {key} header {value!r}", entry=start.name
                ) from None
    return None


def _fd_path(fd: int) -> str:
    return f"{_FD_LINKS}/{fd}"


def _is_link(st: os.stat_result) -> bool:
    return stat.S_ISLNK(st.st_mode) or bool(getattr(st, "st_file_attributes", 0) & _REPARSE_POINT)


def _write_all(fd: int, chunks: list[bytes]) -> None:
    """Write ``chunks`` to ``fd`` with as few system calls as possible, copying nothing."""
    if len(chunks) == 1 or not hasattr(os, "writev"):  # one buffer (a small file): write()
        for chunk in chunks:
            written = os.write(fd, chunk)  # the usual case: all of it, no memoryview
            if written < len(chunk):
                view = memoryview(chunk)[written:]
                while view:
                    view = view[os.write(fd, view) :]
        return
    pending: list[bytes | memoryview] = list(chunks)
    while pending:
        group = pending[:IOV_MAX]
        written = os.writev(fd, group)
        done = 0
        for buffer in group:
            if written < len(buffer):
                break
            written -= len(buffer)
            done += 1
        if done < len(group):  # a short write: resume inside the buffer it stopped in
            pending[done] = memoryview(pending[done])[written:]
        del pending[:done]


class _HashThread:
    """SHA-256 updates on a thread of their own, in order, overlapping with the writes.

    hashlib releases the GIL while it hashes a large buffer, as ``os.writev`` does while the
    kernel copies, so the two run in parallel. At most ``HASH_BACKLOG`` writes wait; the
    chunks they hold are the ones just written, so memory stays bounded.
    """

    def __init__(self) -> None:
        self._queue: queue.Queue[tuple[hashlib._Hash, tuple[bytes, ...]] | None] = queue.Queue(
            maxsize=HASH_BACKLOG
        )
        self._error: tuple[hashlib._Hash, BaseException] | None = None  # what failed, and how
        self._thread = threading.Thread(target=self._run, name="multiresp-hash", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (job := self._queue.get()) is not None:
            hasher, chunks = job
            try:
                # One update per write: each update releases and takes back the GIL, and
                # taking it back costs more than joining the chunks does.
                hasher.update(chunks[0] if len(chunks) == 1 else b"".join(chunks))
            except BaseException as exc:  # MemoryError: raised by wait()
                self._error = (hasher, exc)
            finally:
                self._queue.task_done()

    def update(self, hasher: hashlib._Hash, chunks: tuple[bytes, ...]) -> None:
        """Queue ``chunks`` for ``hasher`` (blocks while the backlog is full)."""
        self._queue.put((hasher, chunks))

    def wait(self, hasher: hashlib._Hash) -> None:
        """Return once every queued update was applied.

        Raises:
            BaseException: what an update of ``hasher`` raised: its hash is incomplete.
        """
        self._queue.join()
        failed, self._error = self._error, None
        if failed is not None and failed[0] is hasher:
            raise failed[1]

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()


class FileSink:
    """Writes entries under ``dest`` safely, verifying each before it takes its name.

    Feed it the events of one transfer with :meth:`handle` (or :meth:`start`, :meth:`write`,
    :meth:`end`), then :meth:`close` it; as a context manager it closes itself. Files
    completed so far are listed in :attr:`saved`.

    Args:
        dest: The folder to write into; created (with its parents) when missing. It may itself
            be a symbolic link: that is the caller's choice. Nothing under it is followed.
        limits: Bounds checked here as a second line behind the readers; ``Limits()`` when
            None.
        if_exists: What to do with an entry whose file already exists in ``dest`` (from
            before this transfer): ``"replace"`` it (the default), ``"skip"`` the entry (its
            bytes are still read and verified, but not written, and it is not listed in
            :attr:`saved`), or raise ``FileExistsError`` (``"error"``) before writing it; a
            file that takes the name while the entry is written is refused when the
            complete file would take it (where the file system has hard links, the link
            refuses it, with no window between a check and the rename).

    Attributes:
        saved: The files written so far, in order.

    Raises:
        TypeError: ``dest`` is not a str or path-like object.
        ValueError: ``if_exists`` names no policy.
        NotADirectoryError: ``dest`` exists and is not a folder.
    """

    def __init__(
        self,
        dest: str | os.PathLike[str],
        *,
        limits: Limits | None = None,
        if_exists: IfExists = "replace",
    ) -> None:
        if not isinstance(dest, str | os.PathLike) or isinstance(os.fspath(dest), bytes):
            raise TypeError(f"dest must be a str or os.PathLike path, not {type(dest).__name__}")
        if if_exists not in IF_EXISTS:
            raise ValueError(f"if_exists must be 'replace', 'skip' or 'error', not {if_exists!r}")
        self.limits = limits if limits is not None else Limits()
        self.if_exists = if_exists
        self.dest = pathlib.Path(dest)
        self.saved: list[SavedFile] = []
        self._entries = 0
        self._total = 0
        self._files: set[str] = set()  # names of file entries in this transfer
        self._dirs: set[str] = set()  # folders this transfer uses (explicit or as parents)
        self._explicit_dirs: set[str] = set()  # names of directory entries
        self._placed: set[tuple[int, int]] = set()  # (device, inode) of files renamed in
        # Under "error", one stat refuses a taken name before the entry is written, so that a
        # large file is not received and written in vain. A subclass that reads every byte
        # of the body anyway (an upload) sets this False: where the file system has hard
        # links, the link then refuses the name at the end, and no stat is spent per file.
        self._stat_before_error = True
        # Recorded with one fstat per file; a subclass that needs them only to name a rare
        # error (no "replace", no End with modes) sets this False: see _placed_ids.
        self._track_inodes = True
        self._current: _OpenFile | _OpenDir | _Skipped | None = None
        try:
            self.dest.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise NotADirectoryError(
                errno.ENOTDIR, "the destination exists and is not a folder", str(self.dest)
            ) from None
        root_fd = (
            os.open(self.dest, os.O_RDONLY | _O_DIRECTORY | _O_CLOEXEC) if _USE_DIR_FD else None
        )
        self._root = _Folder(str(self.dest), root_fd)
        self._cached: tuple[tuple[str, ...], _Folder] | None = None
        self._made: list[str] = []  # folders created for the entry in progress, outermost first
        self._hashing: _HashThread | None = None  # started by the first large write
        self._links = _LINKS  # False once the file system refused a hard link
        self._tmpfiles = _LINKS and _TMPFILES  # False once the file system refused O_TMPFILE

    def __enter__(self) -> FileSink:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def current(self) -> str | None:
        """The name of the entry being written, or None between entries."""
        return self._current.start.name if self._current is not None else None

    def handle(self, events: Iterable[Event]) -> None:
        """Apply a batch of reader events in order; ``End`` is accepted and ignored.

        Consecutive :class:`Data` events are written with one system call per batch.

        Raises:
            UnsafeNameError: a name is unsafe, not portable, repeats an earlier entry, clashes
                with a file or folder of this transfer, or meets a symbolic link in ``dest``.
            LimitExceeded: too many entries, or too many bytes in one entry or in all.
            IntegrityError: an entry's byte count disagrees with its reader or its declared
                size.
            OSError: the file system refused a write.
        """
        chunks: list[bytes] = []
        for event in events:
            if type(event) is Data:
                chunks.append(event.data)
                continue
            if chunks:
                self.write(chunks)
                chunks = []
            if isinstance(event, EntryStart):
                self.start(event)
            elif isinstance(event, EntryEnd):
                self.end(event)
            else:  # End: give back the exec bits a zip recorded
                from ._modes import restore_exec_bits

                restore_exec_bits(self.saved, event, self._placed if self._track_inodes else ())
        if chunks:
            self.write(chunks)

    def start(self, event: EntryStart) -> None:
        """Begin an entry: check it, create its folders, and open its temporary file."""
        if self._current is not None:
            raise RuntimeError(f"entry {event.name!r} started before {self.current!r} ended")
        limits = self.limits
        name = event.name
        self._made = []
        self._entries += 1
        if self._entries > limits.max_files:
            raise LimitExceeded(
                f"entry {name!r} is entry number {self._entries}, over the limit of"
                f" {limits.max_files} entries (max_files)",
                entry=name,
            )
        check_portable(name, max_length=limits.max_name_length)
        parts = tuple(name.rstrip("/").split("/"))
        if len(parts) > limits.max_depth:
            raise LimitExceeded(
                f"entry {name!r} is {len(parts)} levels deep, over the limit of"
                f" {limits.max_depth} (max_depth)",
                entry=name,
            )
        is_dir = event.is_dir or name.endswith("/")
        if event.size is not None and not is_dir:
            self._check_size(name, event.size, "declares")
        self._claim(name, parts, is_dir)
        if is_dir:
            self._folder(name, parts)
            self._current = _OpenDir(event)
            return
        folder = self._folder(name, parts[:-1])
        policy = self.if_exists
        look_first = policy == "skip" or (
            policy == "error" and (self._stat_before_error or not self._links)
        )
        if look_first and self._exists(folder, parts[-1]):
            if self.if_exists == "skip":
                self._current = _Skipped(event)
                return
            self._refuse_existing(name)
        fd = self._anonymous(folder) if self.if_exists != "replace" else None
        temp_name = None
        if fd is None:
            temp_name, fd = self._named_temp(name, folder, parts[-1])
        self._current = _OpenFile(event, folder, parts[-1], temp_name, fd)

    @staticmethod
    def _named_temp(name: str, folder: _Folder, final_name: str) -> tuple[str, int]:
        """Create a hidden temporary file in ``folder``: its name and open descriptor."""
        for _ in range(TEMP_NAME_ATTEMPTS):
            temp_name = _temp_name(final_name)
            path, dir_fd = folder.ref(temp_name)
            try:
                return temp_name, os.open(path, _CREATE_FLAGS, FILE_MODE, dir_fd=dir_fd)
            except FileExistsError:  # pragma: no cover - a random 48-bit name taken
                continue
        raise FileExistsError(f"no free temporary name for entry {name!r}")  # pragma: no cover

    def _anonymous(self, folder: _Folder) -> int | None:
        """An unnamed file in ``folder`` (Linux ``O_TMPFILE``), or None where there is none.

        It has no name until it is complete and linked into place: nothing to remove on a
        failure, nor left behind by a crash, and one directory change per file instead of
        three (create, link, unlink), which is most of a small file's cost.
        """
        if not self._tmpfiles or folder.fd is None:
            return None
        try:
            return os.open(".", _TMPFILE_FLAGS, FILE_MODE, dir_fd=folder.fd)
        except OSError as exc:
            if exc.errno not in _NO_TMPFILE:
                raise
            self._tmpfiles = False  # this file system has none: named files from now on
            return None

    def write(self, chunks: list[bytes]) -> None:
        """Append ``chunks`` to the current entry, after checking the limits and its size."""
        current = self._current
        count = sum(map(len, chunks))
        if isinstance(current, _Skipped):
            self._check_size(current.start.name, current.size + count, "has")
            current.size += count
            return
        if not isinstance(current, _OpenFile):
            if count == 0:
                return
            where = f"directory entry {current.start.name!r}" if current else "no entry"
            raise ProtocolError(f"{count} bytes of content arrived for {where}")
        name = current.start.name
        self._check_size(name, current.size + count, "has")
        declared = current.start.size
        if declared is not None and current.size + count > declared:
            raise IntegrityError(
                f"entry {name!r} has more than its declared {declared} bytes", entry=name
            )
        if current.offloaded or count > HASH_INLINE_MAX:
            if self._hashing is None:
                self._hashing = _HashThread()
            self._hashing.update(current.hasher, tuple(chunks))  # the caller may reuse its list
            current.offloaded = True
        else:
            # One update per write, as the hashing thread does: each update of more than 2 KiB
            # releases the GIL, and taking it back from the receiving loop costs more than
            # joining a few chunks.
            current.hasher.update(chunks[0] if len(chunks) == 1 else b"".join(chunks))
        _write_all(current.fd, chunks)
        current.size += count
        self._total += count

    def end(self, event: EntryEnd) -> SavedFile | None:
        """Finish the current entry: verify its size, then rename it into place.

        Returns:
            The saved file, or None for a directory entry.
        """
        current = self._current
        if current is None or current.start.name != event.name:
            raise RuntimeError(f"entry {event.name!r} ended, but {self.current!r} was open")
        if isinstance(current, _OpenDir | _Skipped):
            if isinstance(current, _Skipped) and current.size != event.size:
                raise IntegrityError(
                    f"entry {event.name!r}: {current.size} bytes read, {event.size} expected",
                    entry=event.name,
                )
            self._current, self._made = None, []
            return None
        name = event.name
        declared = current.start.size
        if current.size != event.size or (declared is not None and declared != current.size):
            expected = event.size if current.size != event.size else declared
            raise IntegrityError(
                f"entry {name!r}: {current.size} bytes written, {expected} expected", entry=name
            )
        if current.offloaded:
            assert self._hashing is not None
            self._hashing.wait(current.hasher)
        declared_digest = _declared_sha256(current.start)
        if declared_digest is not None and declared_digest != current.hasher.digest():
            raise IntegrityError(
                f"entry {name!r}: its SHA-256 does not match the digest its headers declare",
                entry=name,
            )
        mtime = current.start.mtime
        if mtime is not None and _UTIME_FD:
            ns = ns_from_datetime(mtime)
            os.utime(current.fd, ns=(ns, ns))
        st = os.fstat(current.fd) if self._track_inodes else None
        if current.temp_name is not None:
            os.close(current.fd)
            current.fd = -1
        if self.if_exists == "replace" or not self._link_new(current):
            self._replace(current)
        if current.fd >= 0:
            os.close(current.fd)
            current.fd = -1
        self._current, self._made = None, []
        if st is not None:
            self._placed.add((st.st_dev, st.st_ino))
        saved = SavedFile(name, self.dest / name, current.size, current.hasher.hexdigest())
        self.saved.append(saved)
        return saved

    def _replace(self, current: _OpenFile) -> None:
        """Rename the complete temporary file into place, replacing a file of that name
        (``if_exists="replace"``), after one ``stat`` that refuses a folder, a file this
        transfer placed, and (other policies, where links are not available) any file."""
        name, folder = current.start.name, current.folder
        final_path, dir_fd = folder.ref(current.final_name)
        taken = self._check_target(name, final_path, dir_fd)
        if self.if_exists != "replace" and taken:
            self._refuse_existing(name)  # it appeared while the entry was written
        assert current.temp_name is not None  # anonymous files only where links work
        temp_path, _ = folder.ref(current.temp_name)
        os.replace(temp_path, final_path, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)

    def _link_new(self, current: _OpenFile) -> bool:
        """Give the complete temporary file its name without ever replacing a file: a hard
        link, which the file system refuses when the name is taken (no window between a
        check and the rename), then the temporary name is removed.

        Returns:
            False when this file system has no hard links (the caller then renames).

        Raises:
            UnsafeNameError: the name is a folder, or a file this transfer placed.
            FileExistsError: the name is taken (by a file or a link).
        """
        if not self._links:
            return False
        name, folder = current.start.name, current.folder
        final_path, dir_fd = folder.ref(current.final_name)
        if current.temp_name is None:  # open still: linked through its descriptor
            try:
                os.link(_fd_path(current.fd), final_path, dst_dir_fd=dir_fd)
            except FileExistsError:
                self._refuse_taken(name, final_path, dir_fd)
            return True
        temp_path, _ = folder.ref(current.temp_name)
        try:
            os.link(temp_path, final_path, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except FileExistsError:
            self._refuse_taken(name, final_path, dir_fd)
        except OSError as exc:
            if exc.errno not in _NO_LINKS:
                raise
            self._links = False  # FAT, some network and FUSE file systems
            return False
        try:
            os.unlink(temp_path, dir_fd=dir_fd)
        except BaseException:
            with contextlib.suppress(OSError):  # not listed in saved: it must not stay
                os.unlink(final_path, dir_fd=dir_fd)
            raise
        return True

    def abort(self) -> None:
        """Drop the entry in progress, if any.

        Its temporary file is removed, then the folders made for it alone (innermost first),
        where they are still empty.
        """
        current, self._current = self._current, None
        made, self._made = self._made, []
        if isinstance(current, _OpenFile):
            if current.fd >= 0:
                os.close(current.fd)  # an anonymous file is gone with it
            if current.temp_name is not None:
                path, dir_fd = current.folder.ref(current.temp_name)
                try:
                    os.unlink(path, dir_fd=dir_fd)
                except FileNotFoundError:
                    pass
        if made and self._cached is not None:
            self._cached[1].close()
            self._cached = None
        # By path from dest: a folder swapped for a link since would be followed here, but
        # rmdir removes nothing but an empty folder.
        for relative in reversed(made):
            path, dir_fd = self._root.ref(relative)
            try:
                os.rmdir(path, dir_fd=dir_fd)
            except OSError:  # no longer empty, or already gone: leave it
                break

    def close(self) -> None:
        """Abort the entry in progress, if any, and release the open folders."""
        try:
            self.abort()
        finally:
            if self._cached is not None:
                self._cached[1].close()
                self._cached = None
            self._root.close()
            if self._hashing is not None:
                self._hashing.close()
                self._hashing = None

    def _check_size(self, name: str, size: int, verb: str) -> None:
        limits = self.limits
        if limits.max_file_size is not None and size > limits.max_file_size:
            raise LimitExceeded(
                f"entry {name!r} {verb} {size} bytes, over the limit of"
                f" {limits.max_file_size} bytes per file (max_file_size)",
                entry=name,
            )
        if limits.max_total_size is None:
            return
        already = self._total - (self._current.size if isinstance(self._current, _OpenFile) else 0)
        if already + size > limits.max_total_size:
            raise LimitExceeded(
                f"entry {name!r} {verb} {size} bytes, bringing the transfer over the limit of"
                f" {limits.max_total_size} bytes in all (max_total_size)",
                entry=name,
            )

    def _claim(self, name: str, parts: tuple[str, ...], is_dir: bool) -> None:
        """Refuse repeated names and file/folder clashes within this transfer."""
        key = "/".join(parts)
        if key in (self._explicit_dirs if is_dir else self._files):
            raise UnsafeNameError(f"entry {name!r} repeats an earlier entry's name", entry=name)
        if is_dir and key in self._files:
            raise UnsafeNameError(
                f"directory entry {name!r} clashes with the file {key!r} of this transfer",
                entry=name,
            )
        if not is_dir and key in self._dirs:
            raise UnsafeNameError(
                f"entry {name!r} clashes with the folder {key + '/'!r} of this transfer",
                entry=name,
            )
        if len(parts) == 1 and not is_dir:  # a file at the top: no folder to claim
            self._files.add(key)
            return
        folders = ["/".join(parts[:depth]) for depth in range(1, len(parts))]
        for parent in folders:
            if parent in self._files:
                raise UnsafeNameError(
                    f"entry {name!r} needs the folder {parent + '/'!r}, but {parent!r} is a"
                    " file of this transfer",
                    entry=name,
                )
        if is_dir:
            folders.append(key)
        new = [folder for folder in folders if folder not in self._dirs]
        limit = self.limits.max_folders
        if len(self._dirs) + len(new) > limit:
            raise LimitExceeded(
                f"entry {name!r} needs {len(new)} more folders, bringing the transfer over the"
                f" limit of {limit} folders (max_folders)",
                entry=name,
            )
        self._dirs.update(new)  # bounded by max_folders
        if is_dir:
            self._explicit_dirs.add(key)
        else:
            self._files.add(key)

    def _folder(self, name: str, parts: tuple[str, ...]) -> _Folder:
        """Open (creating as needed) the folder ``parts`` under ``dest``, following no link."""
        if not parts:
            return self._root
        if self._cached is not None:
            if self._cached[0] == parts:
                return self._cached[1]
            self._cached[1].close()
            self._cached = None
        folder = self._root
        try:
            for depth, part in enumerate(parts, 1):
                child = self._descend(name, folder, part, "/".join(parts[:depth]))
                if folder is not self._root:
                    folder.close()
                folder = child
        except BaseException:
            if folder is not self._root:
                folder.close()
            raise
        self._cached = (parts, folder)
        return folder

    def _descend(self, name: str, folder: _Folder, part: str, where: str) -> _Folder:
        path, dir_fd = folder.ref(part)
        try:
            os.mkdir(path, DIR_MODE, dir_fd=dir_fd)
            self._made.append(where)
        except FileExistsError:
            pass
        child = os.path.join(folder.path, part)
        try:
            if folder.fd is None:
                st = os.stat(path, follow_symlinks=False)
                if _is_link(st) or not stat.S_ISDIR(st.st_mode):
                    raise NotADirectoryError(path)
                return _Folder(child, None)
            fd = os.open(path, _OPEN_DIR_FLAGS, dir_fd=dir_fd)
        except OSError as exc:
            try:
                st = os.stat(path, dir_fd=dir_fd, follow_symlinks=False)
            except OSError:
                raise exc from None
            what = "a symbolic link" if _is_link(st) else "not a folder"
            raise UnsafeNameError(
                f"entry {name!r} needs the folder {where + '/'!r}, but {where!r} in the"
                f" destination is {what}; refusing to write through it",
                entry=name,
            ) from exc
        return _Folder(child, fd)

    @staticmethod
    def _exists(folder: _Folder, name: str) -> bool:
        path, dir_fd = folder.ref(name)
        try:
            os.stat(path, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        return True

    def _refuse_existing(self, name: str) -> NoReturn:
        raise FileExistsError(
            errno.EEXIST,
            f"entry {name!r} is already in the destination (if_exists='error')",
            str(self.dest.joinpath(*name.split("/"))),
        )

    def _refuse_taken(self, name: str, path: str, dir_fd: int | None) -> NoReturn:
        """A hard link found the name taken: refuse the entry.

        Raises:
            UnsafeNameError: the name is a file this transfer placed (see :meth:`_check_target`).
            FileExistsError: anything else is there, a file, a link or a folder, from before
                the transfer or since (under "error", no ``stat`` looked before the write).
        """
        try:
            st = os.stat(path, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:  # gone again since: still refused, it was taken
            pass
        else:
            self._check_placed(name, st)
        self._refuse_existing(name)

    def _placed_ids(self) -> set[tuple[int, int]]:
        """``(st_dev, st_ino)`` of the files this transfer placed.

        Where they were not recorded as the files were written (``_track_inodes`` False), the
        saved files are looked at once, by name (without following a final link), and every
        later file is recorded as it is placed.
        """
        if not self._track_inodes:
            for saved in self.saved:
                relative = saved.path.relative_to(self.dest).as_posix()
                path, dir_fd = self._root.ref(relative)
                try:
                    st = os.stat(path, dir_fd=dir_fd, follow_symlinks=False)
                except OSError:  # removed since: no name to clash with
                    continue
                self._placed.add((st.st_dev, st.st_ino))
            self._track_inodes = True
        return self._placed

    def _check_placed(self, name: str, st: os.stat_result) -> None:
        if (st.st_dev, st.st_ino) in self._placed_ids():
            raise UnsafeNameError(
                f"entry {name!r} lands on a file this transfer already wrote (the file system"
                " does not tell the two names apart)",
                entry=name,
            )

    def _check_target(self, name: str, path: str, dir_fd: int | None) -> bool:
        """Refuse to rename over a folder, or over a file this transfer already placed.

        The second catches names that differ but land on one file, as ``A.txt`` and
        ``a.txt`` do on case-insensitive file systems.

        Returns:
            Whether the name is taken (by a file or a link), from the same ``stat``.
        """
        try:
            st = os.stat(path, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        if stat.S_ISDIR(st.st_mode) and not _is_link(st):
            raise UnsafeNameError(
                f"entry {name!r} is a file, but a folder of that name exists in the destination",
                entry=name,
            )
        self._check_placed(name, st)
        return True
