"""Files are read only as listed: beneath their walk's root, never through a link swapped in,
never blocking on a FIFO, and only while they are the same regular file (device, inode, size,
mtime, ctime). Each test runs on the openat2 path and on the per-segment fallback."""

from __future__ import annotations

import os
import pathlib
import shutil
import threading
from collections.abc import Callable

import pytest

from multiresp import (
    Entry,
    IntegrityError,
    _fs,
    _pace,
    walk,
)
from multiresp._crccache import CrcCache
from multiresp._entries import PathSource

from conftest import IN_CI

SMALL = b"listed content\n"
SECRET = b"-----BEGIN OPENSSH PRIVATE KEY----- not to be sent\n"
BIG = _pace.READ_BLOCK + 12_345  # read in blocks, its CRC computed ahead


@pytest.fixture(params=["openat2", "segments"])
def opener(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Which way files are opened: openat2, or the O_NOFOLLOW walk per segment."""
    if request.param == "openat2":
        if not _fs.openat2_available():
            message = "this kernel has no openat2 (Linux 5.6+)"
            if IN_CI:
                pytest.fail(message + " and CI=true requires it")
            pytest.skip(message)
    else:
        monkeypatch.setattr(_fs, "USE_OPENAT2", False)
    return str(request.param)


@pytest.fixture
def secret(tmp_path: pathlib.Path) -> pathlib.Path:
    """A file outside the served folder, standing for ~/.ssh/id_rsa."""
    outside = tmp_path / "home" / ".ssh"
    outside.mkdir(parents=True)
    (outside / "id_rsa").write_bytes(SECRET)
    (outside / "big.bin").write_bytes(SECRET * (BIG // len(SECRET) + 1))
    return outside / "id_rsa"


@pytest.fixture
def root(tmp_path: pathlib.Path) -> pathlib.Path:
    served = tmp_path / "served"
    (served / "sub").mkdir(parents=True)
    (served / "a.txt").write_bytes(SMALL)
    (served / "sub" / "b.txt").write_bytes(SMALL)
    (served / "sub" / "big.bin").write_bytes(os.urandom(BIG))
    return served


def read(entry: Entry) -> bytes:
    """The entry's bytes as the pump reads them (small files whole, large ones by blocks)."""
    source = entry.source
    assert isinstance(source, PathSource)
    if source.size <= _pace.READ_BLOCK:
        return source.read_all(entry)
    reader = source.open(entry)
    try:
        return b"".join(reader.read(source.size))
    finally:
        reader.close()


def crc(entry: Entry) -> int:
    """The entry's CRC as the CRC-ahead pool computes it."""
    assert isinstance(entry.source, PathSource)
    return entry.source.crc(entry, threading.Event())


READERS: list[Callable[[Entry], object]] = [read, crc]


def by_name(entries: list[Entry]) -> dict[str, Entry]:
    return {entry.name: entry for entry in entries}


def test_walked_files_read_back(
    opener: str, root: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object) -> int:
        raise AssertionError("the fallback ran where openat2 was to be used")

    if opener == "openat2":
        monkeypatch.setattr(_fs, "_open_by_segments", refuse)
    entries = by_name(walk(root))
    assert read(entries["a.txt"]) == read(entries["sub/b.txt"]) == SMALL
    assert read(entries["sub/big.bin"]) == (root / "sub" / "big.bin").read_bytes()


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("name", ["a.txt", "sub/b.txt", "sub/big.bin"])
def test_a_file_swapped_for_a_link_out_is_refused(
    opener: str,
    root: pathlib.Path,
    secret: pathlib.Path,
    name: str,
    reader: Callable[[Entry], object],
) -> None:
    entry = by_name(walk(root))[name]
    path = root / name
    path.unlink()
    path.symlink_to(secret if name.endswith(".txt") else secret.with_name("big.bin"))
    with pytest.raises(IntegrityError, match="symbolic link") as caught:
        reader(entry)
    assert caught.value.entry == name


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("name", ["sub/b.txt", "sub/big.bin"])
def test_a_folder_swapped_for_a_link_out_is_refused(
    opener: str,
    root: pathlib.Path,
    secret: pathlib.Path,
    name: str,
    reader: Callable[[Entry], object],
) -> None:
    entry = by_name(walk(root))[name]
    outside = secret.parent
    shutil.copy(secret, outside / "b.txt")
    shutil.rmtree(root / "sub")
    (root / "sub").symlink_to(outside)
    with pytest.raises(IntegrityError, match="symbolic link") as caught:
        reader(entry)
    assert caught.value.entry == name


@pytest.mark.parametrize("reader", READERS)
def test_a_file_replaced_by_another_is_refused(
    opener: str, root: pathlib.Path, reader: Callable[[Entry], object]
) -> None:
    """Same size, same mtime, another inode: a rename over the listed file."""
    entry = by_name(walk(root))["sub/big.bin"]
    path = root / "sub" / "big.bin"
    st = path.stat()
    other = root / "other.bin"
    other.write_bytes(os.urandom(st.st_size))
    os.utime(other, ns=(st.st_atime_ns, st.st_mtime_ns))
    other.replace(path)
    with pytest.raises(IntegrityError, match=r"device/inode check"):
        reader(entry)


def test_a_root_renamed_away_and_replaced_is_refused(opener: str, root: pathlib.Path) -> None:
    entry = by_name(walk(root))["a.txt"]
    root.rename(root.with_name("moved"))
    root.mkdir()
    (root / "a.txt").write_bytes(SMALL)
    with pytest.raises(IntegrityError, match=r"device/inode check"):
        read(entry)


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("name", ["a.txt", "sub/big.bin"])
def test_a_fifo_swapped_in_is_refused_without_blocking(
    opener: str, root: pathlib.Path, name: str, reader: Callable[[Entry], object]
) -> None:
    entry = by_name(walk(root))[name]
    (root / name).unlink()
    os.mkfifo(root / name)
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            reader(entry)
        except BaseException as error:
            outcome.append(error)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(30)  # a blocked open never returns; the fix answers at once
    if worker.is_alive():  # unblock the thread, then fail
        with open(root / name, "wb"):
            pass
        pytest.fail("opening the FIFO blocked")
    assert len(outcome) == 1 and isinstance(outcome[0], IntegrityError), outcome
    assert "regular-file check" in str(outcome[0]) and outcome[0].entry == name


def test_a_named_file_is_opened_by_its_path_and_checked(
    tmp_path: pathlib.Path, secret: pathlib.Path
) -> None:
    """``Entry.from_path`` has no root: its path is followed as named, and the file found
    must still be the one the entry was built from."""
    path = tmp_path / "named.txt"
    path.write_bytes(SMALL)
    link = tmp_path / "link.txt"
    link.symlink_to(path)
    assert read(Entry.from_path(link)) == SMALL  # the application named a link: followed
    entry = Entry.from_path(path)
    path.unlink()
    path.symlink_to(secret)
    with pytest.raises(IntegrityError, match=r"device/inode check"):
        read(entry)
    path.unlink()
    os.mkfifo(path)
    with pytest.raises(IntegrityError, match=r"regular-file check"):
        read(entry)


def test_links_inside_the_root_are_read_by_their_target(
    opener: str, root: pathlib.Path, secret: pathlib.Path
) -> None:
    (root / "alias.txt").symlink_to("sub/b.txt")  # relative, inside
    (root / "absolute.txt").symlink_to(root / "a.txt")  # absolute, inside
    entries = by_name(walk(root))
    assert read(entries["alias.txt"]) == read(entries["absolute.txt"]) == SMALL
    source = entries["alias.txt"].source
    assert isinstance(source, PathSource) and source.relative == "sub/b.txt"
    (root / "alias.txt").unlink()
    (root / "alias.txt").symlink_to(secret)  # re-pointed out: the listed target is read
    assert read(entries["alias.txt"]) == SMALL


def test_an_in_place_rewrite_that_restores_size_and_mtime_is_seen(root: pathlib.Path) -> None:
    """``cp -p``, ``rsync -t`` and ``tar x`` leave size and mtime as they were; the ctime
    still moves, and both the open check and the CRC cache key on it."""
    path = root / "sub" / "big.bin"
    before = by_name(walk(root))["sub/big.bin"]
    old_crc = crc(before)
    st = path.stat()
    with open(path, "r+b") as f:
        f.write(b"\x00" * 4096)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    with pytest.raises(IntegrityError, match="ctime"):
        read(before)
    after = by_name(walk(root))["sub/big.bin"]
    assert after.source is not None and after.source.known_crc() is None
    assert crc(after) != old_crc


def test_scan_needs_no_recursion(tmp_path: pathlib.Path) -> None:
    deep = tmp_path / "/".join(["d"] * 50)
    deep.mkdir(parents=True)
    found = [relative for _, relative, _ in _fs.scan(str(tmp_path))]
    assert found == ["", *("d/" * n for n in range(1, 51))]


# The modules that read the shared CRC cache: each binds it at import.
CRC_CACHE_READERS = (_fs,)


@pytest.fixture(autouse=True)
def _fresh_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with an empty CRC cache (inode numbers are reused across tests)."""
    fresh = CrcCache()
    for module in CRC_CACHE_READERS:
        monkeypatch.setattr(module, "crc_cache", fresh)


def test_a_file_or_folder_gone_is_an_integrity_error(opener: str, root: pathlib.Path) -> None:
    entries = by_name(walk(root))
    (root / "a.txt").unlink()
    shutil.rmtree(root / "sub")
    (root / "sub").write_bytes(b"a file where the folder was")
    for name, rule in (("a.txt", "existence check"), ("sub/b.txt", "beneath-root rule")):
        with pytest.raises(IntegrityError, match=rule) as caught:
            read(entries[name])
        assert caught.value.entry == name
