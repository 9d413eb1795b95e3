"""Objects in an object store as entries, against a real S3-compatible server on loopback.

moto's server runs in a thread of the test process (tests/s3.py); the objects are read through
obstore as in production: every GET with If-Match, streamed in large chunks, checked against
the listing.
"""

from __future__ import annotations

import collections
import email.utils
import hashlib
import io
import itertools
import logging
import os
import pathlib
import subprocess
import sys
import textwrap
import threading
import time
import zipfile
import zlib
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import obstore
import pytest
from obstore.store import MemoryStore, S3Store
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

import multiresp
import multiresp.client
from multiresp import Entry, IntegrityError, UnsafeNameError, walk, walk_store
from multiresp._crccache import crc_cache
from multiresp._objects import PIECE, ObjectReader, ObjectSource
from multiresp.client import download
from multiresp.responses import MultipartResponse, ZipStreamResponse
from multiresp.uploads import EXCEPTION_HANDLERS
from s3 import ACCESS_KEY, SECRET_KEY, S3Server, put, running

from conftest import LiveServer

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
            assert all(0 < len(piece) <= PIECE for piece in more)
            assert sum(map(len, more)) <= size  # fewer when a whole chunk would go past it
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


# --- end to end: a real uvicorn, a real client ----------------------------------------------

CONTENTS = {
    "set/empty.bin": b"",
    "set/odd.bin": os.urandom(1_234_567),
    "set/big.bin": os.urandom(24 * MIB + 3),
    "set/ünïcödé 名前.txt": b"UTF-8 names\n",
    "set/deep/er/report.json": b'{"score": 0.97}',
}


def snapshot(root: pathlib.Path) -> dict[str, str | None]:
    """Relative path -> sha256 of a file, or None for a folder."""
    found: dict[str, str | None] = {}
    for path in sorted(root.rglob("*")):
        name = path.relative_to(root).as_posix()
        found[name] = None if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def expected(contents: dict[str, bytes], prefix: str, under: str = "") -> dict[str, str]:
    return {
        under + key.removeprefix(prefix): hashlib.sha256(data).hexdigest()
        for key, data in contents.items()
    }


