"""``python -m benchmarks.objects``: an archive of objects in an S3 store, next to the same files
on local disk and to a bare obstore ``get`` loop over the same objects, in one run.

The store is moto's S3 server (``python -m moto.server``) in a process of its own on loopback;
the gateway is this module's ``app`` on uvicorn in another (``GET /local``: a stored
``ZipStreamResponse`` of ``walk(folder)``; ``GET /objects``: the same of
``await walk_store(store)``); curl is the client (a Python client would be slower than the
server and hide it). The reference is the least any gateway can do with these objects:
obstore's sync ``get`` of each object, one after another, streamed into ``/dev/null`` in the
chunk size multiresp asks for, in the harness's process.

Each repeat starts fresh servers: "cold" is the first request of a gateway process (every
CRC computed, up to two ahead of the one being sent: each file is read twice, once for its CRC;
each object once, spooled to an anonymous temporary file as it is read for its CRC, and sent
from there), "warm" the second (every CRC from the CRC cache: each read once). The spools are
in the page cache, not in the gateway's RSS. The strategies
are interleaved, each repeat (a round) in a different order. The ratios are taken within each
round, and their median is what is judged (the machine is shared: its load drifts between
rounds, and lands on both sides of a ratio taken within one); the best of each strategy's
``REPEATS`` runs is printed beside them. Server RSS growth is the gateway's peak RSS during the
request (reset through ``/proc/PID/clear_refs``) less its RSS before; CPU is the gateway's and
moto's user + system time during the request (the bare loop's: the harness's own).

Targets: the object-store archive within 2x of local disk; at least 0.8x the bare loop.

    .venv/bin/python -m benchmarks.objects            # 64 x 16 MiB = 1 GiB
    .venv/bin/python -m benchmarks.objects --quick    # 8 x 4 MiB, a smoke test
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import pathlib
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import httpx
import obstore
from obstore.store import S3Store
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from multiresp import ZipStreamResponse, walk, walk_store
from multiresp._objects import STREAM_CHUNK

from .measure import _free_port, _status_kib

REPO = pathlib.Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
MIB = 1 << 20  # bytes
FULL = (64, 16 * MIB)  # objects, bytes each: 1 GiB
QUICK = (8, 4 * MIB)
REPEATS = 5
START_TIMEOUT = 30.0  # seconds for a server to answer
BUCKET = "bench-objects"
PREFIX = "set"
ACCESS_KEY, SECRET_KEY, REGION = "AKIABENCH", "bench-secret", "us-east-1"  # moto's: fake
LOCAL_TARGET = 2.0  # object-store archive time / local-disk archive time, at most
BARE_TARGET = 0.8  # object-store archive throughput / bare get loop throughput, at least


def _store(endpoint: str) -> S3Store:
    return S3Store(BUCKET, endpoint=endpoint, access_key_id=ACCESS_KEY,
                   secret_access_key=SECRET_KEY, region=REGION,
                   client_options={"allow_http": True})  # fmt: skip


# -- the gateway (run by uvicorn in its own process) ---------------------------------------------


async def _local(request: Request) -> Response:
    return ZipStreamResponse(walk(os.environ["BENCH_FOLDER"]), compression="store")


async def _objects(request: Request) -> Response:
    store = _store(os.environ["BENCH_S3_ENDPOINT"])
    return ZipStreamResponse(await walk_store(store, PREFIX), compression="store")


async def _health(request: Request) -> Response:
    return PlainTextResponse(f"{os.getpid()}\n")


app = Starlette(
    routes=[Route("/health", _health), Route("/local", _local), Route("/objects", _objects)]
)


# -- the harness ----------------------------------------------------------------------------------


@contextlib.contextmanager
def _process(
    command: list[str], url: str, env: dict[str, str]
) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(command, cwd=REPO, env={**os.environ, **env},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{command[2]} exited with {process.returncode}")
            try:
                httpx.get(url, timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield process
    finally:
        process.kill()
        process.wait(10)


def _cpu_seconds(pid: int) -> float:
    """A process's user + system time so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """moto's S3 server in a process of its own; its endpoint."""
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    with _process(command, endpoint + "/", {}) as process:
        os.environ["BENCH_MOTO_PID"] = str(process.pid)
        yield endpoint


class Gateway:
    """This module's ``app`` on uvicorn in a fresh process."""

    def __init__(self, folder: pathlib.Path, endpoint: str) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "uvicorn", "benchmarks.objects:app", "--host",
                   "127.0.0.1", "--port", str(self.port), "--log-level", "warning",
                   "--no-access-log", "--lifespan", "off"]  # fmt: skip
        env = {"BENCH_FOLDER": str(folder), "BENCH_S3_ENDPOINT": endpoint,
               "PYTHONPATH": str(REPO / "src"), "MULTIRESP_CRC_CACHE": ""}  # fmt: skip
        self._context = _process(command, self.url + "/health", env)

    def __enter__(self) -> Gateway:
        self.pid = self._context.__enter__().pid
        return self

    def __exit__(self, *exc: object) -> None:
        self._context.__exit__(None, None, None)

    def get(self, path: str) -> dict[str, Any]:
        """One GET with curl: first byte, total, bytes, and the gateway's RSS growth."""
        idle = _status_kib(self.pid, "VmRSS") * 1024
        with open(f"/proc/{self.pid}/clear_refs", "w") as clear:
            clear.write("5")  # the peak (VmHWM) counts from now
        moto = int(os.environ["BENCH_MOTO_PID"])
        cpu, moto_cpu = _cpu_seconds(self.pid), _cpu_seconds(moto)
        done = subprocess.run(
            ["curl", "-s", "-o", "/dev/null", "-w",
             "%{http_code} %{time_starttransfer} %{time_total} %{size_download}",
             self.url + path],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        status, first, seconds, size = done.stdout.split()
        if status != "200":
            raise RuntimeError(f"GET {path}: {status}")
        peak = _status_kib(self.pid, "VmHWM") * 1024
        return {"seconds": float(seconds), "first_byte": float(first), "bytes": int(size),
                "rss_growth": max(0, peak - idle), "cpu": _cpu_seconds(self.pid) - cpu,
                "moto_cpu": _cpu_seconds(moto) - moto_cpu}  # fmt: skip


def bare_loop(store: S3Store, keys: list[str]) -> dict[str, Any]:
    """Every object, one after another, into /dev/null: the reference."""
    fd = os.open(os.devnull, os.O_WRONLY)
    total = 0
    first: float | None = None
    moto = int(os.environ["BENCH_MOTO_PID"])
    usage, moto_cpu = resource.getrusage(resource.RUSAGE_SELF), _cpu_seconds(moto)
    started = time.perf_counter()
    try:
        for key in keys:
            for chunk in obstore.get(store, key).stream(min_chunk_size=STREAM_CHUNK):
                if first is None:
                    first = time.perf_counter() - started
                total += os.write(fd, chunk)
    finally:
        os.close(fd)
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime
    return {"seconds": seconds, "first_byte": first or 0.0, "bytes": total, "cpu": cpu,
            "moto_cpu": _cpu_seconds(moto) - moto_cpu}  # fmt: skip


def setup(folder: pathlib.Path, endpoint: str, count: int, size: int) -> list[str]:
    """The same random bytes as files under ``folder`` and as objects in the bucket."""
    httpx.put(f"{endpoint}/{BUCKET}").raise_for_status()
    store = _store(endpoint)
    keys = []
    for n in range(count):
        data = os.urandom(size)
        name = f"part-{n:04d}.bin"
        (folder / name).write_bytes(data)
        obstore.put(store, f"{PREFIX}/{name}", data)
        keys.append(f"{PREFIX}/{name}")
    return keys


def run(count: int, size: int, repeats: int) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {
        name: [] for name in ("bare", "local-cold", "local-warm", "objects-cold", "objects-warm")
    }
    with tempfile.TemporaryDirectory() as tmp, moto_server() as endpoint:
        folder = pathlib.Path(tmp)
        keys = setup(folder, endpoint, count, size)
        store = _store(endpoint)
        for repeat in range(repeats):
            order = ["bare", "local", "objects"]
            order = order[repeat % 3 :] + order[: repeat % 3]
            for kind in order:
                if kind == "bare":
                    runs["bare"].append(bare_loop(store, keys))
                    continue
                with Gateway(folder, endpoint) as gateway:
                    runs[f"{kind}-cold"].append(gateway.get(f"/{kind}"))
                    runs[f"{kind}-warm"].append(gateway.get(f"/{kind}"))
    best = {name: min(found, key=lambda r: r["seconds"]) for name, found in runs.items()}
    out: dict[str, Any] = {"objects": count, "object_bytes": size, "content": count * size,
                           "repeats": repeats, "best": best, "runs": runs}  # fmt: skip
    for state in ("cold", "warm"):
        objects, local, bare = runs[f"objects-{state}"], runs[f"local-{state}"], runs["bare"]
        # Within each round: the time against local disk's, the throughput against the bare
        # loop's (the same bytes: the time of the bare loop over the archive's, scaled).
        out[f"{state}_objects_vs_local"] = statistics.median(
            o["seconds"] / lo["seconds"] for o, lo in zip(objects, local, strict=True)
        )
        out[f"{state}_objects_vs_bare"] = statistics.median(
            (o["bytes"] / o["seconds"]) / (b["bytes"] / b["seconds"])
            for o, b in zip(objects, bare, strict=True)
        )
    # What the store alone costs: the bare loop's time over local disk's (cached CRCs), within
    # each round. Past LOCAL_TARGET, no gateway reading from this store can meet that target.
    out["bare_vs_local"] = statistics.median(
        (b["seconds"] / b["bytes"]) / (lo["seconds"] / lo["bytes"])
        for b, lo in zip(runs["bare"], runs["local-warm"], strict=True)
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8 x 4 MiB, a smoke test")
    parser.add_argument("--repeats", type=int, default=REPEATS)
    args = parser.parse_args()
    count, size = QUICK if args.quick else FULL
    result = run(count, size, args.repeats)
    print(f"{count} objects x {size // MIB} MiB, best of {args.repeats} (CPU: median):")
    for name, r in result["best"].items():
        cpu = statistics.median(run["cpu"] for run in result["runs"][name])
        moto = statistics.median(run["moto_cpu"] for run in result["runs"][name])
        print(f"  {name:13} {r['bytes'] / r['seconds'] / MIB:7.0f} MiB/s  first byte "
              f"{r['first_byte'] * 1000:6.1f} ms  server RSS growth "
              f"{r.get('rss_growth', 0) / MIB:6.1f} MiB  CPU {cpu:5.2f} s, "
              f"moto {moto:5.2f} s")  # fmt: skip
    print(f"ratios: median over the {args.repeats} rounds of the ratio within each round")
    for state in ("cold", "warm"):
        local = result[f"{state}_objects_vs_local"]
        bare = result[f"{state}_objects_vs_bare"]
        print(f"  {state}: objects take {local:.2f}x the time of local disk (target <= "
              f"{LOCAL_TARGET}: {'PASS' if local <= LOCAL_TARGET else 'FAIL'}); "
              f"{bare:.2f}x the bare get loop's throughput (target >= {BARE_TARGET}: "
              f"{'PASS' if bare >= BARE_TARGET else 'FAIL'})")  # fmt: skip
    print(f"  bound: the bare get loop alone takes {result['bare_vs_local']:.2f}x the time of "
          "local disk (CRCs cached): the store's share of that target")  # fmt: skip
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS / f"objects-{stamp}.json"
    path.write_text(json.dumps(result, indent=1))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
