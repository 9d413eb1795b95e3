"""The CRC cache: an LRU per process, in front of a file shared by the processes of one host."""

from __future__ import annotations

import dataclasses
import logging
import os
import pathlib
import sqlite3
import subprocess
import sys
import textwrap
import zlib
from collections.abc import Iterator

import pytest

import multiresp
from multiresp import Entry, _crccache, _fs
from multiresp._crccache import ENV_VAR, RACY_NS, TABLE, CrcCache, CrcKey
from multiresp._fs import PathSource

OLD = RACY_NS + 1  # a read started this late finds a fake source (times 0) old enough


def fake(n: int) -> PathSource:
    """A file that is never opened: only its key matters here."""
    return PathSource(f"/nowhere/{n}", size=n, mtime_ns=0, inode=n, device=1, ctime_ns=0)


def source_of(path: pathlib.Path) -> PathSource:
    source = Entry.from_path(path).source
    assert isinstance(source, PathSource)
    return source


def settled(source: PathSource) -> int:
    """A read start late enough that ``source`` counts as unchanged for long before it."""
    return max(source.mtime_ns, source.ctime_ns) + RACY_NS + 1


def rows(path: pathlib.Path) -> int:
    with sqlite3.connect(path) as connection:
        (count,) = connection.execute(f"SELECT count(*) FROM {TABLE}").fetchone()
    return int(count)


@dataclasses.dataclass(frozen=True)
class StoredObject:
    """An object in a store, as a later source kind will name it."""

    bucket: str
    key: str
    etag: str
    size: int

    @property
    def crc_key(self) -> CrcKey:
        return ("s3", 1, self.bucket, self.key, self.etag, self.size)


@pytest.fixture
def db(tmp_path: pathlib.Path) -> pathlib.Path:
    return tmp_path / "crc.sqlite"


def test_a_crc_put_by_one_cache_is_found_by_another_through_the_file(db: pathlib.Path) -> None:
    one, other = CrcCache(path=db), CrcCache(path=db)
    one.put(fake(1), 0x1234, read_from_ns=OLD)
    assert other.get(fake(1)) == 0x1234
    assert other.get(fake(2)) is None
    assert CrcCache().get(fake(1)) is None  # without the file, memory only


