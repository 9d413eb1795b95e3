"""Objects in an object store as entries, against a real S3-compatible server on loopback.

moto's server runs in a thread of the test process (tests/s3.py); the objects are read through
obstore as in production: every GET with If-Match, streamed in large chunks, checked against
the listing.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import zlib
from collections.abc import Iterator
from typing import Any

import obstore
import pytest
from obstore.store import MemoryStore

import multiresp
from multiresp import Entry, IntegrityError, UnsafeNameError, walk_store
from multiresp._crccache import crc_cache
from multiresp._objects import PIECE, ObjectSource
from s3 import SECRET_KEY, S3Server, put, running

MIB = 1 << 20  # bytes


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with running() as server:
        yield server


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def source_of(entry: Entry) -> ObjectSource:
    source: Any = entry.source
    assert isinstance(source, ObjectSource)
    return source


def read_whole(entry: Entry, offset: int = 0, size: int = 3 * MIB + 5) -> bytes:
    reader = source_of(entry).open(entry, offset)
    try:
        pieces: list[bytes] = []
        while more := reader.read(size):
            assert all(len(piece) <= PIECE for piece in more)
            pieces += more
    finally:
        reader.close()
    return b"".join(pieces)


# --- listing -------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_walk_store_lists_names_relative_to_the_prefix_with_the_listed_facts(
    s3: S3Server,
) -> None:
    store = s3.store()
    contents = {
        "photos/b.jpg": os.urandom(1000),
        "photos/a/ünïcödé 名前.txt": b"UTF-8 names\n",
        "photos/empty.bin": b"",
        "photos2/not-under-the-prefix.txt": b"no",
        "top.txt": b"top",
    }
    put(store, contents)
    entries = await walk_store(store, "photos/", name_prefix="out")
    assert [e.name for e in entries] == ["out/a/ünïcödé 名前.txt", "out/b.jpg", "out/empty.bin"]
    listed = {m["path"]: m for batch in obstore.list(store, prefix="photos") for m in batch}
    for entry in entries:
        key = "photos/" + entry.name.removeprefix("out/")
        meta = listed[key]
        assert entry.size == meta["size"] == len(contents[key])
        assert entry.mtime == meta["last_modified"].replace(microsecond=0)  # never the clock
        assert source_of(entry).identity == (meta["e_tag"], meta["version"])
    assert entries[1].media_type == "image/jpeg"
    assert [e.name for e in await walk_store(store)] == sorted(contents)


@pytest.mark.anyio
async def test_walk_store_skips_folder_markers(s3: S3Server) -> None:
    store = s3.store()
    for key in ("data/folder/", "data/lonely/"):  # keys obstore itself would not write
        s3.put_raw(store.config["bucket"], key)
    put(store, {"data/folder/x.txt": b"x", "data/zero": b""})
    entries = await walk_store(store, "data")
    assert [(e.name, e.size) for e in entries] == [("folder/x.txt", 1), ("zero", 0)]


@pytest.mark.anyio
@pytest.mark.parametrize("key", ["bad/../escape.txt", "bad/./dot.txt", "bad/back\\slash.txt"])
async def test_walk_store_refuses_an_unsafe_key_naming_it(s3: S3Server, key: str) -> None:
    store = s3.store()
    s3.put_raw(store.config["bucket"], key, b"x")
    with pytest.raises(UnsafeNameError) as caught:
        await walk_store(store, "bad")
    assert key in str(caught.value).replace("\\\\", "\\")  # named (a repr doubles "\\")


@pytest.mark.anyio
async def test_walk_store_refuses_an_unsafe_name_prefix(s3: S3Server) -> None:
    with pytest.raises(UnsafeNameError):
        await walk_store(s3.store(), name_prefix="../up")


# --- entries named by their key --------------------------------------------------------------


def test_from_object_fetches_its_facts_when_settled(s3: S3Server) -> None:
    store = s3.store()
    put(store, {"dir/report.json": b"{}"})
    entry = Entry.from_object(store, "dir/report.json")
    assert (entry.name, entry.size, entry.mtime, entry.media_type) == (
        "report.json",
        None,
        None,
        "application/json",
    )
    settled = source_of(entry).settle(entry)
    meta = obstore.head(store, "dir/report.json")
    assert (settled.name, settled.size) == ("report.json", 2)
    assert settled.mtime == meta["last_modified"].replace(microsecond=0)
    assert source_of(settled).settle(settled) is settled
    assert read_whole(settled) == b"{}"
    renamed = Entry.from_object(store, "dir/report.json", "out/r.json", meta=meta)
    assert (renamed.name, renamed.size, renamed.mtime) == ("out/r.json", 2, settled.mtime)


def test_a_missing_object_fails_when_settled_naming_entry_and_key(s3: S3Server) -> None:
    store = s3.store()
    entry = Entry.from_object(store, "nowhere/gone.txt", "x/gone.txt")
    with pytest.raises(IntegrityError) as caught:
        source_of(entry).settle(entry)
    assert caught.value.entry == "x/gone.txt"
    assert "'x/gone.txt'" in str(caught.value) and "'nowhere/gone.txt'" in str(caught.value)
    assert "not found" in str(caught.value)


def test_from_object_refuses_folders_foreign_meta_and_unsafe_names(s3: S3Server) -> None:
    store = s3.store()
    put(store, {"a.txt": b"a", "b.txt": b"b"})
    with pytest.raises(ValueError, match="folder"):
        Entry.from_object(store, "photos/")
    with pytest.raises(ValueError, match="not the key"):
        Entry.from_object(store, "a.txt", meta=obstore.head(store, "b.txt"))
    with pytest.raises(UnsafeNameError):
        Entry.from_object(store, "a.txt", "../a.txt")


# --- reading -------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 2 * MIB - 1, 2 * MIB + 1, 5 * MIB + 3])
def test_a_reader_gives_exactly_the_object_from_any_offset(s3: S3Server, size: int) -> None:
    store = s3.store()
    data = os.urandom(size)
    put(store, {"o.bin": data})
    meta = obstore.head(store, "o.bin")
    entry = Entry.from_object(store, "o.bin", meta=meta)
    assert read_whole(entry) == data
    assert read_whole(entry, size=1000) == data
    assert source_of(entry).read_all(entry) == data
    for offset in {0, 1, size // 2, size - 1, size} - {-1}:
        if 0 <= offset <= size:
            assert read_whole(entry, offset) == data[offset:]


def test_an_object_overwritten_after_its_listing_fails_the_read(s3: S3Server) -> None:
    store = s3.store()
    put(store, {"o.bin": b"a" * 1000})
    entry = Entry.from_object(store, "o.bin", meta=obstore.head(store, "o.bin"))
    put(store, {"o.bin": b"b" * 1000})  # same size, other bytes
    for read in (read_whole, lambda e: read_whole(e, 10), lambda e: source_of(e).read_all(e)):
        with pytest.raises(IntegrityError, match="changed since it was listed") as caught:
            read(entry)
        assert caught.value.entry == "o.bin"
    obstore.delete(store, "o.bin")
    with pytest.raises(IntegrityError, match="gone since it was listed"):
        read_whole(entry)


def test_an_object_whose_size_differs_from_its_listing_fails_the_read(s3: S3Server) -> None:
    store = s3.store()
    put(store, {"o.bin": b"a" * 1000})
    meta = obstore.head(store, "o.bin")
    longer = Entry.from_object(store, "o.bin", meta={**meta, "size": 999})
    with pytest.raises(IntegrityError, match="size check"):
        read_whole(longer)
    no_etag = Entry.from_object(store, "o.bin", meta={**meta, "size": 1001, "e_tag": None})
    with pytest.raises(IntegrityError, match="size check"):
        read_whole(no_etag)


# --- CRCs ----------------------------------------------------------------------------------


def test_the_crc_is_computed_once_then_known(s3: S3Server) -> None:
    store = s3.store()
    data = os.urandom(3 * MIB + 1)
    put(store, {"c.bin": data, "empty": b""})
    meta = obstore.head(store, "c.bin")
    entry = Entry.from_object(store, "c.bin", meta=meta)
    source = source_of(entry)
    assert source.known_crc() is None
    assert source.crc(entry, threading.Event()) == zlib.crc32(data)
    assert source.known_crc() == zlib.crc32(data)
    again = Entry.from_object(store, "c.bin", "other-name", meta=meta)  # the same content
    assert source_of(again).known_crc() == zlib.crc32(data)
    put(store, {"c.bin": data})  # rewritten: a new ETag on S3 (moto), a new key
    rewritten = Entry.from_object(store, "c.bin", meta=obstore.head(store, "c.bin"))
    if obstore.head(store, "c.bin")["e_tag"] == meta["e_tag"]:  # same MD5: the same content
        assert source_of(rewritten).known_crc() == zlib.crc32(data)
    empty = Entry.from_object(store, "empty", meta=obstore.head(store, "empty"))
    assert source_of(empty).known_crc() == 0


def test_the_crc_key_names_the_location_never_the_credentials(s3: S3Server) -> None:
    store = s3.store()
    put(store, {"k.bin": b"k"})
    meta = obstore.head(store, "k.bin")
    key = source_of(Entry.from_object(store, "k.bin", meta=meta)).crc_key
    assert key[:2] == ("object", 1)
    assert "S3Store" in key and "k.bin" in key and meta["e_tag"] in key and 1 in key
    assert f"bucket={store.config['bucket']}" in key
    assert f"endpoint={s3.endpoint}" in key
    text = repr(key)
    assert SECRET_KEY not in text and store.config["access_key_id"] not in text
    other = source_of(Entry.from_object(s3.store(), "k.bin", meta=meta)).crc_key
    assert other != key  # another bucket


def test_a_memory_store_keeps_no_crc_across_instances() -> None:
    store = MemoryStore()
    obstore.put(store, "m.bin", b"memory")
    entry = Entry.from_object(store, "m.bin", meta=obstore.head(store, "m.bin"))
    source = source_of(entry)
    assert read_whole(entry) == b"memory"
    assert source.crc(entry, threading.Event()) == zlib.crc32(b"memory")
    assert source.known_crc() is None  # its ETags restart in every MemoryStore
    before = len(crc_cache._items)
    source.remember_crc(1, 0)
    assert len(crc_cache._items) == before


# --- secrets -------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_no_repr_and_no_message_shows_the_credentials(s3: S3Server) -> None:
    store = s3.store()
    put(store, {"r.txt": b"r"})
    entries = await walk_store(store)
    shown = [repr(entries), repr(entries[0].source), repr(source_of(entries[0]).facts)]
    entry = Entry.from_object(store, "missing.txt")
    with pytest.raises(IntegrityError) as caught:
        source_of(entry).settle(entry)
    shown.append(str(caught.value))
    put(store, {"r.txt": b"R"})
    with pytest.raises(IntegrityError) as changed:
        read_whole(entries[0])
    shown.append(str(changed.value))
    for text in shown:
        assert SECRET_KEY not in text
        assert store.config["access_key_id"] not in text
    assert store.config["bucket"] in str(caught.value)  # where it looked, though


# --- without obstore -----------------------------------------------------------------------


def test_multiresp_imports_without_obstore_and_says_which_extra_brings_it() -> None:
    code = textwrap.dedent(
        """
        import sys
        sys.modules["obstore"] = None  # as if it were not installed
        import anyio
        import multiresp
        from multiresp import *
        assert "obstore" not in [m.split(".")[0] for m in sys.modules if sys.modules[m]]
        try:
            anyio.run(multiresp.walk_store, object())
        except ImportError as error:
            print(error)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert "pip install 'multiresp[s3]'" in result.stdout


def test_walk_store_is_public() -> None:
    assert "walk_store" in multiresp.__all__
    assert multiresp.walk_store is walk_store
