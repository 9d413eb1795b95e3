"""The safe file sink: names, symlinks, clashes, verification, limits, cleanup."""

from __future__ import annotations

import base64
import datetime as dt
import errno
import hashlib
import os
import pathlib
import threading
from collections.abc import Callable, Iterator

import pytest

from multiresp import IntegrityError, LimitExceeded, Limits, ProtocolError, UnsafeNameError, _sink
from multiresp._events import Data, EntryEnd, EntryStart, Event
from multiresp._sink import TEMP_SUFFIX, FileSink


@pytest.fixture(params=["dir_fd", "paths"])
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test with descriptor-relative calls (POSIX) and with checked path strings."""
    if request.param == "paths":
        monkeypatch.setattr(_sink, "_USE_DIR_FD", False)
        monkeypatch.setattr(_sink, "_TMPFILES", False)
    return str(request.param)


@pytest.fixture(params=["anonymous", "named", "paths"])
def temps(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Under the policies that never replace a file: with unnamed temporary files (Linux
    ``O_TMPFILE``), with hidden named ones (other POSIX systems), and with named ones on
    checked path strings (Windows)."""
    if request.param == "anonymous" and not _sink._TMPFILES:
        pytest.skip("no O_TMPFILE on this system")
    if request.param != "anonymous":
        monkeypatch.setattr(_sink, "_TMPFILES", False)
    if request.param == "paths":
        monkeypatch.setattr(_sink, "_USE_DIR_FD", False)
    return str(request.param)


def file_events(name: str, *chunks: bytes, declared: int | None = None) -> list[Event]:
    size = sum(map(len, chunks))
    return [
        EntryStart(name=name, size=declared),
        *(Data(chunk) for chunk in chunks),
        EntryEnd(name=name, size=size),
    ]


def dir_events(name: str) -> list[Event]:
    return [EntryStart(name=name, is_dir=True), EntryEnd(name=name, size=0)]


def tree(root: pathlib.Path) -> dict[str, bytes | None]:
    """Every path under ``root``: file contents, None for folders."""
    found: dict[str, bytes | None] = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root).as_posix()
        found[relative] = None if path.is_dir() and not path.is_symlink() else path.read_bytes()
    return found


def temp_files(root: pathlib.Path) -> list[pathlib.Path]:
    return [path for path in root.rglob("*") if path.name.endswith(TEMP_SUFFIX)]


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_writes_files_and_folders(tmp_path: pathlib.Path, mode: str) -> None:
    dest = tmp_path / "out"
    with FileSink(dest) as sink:
        sink.handle(
            [
                *file_events("a.txt", b"hello ", b"world"),
                *dir_events("empty/"),
                *file_events("deep/er/b.bin", b"\x00" * 70_000, b"\x01" * 3, declared=70_003),
                *file_events("zero", declared=0),
            ]
        )
    assert tree(dest) == {
        "a.txt": b"hello world",
        "deep": None,
        "deep/er": None,
        "deep/er/b.bin": b"\x00" * 70_000 + b"\x01" * 3,
        "empty": None,
        "zero": b"",
    }
    saved = {file.name: file for file in sink.saved}
    assert list(saved) == ["a.txt", "deep/er/b.bin", "zero"]
    assert saved["a.txt"].path == dest / "a.txt"
    assert saved["a.txt"].size == 11
    assert saved["a.txt"].sha256 == hashlib.sha256(b"hello world").hexdigest()
    assert saved["zero"].sha256 == hashlib.sha256(b"").hexdigest()


def test_sets_mtime(tmp_path: pathlib.Path) -> None:
    mtime = dt.datetime(2021, 5, 6, 7, 8, 9, tzinfo=dt.timezone.utc)
    with FileSink(tmp_path) as sink:
        sink.handle([EntryStart(name="m", mtime=mtime), Data(b"x"), EntryEnd(name="m", size=1)])
    assert (tmp_path / "m").stat().st_mtime == mtime.timestamp()


def test_temp_file_is_hidden_then_renamed(tmp_path: pathlib.Path, mode: str) -> None:
    with FileSink(tmp_path) as sink:
        sink.handle([EntryStart(name="sub/file.txt"), Data(b"abc")])
        (temp,) = temp_files(tmp_path)
        assert temp.parent == tmp_path / "sub"
        assert temp.name.startswith(".file.txt.")
        assert not (tmp_path / "sub" / "file.txt").exists()
        assert sink.current == "sub/file.txt"
        sink.handle([EntryEnd(name="sub/file.txt", size=3)])
    assert tree(tmp_path) == {"sub": None, "sub/file.txt": b"abc"}