def test_the_environment_variable_turns_it_on_at_first_use(
    db: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = CrcCache(from_env=True)
    monkeypatch.setenv(ENV_VAR, str(db))  # after the cache was made, before its first use
    cache.put(fake(1), 7, read_from_ns=OLD)
    assert CrcCache(path=db).get(fake(1)) == 7
    monkeypatch.delenv(ENV_VAR)
    db.unlink()
    CrcCache(from_env=True).put(fake(1), 7, read_from_ns=OLD)
    assert not db.exists()


@pytest.fixture
def shared_cache() -> Iterator[CrcCache]:
    cache = _crccache.crc_cache
    saved = cache._store, cache._from_env
    yield cache
    cache._store, cache._from_env = saved


def test_use_crc_cache_turns_on_the_pumps_cache(db: pathlib.Path, shared_cache: CrcCache) -> None:
    assert _fs.crc_cache is shared_cache  # what every file source asks
    multiresp.use_crc_cache(db, max_entries=10)
    shared_cache.put(fake(3), 33, read_from_ns=OLD)
    assert CrcCache(path=db).get(fake(3)) == 33
    multiresp.use_crc_cache(None)
    shared_cache.put(fake(4), 44, read_from_ns=OLD)
    assert CrcCache(path=db).get(fake(4)) is None
    with pytest.raises(ValueError, match="max_entries"):
        multiresp.use_crc_cache(db, max_entries=0)


def test_a_changed_file_is_a_miss(tmp_path: pathlib.Path, db: pathlib.Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"a" * 1000)
    before = source_of(path)
    cache = CrcCache(path=db)
    cache.put(before, zlib.crc32(path.read_bytes()), read_from_ns=settled(before))
    assert cache.get(before) == CrcCache(path=db).get(before) == zlib.crc32(b"a" * 1000)
    st = path.stat()
    with open(path, "r+b") as f:  # same size, mtime restored: only the ctime says it changed
        f.write(b"b")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    rewritten = source_of(path)
    path.unlink()
    path.write_bytes(b"c" * 1000)  # another file under the same name
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    replaced = source_of(path)
    for after in (rewritten, replaced):
        assert after.key != before.key
        assert cache.get(after) is None
        assert CrcCache(path=db).get(after) is None


def test_a_file_changed_just_before_its_read_is_not_remembered(
    tmp_path: pathlib.Path, db: pathlib.Path
) -> None:
    """A write in the same clock tick as the change before it leaves the key as it was: a
    CRC is kept only for a file that had not changed for RACY_SECONDS when its read began."""
    path = tmp_path / "fresh.bin"
    path.write_bytes(b"x" * 100)
    source = source_of(path)
    cache = CrcCache(path=db)
    assert cache.get(source) is None  # the pump asks first: this dates the read
    cache.put(source, 1)
    assert cache.get(source) is None
    assert CrcCache(path=db).get(source) is None
    cache.put(source, 2)  # no read dated: not kept either
    assert cache.get(source) is None
    cache.put(source, 3, read_from_ns=settled(source) - 2)
    assert cache.get(source) is None
    cache.put(source, 4, read_from_ns=settled(source))
    assert cache.get(source) == CrcCache(path=db).get(source) == 4


def test_an_old_file_is_remembered_from_the_get_that_missed(db: pathlib.Path) -> None:
    cache = CrcCache(path=db)
    assert cache.get(fake(5)) is None  # the time now is long after the fake's times (0)
    cache.put(fake(5), 55)
    assert CrcCache(path=db).get(fake(5)) == 55


def test_file_keys_hold_only_within_one_boot_of_one_host(
    db: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Device numbers mean one file system only within one boot: a cache file copied to
    another host, shared with one, or read after a reboot answers nothing for files."""
    stored = StoredObject("bucket", "a/b.bin", '"etag"', 5)
    CrcCache(path=db).put(fake(6), 66, read_from_ns=OLD)
    CrcCache(path=db).put(stored, 77)  # an object's key is global: no racy rule, no host
    assert _crccache.host_scope().startswith("boot:")  # Linux gives a boot id
    monkeypatch.setattr(_crccache, "host_scope", lambda: "boot:another")
    assert CrcCache(path=db).get(fake(6)) is None
    assert CrcCache(path=db).get(stored) == 77
    assert CrcCache(path=db).get(dataclasses.replace(stored, etag='"other"')) is None


def test_the_file_is_bounded(db: pathlib.Path) -> None:
    cache = CrcCache(path=db, max_entries=100)
    sizes = []
    for n in range(3000):
        cache.put(fake(n), n, read_from_ns=OLD)
        if n in (999, 2999):
            sizes.append(db.stat().st_size)
    assert rows(db) == 100
    fresh = CrcCache(path=db)
    assert [fresh.get(fake(n)) for n in range(2900, 3000)] == list(range(2900, 3000))
    assert fresh.get(fake(2899)) is None
    assert sizes[1] <= sizes[0] * 1.2  # the space of deleted rows is reused
    assert sum(p.stat().st_size for p in db.parent.iterdir()) < 8 << 20  # with the WAL


def test_rows_in_use_outlive_the_rest(db: pathlib.Path) -> None:
    writer = CrcCache(path=db, max_entries=100)
    writer.put(fake(0), 1000, read_from_ns=OLD)
    writer.put(fake(1), 1001, read_from_ns=OLD)
    for n in range(2, 1000):
        writer.put(fake(n), n, read_from_ns=OLD)
        if n % 10 == 0:
            assert CrcCache(path=db, max_entries=100).get(fake(0)) == 1000  # a new process
    assert CrcCache(path=db).get(fake(0)) == 1000
    assert CrcCache(path=db).get(fake(1)) is None
    assert rows(db) <= 100


WORKER = """
import random, sys, zlib
from multiresp._crccache import CrcCache
from multiresp._fs import PathSource

path, seed = sys.argv[1], int(sys.argv[2])
rng = random.Random(seed)
wrong = hits = 0
for i in range(400):
    cache = CrcCache(path=path, max_entries=150) if i % 50 == 0 else cache  # new processes
    n = rng.randrange(300)
    source = PathSource(f"/nowhere/{n}", n, 0, n, 1, 0)
    expected = zlib.crc32(str(n).encode())
    if rng.random() < 0.5:
        cache.put(source, expected, read_from_ns=10**18)
    else:
        crc = cache.get(source)
        hits += crc is not None
        wrong += crc not in (None, expected)
print(hits, wrong)
"""


def test_processes_share_the_file_at_once_without_error_or_wrong_value(
    db: pathlib.Path,
) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(WORKER), str(db), str(seed)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for seed in range(4)
    ]
    results = [worker.communicate(timeout=120) for worker in workers]
    for worker, (out, err) in zip(workers, results, strict=True):
        assert worker.returncode == 0, err
        assert not err  # no warning: the file never failed
        hits, wrong = map(int, out.split())
        assert wrong == 0
        assert hits > 0
    assert rows(db) <= 150
    with sqlite3.connect(db) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)


@pytest.mark.parametrize("kind", ["corrupt", "unopenable"])
def test_a_file_that_cannot_be_used_falls_back_to_memory_and_warns_once(
    kind: str, tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    if kind == "corrupt":
        path = tmp_path / "crc.sqlite"
        path.write_bytes(b"not a database, " * 1000)
    else:
        (tmp_path / "file").write_bytes(b"")
        path = tmp_path / "file" / "crc.sqlite"  # its folder is a file
    cache = CrcCache(path=path)
    with caplog.at_level(logging.WARNING, logger="multiresp"):
        assert cache.get(fake(1)) is None
        cache.put(fake(1), 11, read_from_ns=OLD)
        cache.put(fake(2), 22, read_from_ns=OLD)
        assert (cache.get(fake(1)), cache.get(fake(2)), cache.get(fake(3))) == (11, 22, None)
    warnings = [r for r in caplog.records if r.name == "multiresp"]
    assert len(warnings) == 1
    assert str(path) in warnings[0].getMessage()
    assert "memory only" in warnings[0].getMessage()
    if kind == "corrupt":
        assert path.read_bytes() == b"not a database, " * 1000  # left as it was


@pytest.mark.skipif(os.name != "posix", reason="POSIX owners and modes")
@pytest.mark.parametrize("rule", ["mode", "file", "owner", "folder", "wal"])
def test_a_file_others_could_write_is_not_used(
    rule: str, tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Whoever can write the cache file decides the CRC-32 a zip declares: a file another
    user could have written (or put there) is left alone, with a warning naming the rule."""
    folder = tmp_path / "cache"
    folder.mkdir()
    path = folder / "crc.sqlite"
    planted = CrcCache(path=path)
    planted.put(fake(1), 11, read_from_ns=OLD)  # a row someone else may have written
    if rule == "mode":
        path.chmod(0o666)
    elif rule == "file":
        (folder / "elsewhere.sqlite").write_bytes(path.read_bytes())
        path.unlink()
        path.symlink_to(folder / "elsewhere.sqlite")
    elif rule == "owner":
        if os.geteuid() != 0:
            pytest.skip("only root can give a file to another user")
        os.chown(path, 65534, 65534)
    elif rule == "folder":
        folder.chmod(0o777)  # anyone may replace the file, no sticky bit
    else:
        (folder / "crc.sqlite-wal").write_bytes(b"")
        (folder / "crc.sqlite-wal").chmod(0o666)
    cache = CrcCache(path=path)
    with caplog.at_level(logging.WARNING, logger="multiresp"):
        assert cache.get(fake(1)) is None  # the planted row is not taken
        cache.put(fake(2), 22, read_from_ns=OLD)
        assert cache.get(fake(2)) == 22  # the memory layer goes on
    warnings = [r.getMessage() for r in caplog.records if r.name == "multiresp"]
    assert len(warnings) == 1 and f"({rule if rule != 'wal' else 'mode'} rule)" in warnings[0]


@pytest.mark.skipif(os.name != "posix", reason="POSIX owners and modes")
def test_a_private_file_in_a_sticky_folder_is_used(tmp_path: pathlib.Path) -> None:
    folder = tmp_path / "shared"
    folder.mkdir()
    folder.chmod(0o1777)  # as /tmp and /var/tmp: anyone may add files, none replace another's
    path = folder / "crc.sqlite"
    CrcCache(path=path).put(fake(1), 11, read_from_ns=OLD)
    assert CrcCache(path=path).get(fake(1)) == 11
