"""Many downloads at once on one uvicorn process: memory per connection, fairness, leaks.

``python -m benchmarks.load`` starts uvicorn (h11, asyncio) on this module's ``app`` in its own
process and runs, from this process, plain HTTP/1.1 clients on loopback sockets:

- *fast* clients read the whole archive as fast as they can;
- *slow* clients read at ``SLOW_RATE`` bytes per second and leave after ``slow_seconds``;
- *leaving* clients read a few blocks and close the connection mid-body (half of them on the
  spooled ``ZipResponse``, so that its temporary file is covered too).

It prints, as JSON: the server's idle RSS and its peak growth during each phase (``VmHWM``
after a reset through ``/proc/PID/clear_refs``, or sampled), that growth per slow
connection, the fast clients' throughput with and without the slow ones (and the median of
their ratio over ``--repeat`` interleaved pairs),
and the server's descriptors and threads before and after. ``tests/test_load.py`` runs a
smaller configuration of the same phases and asserts what must hold.

    .venv/bin/python -m benchmarks.load               # 40 fast + 10 slow + 20 leaving
    .venv/bin/python -m benchmarks.load --slow-only 30  # memory per slow connection only
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import pathlib
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any

REPO = pathlib.Path(__file__).resolve().parent.parent
MIB = 1 << 20  # bytes
SLOW_RATE = 1_000_000  # bytes per second a slow client reads
SLOW_READ = 16 << 10  # bytes per read of a slow client
FAST_READ = 1 << 20  # bytes per read of a fast client
SAMPLE_EVERY = 0.01  # seconds between RSS samples where clear_refs is not writable
START_TIMEOUT = 30.0  # seconds for the server to answer
SETTLE_SECONDS = 2.0  # seconds the server gets to release what the clients left behind


def app() -> Any:
    """The load server's app: ``/zip`` streams, ``/spool`` spools, both the files under
    ``LOAD_DATA``."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse, Response
    from starlette.routing import Route

    from multiresp import ZipResponse, ZipStreamResponse

    files = sorted(pathlib.Path(os.environ["LOAD_DATA"]).glob("*.bin"))

    async def stream(request: Request) -> Response:
        return ZipStreamResponse(files)

    async def spool(request: Request) -> Response:
        return ZipResponse(files, compression="store")

    async def health(request: Request) -> Response:
        return PlainTextResponse("ok")

    return Starlette(
        routes=[Route("/zip", stream), Route("/spool", spool), Route("/health", health)]
    )


