"""Uploads: ``receive_files`` next to Starlette's ``request.form()`` and a bare block writer.

Run: ``.venv/bin/python -m benchmarks.uploads [--repeat 5] [--quick]``

curl sends the same ``multipart/form-data`` body (``-F files=@...`` for each file) to three
routes of one app, served by uvicorn (httptools and uvloop, or ``--http h11`` and asyncio) in
a fresh process for every run:

- ``receive``: ``receive_files(request, dest)``;
- ``form``: ``await request.form()`` (python-multipart, each file spooled through a
  ``SpooledTemporaryFile``), then each ``UploadFile`` copied to its file in ``dest`` in a worker
  thread, as an app does;
- ``block``: the body written as it is to one file, in 4 MiB blocks, one thread hop each: the
  reference, what any receiver pays to get the bytes on disk.

A second reference, ``files``, needs no server: a bare loop of ``os.open``, ``os.write``,
``os.close`` and ``os.rename`` (temporary name, then the final one) creating as many files of
the same size in a fresh folder of the same disk. It is the floor of creating the files in
Python, whatever parses the body: a receiver that overlapped it perfectly with receiving the
body would still take ``max(block, files)``, so ``block / max(block, files)`` bounds what any
receiver can reach against the block writer.

Datasets: 64 x 16 MiB (1 GiB) and 2,000 x 32 KiB, random bytes, generated once under
``benchmarks/data/uploads`` (not committed). Each server gets one small upload first (not
measured), so that what its first request pays once, imports and thread pools, is not
counted as upload time (18-28 ms for every route here: 6-9% of the small set's
``receive``). Every run writes into a fresh folder; its files
are checked (count and bytes), and ``sync`` runs before the next run. The files of the runs
are removed after the last run of a dataset, not between runs: on a file system without a
journal (ext4 on this benchmark's VM), creating a file skips, one lookup each, the inodes
freed in the last one to six minutes, so deleting 2,000 files makes the next 2,000 creations
up to ten times slower (0.1 ms -> 1 ms each, measured), which would be charged to whichever
route comes next. A large file is removed right after its run (few inodes, much disk).

The routes and the reference run interleaved, round after round, so that the noise of this
shared machine lands on all of them alike; ratios are taken within each round, and their
median is what is printed and judged. With ``--baseline SRC``, a fourth route, ``base``, is
``receive`` served from another source tree (``--baseline ../main/src``: the code before a
change), interleaved with the others: a before/after comparison within one run. The server's
peak RSS growth is measured from just
before the upload (``/proc/PID/clear_refs``, else sampled). Targets: ``receive`` >= 2x
``form`` and >= 0.8x ``block`` in throughput; RSS growth <= 64 MiB.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

import anyio
import anyio.to_thread
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from multiresp import receive_files
from multiresp.uploads import EXCEPTION_HANDLERS

from .measure import _free_port, _status_kib

MIB = 1 << 20  # bytes
KIB = 1 << 10  # bytes
BLOCK = 4 * MIB  # bytes per write (and thread hop) of the block writer
COPY_BLOCK = 1 * MIB  # bytes per read when copying an UploadFile
DATA = pathlib.Path(__file__).resolve().parent / "data" / "uploads"
BENCH_ROOT = pathlib.Path(os.environ.get("UPLOAD_DEST", tempfile.gettempdir())) / "upload-bench"
DEST = pathlib.Path(os.environ.get("UPLOAD_RUN_DEST", BENCH_ROOT))  # set per run by the harness
KEEP_FILES_BELOW = 1 * MIB  # bytes: files this small are kept until the dataset's last run
START_TIMEOUT = 30.0  # seconds for the server to answer /health
RUN_TIMEOUT = 900.0  # seconds for one upload
WARM_UP_NAME = "warm-up.bin"  # the file of the small upload each server gets first
SAMPLE_EVERY = 0.005  # seconds between RSS samples when clear_refs is not writable
ROUTES = ("receive", "form", "block")
REFERENCES = ("files",)  # measured by the harness itself, no server
Runs = dict[str, list[dict[str, float]]]  # by route or reference, one row per round
DATASETS = {"64x16MiB": (64, 16 * MIB), "2000x32KiB": (2000, 32 * KIB)}
QUICK = {"64x16MiB": (16, 8 * MIB), "2000x32KiB": (500, 32 * KIB)}


# -- the server --------------------------------------------------------------------------------


async def receive(request: Request) -> Response:
    saved = await receive_files(request, DEST)
    return PlainTextResponse(f"{len(saved)} {sum(f.size for f in saved)}")


def _copy(upload: UploadFile, target: pathlib.Path) -> int:
    upload.file.seek(0)
    with open(target, "wb") as out:
        shutil.copyfileobj(upload.file, out, COPY_BLOCK)
        return out.tell()


async def form(request: Request) -> Response:
    data = await request.form(max_files=100_000, max_fields=100_000)
    count = size = 0
    for _, value in data.multi_items():
        if isinstance(value, UploadFile):
            assert value.filename
            target = DEST / value.filename
            size += await anyio.to_thread.run_sync(_copy, value, target)
            count += 1
    await data.close()
    return PlainTextResponse(f"{count} {size}")


async def block(request: Request) -> Response:
    out = await anyio.to_thread.run_sync(open, DEST / "body", "wb")
    pending = bytearray()
    size = 0
    try:
        async for chunk in request.stream():
            pending += chunk
            if len(pending) >= BLOCK:
                size += await anyio.to_thread.run_sync(out.write, bytes(pending))
                pending.clear()
        size += await anyio.to_thread.run_sync(out.write, bytes(pending))
    finally:
        await anyio.to_thread.run_sync(out.close)
    return PlainTextResponse(f"1 {size}")


async def health(request: Request) -> Response:
    return PlainTextResponse("ok")


app = Starlette(
    routes=[
        Route("/receive", receive, methods=["POST"]),
        Route("/form", form, methods=["POST"]),
        Route("/block", block, methods=["POST"]),
        Route("/health", health),
    ],
    exception_handlers=EXCEPTION_HANDLERS,
)


# -- the harness -------------------------------------------------------------------------------


def make_dataset(name: str, count: int, size: int) -> pathlib.Path:
    folder = DATA / f"{name}-{count}x{size}"
    if not (folder / "done").exists():
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        block_bytes = os.urandom(size)
        for number in range(count):
            # every file differs in its first bytes, so no two are the same
            (folder / f"f{number:05d}.bin").write_bytes(number.to_bytes(8, "big") + block_bytes[8:])
        (folder / "done").touch()
    return folder


class Server:
    """This module's app on uvicorn in a subprocess, for one run, writing into ``dest``."""

    def __init__(self, http: str, dest: pathlib.Path, src: str | None = None) -> None:
        self.port = _free_port()
        repo = pathlib.Path(__file__).resolve().parent.parent
        command = [
            sys.executable, "-m", "uvicorn", "benchmarks.uploads:app",
            "--host", "127.0.0.1", "--port", str(self.port),
            "--http", http, "--loop", "uvloop" if http == "httptools" else "asyncio",
            "--log-level", "warning", "--no-access-log",
        ]  # fmt: skip
        env = {**os.environ, "UPLOAD_RUN_DEST": str(dest)}
        if src is not None:  # multiresp imported from that tree instead
            env["PYTHONPATH"] = os.pathsep.join(filter(None, (src, env.get("PYTHONPATH"))))
        self.process = subprocess.Popen(command, cwd=repo, env=env)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                with urllib.request.urlopen(self.url("health"), timeout=1) as response:
                    response.read()
                break
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise
                time.sleep(0.05)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    def rss(self) -> int:
        return _status_kib(self.process.pid, "VmRSS") * KIB

    def reset_peak(self) -> None:
        with open(f"/proc/{self.process.pid}/clear_refs", "w") as clear:
            clear.write("5")

    def peak(self) -> int:
        return _status_kib(self.process.pid, "VmHWM") * KIB

    def cpu_seconds(self) -> float:
        """User and system time of the server process (all its threads) so far."""
        with open(f"/proc/{self.process.pid}/stat") as stat:
            fields = stat.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def close(self) -> None:
        self.process.kill()
        self.process.wait(10)