class Recorder:
    """An ASGI app around another that keeps what it raised (uvicorn logs it, then 500)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.errors: list[BaseException] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await self.app(scope, receive, send)
        except Exception as error:
            self.errors.append(error)
            raise


def gateway_app(store: S3Store, folder: pathlib.Path | None = None) -> Recorder:
    async def archive(request: Request) -> Response:
        entries = await walk_store(store, "set")
        if request.query_params.get("format") == "multipart":
            return MultipartResponse(entries)
        return ZipStreamResponse(entries, filename="set.zip")

    async def mixed(request: Request) -> Response:
        assert folder is not None
        objects = await walk_store(store, "set", name_prefix="objects")
        return ZipStreamResponse([*objects, *walk(folder, prefix="local")])

    async def named(request: Request) -> Response:
        key = request.path_params["key"]
        return ZipStreamResponse([Entry.from_object(store, key, f"named/{key}")])

    return Recorder(
        Starlette(
            routes=[
                Route("/set", archive, methods=["GET", "HEAD"]),
                Route("/mixed", mixed),
                Route("/named/{key:path}", named),
            ]
        )
    )


@pytest.fixture(scope="module")
def served(s3: S3Server) -> Iterator[tuple[str, S3Store, Recorder]]:
    store = s3.store()
    put(store, CONTENTS)
    app = gateway_app(store)
    with LiveServer(app) as server:
        yield server.url, store, app


@pytest.mark.parametrize("kind", ["zip", "multipart"])
def test_a_download_is_byte_identical_with_exact_length_and_etag(
    served: tuple[str, S3Store, Recorder], tmp_path: pathlib.Path, kind: str
) -> None:
    url, _, _ = served
    saved = download(f"{url}/set?format={kind}", tmp_path / "out")
    want = expected(CONTENTS, "set/")
    got = snapshot(tmp_path / "out")
    assert {k: v for k, v in got.items() if v is not None} == want
    assert {f.name: f.sha256 for f in saved} == want
    head = httpx.head(f"{url}/set?format={kind}")
    body = httpx.get(f"{url}/set?format={kind}")
    assert int(head.headers["content-length"]) == len(body.content)
    assert body.headers["content-length"] == head.headers["content-length"]
    assert body.headers["etag"] == head.headers["etag"]
    assert not body.headers["etag"].startswith("W/")
    assert body.headers["accept-ranges"] == "bytes"
    newest = max(m["last_modified"] for m in listing(served[1], "set"))
    assert body.headers["last-modified"] == email.utils.format_datetime(
        newest.replace(microsecond=0), usegmt=True
    )
    if kind == "zip":
        with zipfile.ZipFile(io.BytesIO(body.content)) as archive:
            assert archive.testzip() is None
            assert len(archive.namelist()) == len(CONTENTS)


def listing(store: S3Store, prefix: str) -> list[Any]:
    return [meta for batch in obstore.list(store, prefix=prefix) for meta in batch]


def test_two_gateways_give_the_same_etag(
    served: tuple[str, S3Store, Recorder], s3: S3Server
) -> None:
    url, store, _ = served
    other = gateway_app(s3.store(store.config["bucket"]))  # another process's store object
    with LiveServer(other) as second:
        assert (
            httpx.head(f"{url}/set").headers["etag"]
            == httpx.head(f"{second.url}/set").headers["etag"]
        )


def test_ranges_stitch_back_to_the_whole(served: tuple[str, S3Store, Recorder]) -> None:
    url, _, _ = served
    whole = httpx.get(f"{url}/set")
    etag, total = whole.headers["etag"], len(whole.content)
    cuts = [0, 1, 31, 5 * MIB + 7, 13 * MIB, total - 100, total]
    parts = []
    for start, stop in itertools.pairwise(cuts):
        part = httpx.get(
            f"{url}/set", headers={"range": f"bytes={start}-{stop - 1}", "if-range": etag}
        )
        assert part.status_code == 206
        assert part.headers["content-range"] == f"bytes {start}-{stop - 1}/{total}"
        parts.append(part.content)
    assert b"".join(parts) == whole.content


def test_a_mixed_archive_of_files_and_objects(
    s3: S3Server, tmp_path: pathlib.Path, live_server: Any
) -> None:
    store = s3.store()
    objects = {"set/a.bin": os.urandom(5 * MIB + 1), "set/b/c.txt": b"c"}
    put(store, objects)
    folder = tmp_path / "local"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "x.bin").write_bytes(os.urandom(4 * MIB + 9))
    (folder / "y.txt").write_bytes(b"y")
    server = live_server(gateway_app(store, folder))
    download(f"{server.url}/mixed", tmp_path / "out")
    want = expected(objects, "set/", "objects/") | {
        "local/sub/x.bin": hashlib.sha256((folder / "sub" / "x.bin").read_bytes()).hexdigest(),
        "local/y.txt": hashlib.sha256(b"y").hexdigest(),
    }
    got = snapshot(tmp_path / "out")
    assert {k: v for k, v in got.items() if v is not None} == want


def test_an_object_overwritten_mid_download_fails_it_and_no_file_looks_complete(
    s3: S3Server, tmp_path: pathlib.Path, live_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    store = s3.store()
    # The next objects are opened ahead up to 8 MiB (a GET serves the object as it was when
    # the GET began): 3.bin is opened only once 1-big.bin is sent, long after it is changed.
    objects = {"set/1-big.bin": os.urandom(24 * MIB), "set/2-big.bin": os.urandom(9 * MIB),
               "set/3.bin": b"3" * 1000}  # fmt: skip
    put(store, objects)
    server = live_server(gateway_app(store))
    overwritten: list[int] = []

    def overwrite_once(progress: Any) -> None:  # while the first object is on its way
        if not overwritten and progress.bytes_done:
            put(store, {"set/3.bin": b"x" * 1000})  # same size, other bytes
            overwritten.append(progress.bytes_done)

    with pytest.raises(multiresp.MultirespError) as caught:
        download(f"{server.url}/set", tmp_path / "out", progress=overwrite_once, resume=False)
    assert overwritten and overwritten[0] < 24 * MIB
    # The server was ahead of the client by what the sockets hold: the body was cut in an
    # entry up to 3.bin (the client's error names it) or just before 3.bin's header, and every
    # file the client kept was verified, whole.
    assert caught.value.entry in {None, "1-big.bin", "2-big.bin", "3.bin"}
    kept = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    assert set(kept) <= {"1-big.bin", "2-big.bin"} and caught.value.entry not in kept
    assert all(data == objects[f"set/{name}"] for name, data in kept.items())
    failures = [r.getMessage() for r in caplog.records if r.name == "multiresp"]
    assert any("'3.bin'" in m and "changed since it was listed" in m for m in failures)


def test_a_missing_object_fails_before_the_first_byte(
    served: tuple[str, S3Store, Recorder],
) -> None:
    url, _, app = served
    app.errors.clear()
    response = httpx.get(f"{url}/named/nowhere/gone.bin")
    assert response.status_code == 500
    (error,) = app.errors
    assert isinstance(error, IntegrityError)
    assert "'named/nowhere/gone.bin'" in str(error) and "'nowhere/gone.bin'" in str(error)
    assert httpx.get(f"{url}/named/set/odd.bin").status_code == 200  # the same route works


def test_the_crc_is_read_once_then_each_object_once_per_archive(
    s3: S3Server, live_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = s3.store()
    objects = {"set/big.bin": os.urandom(9 * MIB), "set/small.bin": os.urandom(1000)}
    put(store, objects)
    gets: collections.Counter[str] = collections.Counter()
    real_get = obstore.get

    def counting_get(store: Any, path: str, **options: Any) -> Any:
        gets[path] += 1
        return real_get(store, path, **options)

    monkeypatch.setattr(obstore, "get", counting_get)
    server = live_server(gateway_app(store))
    assert httpx.head(f"{server.url}/set").status_code == 200
    assert not gets  # HEAD reads no object
    first = httpx.get(f"{server.url}/set")
    assert gets == {"set/big.bin": 1, "set/small.bin": 1}  # the large one spooled for its CRC
    gets.clear()
    second = httpx.get(f"{server.url}/set")
    assert gets == {"set/big.bin": 1, "set/small.bin": 1}
    assert first.content == second.content


def test_the_next_objects_are_opened_while_one_is_sent(
    served: tuple[str, S3Store, Recorder], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, _, _ = served
    httpx.get(f"{url}/set")  # every CRC known: each object is read once, in order
    events: list[tuple[str, str]] = []
    real_get, real_finish = obstore.get, ObjectReader._finish

    def get(store: Any, path: str, **options: Any) -> Any:
        events.append(("GET", path))
        return real_get(store, path, **options)

    def finish(reader: ObjectReader) -> None:
        events.append(("end", reader._source.key))
        real_finish(reader)

    monkeypatch.setattr(obstore, "get", get)
    monkeypatch.setattr(ObjectReader, "_finish", finish)
    with httpx.stream("GET", f"{url}/set") as response:
        raw = response.iter_raw()
        next(raw)
        time.sleep(0.3)  # a client slower than the store: big.bin is still being sent
        for _ in raw:
            pass
    assert [key for event, key in events if event == "GET"] == sorted(CONTENTS)
    # The objects after big.bin (under 8 MiB together) were on their way before its end.
    assert events.index(("GET", "set/odd.bin")) < events.index(("end", "set/big.bin"))


def test_no_log_line_shows_the_credentials(
    served: tuple[str, S3Store, Recorder],
    tmp_path: pathlib.Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="werkzeug")
    url, _, _ = served
    download(f"{url}/set", tmp_path / "out")
    httpx.get(f"{url}/named/nowhere.bin")
    assert caplog.records  # the transfers' DEBUG lines, moto's request lines
    assert SECRET_KEY not in caplog.text and ACCESS_KEY not in caplog.text


def test_a_response_reads_objects_under_trio(served: tuple[str, S3Store, Recorder]) -> None:
    _, store, _ = served
    scope = {"type": "http", "method": "GET", "path": "/", "headers": [], "query_string": b"",
             "http_version": "1.1", "scheme": "http", "root_path": ""}  # fmt: skip
    body: list[bytes] = []

    async def receive() -> dict[str, Any]:
        await anyio.sleep_forever()
        raise AssertionError

    async def send(message: dict[str, Any]) -> None:
        body.append(message.get("body", b""))

    async def main() -> None:
        entries = await walk_store(store, "set")
        await ZipStreamResponse(entries)(scope, receive, send)

    anyio.run(main, backend="trio")
    with zipfile.ZipFile(io.BytesIO(b"".join(body))) as archive:
        got = {name: hashlib.sha256(archive.read(name)).hexdigest() for name in archive.namelist()}
    assert got == expected(CONTENTS, "set/")


# --- the README's example --------------------------------------------------------------------


def readme_s3_block() -> str:
    """The README's ``python s3`` block: tests/test_readme.py runs the blocks its live server
    can answer; this one needs a store, so it runs here, against moto."""
    readme = (pathlib.Path(__file__).parent.parent / "README.md").read_text()
    start = readme.index("```python s3\n") + len("```python s3\n")
    return readme[start : readme.index("\n```\n", start) + 1]


def test_the_readme_example_serves_objects_and_files(
    s3: S3Server,
    tmp_path: pathlib.Path,
    live_server: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bucket = s3.bucket()
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ALLOW_HTTP", "true")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "exports").mkdir()
    (tmp_path / "exports" / "summary.txt").write_bytes(b"42 files exported\n")
    code = readme_s3_block().replace('"exports-bucket"', repr(bucket))
    namespace: dict[str, Any] = {"__name__": "readme_s3"}
    exec(compile(code, "README.md, the s3 block", "exec"), namespace)
    put(s3.store(bucket), {
        "exports/2026-07-01/a.csv": b"a,b\n1,2\n",
        "exports/2026-07-01/img/x.png": os.urandom(3000),
        "reports/latest.pdf": b"%PDF-1.7 ...",
    })  # fmt: skip
    server = live_server(namespace["app"])
    download(f"{server.url}/day/2026-07-01.zip", tmp_path / "day")
    assert sorted(p.relative_to(tmp_path / "day").as_posix()
                  for p in (tmp_path / "day").rglob("*") if p.is_file()) == [
        "2026-07-01/a.csv", "2026-07-01/img/x.png"]  # fmt: skip
    download(f"{server.url}/report.zip", tmp_path / "report")
    assert (tmp_path / "report" / "report.pdf").read_bytes() == b"%PDF-1.7 ..."
    assert (tmp_path / "report" / "summary.txt").read_bytes() == b"42 files exported\n"


# -- uploads --------------------------------------------------------------------------------------


def receiver_app(dest: pathlib.Path) -> Starlette:
    async def receive(request: Request) -> Response:
        saved = await multiresp.receive_files(request, dest)
        return PlainTextResponse(" ".join(f"{f.name}:{f.sha256}" for f in saved))

    return Starlette(routes=[Route("/up", receive, methods=["POST"])],
                     exception_handlers=EXCEPTION_HANDLERS)  # fmt: skip


@pytest.mark.parametrize("client", ["upload", "aupload"])
def test_objects_upload_as_files_named_by_key_alone_or_listed(
    s3: S3Server, tmp_path: pathlib.Path, live_server: Any, client: str
) -> None:
    store = s3.store()
    objects = {"up/big.bin": os.urandom(5 * MIB + 3), "up/empty.bin": b"", "up/ü.txt": b"hi"}
    put(store, objects)
    server = live_server(receiver_app(tmp_path / "got"))
    listed = anyio.run(walk_store, store, "up")
    entries = [Entry.from_object(store, "up/big.bin", "key-alone/big.bin"), *listed]
    sent = []

    def request(request: httpx.Request) -> None:
        sent.append(request.headers)

    with httpx.Client(event_hooks={"request": [request]}) as http:
        if client == "upload":
            response = multiresp.client.upload(f"{server.url}/up", entries, client=http)
        else:
            response = anyio.run(lambda: multiresp.client.aupload(f"{server.url}/up", entries))
    assert response.status_code == 200, response.text
    got = snapshot(tmp_path / "got")
    digests = {key: hashlib.sha256(data).hexdigest() for key, data in objects.items()}
    assert got == {"key-alone": None, "key-alone/big.bin": digests["up/big.bin"],
                   **{key[len("up/"):]: digest for key, digest in digests.items()}}  # fmt: skip
    if client == "upload":  # settled before the body: an exact length, not chunked
        assert "content-length" in sent[0] and "transfer-encoding" not in sent[0]


def test_an_upload_of_a_missing_object_fails_before_sending_naming_it(
    s3: S3Server, tmp_path: pathlib.Path, live_server: Any
) -> None:
    server = live_server(receiver_app(tmp_path / "got"))
    entry = Entry.from_object(s3.store(), "nowhere/gone.bin", "gone.bin")
    with pytest.raises(IntegrityError, match=r"'gone\.bin'.*'nowhere/gone\.bin'.*not found"):
        multiresp.client.upload(f"{server.url}/up", [entry])
    assert not (tmp_path / "got").exists() or not any((tmp_path / "got").iterdir())
