"""CRC-32s of sources, remembered per process and, when asked, in a file shared by one host.

How it works: :data:`crc_cache` answers ``get(source)`` from a small in-memory LRU. Behind it,
once turned on by :func:`use_crc_cache` or the ``MULTIRESP_CRC_CACHE`` environment variable,
sits an SQLite file that every process of the host opens (WAL mode, so readers never wait
for a writer; a write waits at most ``BUSY_SECONDS``, else it is skipped). A CRC found there is
copied into memory, so a process asks the file once per source.

A row's key is a text naming the content exactly: a kind tag and its format version, then
the kind's facts. A file is ``("file", 1, <host scope>, device, inode, size, mtime_ns,
ctime_ns)``; the host scope is the kernel's boot id, because device numbers mean something
only within one boot of one host, so a cache file copied or shared elsewhere, or read after a
reboot, answers nothing for files. Every kind of source names itself by its ``crc_key``
property (a file builds the key above; an object in a store: ``("object", 1, store kind,
its location fields and prefix, key, ETag, version, size)``, never a credential, with no host
scope).

Never stale: any change to a file's bytes moves its ctime, unless the change falls in the
same tick of the file system's clock as the change before it (up to 2 s on FAT, a few ms on
ext4). So the CRC of a source that says when it last changed (``changed_ns``: a file's newer
of ctime and mtime) is remembered only when that is older than the start of the read that
computed it by ``RACY_SECONDS`` (git's "racily clean" rule): a write during or
after that read then shows in the key. The start of the read is the first ``get`` that missed
(the pump asks before it reads), or ``read_from_ns`` passed to ``put``. A file written through
a shared memory map can change without a new ctime; no check by time can see that.

Bounded: the file keeps at most ``max_entries`` rows. Each insert takes the next rowid and
deletes the rows more than ``max_entries`` older; a row found in the older half is
re-inserted, so rows in use outlive the rest (LRU, roughly).

A cache file that cannot be opened, read or written (corrupt, read-only, another program's)
turns the shared layer off in this process, with one warning on the ``multiresp`` logger; the
in-memory layer keeps working, and no response fails because of the cache.

Trusted: whoever can write the file decides the CRC-32 a zip declares, and a wrong one makes
every reader refuse that file. On POSIX a cache file (or its ``-wal`` or ``-shm``) that is not
a regular file, belongs to a user other than this process's or root, or that anyone may
write, is not used (the warning names the rule), nor one in a folder that anyone may write
and that lacks the sticky bit (where anyone could put a file of their own in its place). It
is checked before it is opened and again once it is.
"""

from __future__ import annotations

import collections
import functools
import json
import logging
import os
import socket
import stat
import threading
import time
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import sqlite3

__all__ = ("ENV_VAR", "CrcCache", "crc_cache", "use_crc_cache")

logger = logging.getLogger("multiresp")

ENV_VAR = "MULTIRESP_CRC_CACHE"  # path of the shared cache file, read on the cache's first use
MEMORY_ENTRIES = 4096  # CRCs remembered per process (least recently used dropped first)
STORE_ENTRIES = 100_000  # rows kept in the shared file by default (about 20 MB)
WAL_BYTES = 4 << 20  # the write-ahead log is cut back to this after each checkpoint
BUSY_SECONDS = 0.5  # longest wait for another process's write before a put is skipped
RACY_SECONDS = 2  # a file changed this close to the read of its CRC is not remembered
RACY_NS = RACY_SECONDS * 1_000_000_000
FILE_KEY_VERSION = 1  # bump when the facts in a file's key change
TABLE = "crc32_v1"  # rows: key (text), crc; a new layout gets a new table beside this one
BOOT_ID = "/proc/sys/kernel/random/boot_id"
BOOT_ROUNDING = 10  # seconds; boot time as estimated where there is no boot id
_SQLITE_BUSY = {5, 6}  # SQLITE_BUSY, SQLITE_LOCKED: another process holds the lock

CrcKey = tuple[str | int, ...]


class KeyedSource(Protocol):
    """A source that names its content for the CRC cache (a file, an object in a store).

    A source whose key may stay the same while its bytes change within one tick of a clock
    (a file: its times) also has ``changed_ns``, when it last changed (``time.time_ns``
    scale); its CRC is then remembered only when that is ``RACY_SECONDS`` older than the read
    that computed it.
    """

    @property
    def crc_key(self) -> CrcKey:
        """A kind tag, its format version, then facts that say the bytes are the same
        wherever the key is read (never a fact local to one host, unless the key names the
        host's scope, as a file's does)."""
        ...


Source = KeyedSource


@functools.cache
def host_scope() -> str:
    """What makes a device number mean one file system: this boot of this host."""
    try:
        with open(BOOT_ID, encoding="ascii") as f:
            boot = f.read().strip()
    except OSError:
        boot = ""
    if boot:
        return f"boot:{boot}"
    booted = int(time.time() - time.monotonic()) // BOOT_ROUNDING
    return f"host:{socket.gethostname()}:{booted}"


