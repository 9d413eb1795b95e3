"""The benchmark datasets: generated on demand under ``benchmarks/data/``, never committed.

Three shapes of "many files in one response", each in a full and a ``--quick`` size:

- ``large``: few large files (64 x 16 MiB; quick 6 x 8 MiB), half incompressible random
  bytes and half compressible text and CSV, alternating;
- ``small``: many small files (2,000 x 32 KiB; quick 300 x 32 KiB) in folders of 100, the
  same mix of random, text and CSV;
- ``mixed``: "model outputs" (128 samples; quick 8), each a folder holding a PNG-like image
  (random bytes behind a PNG signature, 1-3 MiB), a mask (64-512 KiB, also random), a JSON
  report (1-16 KiB) and a CSV table (32 KiB-1 MiB).

Each dataset directory holds ``files/`` (the tree that is sent), ``concat.bin`` (every file
of the tree concatenated in name order: what the single-file references send) and
``manifest.json`` (file count, bytes, and the parameters that made it, so a dataset is
regenerated only when they change). Content is seeded, so a dataset always has the same bytes.
"""

from __future__ import annotations

import json
import os
import pathlib
import random
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass

KIB = 1 << 10  # bytes
MIB = 1 << 20  # bytes
DATA_ROOT = pathlib.Path(__file__).resolve().parent / "data"
POOL_SIZE = 8 * MIB  # bytes of generated text (and of CSV) that compressible files cut from
WORDS = 4_000  # vocabulary of the generated text
COPY_BLOCK = 4 * MIB  # bytes per write when concatenating
FORMAT_VERSION = 1  # bump when the generator changes what it writes


@dataclass(frozen=True)
class Spec:
    """The parameters of one dataset at one size."""

    name: str
    description: str
    count: int  # files (large, small) or samples (mixed)
    file_size: int  # bytes per file; unused by "mixed"


FULL = {
    "large": Spec("large", "64 x 16 MiB, half random, half text/CSV", 64, 16 * MIB),
    "small": Spec("small", "2,000 x 32 KiB, random/text/CSV", 2_000, 32 * KIB),
    "mixed": Spec("mixed", "128 model outputs: PNG-like + mask + JSON + CSV", 128, 0),
}
QUICK = {
    "large": Spec("large", "6 x 8 MiB, half random, half text/CSV", 6, 8 * MIB),
    "small": Spec("small", "300 x 32 KiB, random/text/CSV", 300, 32 * KIB),
    "mixed": Spec("mixed", "8 model outputs: PNG-like + mask + JSON + CSV", 8, 0),
}
DATASETS = tuple(FULL)


@dataclass(frozen=True)
class Dataset:
    """A generated dataset on disk."""

    name: str
    description: str
    root: pathlib.Path  # the tree that is sent
    concat: pathlib.Path  # the same bytes as one file
    files: int
    size: int  # bytes of content


class _Pools:
    """Seeded compressible content: text of random words and CSV rows, cut at offsets."""

    def __init__(self, seed: int) -> None:
        rng = random.Random(seed)
        letters = "abcdefghijklmnopqrstuvwxyz"
        vocabulary = ["".join(rng.choices(letters, k=rng.randint(2, 10))) for _ in range(WORDS)]
        words: list[str] = []
        size = 0
        while size < POOL_SIZE:
            line = " ".join(rng.choices(vocabulary, k=12)) + ".\n"
            words.append(line)
            size += len(line)
        self.text = "".join(words).encode()[:POOL_SIZE]
        rows = ["id,epoch,loss,accuracy,label\n"]
        size = len(rows[0])
        row = 0
        while size < POOL_SIZE:
            line = (
                f"{row},{row % 90},{rng.random():.6f},{rng.random():.4f},{rng.choice(vocabulary)}\n"
            )
            rows.append(line)
            size += len(line)
            row += 1
        self.csv = "".join(rows).encode()[:POOL_SIZE]
        self.rng = rng

    def cut(self, pool: bytes, size: int) -> bytes:
        """``size`` bytes of ``pool`` starting at a random offset, wrapping around."""
        start = self.rng.randrange(len(pool))
        out = bytearray()
        while len(out) < size:
            out += pool[start : start + size - len(out)]
            start = 0
        return bytes(out)

    def random(self, size: int) -> bytes:
        return self.rng.randbytes(size)