def make_data(folder: pathlib.Path, files: int, size: int) -> pathlib.Path:
    """``files`` random files of ``size`` bytes in ``folder`` (kept when already there)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        path = folder / f"f{i:02}.bin"
        if not path.exists() or path.stat().st_size != size:
            path.write_bytes(os.urandom(size))
    return folder


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Server:
    """uvicorn serving :func:`app` in a process of its own."""

    def __init__(self, data: pathlib.Path, src: pathlib.Path = REPO / "src") -> None:
        self.port = _free_port()
        self.tmp = tempfile.mkdtemp(prefix="multiresp-load-")
        env = dict(os.environ, LOAD_DATA=str(data), TMPDIR=self.tmp)
        env["PYTHONPATH"] = os.pathsep.join([str(src), str(REPO), env.get("PYTHONPATH", "")])
        command = [sys.executable, "-m", "uvicorn", "benchmarks.load:app", "--factory",
                   "--http", "h11", "--loop", "asyncio", "--port", str(self.port),
                   "--log-level", "warning", "--no-access-log"]  # fmt: skip
        self.process = subprocess.Popen(command, env=env, cwd=REPO)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.stop()
                    raise RuntimeError("the load server did not start") from None
                time.sleep(0.05)
        self.pid = self.process.pid

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        with contextlib.suppress(OSError):
            for name in os.listdir(self.tmp):
                os.unlink(os.path.join(self.tmp, name))
            os.rmdir(self.tmp)

    def status_kib(self, field: str) -> int:
        with open(f"/proc/{self.pid}/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        raise KeyError(field)

    def rss(self) -> int:
        return self.status_kib("VmRSS") * 1024

    def held(self) -> dict[str, Any]:
        """What the server holds: descriptors, threads, files in its temporary folder."""
        fds = os.listdir(f"/proc/{self.pid}/fd")
        targets = []
        for fd in fds:
            if int(fd) <= 2:  # stdio: under pytest, its capture files (deleted) are inherited
                continue
            with contextlib.suppress(OSError):
                targets.append(os.readlink(f"/proc/{self.pid}/fd/{fd}"))
        return {
            "fds": len(fds),
            "deleted_files": sorted(t for t in targets if t.endswith("(deleted)")),
            "threads": self.status_kib("Threads"),
            "temp_files": sorted(os.listdir(self.tmp)),
        }

    @contextlib.contextmanager
    def peak(self) -> Iterator[dict[str, int]]:
        """Measure the server's peak RSS over the block: ``result["growth"]`` in bytes."""
        result: dict[str, int] = {}
        base = self.rss()
        try:
            with open(f"/proc/{self.pid}/clear_refs", "w") as refs:
                refs.write("5")  # resets VmHWM to the current RSS
            sampler = None
        except OSError:
            sampled = [base]
            done = threading.Event()

            def sample() -> None:
                while not done.wait(SAMPLE_EVERY):
                    with contextlib.suppress(OSError):
                        sampled.append(self.rss())

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
        yield result
        if sampler is None:
            top = self.status_kib("VmHWM") * 1024
        else:
            done.set()
            sampler.join()
            top = max(sampled)
        result["base"], result["growth"] = base, max(0, top - base)


