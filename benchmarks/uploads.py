"""Uploads: ``receive_files`` next to Starlette's ``request.form()`` and a bare block writer.

Run: ``.venv/bin/python -m benchmarks.uploads [--repeat 3] [--quick]``

curl sends the same ``multipart/form-data`` body (``-F files=@...`` for each file) to three
routes of one app, served by uvicorn (httptools and uvloop, or ``--http h11`` and asyncio) in
a fresh process for every run:

- ``receive``: ``receive_files(request, dest)``;
- ``form``: ``await request.form()`` (python-multipart, each file spooled through a
  ``SpooledTemporaryFile``), then each ``UploadFile`` copied to its file in ``dest`` in a worker
  thread, as an app does;
- ``block``: the body written as it is to one file, in 4 MiB blocks, one thread hop each: the
  reference, what any receiver pays to get the bytes on disk.

Datasets: 64 x 16 MiB (1 GiB) and 2,000 x 32 KiB, random bytes, generated once under
``benchmarks/data/uploads`` (not committed). Each run's files are checked (count and bytes),
then removed, and ``sync`` runs before the next run. The server's peak RSS growth is measured
from just before the upload (``/proc/PID/clear_refs``, else sampled). Targets: ``receive`` >=
2x ``form`` and >= 0.8x ``block`` in throughput; RSS growth <= 64 MiB.
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

MIB = 1 << 20  # bytes
KIB = 1 << 10  # bytes
BLOCK = 4 * MIB  # bytes per write (and thread hop) of the block writer
COPY_BLOCK = 1 * MIB  # bytes per read when copying an UploadFile
DATA = pathlib.Path(__file__).resolve().parent / "data" / "uploads"
DEST = pathlib.Path(os.environ.get("UPLOAD_DEST", tempfile.gettempdir())) / "upload-bench"
START_TIMEOUT = 30.0  # seconds for the server to answer /health
RUN_TIMEOUT = 900.0  # seconds for one upload
SAMPLE_EVERY = 0.005  # seconds between RSS samples when clear_refs is not writable
ROUTES = ("receive", "form", "block")
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


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _status_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


class Server:
    """This module's app on uvicorn in a subprocess, for one run."""

    def __init__(self, http: str) -> None:
        self.port = _free_port()
        repo = pathlib.Path(__file__).resolve().parent.parent
        command = [
            sys.executable, "-m", "uvicorn", "benchmarks.uploads:app",
            "--host", "127.0.0.1", "--port", str(self.port),
            "--http", http, "--loop", "uvloop" if http == "httptools" else "asyncio",
            "--log-level", "warning", "--no-access-log",
        ]  # fmt: skip
        self.process = subprocess.Popen(command, cwd=repo)
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


def upload(route: str, folder: pathlib.Path, count: int, size: int, http: str) -> dict[str, float]:
    """One run: a fresh server, curl posting every file of ``folder``."""
    shutil.rmtree(DEST, ignore_errors=True)
    DEST.mkdir(parents=True)
    os.sync()
    server = Server(http)
    try:
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
    body = (DEST / "body").stat().st_size if route == "block" else None
    shutil.rmtree(DEST, ignore_errors=True)
    return {"seconds": float(seconds), "rss_growth": growth, "body": float(body or 0), "cpu": cpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per route; median kept")
    parser.add_argument("--quick", action="store_true", help="smaller datasets")
    parser.add_argument("--datasets", default=",".join(DATASETS), help="comma-separated")
    parser.add_argument(
        "--http", choices=("httptools", "h11"), default="httptools", help="uvicorn's HTTP stack"
    )
    args = parser.parse_args()
    sizes = QUICK if args.quick else DATASETS
    print(
        f"{'dataset':<12} {'route':<8} {'median s':>9} {'MB/s':>7} {'CPU s':>6} {'RSS +MiB':>9}"
        f" {'vs form':>8} {'vs block':>9}"
    )
    verdicts = []
    for name in args.datasets.split(","):
        count, size = sizes[name]
        folder = make_dataset(name, count, size)
        runs: dict[str, list[dict[str, float]]] = {route: [] for route in ROUTES}
        for _ in range(args.repeat):
            for route in ROUTES:  # interleaved, so that noise does not land on one route
                runs[route].append(upload(route, folder, count, size, args.http))
        seconds = {r: statistics.median(x["seconds"] for x in runs[r]) for r in ROUTES}
        growth = {r: max(x["rss_growth"] for x in runs[r]) for r in ROUTES}
        cpu = {r: statistics.median(x["cpu"] for x in runs[r]) for r in ROUTES}
        body = runs["block"][0]["body"]
        for route in ROUTES:
            print(
                f"{name:<12} {route:<8} {seconds[route]:>9.3f} {body / 1e6 / seconds[route]:>7,.0f}"
                f" {cpu[route]:>6.2f}"
                f" {growth[route] / MIB:>9.1f} {seconds['form'] / seconds[route]:>7.2f}x"
                f" {seconds['block'] / seconds[route]:>8.2f}x"
            )
        verdicts += [
            (f"{name}: receive >= 2x form", seconds["form"] / seconds["receive"] >= 2),
            (f"{name}: receive >= 0.8x block", seconds["block"] / seconds["receive"] >= 0.8),
            (f"{name}: receive RSS growth <= 64 MiB", growth["receive"] <= 64 * MIB),
        ]
    print("MB/s: 10**6 body bytes per second (curl's time_total, median of runs); RSS: the")
    print("largest peak growth of the server over the runs. CPU: the server process's user +")
    print("system time for the upload (median). 'vs': that route's time / this one's.")
    for label, passed in verdicts:
        print(f"{'PASS' if passed else 'FAIL'}  {label}")


if __name__ == "__main__":
    main()
