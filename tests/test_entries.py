from __future__ import annotations

import datetime as dt
import io
import os
import pathlib
import shutil
import tempfile
import zipfile
from collections.abc import Callable

import anyio
import pytest

from multiresp import Entry, UnsafeNameError, walk
from multiresp._entries import entries_for_path


def test_from_path_takes_size_mtime_and_type(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "report.json"
    path.write_bytes(b"{}")
    os.utime(path, ns=(1_700_000_000_123_456_789, 1_700_000_000_123_456_789))
    entry = Entry.from_path(path)
    assert (entry.name, entry.size, entry.media_type) == ("report.json", 2, "application/json")
    assert entry.mtime == dt.datetime(2023, 11, 14, 22, 13, 20, 123456, tzinfo=dt.timezone.utc)
    assert entry.mtime_ns == 1_700_000_000_123_456_789
    assert entry.rereadable
    assert Entry.from_path(path, "x/y.bin", media_type="a/b").media_type == "a/b"


def test_from_bytes_and_iter() -> None:
    entry = Entry.from_bytes(b"abc", "a.txt")
    assert (entry.size, entry.media_type, entry.mtime) == (3, "text/plain", None)
    stream = Entry.from_iter(iter([b"a"]), "b.bin")
    assert stream.size is None and not stream.rereadable

    async def agen():  # type: ignore[no-untyped-def]
        yield b"x"

    assert not Entry.from_iter(agen(), "c", size=1).rereadable
    with pytest.raises(TypeError):
        Entry.from_iter(b"bytes are not chunks", "d")
    with pytest.raises(ValueError, match="timezone-aware"):
        Entry.from_bytes(b"", "e", mtime=dt.datetime(2020, 1, 1))


@pytest.mark.parametrize("name", ["../x", "/abs", "a\\b", "C:x", "", "a//b", "./a"])
def test_unsafe_names_fail_at_construction(name: str) -> None:
    with pytest.raises(UnsafeNameError):
        Entry.from_bytes(b"", name)


def test_walk_lists_files_and_empty_dirs_inside_root(tmp_path: pathlib.Path) -> None:
    root = tmp_path / "root"
    (root / "a" / "b").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "a" / "x.txt").write_text("x")
    (root / "top.txt").write_text("t")
    outside = tmp_path / "secret.txt"
    outside.write_text("secret")
    (root / "escape").symlink_to(outside)
    (root / "inside").symlink_to(root / "top.txt")
    (root / "dirlink").symlink_to(tmp_path)
    os.mkfifo(root / "fifo")

    names = [e.name for e in walk(root)]
    assert names == ["a/b/", "a/x.txt", "empty/", "inside", "top.txt"]
    assert [e.name for e in walk(root, prefix="p")][:2] == ["p/a/b/", "p/a/x.txt"]
    with pytest.raises(UnsafeNameError):
        walk(root, prefix="../up")
    with pytest.raises(NotADirectoryError):
        walk(root / "top.txt")


@pytest.mark.parametrize(
    ("name", "media_type"),
    [
        ("a.txt", "text/plain"),
        ("x/b.JSON", "application/json"),
        ("c.tar.gz", "application/gzip"),
        ("scan.0001.png", "image/png"),
        (".bashrc", "application/octet-stream"),
        ("noext", "application/octet-stream"),
        ("dir/", "inode/directory"),
    ],
)
def test_media_type_is_guessed_from_the_last_suffix(name: str, media_type: str) -> None:
    assert Entry.from_bytes(b"", name).media_type == media_type


def test_walk_needs_no_recursion(tmp_path: pathlib.Path) -> None:
    depth = 1_200
    deep = str(tmp_path)
    for _ in range(depth):  # os.makedirs and Path.mkdir recurse
        deep += "/d"
        os.mkdir(deep)
    with open(deep + "/leaf.txt", "wb") as f:
        f.write(b"deep")
    (tmp_path / "top.txt").write_bytes(b"top")
    try:
        entries = walk(tmp_path)
        assert [e.name for e in entries] == ["d/" * depth + "leaf.txt", "top.txt"]
        assert entries[0].size == 4
    finally:  # pytest's clean-up of old temporary folders recurses: leave nothing this deep
        os.remove(deep + "/leaf.txt")
        while deep != str(tmp_path):
            os.rmdir(deep)
            deep = os.path.dirname(deep)


@pytest.fixture
def tmpfs(tmp_path: pathlib.Path) -> pathlib.Path:
    """A folder on tmpfs, which holds dates ext4 cannot (years beyond 2446)."""
    if not os.path.isdir("/dev/shm"):
        pytest.skip("no /dev/shm")
    folder = pathlib.Path(tempfile.mkdtemp(dir="/dev/shm"))
    yield folder  # type: ignore[misc]
    shutil.rmtree(folder)