def test_long_name_gets_a_short_temp_name(tmp_path: pathlib.Path) -> None:
    name = "é" * 127  # 254 bytes of UTF-8: the longest segment most file systems hold
    with FileSink(tmp_path) as sink:
        sink.handle(file_events(name, b"x"))
    assert (tmp_path / name).read_bytes() == b"x"


@pytest.mark.parametrize(
    "name", ["../evil", "/abs", "a/../../evil", "a//b", "./a", "C:/x", "a\\b", "nul\x00", "x" * 300]
)
def test_unsafe_names_refused_before_anything_is_written(
    tmp_path: pathlib.Path, name: str, mode: str
) -> None:
    dest = tmp_path / "dest"
    with FileSink(dest) as sink, pytest.raises(UnsafeNameError) as caught:
        sink.handle(file_events(name, b"data"))
    assert caught.value.entry == name
    assert tree(tmp_path) == {"dest": None}


def test_name_length_limit(tmp_path: pathlib.Path) -> None:
    with FileSink(tmp_path, limits=Limits(max_name_length=5)) as sink:
        sink.handle(file_events("12345", b""))
        with pytest.raises(UnsafeNameError, match="over the limit of 5"):
            sink.handle(file_events("123456", b""))


def test_symlinked_folder_pointing_outside_is_refused(tmp_path: pathlib.Path, mode: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "link").symlink_to(outside, target_is_directory=True)
    with FileSink(dest) as sink:
        with pytest.raises(UnsafeNameError, match="symbolic link") as caught:
            sink.handle(file_events("link/passwd", b"owned"))
        assert caught.value.entry == "link/passwd"
        with pytest.raises(UnsafeNameError, match="symbolic link"):
            sink.handle(file_events("link/deeper/x", b"owned"))
        with pytest.raises(UnsafeNameError, match="symbolic link"):
            sink.handle(dir_events("link/made/"))
    assert list(outside.iterdir()) == []
    assert temp_files(tmp_path) == []


def test_dangling_symlink_folder_is_refused(tmp_path: pathlib.Path, mode: str) -> None:
    target = tmp_path / "not-yet"
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "link").symlink_to(target)
    with FileSink(dest) as sink, pytest.raises(UnsafeNameError, match="symbolic link"):
        sink.handle(file_events("link/x", b"owned"))
    assert not target.exists()


def test_symlink_at_the_file_name_is_replaced_not_followed(
    tmp_path: pathlib.Path, mode: str
) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"precious")
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "x").symlink_to(outside)
    with FileSink(dest) as sink:
        sink.handle(file_events("x", b"new"))
    assert outside.read_bytes() == b"precious"
    assert not (dest / "x").is_symlink()
    assert (dest / "x").read_bytes() == b"new"


def test_existing_file_in_the_way_of_a_folder(tmp_path: pathlib.Path, mode: str) -> None:
    (tmp_path / "a").write_bytes(b"old")
    with FileSink(tmp_path) as sink, pytest.raises(UnsafeNameError, match="not a folder"):
        sink.handle(file_events("a/b", b"new"))
    assert (tmp_path / "a").read_bytes() == b"old"


def test_existing_folder_in_the_way_of_a_file(tmp_path: pathlib.Path, mode: str) -> None:
    (tmp_path / "a").mkdir()
    with FileSink(tmp_path) as sink, pytest.raises(UnsafeNameError, match="folder of that name"):
        sink.handle(file_events("a", b"new"))
    assert temp_files(tmp_path) == []


def test_existing_file_is_replaced(tmp_path: pathlib.Path) -> None:
    (tmp_path / "a").write_bytes(b"old")
    with FileSink(tmp_path) as sink:
        sink.handle(file_events("a", b"new"))
    assert (tmp_path / "a").read_bytes() == b"new"