def cache_key(source: Source) -> CrcKey:
    """The key under which the CRC of ``source`` is kept: its ``crc_key``."""
    return tuple(source.crc_key)


class _Store:
    """The shared SQLite file: one connection per process, used under a lock."""

    def __init__(self, path: str, max_entries: int) -> None:
        self.path = path
        self.max_entries = max_entries
        self._lock = threading.Lock()
        self._connection: sqlite3.Connection | None = None
        self._pid = 0
        self.broken = False

    def get(self, key: str) -> int | None:
        with self._lock:
            row = self._run(
                f"SELECT crc, rowid, (SELECT max(rowid) FROM {TABLE}) FROM {TABLE} WHERE key = ?",
                (key,),
            )
            if row is None:
                return None
            crc, rowid, newest = row
            if rowid <= newest - self.max_entries // 2:  # about to go: keep it, it is in use
                self._insert(key, crc)
            return int(crc)

    def put(self, key: str, crc: int) -> None:
        with self._lock:
            self._insert(key, crc)

    def _insert(self, key: str, crc: int) -> None:
        connection = self._connect()
        if connection is None:
            return
        try:
            connection.execute("BEGIN IMMEDIATE")
            try:
                rowid = connection.execute(
                    f"INSERT OR REPLACE INTO {TABLE} (key, crc) VALUES (?, ?)", (key, crc)
                ).lastrowid
                assert rowid is not None
                connection.execute(
                    f"DELETE FROM {TABLE} WHERE rowid <= ?", (rowid - self.max_entries,)
                )
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise
        except Exception as error:  # any failure of the cache is the cache's
            self._failed(error)

    def _run(self, sql: str, parameters: tuple[str, ...]) -> tuple[int, int, int] | None:
        connection = self._connect()
        if connection is None:
            return None
        try:
            row: tuple[int, int, int] | None = connection.execute(sql, parameters).fetchone()
        except Exception as error:
            self._failed(error)
            return None
        return row

    def _connect(self) -> sqlite3.Connection | None:
        if self.broken:
            return None
        if self._connection is not None and self._pid == os.getpid():
            return self._connection
        # A connection is never carried into a forked child: the child opens its own (the
        # parent's is left alone, not closed, since closing it could release its locks).
        import sqlite3

        try:
            _check_trusted(self.path)
            connection = sqlite3.connect(
                self.path, timeout=BUSY_SECONDS, isolation_level=None, check_same_thread=False
            )
            try:
                connection.execute("PRAGMA journal_mode=WAL")
                connection.execute("PRAGMA synchronous=NORMAL")  # a lost row is only a miss
                connection.execute(f"PRAGMA journal_size_limit={WAL_BYTES}")
                connection.execute(
                    f"CREATE TABLE IF NOT EXISTS {TABLE} "
                    "(key TEXT PRIMARY KEY, crc INTEGER NOT NULL)"
                )
                _check_trusted(self.path)  # as opened: not swapped in after the first check
            except BaseException:
                connection.close()
                raise
        except Exception as error:
            self._failed(error)
            return None
        self._connection, self._pid = connection, os.getpid()
        return connection

    def _failed(self, error: Exception) -> None:
        code = getattr(error, "sqlite_errorcode", None)
        if code in _SQLITE_BUSY or "database is locked" in str(error):
            return  # another process is writing: a miss, or a CRC not shared this time
        self.broken = True
        logger.warning(
            "CRC cache %s is not usable (%s: %s); CRCs are kept in memory only",
            self.path,
            type(error).__name__,
            error,
        )


class UntrustedCacheFile(OSError):
    """A cache file that others could write (see the module's notes): not used."""


def _check_trusted(path: str) -> None:
    """Refuse a cache file that someone other than this process's user (or root) could write.

    Raises:
        UntrustedCacheFile: the file, its ``-wal`` or ``-shm``, or its folder breaks a rule;
            the message names which.
    """
    if os.name != "posix":
        return
    owners = {os.geteuid(), 0}
    folder = os.path.dirname(os.path.abspath(path))
    st = os.stat(folder)
    if st.st_mode & stat.S_IWOTH and not st.st_mode & stat.S_ISVTX:
        raise UntrustedCacheFile(
            f"its folder {folder} may be written by anyone and has no sticky bit (folder rule)"
        )
    for candidate in (path, f"{path}-wal", f"{path}-shm"):
        try:
            st = os.lstat(candidate)
        except FileNotFoundError:
            continue
        if not stat.S_ISREG(st.st_mode):
            raise UntrustedCacheFile(f"{candidate} is not a regular file (file rule)")
        if st.st_uid not in owners:
            raise UntrustedCacheFile(
                f"{candidate} belongs to uid {st.st_uid}, not this process's (owner rule)"
            )
        if st.st_mode & stat.S_IWOTH:  # a group that may write it is the owner's choice
            raise UntrustedCacheFile(
                f"{candidate} may be written by anyone, mode {stat.S_IMODE(st.st_mode):o}"
                " (mode rule)"
            )


