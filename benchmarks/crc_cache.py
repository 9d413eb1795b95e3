"""What a lookup in the CRC cache costs, next to reading a file for its CRC.

A file larger than one read block (``READ_BLOCK``, 4 MiB) is read an extra time for its CRC
unless the cache knows it, so the reference is the CRC of a page-cached file of that size
(the least a lookup can save) and of 64 MiB, measured in the same run. The shared file is
filled to its default bound first. Run: ``.venv/bin/python benchmarks/crc_cache.py``.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import tempfile
import time
import zlib
from collections.abc import Callable

from multiresp._crccache import STORE_ENTRIES, CrcCache
from multiresp._filecrc import CRC_PIECE
from multiresp._fs import PathSource
from multiresp._pace import READ_BLOCK

LATE = 1 << 62  # a read start after every fake source's times: each counts as settled


def fake(n: int) -> PathSource:
    return PathSource(f"/nowhere/{n}", n, 0, n, 1, 0)


def per_call(call: Callable[[int], object], count: int) -> float:
    """Seconds per call, the best of three rounds."""
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for i in range(count):
            call(i)
        best = min(best, (time.perf_counter() - start) / count)
    return best


def file_crc(path: pathlib.Path) -> int:
    crc = 0
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(CRC_PIECE):
            crc = zlib.crc32(chunk, crc)
    return crc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=STORE_ENTRIES, help="rows in the file")
    args = parser.parse_args()
    rows = args.rows
    with tempfile.TemporaryDirectory() as tmp:
        folder = pathlib.Path(tmp)
        db = folder / "crc.sqlite"
        cache = CrcCache(path=db, max_entries=rows)
        start = time.perf_counter()
        for n in range(rows):
            cache.put(fake(n), n, read_from_ns=LATE)
        put = (time.perf_counter() - start) / rows
        size = sum(p.stat().st_size for p in folder.iterdir())
        reads = {}
        for mib in (READ_BLOCK >> 20, 64):
            path = folder / f"{mib}.bin"
            path.write_bytes(os.urandom(mib << 20))
            reads[mib] = per_call(lambda _: file_crc(path), 5)  # noqa: B023 - called at once
        newer = rows // 2 + 1  # rows in the newer half: found without a refresh write

        def store_hit(i: int) -> object:
            return CrcCache(path=db, max_entries=rows).get(fake(newer + i % (rows - newer)))

        opened = CrcCache(path=db, max_entries=rows)
        opened.get(fake(0))
        figures = {
            "memory hit": per_call(lambda i: cache.get(fake(rows - 1 - i % 1000)), 20_000),
            "file hit (memory missed)": per_call(
                lambda i: opened.get(fake(newer + i % (rows - newer))), 5_000
            ),
            "miss in both": per_call(lambda i: cache.get(fake(rows + 10 * i)), 5_000),
            "file hit, first lookup of a process (opens it)": per_call(store_hit, 200),
            "put (insert and evict, one transaction)": put,
        }
    block = reads[READ_BLOCK >> 20]  # READ_BLOCK is 4 MiB
    print(f"{rows} rows, {size / 1e6:.1f} MB with the WAL")
    for mib, seconds in reads.items():
        print(f"CRC of a page-cached {mib} MiB file: {seconds * 1e3:8.2f} ms")
    for name, seconds in figures.items():
        print(f"{name:48} {seconds * 1e6:8.1f} us  ({seconds / block:.4f} of the block read)")


if __name__ == "__main__":
    main()
