"""Exec bits from a zip's central directory, given back by the sink within the umask."""

from __future__ import annotations

import os
import pathlib
import stat
from collections.abc import Iterator

import pytest

from multiresp._events import Data, End, EntryEnd, EntryStart
from multiresp._modes import exec_bits, process_umask
from multiresp._sink import FileSink


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def write(sink: FileSink, name: str, data: bytes) -> None:
    sink.handle(
        [EntryStart(name=name, size=len(data)), Data(data), EntryEnd(name=name, size=len(data))]
    )


def mode_of(path: pathlib.Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_end_gives_back_exec_bits_and_nothing_else(tmp_path: pathlib.Path, umask_022: None) -> None:
    with FileSink(tmp_path) as sink:
        for name in ("run", "suid", "plain", "d/tool", "unlisted"):
            write(sink, name, b"#!/bin/sh\n")
        assert mode_of(tmp_path / "run") == 0o644  # nothing before End: modes come last
        modes = (("run", 0o755), ("suid", 0o777), ("plain", 0o644), ("d/tool", 0o700))
        sink.handle([End(modes=modes)])
    assert {p.name: mode_of(p) for p in tmp_path.rglob("*") if p.is_file()} == {
        "run": 0o755,
        "suid": 0o755,  # group/other write stay masked; no setuid/setgid/sticky ever
        "plain": 0o644,
        "tool": 0o744,
        "unlisted": 0o644,
    }


def test_a_file_replaced_after_it_was_saved_is_left_alone(
    tmp_path: pathlib.Path, umask_022: None
) -> None:
    outside = tmp_path / "outside"
    outside.write_bytes(b"not ours")
    outside.chmod(0o600)
    dest = tmp_path / "dest"
    with FileSink(dest) as sink:
        write(sink, "run", b"x")
        write(sink, "other", b"y")
        (dest / "run").unlink()
        (dest / "run").symlink_to(outside)
        (dest / "new").write_bytes(b"a new file")  # made while "other" exists: a new inode
        (dest / "new").replace(dest / "other")
        sink.handle([End(modes=(("run", 0o755), ("other", 0o755)))])
    assert mode_of(outside) == 0o600
    assert mode_of(dest / "other") == 0o644


def test_exec_bits_follow_the_umask_or_the_read_bits() -> None:
    assert exec_bits(0o755, 0o644, 0o022) == 0o111
    assert exec_bits(0o755, 0o600, 0o077) == 0o100
    assert exec_bits(0o711, 0o640, 0o033) == 0o100
    assert exec_bits(0o755, 0o640, None) == 0o110  # umask unknown: exec only where readable
    assert exec_bits(0o644, 0o644, 0o022) == 0


def test_the_umask_is_read_without_changing_it(umask_022: None) -> None:
    if not os.path.exists("/proc/self/status"):
        pytest.skip("no /proc: the sink falls back to the read bits")
    assert process_umask() == 0o022
    assert os.umask(0o022) == 0o022