def _write(path: pathlib.Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _make_large(spec: Spec, files: pathlib.Path, pools: _Pools) -> None:
    for i in range(spec.count):
        if i % 2 == 0:
            _write(files / f"chunk-{i:03}.bin", pools.random(spec.file_size))
        elif i % 4 == 1:
            _write(files / f"chunk-{i:03}.txt", pools.cut(pools.text, spec.file_size))
        else:
            _write(files / f"chunk-{i:03}.csv", pools.cut(pools.csv, spec.file_size))


def _make_small(spec: Spec, files: pathlib.Path, pools: _Pools) -> None:
    for i in range(spec.count):
        folder = files / f"part-{i // 100:02}"
        kind = i % 3
        if kind == 0:
            _write(folder / f"blob-{i:05}.bin", pools.random(spec.file_size))
        elif kind == 1:
            _write(folder / f"note-{i:05}.txt", pools.cut(pools.text, spec.file_size))
        else:
            _write(folder / f"rows-{i:05}.csv", pools.cut(pools.csv, spec.file_size))


def _make_mixed(spec: Spec, files: pathlib.Path, pools: _Pools) -> None:
    png_signature = b"\x89PNG\r\n\x1a\n"
    rng = pools.rng
    for i in range(spec.count):
        folder = files / f"sample-{i:04}"
        image = rng.randint(1 * MIB, 3 * MIB)
        mask = rng.randint(64 * KIB, 512 * KIB)
        _write(folder / "image.png", png_signature + pools.random(image - len(png_signature)))
        _write(folder / "mask.png", png_signature + pools.random(mask - len(png_signature)))
        report = {
            "sample": i,
            "scores": [round(rng.random(), 6) for _ in range(rng.randint(50, 1_500))],
            "label": "cat" if rng.random() < 0.5 else "dog",
        }
        _write(folder / "report.json", json.dumps(report, indent=1).encode())
        _write(folder / "table.csv", pools.cut(pools.csv, rng.randint(32 * KIB, 1 * MIB)))


MAKERS: dict[str, Callable[[Spec, pathlib.Path, _Pools], None]] = {
    "large": _make_large,
    "small": _make_small,
    "mixed": _make_mixed,
}


def tree_files(root: pathlib.Path) -> list[pathlib.Path]:
    """Every regular file under ``root``, in the order of their relative POSIX names."""
    paths = [pathlib.Path(folder, name) for folder, _, names in os.walk(root) for name in names]
    return sorted(paths, key=lambda p: p.relative_to(root).as_posix())


def _concatenate(paths: list[pathlib.Path], target: pathlib.Path) -> int:
    total = 0
    with target.open("wb") as out:
        for path in paths:
            with path.open("rb") as f:
                while block := f.read(COPY_BLOCK):
                    out.write(block)
                    total += len(block)
    return total


def ensure(name: str, *, quick: bool, data_root: pathlib.Path = DATA_ROOT) -> Dataset:
    """The dataset ``name`` at the chosen size, generated first when missing or stale."""
    spec = (QUICK if quick else FULL)[name]
    home = data_root / ("quick" if quick else "full") / name
    manifest_path = home / "manifest.json"
    params = {"version": FORMAT_VERSION, **asdict(spec)}
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("params") == params:
            return _dataset(spec, home, manifest)
    if home.exists():
        shutil.rmtree(home)
    files = home / "files"
    files.mkdir(parents=True)
    MAKERS[name](spec, files, _Pools(seed=sum(map(ord, name)) + spec.count))
    paths = tree_files(files)
    size = _concatenate(paths, home / "concat.bin")
    manifest = {"params": params, "files": len(paths), "size": size}
    os.sync()  # the write-back must not run during the measurements
    manifest_path.write_text(json.dumps(manifest, indent=1))
    return _dataset(spec, home, manifest)


def _dataset(spec: Spec, home: pathlib.Path, manifest: dict[str, object]) -> Dataset:
    files, size = manifest["files"], manifest["size"]
    assert isinstance(files, int) and isinstance(size, int)
    return Dataset(
        name=spec.name,
        description=spec.description,
        root=home / "files",
        concat=home / "concat.bin",
        files=files,
        size=size,
    )


def warm_page_cache(dataset: Dataset) -> None:
    """Read every byte once, so that no strategy pays for the first read from disk."""
    for path in [*tree_files(dataset.root), dataset.concat]:
        with path.open("rb", buffering=0) as f:
            while f.read(COPY_BLOCK):
                pass