def _fresh(dest: pathlib.Path) -> pathlib.Path:
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    os.sync()
    return dest


def upload(
    route: str,
    folder: pathlib.Path,
    count: int,
    size: int,
    http: str,
    dest: pathlib.Path,
    src: str | None = None,
) -> dict[str, float]:
    """One run: a fresh server (importing multiresp from ``src`` when given) writing into the
    fresh folder ``dest``, curl posting every file of ``folder``."""
    server = Server(http, _fresh(dest), src)
    try:
        warm_up(server, route)
        idle = server.rss()
        server.reset_peak()
        cpu_before = server.cpu_seconds()
        arguments = [
            "curl",
            "-sS",
            "-H",
            "Expect:",
            "-o",
            "-",
            "-w",
            "\n%{http_code} %{time_total}",
        ]
        for path in sorted(folder.glob("f*.bin")):
            arguments += ["-F", f"files=@{path};type=application/octet-stream"]
        done = subprocess.run(
            [*arguments, server.url(route)],
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
            check=True,
        )
        growth = max(0, server.peak() - idle)
        cpu = server.cpu_seconds() - cpu_before
    finally:
        server.close()
    answer, _, timing = done.stdout.rpartition("\n")
    code, seconds = timing.split()
    if code != "200":
        raise RuntimeError(f"{route}: status {code}: {answer[:300]}")
    files, stored = map(int, answer.split())
    want_files = 1 if route == "block" else count
    if files != want_files or (route != "block" and stored != count * size):
        raise RuntimeError(f"{route}: stored {files} files, {stored} bytes")
    body = (dest / "body").stat().st_size if route == "block" else None
    if route == "block" or size >= KEEP_FILES_BELOW:
        shutil.rmtree(dest, ignore_errors=True)
    return {"seconds": float(seconds), "rss_growth": growth, "body": float(body or 0), "cpu": cpu}