class CrcCache:
    """CRC-32s of sources: an LRU per process, in front of an optional shared file.

    Thread-safe. ``get`` and ``put`` never raise because of the shared file.
    """

    def __init__(
        self,
        capacity: int = MEMORY_ENTRIES,
        *,
        path: str | os.PathLike[str] | None = None,
        max_entries: int = STORE_ENTRIES,
        from_env: bool = False,
    ) -> None:
        self._items: collections.OrderedDict[CrcKey, int] = collections.OrderedDict()
        self._misses: collections.OrderedDict[CrcKey, int] = collections.OrderedDict()
        self._capacity = capacity
        self._lock = threading.Lock()
        self._store: _Store | None = None
        self._from_env = from_env
        if path is not None:
            self.use_store(path, max_entries=max_entries)

    def use_store(self, path: str | os.PathLike[str] | None, *, max_entries: int) -> None:
        """Share CRCs through the file at ``path`` (None: keep them in memory only)."""
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, not {max_entries}")
        store = None if path is None else _Store(os.fspath(path), max_entries)
        with self._lock:
            self._store, self._from_env = store, False

    def get(self, source: Source) -> int | None:
        """The CRC-32 of ``source``'s content, if known."""
        key = cache_key(source)
        with self._lock:
            crc = self._items.get(key)
            if crc is not None:
                self._items.move_to_end(key)
                return crc
        store = self._shared()
        crc = None if store is None else store.get(_text(key))
        with self._lock:
            if crc is not None:
                self._remember(key, crc)
            elif key not in self._misses:  # the first miss dates the read that follows
                self._misses[key] = time.time_ns()
                while len(self._misses) > self._capacity:
                    self._misses.popitem(last=False)
        return crc

    def put(
        self, source: Source, crc: int, *, read_from_ns: int | None = None, shared: bool = True
    ) -> None:
        """Remember the CRC-32 of ``source``'s content.

        Args:
            source: The source whose bytes were read.
            crc: Their CRC-32.
            read_from_ns: ``time.time_ns()`` taken before the first byte was read; defaults to
                the time of the first ``get`` that missed. The CRC of a source with
                ``changed_ns`` (a file) is remembered only when it had not changed for
                ``RACY_SECONDS`` before that.
            shared: False keeps it in this process's memory only: for a small file, reading it
                again costs less than a write to the shared file (about 0.25 ms).
        """
        key = cache_key(source)
        with self._lock:
            missed = self._misses.pop(key, None)
            changed: int | None = getattr(source, "changed_ns", None)
            if changed is not None:
                start = missed if read_from_ns is None else read_from_ns
                if start is None or changed > start - RACY_NS:
                    return
            self._remember(key, crc)
        store = self._shared() if shared else None
        if store is not None:
            store.put(_text(key), crc)

    def _remember(self, key: CrcKey, crc: int) -> None:
        self._items[key] = crc
        self._items.move_to_end(key)
        while len(self._items) > self._capacity:
            self._items.popitem(last=False)

    def _shared(self) -> _Store | None:
        if self._from_env:
            path = os.environ.get(ENV_VAR)
            if path:  # set by the time of the first use, so an app may set it after import
                self.use_store(path, max_entries=STORE_ENTRIES)
            self._from_env = False
        return self._store


def _text(key: CrcKey) -> str:
    return json.dumps(key, separators=(",", ":"))


crc_cache = CrcCache(from_env=True)


def use_crc_cache(path: str | os.PathLike[str] | None, *, max_entries: int = STORE_ENTRIES) -> None:
    """Share the CRC-32s of sent files between processes through a file on this host.

    A stored ``ZipStreamResponse`` must know each file's CRC before its data, so a file it has
    not seen is read twice: once for the CRC, once to send it. Every process remembers CRCs in
    memory; with a shared file, a CRC computed by one process (one of ``uvicorn --workers 4``,
    or the server before a restart) spares the others that read. Instead of calling this, set
    the environment variable ``MULTIRESP_CRC_CACHE`` to the path: every process that
    serves a response picks it up without code.

    The file is SQLite (WAL), safe for many processes at once; keep it on a local disk, not
    a network share. A CRC is found again only while the file's device, inode, size, mtime
    and ctime are unchanged, within the same boot of the same host, and only for files that
    had not changed for 2 s when their CRC was computed. A file that cannot be used (corrupt,
    read-only) turns the sharing off with one warning on the ``multiresp`` logger; responses
    are not affected.

    Args:
        path: The cache file, created if missing; None keeps CRCs in memory only.
        max_entries: The most CRCs the file keeps; the least recently used go first.

    Raises:
        ValueError: ``max_entries`` is less than 1.
    """
    crc_cache.use_store(path, max_entries=max_entries)