async def _client(port: int, path: str, *, rate: float | None, limit: int | None,
                  seconds: float | None) -> int:  # fmt: skip
    """GET ``path``; read all, or ``limit`` bytes, or for ``seconds``, at ``rate`` bytes/s
    when given; return the bytes read."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: load\r\nConnection: close\r\n\r\n".encode())
    began = time.monotonic()
    got = 0
    try:
        while limit is None or got < limit:
            if seconds is not None and time.monotonic() - began > seconds:
                break
            data = await reader.read(SLOW_READ if rate else FAST_READ)
            if not data:
                break
            got += len(data)
            if rate:
                ahead = got / rate - (time.monotonic() - began)
                if ahead > 0:
                    await asyncio.sleep(ahead)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return got


async def _phase(port: int, *, fast: int, slow: int, leaving: int, slow_seconds: float,
                 leave_after: int) -> dict[str, float]:  # fmt: skip
    async def timed_fast() -> tuple[int, float]:
        began = time.monotonic()
        got = await _client(port, "/zip", rate=None, limit=None, seconds=None)
        return got, time.monotonic() - began

    slow_tasks = [
        asyncio.ensure_future(
            _client(port, "/zip", rate=SLOW_RATE, limit=None, seconds=slow_seconds)
        )
        for _ in range(slow)
    ]
    leaving_tasks = [
        asyncio.ensure_future(
            _client(port, "/spool" if i % 2 else "/zip", rate=None, limit=leave_after, seconds=None)
        )
        for i in range(leaving)
    ]
    if slow:
        await asyncio.sleep(1.0)  # the slow clients are mid-body when the fast ones start
    began = time.monotonic()
    fast_results = await asyncio.gather(*(timed_fast() for _ in range(fast)))
    fast_wall = time.monotonic() - began
    await asyncio.gather(*slow_tasks, *leaving_tasks)
    fast_bytes = sum(got for got, _ in fast_results)
    return {
        "fast_bytes": fast_bytes,
        "fast_seconds": fast_wall,
        "fast_mb_s": fast_bytes / fast_wall / 1e6 if fast_wall else 0.0,
    }


def run(data: pathlib.Path, *, fast: int = 40, slow: int = 10, leaving: int = 20,
        slow_seconds: float = 6.0, leave_after: int = 4 * MIB,
        slow_only: int = 0, src: pathlib.Path = REPO / "src",
        repeat: int = 1) -> dict[str, Any]:  # fmt: skip
    """Run the phases against a fresh server; the figures as a dict (see the module doc).

    Phases: a warm-up (fast and leaving clients, not measured); ``slow_only`` slow clients
    alone (memory per slow connection); the fast clients alone; the fast clients with the
    slow ones (throughput ratio, peak memory); the leaving clients with the slow ones; then
    what the server still holds."""
    server = Server(data, src)
    try:
        out: dict[str, Any] = {}
        phase = dict(slow_seconds=slow_seconds, leave_after=leave_after)
        # Warm-up: the same mix once, so that the thread pool and the allocator's arenas
        # are at their working size before anything is counted.
        asyncio.run(_phase(server.port, fast=fast, slow=0, leaving=leaving, **phase))
        time.sleep(SETTLE_SECONDS)
        out["idle_rss_mib"] = server.rss() / MIB
        out["held_before"] = server.held()
        if slow_only:
            with server.peak() as peak:
                asyncio.run(
                    _phase(server.port, fast=0, slow=slow_only, leaving=0, **phase)
                )  # fmt: skip
            out["slow_only"] = slow_only
            out["slow_only_growth_mib"] = peak["growth"] / MIB
            out["per_slow_connection_mib"] = peak["growth"] / MIB / slow_only
        alones, mixeds, ratios = [], [], []
        alone_growth = mixed_growth = 0
        for _ in range(repeat):  # interleaved, so that a burst of noise does not hit one side
            with server.peak() as peak:
                alone = asyncio.run(_phase(server.port, fast=fast, slow=0, leaving=0, **phase))
            alone_growth = max(alone_growth, peak["growth"])
            with server.peak() as peak:
                mixed = asyncio.run(
                    _phase(server.port, fast=fast, slow=slow, leaving=0, **phase)
                )  # fmt: skip
            mixed_growth = max(mixed_growth, peak["growth"])
            alones.append(alone)
            mixeds.append(mixed)
            if alone["fast_mb_s"]:
                ratios.append(mixed["fast_mb_s"] / alone["fast_mb_s"])
        out["fast_alone"] = alones[-1]
        out["mixed"] = mixeds[-1]
        out["fast_alone_mb_s"] = [round(a["fast_mb_s"]) for a in alones]
        out["mixed_fast_mb_s"] = [round(m["fast_mb_s"]) for m in mixeds]
        out["fast_alone_growth_mib"] = alone_growth / MIB
        out["mixed_growth_mib"] = mixed_growth / MIB
        out["connections"] = fast + slow
        out["mixed_growth_per_connection_mib"] = mixed_growth / MIB / out["connections"]
        if ratios:
            out["fast_throughput_ratio"] = statistics.median(ratios)
            out["fast_throughput_ratios"] = [round(r, 3) for r in ratios]
        with server.peak() as peak:
            asyncio.run(_phase(server.port, fast=0, slow=slow, leaving=leaving, **phase))
        out["leaving_growth_mib"] = peak["growth"] / MIB
        time.sleep(SETTLE_SECONDS)
        out["held_after"] = server.held()
        return out
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", type=int, default=40)
    parser.add_argument("--slow", type=int, default=10)
    parser.add_argument("--leaving", type=int, default=20)
    parser.add_argument("--slow-seconds", type=float, default=6.0)
    parser.add_argument("--slow-only", type=int, default=0, help="also run N slow clients alone")
    parser.add_argument("--repeat", type=int, default=3, help="alone/mixed pairs (medians)")
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--file-mib", type=int, default=8)
    parser.add_argument("--src", type=pathlib.Path, default=REPO / "src",
                        help="the multiresp checkout the server imports (to compare)")  # fmt: skip
    args = parser.parse_args()
    data = make_data(REPO / "benchmarks" / "data" / "load", args.files, args.file_mib * MIB)
    figures = run(data, fast=args.fast, slow=args.slow, leaving=args.leaving,
                  slow_seconds=args.slow_seconds, slow_only=args.slow_only,
                  src=args.src, repeat=args.repeat)  # fmt: skip
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
