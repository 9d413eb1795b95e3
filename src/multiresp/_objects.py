"""Objects in an object store as sources: any obstore store (S3, GCS, Azure, local, memory).

How it works: an :class:`ObjectSource` holds the store, the object's key and the facts the
listing gave (:class:`ObjectFacts`: size, ETag, version, Last-Modified), or none yet for an
entry named by its key alone, which :meth:`ObjectSource.settle` fetches with a HEAD when the
response starts. Every GET carries ``If-Match`` on the listed ETag, so an object overwritten
after it was listed fails the read (:class:`~multiresp.IntegrityError`) instead of putting
other bytes under the listed size and CRC. A reader streams the object in chunks of about
``STREAM_CHUNK`` bytes (obstore's default waits for 10 MiB) and checks that it got exactly the
bytes listed; it starts the GET and pulls the first chunk when it is opened, so a reader opened
ahead has its first bytes in memory by the time they are sent.

Only obstore's sync API is used, in the worker threads that read every blocking source: its
async API needs asyncio, and the responses also run under trio.

An object's CRC-32 is not kept by every store, and obstore does not surface the ones that are
(S3's ``x-amz-checksum-crc32`` needs a request header obstore does not send), so it is
computed once and kept in the CRC cache (:mod:`multiresp._crccache`) under the store's
location (never its credentials), the key, the ETag and version, and the size. When the pump
wants it before sending the object (:meth:`ObjectSource.crc_ahead`), what is read for it is
kept and sent from there, so each object is read once from the store: in memory
(:class:`MemorySpool`) while the process holds less than ``MEMORY_SPOOLS`` so, else in an
anonymous temporary file (unlinked from the start, in the system's temporary folder; read back
by :class:`SpoolReader`).

obstore is imported on first use: ``import multiresp`` never needs it.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import logging
import os
import tempfile
import threading
import time
from collections.abc import Hashable, Iterator
from dataclasses import dataclass, field
from types import ModuleType
from typing import IO, TYPE_CHECKING, Any

import anyio.to_thread

from ._crccache import CrcKey, crc_cache
from ._entries import FILE_MODE, Entry, _guess_media_type, _join, _str_arg
from ._errors import IntegrityError, UnsafeNameError
from ._names import check_name
from ._sources import Reader, SourceBase
from ._zipformat import crc32

if TYPE_CHECKING:
    from obstore import ObjectMeta
    from obstore.store import ObjectStore

__all__ = ("ObjectFacts", "ObjectSource", "object_entry", "walk_store")

# bytes: the smallest chunk a GET's stream hands over (but the last). obstore gathers the
# network's reads (about 85 KiB each here) until it has this much, and copies each chunk into
# a new Python bytes object. Chunks of 64 KiB (one or two reads) reuse memory the allocator
# has at hand; chunks of 1.5 MiB were fresh pages every time, faulted in and zeroed: 1 GiB of
# objects took a fifth more of the gateway's CPU and ran a sixth slower. The pump joins the
# small chunks of a read block into one send.
STREAM_CHUNK = 64 << 10
PIECE = 2 << 20  # bytes: the largest piece a reader returns, as the protocol asks
# bytes: objects read for their CRC ahead of their turn are held in memory up to this much in
# all, across every response of the process; past it, they are spooled to disk. Writing a
# spool to the page cache and reading it back cost the gateway more CPU (about 1.1 s per GiB
# here) than the read from the store itself.
MEMORY_SPOOLS = 64 << 20
OBJECT_KEY_VERSION = 1  # bump when the facts in an object's CRC-cache key change
# What names a store's location in its configuration: never a credential.
LOCATION_KEYS = ("endpoint", "base_url", "region", "bucket", "account_name", "container_name")
S3_EXTRA = "s3"

logger = logging.getLogger("multiresp")


def _obstore() -> ModuleType:
    """obstore, or an ImportError that says which extra brings it."""
    try:
        import obstore
    except ImportError as error:
        raise ImportError(
            f"objects in a store need obstore: pip install 'multiresp[{S3_EXTRA}]'"
        ) from error
    return obstore


def _exceptions() -> Any:
    _obstore()
    import obstore.exceptions

    return obstore.exceptions


@dataclass(frozen=True, slots=True)
class ObjectFacts:
    """What a listing or a HEAD says of an object.

    Attributes:
        size: Its length in bytes.
        etag: Its ETag as the store gives it (quoted for S3), or None.
        version: Its version id, or None (an unversioned store, or a listing).
        last_modified: Its Last-Modified to the second: a listing may give milliseconds where
            a HEAD gives seconds, and every way of naming an object must date it alike.
    """

    size: int
    etag: str | None
    version: str | None
    last_modified: dt.datetime

    @classmethod
    def from_meta(cls, meta: ObjectMeta) -> ObjectFacts:
        """The facts of an obstore ``ObjectMeta``."""
        moment = meta["last_modified"]
        if moment.utcoffset() is None:
            moment = moment.replace(tzinfo=dt.timezone.utc)
        return cls(meta["size"], meta["e_tag"], meta["version"], moment.replace(microsecond=0))


def describe(store: object) -> str:
    """A store for messages: its kind and location, never its credentials."""
    location = _location(store)
    where = ", ".join(part for part in location[1:] if part) if location else ""
    return f"{type(store).__name__}({where})" if where else type(store).__name__


def _location(store: object) -> tuple[str, ...] | None:
    """Where a store's objects live, the same in every process: its kind, the location
    fields of its configuration and its prefix (a local store's root); None for a store with
    no such name (a memory store lives in one process only)."""
    config = getattr(store, "config", None)
    prefix = getattr(store, "prefix", None)
    url = getattr(store, "url", None)
    parts: list[str] = []
    if isinstance(config, dict):
        parts += [f"{k}={config[k]}" for k in LOCATION_KEYS if config.get(k)]
    if isinstance(url, str):
        parts.append(url)
    if not parts and prefix is None:
        return None
    return (type(store).__name__, *parts, os.fspath(prefix) if prefix is not None else "")


@dataclass(eq=False, slots=True)
class ObjectSource(SourceBase):
    """An object in an obstore store, read with ``If-Match`` on its listed ETag.

    Attributes:
        store: The obstore store (never shown in a repr: its configuration holds secrets).
        key: The object's path in the store.
        facts: What the listing said, or None until :meth:`settle` fetched it.
    """

    store: ObjectStore = field(repr=False)
    key: str
    facts: ObjectFacts | None = None

    # A round trip before the first byte: the pump opens the next objects ahead, while the
    # entries before them are sent.
    opens_ahead = True

    def __repr__(self) -> str:
        return f"ObjectSource({describe(self.store)}, {self.key!r}, {self.facts!r})"

    @property
    def size(self) -> int | None:
        return None if self.facts is None else self.facts.size

    @property
    def identity(self) -> Hashable | None:
        facts = self._facts()
        return (facts.etag, facts.version)

    @property
    def crc_key(self) -> CrcKey:
        """The CRC cache's key: the store's kind and location (never its credentials), the
        key, the ETag and version, the size."""
        key = self._crc_key()
        if key is None:
            raise TypeError(f"{self!r} has no stable name for the CRC cache")
        return key

    def _crc_key(self) -> CrcKey | None:
        facts = self.facts
        location = _location(self.store)
        if facts is None or location is None or (facts.etag is None and facts.version is None):
            return None
        return ("object", OBJECT_KEY_VERSION, *location, self.key,
                facts.etag or "", facts.version or "", facts.size)  # fmt: skip

    def known_crc(self) -> int | None:
        if self.size == 0:
            return 0
        return None if self._crc_key() is None else crc_cache.get(self)

    def remember_crc(self, crc: int, read_from_ns: int, *, shared: bool = True) -> None:
        if self._crc_key() is not None:
            crc_cache.put(self, crc, read_from_ns=read_from_ns, shared=shared)

    def settle(self, entry: Entry) -> Entry:
        """The entry with the object's size, ETag and Last-Modified, fetched with a HEAD when
        it was named without them.

        Raises:
            IntegrityError: the object is not in the store.
        """
        if self.facts is not None:
            return entry
        try:
            meta = _obstore().head(self.store, self.key)
        except FileNotFoundError as error:
            raise IntegrityError(
                f"entry {entry.name!r}: object {self.key!r} not found in {describe(self.store)}",
                entry=entry.name,
            ) from error
        facts = ObjectFacts.from_meta(meta)
        source = ObjectSource(self.store, self.key, facts)
        return dataclasses.replace(
            entry,
            size=facts.size,
            mtime=entry.mtime or facts.last_modified,
            source=source,
        )

    def read_all(self, entry: Entry) -> bytes:
        facts = self._facts(entry)
        result = self._get(entry, facts, 0)
        data = bytes(result.bytes())
        if len(data) != facts.size:
            raise self._changed(entry, f"gave {len(data)} bytes, not the {facts.size} listed "
                                "(size check)")  # fmt: skip
        return data

    def open(self, entry: Entry, offset: int = 0) -> Reader:
        return ObjectReader(self, entry, offset)

    def crc_ahead(self, entry: Entry, stop: threading.Event) -> tuple[int, Reader | None]:
        """Read the object once for its CRC-32, remember it, and give it with a reader over
        the same bytes, held in memory within the process's ``MEMORY_SPOOLS`` (see
        :class:`MemorySpool`), else spooled to an anonymous temporary file (see
        :class:`SpoolReader`).

        The bytes came from one GET with ``If-Match`` and were checked against the listed
        size, so they are the listed object's. Where the spool cannot be written (a full
        disk), the CRC is still given, without a reader: the object is read again.

        Raises:
            IntegrityError: it changed since it was listed, or gave another size.
            RuntimeError: ``stop`` was set (cancelled).
        """
        facts = self._facts(entry)
        read_from = time.time_ns()
        held = MemorySpool.take(facts.size)
        spool: IO[bytes] | None = None
        if held is None and facts.size:
            spool = tempfile.TemporaryFile()
        try:
            reader = ObjectReader(self, entry, 0)
            crc = 0
            try:
                while not stop.is_set() and (pieces := reader.read(PIECE)):
                    for piece in pieces:
                        crc = crc32(piece, crc)
                        spool = _spooled(spool, piece, entry)
                    if held is not None:
                        held.keep(pieces)
            finally:
                reader.close()
            if stop.is_set():
                raise RuntimeError("cancelled")
            self.remember_crc(crc, read_from)
            if held is not None:
                return crc, held
            if spool is None:
                return crc, None
            spool.seek(0)
            return crc, SpoolReader(spool, facts.size)
        except BaseException:
            if held is not None:
                held.close()
            if spool is not None:
                spool.close()
            raise

    def _facts(self, entry: Entry | None = None) -> ObjectFacts:
        if self.facts is None:
            name = "?" if entry is None else repr(entry.name)
            raise RuntimeError(
                f"entry {name}: object {self.key!r} was not settled (its facts are fetched "
                "when the response starts)"
            )
        return self.facts

    def _get(self, entry: Entry, facts: ObjectFacts, offset: int) -> Any:
        """A GET from ``offset`` to the listed end, checked against the listing."""
        options: dict[str, object] = {}
        if facts.etag is not None:
            options["if_match"] = facts.etag
        if offset:
            options["range"] = (offset, facts.size)
        errors = _exceptions()
        try:
            result = _obstore().get(self.store, self.key, options=options)
        except errors.PreconditionError as error:
            raise self._changed(
                entry, f"changed since it was listed (If-Match {facts.etag})"
            ) from error
        except FileNotFoundError as error:
            raise self._changed(entry, "is gone since it was listed") from error
        meta = result.meta
        if meta["size"] != facts.size or (facts.etag is not None and meta["e_tag"] != facts.etag):
            raise self._changed(entry, "changed since it was listed (ETag and size check)")
        return result

    def _changed(self, entry: Entry, rule: str) -> IntegrityError:
        return IntegrityError(
            f"entry {entry.name!r}: object {self.key!r} in {describe(self.store)} {rule}",
            entry=entry.name,
        )


class ObjectReader:
    """An object streamed from an offset to its listed end, checked to give exactly that.

    Opening it sends the GET and takes the first chunk, so a reader opened ahead of its turn
    has its first bytes in memory when they are wanted.
    """

    __slots__ = ("_buffer", "_entry", "_left", "_source", "_stream", "_used")

    def __init__(self, source: ObjectSource, entry: Entry, offset: int) -> None:
        facts = source._facts(entry)
        if not 0 <= offset <= facts.size:
            raise ValueError(f"entry {entry.name!r}: offset {offset} is beyond its {facts.size}")
        self._source, self._entry = source, entry
        self._left = facts.size - offset
        self._buffer = b""
        self._used = 0  # bytes of the buffer already given
        self._stream: Iterator[bytes] | None = None
        if self._left or not offset:  # an empty object is still checked against its listing
            result = source._get(entry, facts, offset)
            self._stream = iter(result.stream(min_chunk_size=STREAM_CHUNK))
            if self._left:
                self._buffer = self._next()

    def _next(self) -> bytes:
        assert self._stream is not None
        chunk = next(self._stream, None)
        if chunk is None:
            facts = self._source._facts(self._entry)
            raise self._source._changed(
                self._entry,
                f"ended {self._left} bytes short of the {facts.size} listed (size check)",
            )
        return chunk

    def read(self, size: int) -> list[bytes]:
        """Whole chunks as they came, up to ``size`` bytes: fewer when the next chunk would go
        past it (a chunk is split only when it alone is larger than ``size`` or ``PIECE``)."""
        want = min(size, self._left)
        pieces: list[bytes] = []
        got = 0
        while got < want:
            if self._used == len(self._buffer):
                self._buffer, self._used = self._next(), 0
            buffer, used = self._buffer, self._used
            available = len(buffer) - used
            if available > want - got and pieces:
                break  # it would go past ``size``: it leads the next read
            take = min(want - got, available, PIECE)
            pieces.append(buffer if take == len(buffer) else buffer[used : used + take])
            self._used += take
            got += take
        self._left -= got
        if not self._left and self._stream is not None:
            self._finish()
        return pieces

    def _finish(self) -> None:
        """At the listed end: refuse an object that gave more than its listed size."""
        assert self._stream is not None
        more = len(self._buffer) - self._used
        while not more and (chunk := next(self._stream, None)) is not None:
            more = len(chunk)
        if more:
            raise self._source._changed(self._entry, "gave more bytes than listed (size check)")
        self._stream = None

    def close(self) -> None:
        self._stream = None  # dropping the stream ends its connection
        self._buffer = b""


def _spooled(spool: IO[bytes] | None, piece: bytes, entry: Entry) -> IO[bytes] | None:
    """``spool`` with ``piece`` written to it; None (closed) once it cannot be written."""
    if spool is None:
        return None
    try:
        spool.write(piece)
    except OSError as error:
        spool.close()
        logger.warning("entry %r: not spooled (%s), it will be read again", entry.name, error)
        return None
    return spool


class MemorySpool:
    """An object's bytes kept in memory as they were read for its CRC (checked as they were
    read), given back as they came; counted in the process's ``MEMORY_SPOOLS`` from
    :meth:`take` until :meth:`close`. Each piece read is let go."""

    __slots__ = ("_counted", "_pieces", "_used")

    held = 0  # bytes counted by the spools of this process not yet closed
    _lock = threading.Lock()  # servers may run event loops in several threads of one process

    def __init__(self, counted: int) -> None:
        self._counted = counted
        self._pieces: collections.deque[bytes] = collections.deque()
        self._used = 0  # bytes of the first piece already given

    @classmethod
    def take(cls, size: int) -> MemorySpool | None:
        """A spool for ``size`` bytes, counted; None for nothing to keep or when it would
        take the process past ``MEMORY_SPOOLS``."""
        with cls._lock:
            if not size or cls.held + size > MEMORY_SPOOLS:
                return None
            cls.held += size
        return cls(size)

    def keep(self, pieces: list[bytes]) -> None:
        self._pieces.extend(pieces)

    def read(self, size: int) -> list[bytes]:
        """Whole pieces up to ``size`` bytes; one larger than ``size`` is split, each read
        copying only the part it gives (a slow client reads small blocks of large pieces)."""
        queue = self._pieces
        pieces: list[bytes] = []
        got = 0
        while queue and got < size:
            piece, used = queue[0], self._used
            left = len(piece) - used
            if got + left > size:
                if pieces:
                    break  # it leads the next read
                self._used += size
                return [piece[used : used + size]]
            queue.popleft()
            self._used = 0
            pieces.append(piece[used:] if used else piece)
            got += left
        return pieces

    def close(self) -> None:
        self._pieces.clear()
        # Taken under the lock: two closes from two threads (a response closing while its
        # abandoned step still ends) must not both give the same bytes back.
        with MemorySpool._lock:
            counted, self._counted = self._counted, 0
            MemorySpool.held -= counted


class SpoolReader:
    """An object's bytes read back from the temporary file they were spooled to, as pieces of
    at most ``PIECE`` bytes; closing it closes the file, which frees its space (it has no
    name). The bytes were checked as they were spooled."""

    __slots__ = ("_file", "_left")

    def __init__(self, file: IO[bytes], size: int) -> None:
        self._file = file
        self._left = size

    def read(self, size: int) -> list[bytes]:
        want = min(size, self._left)
        pieces: list[bytes] = []
        while want:
            piece = self._file.read(min(want, PIECE))
            if not piece:  # cut short under us: the caller takes it as the source's end
                break
            pieces.append(piece)
            want -= len(piece)
            self._left -= len(piece)
        return pieces

    def close(self) -> None:
        self._file.close()


def object_entry(
    store: ObjectStore,
    key: str,
    name: str | None = None,
    *,
    meta: ObjectMeta | None = None,
) -> Entry:
    """The entry for an object (see :meth:`multiresp.Entry.from_object`)."""
    key = _str_arg(key, "key")
    if not key or key.endswith("/"):
        raise ValueError(f"object key {key!r} names no object (a key ending in '/' is a folder)")
    if meta is not None and meta["path"] != key:
        raise ValueError(f"meta describes {meta['path']!r}, not the key {key!r}")
    name = key.rpartition("/")[2] if name is None else _str_arg(name, "name")
    if name.endswith("/"):
        raise ValueError(f"directory entry {name!r} cannot have content")
    facts = None if meta is None else ObjectFacts.from_meta(meta)
    source = ObjectSource(store, key, facts)
    return Entry(
        name,
        None if facts is None else facts.size,
        None if facts is None else facts.last_modified,
        _guess_media_type(name),
        source,
        FILE_MODE,
    )


async def walk_store(store: ObjectStore, prefix: str = "", *, name_prefix: str = "") -> list[Entry]:
    """Entries for every object under ``prefix`` in an obstore store, sorted by name.

    Listed in a worker thread (so under asyncio and trio alike). Each entry's size, ETag and
    mtime come from the listing (the mtime is the object's Last-Modified, never the clock),
    and every read is checked against them. Keys that end in ``/`` (the "folders" some
    consoles create) are not files and are skipped.

    Args:
        store: Any obstore store (``S3Store``, ``GCSStore``, ``AzureStore``, ``LocalStore``,
            ``MemoryStore``).
        prefix: The "folder" to list: whole path segments (``"photos"`` lists
            ``photos/a.jpg``, not ``photos2/b.jpg``); names are relative to it.
        name_prefix: A relative path put in front of every name.

    Raises:
        UnsafeNameError: a key that makes no safe relative name (``a/../b``, ``a//b``, a
            backslash), naming the key; or an unsafe ``name_prefix``.
        ImportError: obstore is not installed (the ``s3`` extra).
    """
    prefix = _str_arg(prefix, "prefix").strip("/")
    name_prefix = _str_arg(name_prefix, "name_prefix")
    if name_prefix:
        check_name(name_prefix)
    _obstore()
    return await anyio.to_thread.run_sync(
        _walk_store, store, prefix, name_prefix, abandon_on_cancel=True
    )


def _walk_store(store: ObjectStore, prefix: str, name_prefix: str) -> list[Entry]:
    obstore, errors = _obstore(), _exceptions()
    metas: list[ObjectMeta] = []
    try:
        for batch in obstore.list(store, prefix=prefix or None):
            metas += batch
    except errors.InvalidPathError as error:
        detail = str(error).partition("\n")[0]
        raise UnsafeNameError(
            f"listing {prefix!r} of {describe(store)}: an object key is not a safe name: {detail}"
        ) from error
    parents = {path.rpartition("/")[0] for path in (meta["path"] for meta in metas)}
    entries: list[Entry] = []
    for meta in metas:
        key = meta["path"]
        if meta["size"] == 0 and (key in parents or _folder_marker(store, key)):
            continue
        relative = key[len(prefix) + 1 :] if prefix else key
        try:
            entries.append(object_entry(store, key, _join(name_prefix, relative), meta=meta))
        except UnsafeNameError as error:
            raise UnsafeNameError(f"object {key!r}: {error}", entry=error.entry) from error
    entries.sort(key=lambda entry: entry.name)
    return entries


def _folder_marker(store: ObjectStore, key: str) -> bool:
    """Whether an empty object listed as ``key`` is a folder marker (``key/``): obstore lists
    both as ``key``, and only a HEAD tells them apart."""
    try:
        _obstore().head(store, key)
    except FileNotFoundError:
        return True
    return False