def test_walk_clamps_dates_datetime_cannot_hold(tmpfs: pathlib.Path) -> None:
    late, early = tmpfs / "late.txt", tmpfs / "early.txt"
    late.write_bytes(b"late")
    early.write_bytes(b"early")
    year_11476 = (11476 - 1970) * 365 * 86_400  # seconds
    os.utime(late, (year_11476, year_11476))
    os.utime(early, (-70_000_000_000, -70_000_000_000))  # before year 1
    if late.stat().st_mtime_ns // 10**9 != year_11476:
        pytest.skip("this file system clamps the date itself")
    entries = {e.name: e for e in walk(tmpfs)}
    assert entries["late.txt"].mtime == dt.datetime.max.replace(tzinfo=dt.timezone.utc)
    assert entries["late.txt"].mtime_ns == late.stat().st_mtime_ns  # exact
    assert entries["early.txt"].mtime == dt.datetime.min.replace(tzinfo=dt.timezone.utc)
    assert entries["early.txt"].mtime_ns == early.stat().st_mtime_ns
    body = b"".join(_zip_body(list(entries.values())))
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        assert archive.testzip() is None
        dates = {info.filename: info.date_time for info in archive.infolist()}
    assert dates == {"early.txt": (1980, 1, 1, 0, 0, 0), "late.txt": (2107, 12, 31, 23, 59, 58)}


def _zip_body(entries: list[Entry]) -> list[bytes]:
    from multiresp._encoders import _ZipEncoder
    from multiresp._pump import Pump

    async def collect() -> list[bytes]:
        pieces: list[bytes] = []
        async for batch in Pump(entries, _ZipEncoder("store", None)).batches():
            pieces += batch
        return pieces

    return anyio.run(collect)


def test_a_folder_path_nests_under_its_name_as_zip_r_does(tmp_path: pathlib.Path) -> None:
    photos = tmp_path / "photos"
    (photos / "2026").mkdir(parents=True)
    (photos / "2026" / "a.jpg").write_bytes(b"a")
    (photos / "b.jpg").write_bytes(b"b")
    (tmp_path / "empty").mkdir()
    assert [e.name for e in entries_for_path(photos)] == ["photos/2026/a.jpg", "photos/b.jpg"]
    assert [e.name for e in entries_for_path(str(photos) + "/")] == [
        "photos/2026/a.jpg",
        "photos/b.jpg",
    ]
    assert [(e.name, e.is_dir) for e in entries_for_path(tmp_path / "empty")] == [("empty/", True)]
    assert [e.name for e in entries_for_path(f"{photos}/.")] == ["2026/a.jpg", "b.jpg"]
    assert [e.name for e in entries_for_path(photos / "b.jpg")] == ["b.jpg"]
    assert walk(tmp_path / "empty") == []  # no prefix: nothing to send
    assert [e.name for e in walk(tmp_path / "empty", prefix="x/y")] == ["x/y/"]


def test_modes_keep_permission_bits_only(tmp_path: pathlib.Path) -> None:
    script, plain, folder = tmp_path / "run.sh", tmp_path / "data.txt", tmp_path / "empty"
    script.write_bytes(b"#!/bin/sh\n")
    plain.write_bytes(b"x")
    folder.mkdir()
    os.chmod(script, 0o4755)  # setuid: never carried
    os.chmod(plain, 0o640)
    os.chmod(folder, 0o1750)  # sticky: never carried
    assert Entry.from_path(script).mode == 0o755
    assert Entry.from_path(plain).mode == 0o640
    assert Entry.from_path(folder).mode == 0o750
    assert {e.name: e.mode for e in walk(tmp_path)} == {
        "data.txt": 0o640,
        "empty/": 0o750,
        "run.sh": 0o755,
    }
    assert Entry.from_bytes(b"", "b").mode == 0o644
    assert Entry.from_bytes(b"", "d/").mode == 0o755
    assert Entry.from_iter([b""], "i").mode == 0o644
    with pytest.raises(ValueError, match="permission bits"):
        Entry("x", 0, None, "a/b", None, 0o4755)


def test_from_path_takes_an_mtime_override(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "a.txt"
    path.write_bytes(b"a")
    moment = dt.datetime(2021, 5, 6, 7, 8, 9, 123456, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    entry = Entry.from_path(path, mtime=moment)
    assert entry.mtime == moment
    assert entry.mtime_ns == 1_620_277_689_123_456_000
    assert entry.source.mtime_ns == path.stat().st_mtime_ns  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="timezone-aware"):
        Entry.from_path(path, mtime=dt.datetime(2021, 5, 6))
    body = b"".join(_zip_body([entry, Entry.from_bytes(b"b", "b.txt")]))
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        dates = [info.date_time for info in archive.infolist()]
    assert dates == [(2021, 5, 6, 5, 8, 8), (1980, 1, 1, 0, 0, 0)]  # DOS time: UTC, 2 s steps


@pytest.mark.parametrize(
    ("build", "parameter"),
    [
        (lambda: Entry.from_bytes(b"x", b"name"), "name"),  # type: ignore[arg-type]
        (lambda: Entry.from_bytes(b"x", 3), "name"),  # type: ignore[arg-type]
        (lambda: Entry.from_iter([b"x"], b"name"), "name"),  # type: ignore[arg-type]
        (lambda: Entry.from_path(b"/etc/hostname"), "path"),  # type: ignore[arg-type]
        (lambda: Entry.from_path(3), "path"),  # type: ignore[arg-type]
        (lambda: Entry.from_path("/etc/hostname", b"name"), "name"),  # type: ignore[arg-type]
        (lambda: walk(b"/tmp"), "root"),  # type: ignore[arg-type]
        (lambda: walk("/tmp", prefix=3), "prefix"),  # type: ignore[arg-type]
    ],
)
def test_a_bytes_or_int_name_or_path_is_a_type_error_naming_it(
    build: Callable[[], object], parameter: str
) -> None:
    with pytest.raises(TypeError, match=f"^{parameter} must be"):
        build()