@pytest.mark.parametrize(
    ("first", "second", "message"),
    [
        (file_events("a", b"1"), file_events("a", b"2"), "repeats"),
        (dir_events("d/"), dir_events("d/"), "repeats"),
        (file_events("a", b"1"), file_events("a/b", b"2"), "is a file of this transfer"),
        (file_events("a", b"1"), dir_events("a/"), "clashes with the file"),
        (file_events("a/b", b"1"), file_events("a", b"2"), "clashes with the folder"),
        (dir_events("a/"), file_events("a", b"2"), "clashes with the folder"),
    ],
    ids=[
        "file-twice",
        "dir-twice",
        "file-then-child",
        "file-then-dir",
        "child-then-file",
        "dir-file",
    ],
)
def test_duplicates_and_clashes_are_refused(
    tmp_path: pathlib.Path, first: list[Event], second: list[Event], message: str
) -> None:
    with FileSink(tmp_path) as sink:
        sink.handle(first)
        before = tree(tmp_path)
        with pytest.raises(UnsafeNameError, match=message) as caught:
            sink.handle(second)
    assert caught.value.entry == second[0].name  # type: ignore[union-attr]
    assert tree(tmp_path) == before


def test_implicit_folder_then_directory_entry_is_fine(tmp_path: pathlib.Path) -> None:
    with FileSink(tmp_path) as sink:
        sink.handle([*file_events("a/b", b"1"), *dir_events("a/")])
    assert tree(tmp_path) == {"a": None, "a/b": b"1"}


def test_two_names_for_one_file_are_refused(tmp_path: pathlib.Path) -> None:
    """What a case-insensitive file system does to ``A`` and ``a``, shown with a hard link."""
    with FileSink(tmp_path) as sink:
        sink.handle(file_events("a", b"first"))
        os.link(tmp_path / "a", tmp_path / "b")
        with pytest.raises(UnsafeNameError, match="already wrote"):
            sink.handle(file_events("b", b"second"))
    assert (tmp_path / "a").read_bytes() == b"first"
    assert temp_files(tmp_path) == []


def test_abort_mid_entry_leaves_nothing_and_keeps_earlier_files(
    tmp_path: pathlib.Path, mode: str
) -> None:
    sink = FileSink(tmp_path)
    sink.handle([*file_events("done.txt", b"complete"), EntryStart(name="sub/part"), Data(b"ha")])
    assert temp_files(tmp_path)
    sink.close()
    assert tree(tmp_path) == {"done.txt": b"complete"}
    assert [file.name for file in sink.saved] == ["done.txt"]


def test_abort_removes_only_the_folders_made_for_that_entry(
    tmp_path: pathlib.Path, mode: str
) -> None:
    with FileSink(tmp_path) as sink:
        sink.handle([*file_events("a/kept", b"1"), EntryStart(name="a/b/c/x"), Data(b"2")])
        assert (tmp_path / "a" / "b" / "c").is_dir()
    assert tree(tmp_path) == {"a": None, "a/kept": b"1"}


def test_abort_after_a_refused_folder_removes_what_it_made(
    tmp_path: pathlib.Path, mode: str
) -> None:
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "file").write_bytes(b"in the way")
    with FileSink(tmp_path) as sink, pytest.raises(UnsafeNameError, match="not a folder"):
        sink.handle(file_events("new/file/x", b"2"))
    assert tree(tmp_path) == {"new": None, "new/file": b"in the way"}
    with FileSink(tmp_path) as sink, pytest.raises(UnsafeNameError):
        sink.handle(file_events("made/../x", b"2"))
    assert tree(tmp_path) == {"new": None, "new/file": b"in the way"}


def test_error_in_context_manager_removes_temp(tmp_path: pathlib.Path) -> None:
    with pytest.raises(KeyError), FileSink(tmp_path) as sink:
        sink.handle([EntryStart(name="x"), Data(b"partial")])
        raise KeyError("boom")
    assert tree(tmp_path) == {}


@pytest.mark.parametrize(
    ("events", "message"),
    [
        ([EntryStart(name="x"), Data(b"abc"), EntryEnd(name="x", size=4)], "3 bytes written, 4"),
        ([EntryStart(name="x", size=5), Data(b"abc"), EntryEnd(name="x", size=3)], "5 expected"),
        ([EntryStart(name="x", size=2), Data(b"abc")], "more than its declared 2"),
    ],
    ids=["reader-count", "declared-short", "declared-long"],
)
def test_size_mismatch(tmp_path: pathlib.Path, events: list[Event], message: str) -> None:
    with FileSink(tmp_path) as sink, pytest.raises(IntegrityError, match=message) as caught:
        sink.handle(events)
    assert caught.value.entry == "x"
    assert tree(tmp_path) == {}


