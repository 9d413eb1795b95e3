from __future__ import annotations

import datetime as dt
import os
import pathlib

import pytest

from multiresp import Entry, UnsafeNameError, walk


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
