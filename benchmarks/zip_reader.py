"""Throughput of the pure zip reader against stream-unzip, on the same bytes.

Builds archives in memory with the standard library's ``zipfile`` (so neither reader reads
its own writer's output): stored and deflated (zlib level 1) ones of about
``--size`` MiB of content each, cuts them into 64 KiB pieces as a socket would hand them over,
then times how long each reader takes to turn the pieces into content, consuming every byte.

    .venv/bin/python benchmarks/zip_reader.py            # 512 MiB per archive
    .venv/bin/python benchmarks/zip_reader.py --size 64  # a quick run

MB/s are of content (inflated bytes), 10**6 bytes per MB. ``multiresp (zlib)`` is our reader
with the optional ``isal`` accelerator switched off. ``stored-dd`` is a stored archive whose
sizes come only in data descriptors (``zipfile`` writing to a pipe, zipstream-ng always).
"""

from __future__ import annotations

import argparse
import gc
import io
import os
import random
import time
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator

from stream_unzip import stream_unzip

from multiresp import _zipreader
from multiresp._events import NEED_DATA, Data, End
from multiresp._zipreader import ZipReader

MIB = 1 << 20  # bytes
FEED = 64 << 10  # bytes per piece fed to the readers, like one socket read
FILES = 8  # entries per archive
REPEATS = 3  # runs per reader; the best is reported
TEXT_BLOCK = 4 << 20  # bytes of generated text, repeated to fill a deflated entry
VOCABULARY = 5_000  # distinct words in the generated text


def _content(size: int, compressible: bool, seed: int) -> bytes:
    if not compressible:
        return os.urandom(size)
    # Random words: deflate finds repeats only within its 32 KiB window, so repeating one
    # block of TEXT_BLOCK bytes still compresses like prose (about 3:1).
    rng = random.Random(seed)
    vocabulary = [
        bytes(rng.choices(b"abcdefghijklmnopqrstuvwxyz", k=rng.randint(2, 10)))
        for _ in range(VOCABULARY)
    ]
    block = bytearray()
    while len(block) < TEXT_BLOCK:
        block += b" ".join(rng.choices(vocabulary, k=16)) + b"\n"
    return (bytes(block) * (size // len(block) + 1))[:size]


class _Unseekable(io.RawIOBase):
    """A write-only stream: zipfile then writes data descriptors and no sizes up front."""

    def __init__(self) -> None:
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, b: bytes) -> int:  # type: ignore[override]
        self.data += b
        return len(b)


def build(total: int, compression: int, *, seekable: bool = True) -> bytes:
    """A zip of ``FILES`` entries of ``total`` bytes in all, written by ``zipfile``."""
    out = io.BytesIO() if seekable else _Unseekable()
    per_file = total // FILES
    with zipfile.ZipFile(out, "w", compression=compression, compresslevel=1) as archive:
        for i in range(FILES):
            data = _content(per_file, compression == zipfile.ZIP_DEFLATED, i)
            archive.writestr(f"dir/file{i}.bin", data)
    return out.getvalue() if isinstance(out, io.BytesIO) else bytes(out.data)


def pieces(body: bytes) -> list[bytes]:
    return [body[i : i + FEED] for i in range(0, len(body), FEED)]


def read_multiresp(chunks: Iterable[bytes]) -> int:
    reader = ZipReader()
    content = 0
    for chunk in itertools_chain(chunks, (b"",)):
        reader.receive_data(chunk)
        while True:
            event = reader.next_event()
            if event is NEED_DATA:
                break
            if type(event) is Data:
                content += len(event.data)
            elif type(event) is End:
                return content
    raise RuntimeError("no End")


def itertools_chain(first: Iterable[bytes], second: Iterable[bytes]) -> Iterator[bytes]:
    yield from first
    yield from second


def read_multiresp_zlib(chunks: Iterable[bytes]) -> int:
    saved = _zipreader._isal_zlib, _zipreader.crc32
    _zipreader._isal_zlib, _zipreader.crc32 = None, zlib.crc32
    try:
        return read_multiresp(chunks)
    finally:
        _zipreader._isal_zlib, _zipreader.crc32 = saved


def read_stream_unzip(chunks: Iterable[bytes]) -> int:
    content = 0
    for _name, _size, unzipped in stream_unzip(chunks):
        for chunk in unzipped:
            content += len(chunk)
    return content


ARCHIVES = (
    ("stored", zipfile.ZIP_STORED, True),
    ("deflated", zipfile.ZIP_DEFLATED, True),
    # sizes only in data descriptors, as zipfile writes to a pipe and zipstream-ng writes always
    ("stored-dd", zipfile.ZIP_STORED, False),
)

READERS: dict[str, Callable[[Iterable[bytes]], int]] = {
    "multiresp": read_multiresp,
    "multiresp (zlib)": read_multiresp_zlib,
    "stream-unzip": read_stream_unzip,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=512, help="MiB of content per archive")
    args = parser.parse_args()
    total = args.size * MIB
    print(f"{args.size} MiB of content per archive, fed in {FEED // 1024} KiB pieces")
    print(f"{'archive':<10} {'reader':<18} {'seconds':>8} {'MB/s':>8}")
    for label, compression, seekable in ARCHIVES:
        chunks = pieces(build(total, compression, seekable=seekable))
        for name, read in READERS.items():
            best = float("inf")
            try:
                for _ in range(REPEATS):
                    gc.collect()
                    started = time.perf_counter()
                    content = read(chunks)
                    best = min(best, time.perf_counter() - started)
            except Exception as exc:  # stream-unzip refuses stored entries of unknown size
                print(f"{label:<10} {name:<18} {'n/a':>8} {'n/a':>8}  ({type(exc).__name__})")
                continue
            assert content == total // FILES * FILES, (name, content)
            print(f"{label:<10} {name:<18} {best:>8.3f} {content / best / 1e6:>8.0f}")
        del chunks


if __name__ == "__main__":
    main()