def sha256_header(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


@pytest.mark.parametrize(
    ("header", "template"),
    [
        ("repr-digest", "sha-256=:{}:"),
        ("content-digest", "sha-512=:AAAA:, sha-256=:{}:"),
        ("digest", "SHA-256={}"),
    ],
)
def test_part_digest_is_checked(tmp_path: pathlib.Path, header: str, template: str) -> None:
    good = template.format(sha256_header(b"right"))
    with FileSink(tmp_path) as sink:
        sink.handle(
            [
                EntryStart(name="ok", headers=((header, good),)),
                Data(b"right"),
                EntryEnd(name="ok", size=5),
            ]
        )
        with pytest.raises(IntegrityError, match="SHA-256"):
            sink.handle(
                [
                    EntryStart(name="bad", headers=((header, good),)),
                    Data(b"wrong"),
                    EntryEnd(name="bad", size=5),
                ]
            )
    assert tree(tmp_path) == {"ok": b"right"}


@pytest.mark.parametrize(
    ("limits", "events", "bound"),
    [
        (
            Limits(max_files=2),
            [*file_events("a"), *dir_events("b/"), *file_events("c")],
            "max_files",
        ),
        (Limits(max_file_size=3), file_events("a", b"ab", b"cd"), "max_file_size"),
        (Limits(max_file_size=3), file_events("a", b"a", declared=4), "max_file_size"),
        (
            Limits(max_total_size=5),
            [*file_events("a", b"abc"), *file_events("b", b"ab", b"c")],
            "max_total_size",
        ),
        (
            Limits(max_total_size=5),
            [*file_events("a", b"abc"), *file_events("b", b"", declared=3)],
            "max_total_size",
        ),
    ],
    ids=["files", "file-size", "file-size-declared", "total", "total-declared"],
)
def test_limits(tmp_path: pathlib.Path, limits: Limits, events: list[Event], bound: str) -> None:
    with FileSink(tmp_path, limits=limits) as sink, pytest.raises(LimitExceeded, match=bound):
        sink.handle(events)
    assert temp_files(tmp_path) == []
    for path in tmp_path.iterdir():  # what stayed is complete
        assert path.is_dir() or path.read_bytes() in (b"", b"abc")


def test_limits_default_protect(tmp_path: pathlib.Path) -> None:
    sink = FileSink(tmp_path)
    assert sink.limits == Limits()


def test_content_for_a_directory_is_refused(tmp_path: pathlib.Path) -> None:
    with FileSink(tmp_path) as sink, pytest.raises(ProtocolError, match="directory entry"):
        sink.handle([EntryStart(name="d/", is_dir=True), Data(b"x")])


def test_events_out_of_order_are_a_programming_error(tmp_path: pathlib.Path) -> None:
    with FileSink(tmp_path) as sink:
        with pytest.raises(RuntimeError, match="started before"):
            sink.handle([EntryStart(name="a"), EntryStart(name="b")])
        sink.abort()
        with pytest.raises(RuntimeError, match="ended"):
            sink.handle([EntryEnd(name="zzz", size=0)])


def test_many_folders_do_not_leak_descriptors(tmp_path: pathlib.Path) -> None:
    before = open_fds()

    def events() -> Iterator[Event]:
        for i in range(200):
            yield from file_events(f"d{i % 7}/e{i % 3}/f{i}", b"x")

    with FileSink(tmp_path) as sink:
        sink.handle(events())
        assert open_fds() <= before + 3
    assert open_fds() == before
    assert len(sink.saved) == 200


class ShortWriter:
    """os.writev that writes at most ``limit`` bytes per call, as a full disk or signal can."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.calls = 0

    def __call__(self, fd: int, buffers: list[bytes]) -> int:
        self.calls += 1
        data = b"".join(bytes(buffer) for buffer in buffers)[: self.limit]
        return os.write(fd, data)


def test_short_writes_are_resumed(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    writer = ShortWriter(7)
    monkeypatch.setattr(os, "writev", writer)
    chunks = [bytes([i]) * (i * 5) for i in range(1, 9)]
    with FileSink(tmp_path) as sink:
        sink.handle(file_events("f", *chunks))
    assert (tmp_path / "f").read_bytes() == b"".join(chunks)
    assert writer.calls > len(chunks)


def test_a_short_write_of_one_chunk_is_resumed(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A small file's one chunk goes to os.write as it is; what it did not take is written."""
    write = os.write
    calls: list[int] = []

    def short_write(fd: int, data: bytes) -> int:
        calls.append(len(data))
        return write(fd, memoryview(data)[:7])

    monkeypatch.setattr(os, "write", short_write)
    content = bytes(range(50))
    with FileSink(tmp_path) as sink:
        sink.handle(file_events("f", content))
    assert (tmp_path / "f").read_bytes() == content
    assert calls[:2] == [50, 43]


def test_one_writev_per_batch(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = os.writev

    def counting(fd: int, buffers: list[bytes]) -> int:
        calls.append(len(buffers))
        return real(fd, buffers)

    monkeypatch.setattr(os, "writev", counting)
    with FileSink(tmp_path) as sink:
        sink.handle(file_events("f", *[b"y" * 1000] * 100))
    assert calls == [100]


def hash_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == "multiresp-hash"]


def test_large_writes_are_hashed_on_a_thread_in_order(tmp_path: pathlib.Path) -> None:
    big = _sink.HASH_INLINE_MAX + 1
    small_then_big = [b"s" * 10, bytes(range(256)) * (big // 256 + 1), b"t" * big, b"u"]
    before = len(hash_threads())
    sink = FileSink(tmp_path)
    sink.handle([EntryStart(name="mixed"), Data(small_then_big[0])])
    assert len(hash_threads()) == before  # small writes do not start it
    sink.handle([Data(small_then_big[1])])
    assert len(hash_threads()) == before + 1
    sink.handle([Data(small_then_big[2]), Data(small_then_big[3])])
    content = b"".join(small_then_big)
    sink.handle([EntryEnd(name="mixed", size=len(content)), *file_events("next", b"n" * big)])
    sink.close()
    assert len(hash_threads()) == before  # close() stops it
    assert [(f.name, f.sha256) for f in sink.saved] == [
        ("mixed", hashlib.sha256(content).hexdigest()),
        ("next", hashlib.sha256(b"n" * big).hexdigest()),
    ]
    assert (tmp_path / "mixed").read_bytes() == content


def test_abort_while_hashing_on_the_thread(tmp_path: pathlib.Path) -> None:
    big = b"x" * (_sink.HASH_INLINE_MAX + 1)
    before = len(hash_threads())
    with FileSink(tmp_path) as sink:
        sink.handle([*file_events("kept", big), EntryStart(name="dropped"), Data(big), Data(big)])
    assert len(hash_threads()) == before
    assert tree(tmp_path) == {"kept": big}
    assert sink.saved[0].sha256 == hashlib.sha256(big).hexdigest()


def test_large_part_digest_is_checked_after_the_thread_hashed_it(
    tmp_path: pathlib.Path,
) -> None:
    data = os.urandom(_sink.HASH_INLINE_MAX * 3)
    header = ("content-digest", f"sha-256=:{sha256_header(data)}:")
    wrong = ("content-digest", f"sha-256=:{sha256_header(data + b'!')}:")
    with FileSink(tmp_path) as sink:
        sink.handle(
            [
                EntryStart(name="ok", headers=(header,)),
                Data(data),
                EntryEnd(name="ok", size=len(data)),
            ]
        )
        with pytest.raises(IntegrityError, match="SHA-256"):
            sink.handle(
                [
                    EntryStart(name="bad", headers=(wrong,)),
                    Data(data),
                    EntryEnd(name="bad", size=len(data)),
                ]
            )
    assert tree(tmp_path) == {"ok": data}


class FailingHasher:
    def update(self, data: bytes) -> None:
        raise MemoryError("no room to hash")


def test_a_failed_hash_update_fails_its_entry_only(tmp_path: pathlib.Path) -> None:
    big = b"x" * (_sink.HASH_INLINE_MAX + 1)
    with FileSink(tmp_path) as sink:
        sink.handle([EntryStart(name="failed")])
        assert isinstance(sink._current, _sink._OpenFile)
        sink._current.hasher = FailingHasher()  # type: ignore[assignment]
        with pytest.raises(MemoryError, match="no room"):
            sink.handle([Data(big), EntryEnd(name="failed", size=len(big))])
        sink.abort()
        sink.handle(file_events("next", big))
    assert tree(tmp_path) == {"next": big}
    assert sink.saved[0].sha256 == hashlib.sha256(big).hexdigest()


def test_the_attack_names_are_refused_by_default(tmp_path: pathlib.Path, mode: str) -> None:
    # 512 one-letter segments: a 1,023-character name, under max_name_length.
    name = "/".join(["a"] * 511) + "/f"
    with FileSink(tmp_path) as sink, pytest.raises(LimitExceeded, match="max_depth"):
        sink.handle(file_events(name, b""))
    assert tree(tmp_path) == {}


def test_folders_are_bounded_and_so_is_the_memory_that_tracks_them(
    tmp_path: pathlib.Path, mode: str
) -> None:
    limits = Limits(max_folders=300)
    with FileSink(tmp_path, limits=limits) as sink:
        with pytest.raises(LimitExceeded, match="max_folders") as caught:
            for index in range(200):
                segments = [f"e{index}", *(f"s{depth}" for depth in range(40))]
                sink.handle(file_events("/".join([*segments, "f"]), b""))
        assert len(sink._dirs) <= limits.max_folders
    assert caught.value.entry is not None and caught.value.entry.startswith("e7/")
    assert sum(1 for path in tmp_path.rglob("*") if path.is_dir()) <= limits.max_folders


def test_folders_shared_by_entries_count_once(tmp_path: pathlib.Path, mode: str) -> None:
    with FileSink(tmp_path, limits=Limits(max_folders=2)) as sink:
        for index in range(50):
            sink.handle(file_events(f"a/b/f{index}.txt", b"x"))
        sink.handle(dir_events("a/"))
        with pytest.raises(LimitExceeded, match="max_folders"):
            sink.handle(dir_events("c/"))
    assert len(sink.saved) == 50


@pytest.mark.parametrize("policy", ["skip", "error"])
def test_existing_files_are_kept_when_asked(
    tmp_path: pathlib.Path, mode: str, policy: _sink.IfExists
) -> None:
    (tmp_path / "a.txt").write_bytes(b"old")
    (tmp_path / "b.txt").write_bytes(b"old")
    with FileSink(tmp_path, if_exists=policy) as sink:
        if policy == "error":
            with pytest.raises(FileExistsError):
                sink.handle(file_events("a.txt", b"new"))
        else:
            sink.handle(file_events("a.txt", b"new"))
            with pytest.raises(IntegrityError):  # a skipped entry's bytes are still counted
                sink.handle([EntryStart(name="b.txt"), Data(b"xy"), EntryEnd(name="b.txt", size=1)])
    assert tree(tmp_path) == {"a.txt": b"old", "b.txt": b"old"}
    assert sink.saved == []
    assert temp_files(tmp_path) == []


def test_bad_arguments(tmp_path: pathlib.Path) -> None:
    with pytest.raises(TypeError, match="dest"):
        FileSink(b"x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="if_exists"):
        FileSink(tmp_path, if_exists="overwrite")  # type: ignore[arg-type]
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(NotADirectoryError, match="not a folder"):
        FileSink(tmp_path / "file")


@pytest.mark.parametrize(
    ("policy", "early", "stats"),
    [("replace", True, 1), ("error", True, 1), ("skip", True, 1), ("error", False, 0)],
)
def test_a_file_costs_at_most_one_stat(
    tmp_path: pathlib.Path,
    mode: str,
    monkeypatch: pytest.MonkeyPatch,
    policy: _sink.IfExists,
    early: bool,
    stats: int,
) -> None:
    """File creation is most of a small file's cost: "replace" checks the target once before
    its rename; "skip" and "error" once before writing; an upload's "error" (no check before
    writing) not at all, as its hard link refuses a taken name at the end."""
    calls: list[str] = []
    real_stat = os.stat

    def counting_stat(path: object, *args: object, **kwargs: object) -> os.stat_result:
        calls.append(str(path))
        return real_stat(path, *args, **kwargs)  # type: ignore[arg-type]

    with FileSink(tmp_path, if_exists=policy) as sink:
        sink._stat_before_error = early
        monkeypatch.setattr(_sink.os, "stat", counting_stat)
        for number in range(3):
            sink.handle(file_events(f"{number}.txt", b"data"))
        monkeypatch.undo()
    assert len(calls) == 3 * stats
    assert tree(tmp_path) == {f"{number}.txt": b"data" for number in range(3)}
    assert temp_files(tmp_path) == []


def _appear_at_close(
    monkeypatch: pytest.MonkeyPatch, sink: FileSink, make: Callable[[], object]
) -> None:
    """Call ``make`` when the sink takes the complete file's inode number, just before it
    closes it and gives it its name: after any check it could make before that."""
    real_fstat = os.fstat

    def fstat(fd: int) -> os.stat_result:
        if sink.current is not None and not getattr(fstat, "done", False):
            fstat.done = True  # type: ignore[attr-defined]
            make()
        return real_fstat(fd)

    monkeypatch.setattr(_sink.os, "fstat", fstat)


@pytest.mark.parametrize("policy", ["skip", "error"])
def test_a_file_that_appears_just_before_the_rename_is_never_replaced(
    tmp_path: pathlib.Path, temps: str, monkeypatch: pytest.MonkeyPatch, policy: _sink.IfExists
) -> None:
    """The name is given with a hard link, which the file system refuses over a taken name:
    no window between a check and a rename in which another file could be replaced."""
    with FileSink(tmp_path, if_exists=policy) as sink:
        _appear_at_close(monkeypatch, sink, lambda: (tmp_path / "a.txt").write_bytes(b"theirs"))
        with pytest.raises(FileExistsError, match="already in the destination"):
            sink.handle(file_events("a.txt", b"ours"))
        monkeypatch.undo()
    assert tree(tmp_path) == {"a.txt": b"theirs"}
    assert sink.saved == []


@pytest.mark.parametrize("policy", ["skip", "error"])
def test_a_folder_already_at_the_name_takes_it(
    tmp_path: pathlib.Path, temps: str, policy: _sink.IfExists
) -> None:
    """Under the policies that never replace, a folder at a file's name is a taken name,
    whether a stat looked before the write ("skip") or the hard link found it ("error")."""
    (tmp_path / "d").mkdir()
    with FileSink(tmp_path, if_exists=policy) as sink:
        if policy == "error":
            with pytest.raises(FileExistsError, match="already in the destination"):
                sink.handle(file_events("d", b"x"))
        else:
            sink.handle(file_events("d", b"x"))
    assert tree(tmp_path) == {"d": None}
    assert sink.saved == []
    assert temp_files(tmp_path) == []


def test_a_folder_or_our_own_file_appearing_before_the_link_is_named(
    tmp_path: pathlib.Path, temps: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A folder takes the name as a file does (as it would have before the transfer), but
    two names landing on one of our files is a name clash."""
    with FileSink(tmp_path, if_exists="error") as sink:
        _appear_at_close(monkeypatch, sink, lambda: (tmp_path / "d").mkdir())
        with pytest.raises(FileExistsError, match="already in the destination"):
            sink.handle(file_events("d", b"x"))
        monkeypatch.undo()
        sink.abort()  # as the readers' callers do after an error
        sink.handle(file_events("a", b"first"))
        _appear_at_close(monkeypatch, sink, lambda: os.link(tmp_path / "a", tmp_path / "b"))
        with pytest.raises(UnsafeNameError, match="already wrote"):
            sink.handle(file_events("b", b"second"))
        monkeypatch.undo()
    assert tree(tmp_path) == {"a": b"first", "b": b"first", "d": None}
    assert temp_files(tmp_path) == []


@pytest.mark.parametrize("code", [errno.EPERM, errno.EOPNOTSUPP, errno.EINVAL])
def test_without_hard_links_files_are_renamed_after_a_check(
    tmp_path: pathlib.Path, mode: str, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    """FAT and some network file systems refuse hard links: the sink renames instead."""
    monkeypatch.setattr(_sink, "_TMPFILES", False)  # these have no O_TMPFILE either
    links: list[object] = []

    def no_link(*args: object, **kwargs: object) -> None:
        links.append(args)
        raise OSError(code, "no hard links here")

    monkeypatch.setattr(_sink.os, "link", no_link)
    with FileSink(tmp_path, if_exists="error") as sink:
        for number in range(3):
            sink.handle(file_events(f"{number}.txt", b"data"))
        _appear_at_close(monkeypatch, sink, lambda: (tmp_path / "late").write_bytes(b"theirs"))
        with pytest.raises(FileExistsError, match="already in the destination"):
            sink.handle(file_events("late", b"ours"))
    assert len(links) == 1  # tried once, then never again in this sink
    assert tree(tmp_path) == {
        **{f"{number}.txt": b"data" for number in range(3)},
        "late": b"theirs",
    }
    assert temp_files(tmp_path) == []


def test_a_link_whose_temporary_name_cannot_be_removed_is_undone(
    tmp_path: pathlib.Path, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_sink, "_TMPFILES", False)  # an unnamed file has no such name
    """The file would have two names and not be listed in ``saved``: an upload could not
    roll it back. Its final name goes, and the error is raised."""
    real_unlink = os.unlink
    failed: list[str] = []

    def unlink(path: str, *args: object, **kwargs: object) -> None:
        if path.endswith(TEMP_SUFFIX) and not failed:
            failed.append(path)
            raise PermissionError(errno.EACCES, "refused", path)
        real_unlink(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(_sink.os, "unlink", unlink)
    with FileSink(tmp_path, if_exists="error") as sink, pytest.raises(PermissionError):
        sink.handle(file_events("a.txt", b"data"))
    assert failed
    assert tree(tmp_path) == {}
    assert sink.saved == []


def test_a_file_that_appears_during_its_entry_is_refused_under_error(
    tmp_path: pathlib.Path, mode: str
) -> None:
    with FileSink(tmp_path, if_exists="error") as sink:
        sink.start(EntryStart(name="a.txt"))
        sink.write([b"new"])
        (tmp_path / "a.txt").write_bytes(b"someone else's")
        with pytest.raises(FileExistsError, match="already in the destination"):
            sink.end(EntryEnd(name="a.txt", size=3))
    assert tree(tmp_path) == {"a.txt": b"someone else's"}
    assert temp_files(tmp_path) == []


def test_no_replace_policies_write_to_an_unnamed_file(tmp_path: pathlib.Path) -> None:
    """Under "error" and "skip" a file has no name until it is complete (Linux O_TMPFILE):
    nothing partial is ever visible, nothing to remove on a failure, and one directory
    change per file instead of three."""
    if not _sink._TMPFILES:
        pytest.skip("no O_TMPFILE on this system")
    with FileSink(tmp_path / "named") as named:
        named.handle(file_events("a.txt", b"mode"))
    with FileSink(tmp_path / "d", if_exists="error") as sink:
        sink.handle([EntryStart(name="sub/a.txt"), Data(b"half")])
        assert tree(tmp_path / "d") == {"sub": None}  # no name at all yet
        sink.handle([Data(b" and half"), EntryEnd(name="sub/a.txt", size=13)])
        sink.handle([EntryStart(name="b.txt"), Data(b"cut")])
    assert tree(tmp_path / "d") == {"sub": None, "sub/a.txt": b"half and half"}
    made = (tmp_path / "d" / "sub" / "a.txt").stat()
    assert made.st_mode == (tmp_path / "named" / "a.txt").stat().st_mode  # umask applied
    assert made.st_nlink == 1


@pytest.mark.parametrize("code", [errno.EOPNOTSUPP, errno.EISDIR])
def test_without_o_tmpfile_the_sink_names_its_temporary_files(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    """A file system without O_TMPFILE (or a kernel before 3.11, which reads it as
    O_DIRECTORY): named temporary files from then on, the first entry included."""
    if not hasattr(os, "O_TMPFILE") or not _sink._USE_DIR_FD:
        pytest.skip("no O_TMPFILE on this system")
    real_open = os.open
    refused: list[int] = []

    def open_(path: str, flags: int, *args: object, **kwargs: object) -> int:
        if flags & _sink._TMPFILE_FLAGS == _sink._TMPFILE_FLAGS:
            refused.append(flags)
            raise OSError(code, "not here")
        return real_open(path, flags, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(_sink, "_TMPFILES", True)
    monkeypatch.setattr(_sink.os, "open", open_)
    with FileSink(tmp_path, if_exists="error") as sink:
        sink.handle([EntryStart(name="a"), Data(b"1")])
        assert len(temp_files(tmp_path)) == 1
        sink.handle([EntryEnd(name="a", size=1), *file_events("b", b"2")])
    assert len(refused) == 1
    assert tree(tmp_path) == {"a": b"1", "b": b"2"}