def warm_up(server: Server, route: str) -> None:
    """One small upload to ``route`` before the measured one, so that what a server pays once
    (the imports and thread pools of its first request, 18-28 ms for every route here) is
    not counted in the throughput of an upload; its file is left beside the measured ones."""
    done = subprocess.run(
        ["curl", "-sS", "-H", "Expect:", "-o", "/dev/null", "-w", "%{http_code}",
         "-F", f"files=@-;filename={WARM_UP_NAME};type=application/octet-stream",
         server.url(route)],
        input=b"warm-up", capture_output=True, timeout=RUN_TIMEOUT, check=True,
    )  # fmt: skip
    if done.stdout != b"200":
        raise RuntimeError(f"{route}: the warm-up upload got {done.stdout!r}")


def create_files(count: int, size: int, dest: pathlib.Path) -> dict[str, float]:
    """The ``files`` reference: ``count`` files of ``size`` bytes created in ``dest`` by a
    bare loop, each written under a temporary name, closed and renamed into place."""
    _fresh(dest)
    data = os.urandom(size)
    folder = os.open(dest, os.O_RDONLY | os.O_DIRECTORY)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    start, cpu_start = time.perf_counter(), time.process_time()
    try:
        for number in range(count):
            temp, final = f".f{number:05d}.bin.part", f"f{number:05d}.bin"
            fd = os.open(temp, flags, 0o666, dir_fd=folder)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.close(fd)
            os.rename(temp, final, src_dir_fd=folder, dst_dir_fd=folder)
        seconds = time.perf_counter() - start
        cpu = time.process_time() - cpu_start
    finally:
        os.close(folder)
    if size >= KEEP_FILES_BELOW:
        shutil.rmtree(dest, ignore_errors=True)
    return {"seconds": seconds, "rss_growth": 0.0, "body": 0.0, "cpu": cpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="rounds; median kept")
    parser.add_argument("--quick", action="store_true", help="smaller datasets")
    parser.add_argument("--datasets", default=",".join(DATASETS), help="comma-separated")
    parser.add_argument(
        "--http", choices=("httptools", "h11"), default="httptools", help="uvicorn's HTTP stack"
    )
    parser.add_argument(
        "--baseline", metavar="SRC", help="also run 'receive' importing multiresp from SRC"
    )
    args = parser.parse_args()
    sizes = QUICK if args.quick else DATASETS
    print(
        f"{'dataset':<12} {'route':<8} {'median s':>9} {'MB/s':>7} {'CPU s':>6} {'RSS +MiB':>9}"
        f" {'vs form':>8} {'vs block':>9}"
    )
    verdicts = []
    baseline = ("base",) if args.baseline else ()
    kinds = (*ROUTES, *baseline, *REFERENCES)
    for name in args.datasets.split(","):
        count, size = sizes[name]
        folder = make_dataset(name, count, size)
        runs: Runs = {kind: [] for kind in kinds}
        try:
            for round_ in range(args.repeat):
                for kind in kinds:  # interleaved, so that noise does not land on one of them
                    dest = BENCH_ROOT / f"{name}-{kind}-{round_}"
                    if kind == "files":
                        run = create_files(count, size, dest)
                    elif kind == "base":
                        run = upload("receive", folder, count, size, args.http, dest, args.baseline)
                    else:
                        run = upload(kind, folder, count, size, args.http, dest)
                    runs[kind].append(run)
        finally:
            shutil.rmtree(BENCH_ROOT, ignore_errors=True)

        def ratio(numerator: str, denominator: str, runs: Runs = runs) -> float:
            """The median over rounds of the two times' ratio within each round."""
            pairs = zip(runs[numerator], runs[denominator], strict=True)
            return statistics.median(a["seconds"] / b["seconds"] for a, b in pairs)

        seconds = {k: statistics.median(x["seconds"] for x in runs[k]) for k in kinds}
        growth = {k: max(x["rss_growth"] for x in runs[k]) for k in kinds}
        cpu = {k: statistics.median(x["cpu"] for x in runs[k]) for k in kinds}
        body = runs["block"][0]["body"]
        for kind in kinds:
            print(
                f"{name:<12} {kind:<8} {seconds[kind]:>9.3f} {body / 1e6 / seconds[kind]:>7,.0f}"
                f" {cpu[kind]:>6.2f} {growth[kind] / MIB:>9.1f} {ratio('form', kind):>7.2f}x"
                f" {ratio('block', kind):>8.2f}x"
            )
        bound = statistics.median(
            b["seconds"] / max(b["seconds"], f["seconds"])
            for b, f in zip(runs["block"], runs["files"], strict=True)
        )
        if baseline:
            print(
                f"{name:<12} receive against base ({args.baseline}): base's time"
                f" {ratio('base', 'receive'):.2f}x receive's, CPU {cpu['base']:.2f} s ->"
                f" {cpu['receive']:.2f} s"
            )
        print(
            f"{name:<12} bound: creating the {count:,} files alone (bare loop) takes"
            f" {ratio('files', 'block'):.2f}x the block writer's time, so no receiver can pass"
            f" {bound:.2f}x block here"
        )
        verdicts += [
            (f"{name}: receive >= 2x form", ratio("form", "receive") >= 2),
            (f"{name}: receive >= 0.8x block", ratio("block", "receive") >= 0.8),
            (f"{name}: receive RSS growth <= 64 MiB", growth["receive"] <= 64 * MIB),
        ]
    print("MB/s: 10**6 body bytes per second (curl's time_total; 'files': the bare loop's time),")
    print("median of runs. 'vs form' / 'vs block': median over rounds of that route's time over")
    print("this one's in the same round. CPU: the server's user + system time for the upload")
    print("('files': the loop's). RSS: the largest peak growth of the server over the runs.")
    for label, passed in verdicts:
        print(f"{'PASS' if passed else 'FAIL'}  {label}")


if __name__ == "__main__":
    main()
