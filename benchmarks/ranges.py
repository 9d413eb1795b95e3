"""``python -m benchmarks.ranges``: resume, ranges and the CRC cache on the "large" set.

Each figure comes from a uvicorn of its own (``benchmarks.server:app``), so that "cold"
means a process whose CRC cache is empty; "warm" is the same process after one whole GET
(which computes and remembers every CRC). The page cache is warm for both: "cold" and
"warm" are about the CRC cache, not the disk. Bytes read are the server's ``rchar`` from
``/proc/<pid>/io`` (everything it read: files and the request), times are the client's.

curl is the client: a Python client would be slower than the server and hide it.

Printed, and written to ``benchmarks/results/ranges-<timestamp>.json``:

- the whole stored archive (``mr-store``) against the block reader on the same bytes,
  CRC cache warm and cold (target: warm >= 0.9x the block reader's throughput);
- a resume at 90 % (``Range: bytes=<90 %>-`` with ``If-Range``): time and bytes read,
  CRC cache cold and warm;
- time to the first byte of a 1 MiB range in the middle of the archive (target <= 50 ms
  warm), the median of ``TTFB_RUNS``.

    .venv/bin/python -m benchmarks.ranges            # the 1 GiB set
    .venv/bin/python -m benchmarks.ranges --quick    # 48 MiB, a smoke test
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import pathlib
import socket
import statistics
import subprocess
import sys
import time
from typing import Any

import httpx

from . import datasets as ds

REPO = pathlib.Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
MIB = 1 << 20
RANGE_PROBE = MIB  # bytes of the mid-archive range whose first byte is timed
TTFB_RUNS = 7
WHOLE_RUNS = 3  # whole-body runs per strategy; the best counts (the machine is shared)
START_TIMEOUT = 30.0  # seconds
STORE_TARGET = 0.9  # warm store throughput / block reader throughput
TTFB_TARGET = 0.050  # seconds


class Server:
    """``benchmarks.server:app`` on uvicorn in a process of its own."""

    def __init__(self, data: pathlib.Path) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        env = {**os.environ, "BENCH_DATA": str(data), "PYTHONPATH": str(REPO / "src")}
        command = [sys.executable, "-m", "uvicorn", "benchmarks.server:app", "--port",
                   str(self.port), "--log-level", "warning", "--lifespan", "off"]  # fmt: skip
        self.process = subprocess.Popen(command, cwd=REPO, env=env)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + START_TIMEOUT
        while not self._up():
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.stop()
                raise RuntimeError("the server did not start")
            time.sleep(0.05)
        self.client = httpx.Client(base_url=self.url, timeout=600)

    def _up(self) -> bool:
        try:
            httpx.get(self.url + "/health")
        except httpx.TransportError:
            return False
        return True

    def rchar(self) -> int:
        for line in pathlib.Path(f"/proc/{self.process.pid}/io").read_text().splitlines():
            if line.startswith("rchar:"):
                return int(line.split()[1])
        raise RuntimeError("no rchar")

    def get(self, path: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
        """Fetch ``path`` with curl (a client faster than the server): seconds to the first
        byte and in all, bytes, and the bytes the server read meanwhile."""
        command = ["curl", "-s", "-o", "/dev/null", "-w",
                   "%{http_code} %{time_starttransfer} %{time_total} %{size_download}"]  # fmt: skip
        for name, value in (headers or {}).items():
            command += ["-H", f"{name}: {value}"]
        before = self.rchar()
        done = subprocess.run(
            [*command, self.url + path], capture_output=True, text=True, check=True
        )
        status, first, seconds, size = done.stdout.split()
        return {"status": int(status), "seconds": float(seconds), "first_byte": float(first),
                "bytes": int(size), "server_read": self.rchar() - before}  # fmt: skip

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


def run(quick: bool) -> dict[str, Any]:
    dataset = ds.ensure("large", quick=quick)
    ds.warm_page_cache(dataset)
    data = dataset.root.parent.parent
    store, block = "/mr-store/large", "/block-reader/large"
    out: dict[str, Any] = {"dataset": dataset.description, "content_bytes": dataset.size}

    def fresh() -> Server:
        return Server(data)

    # Whole bodies: block reader, store cold (a fresh process each), store warm.
    blocks, colds, warms = [], [], []
    for _ in range(WHOLE_RUNS):
        server = fresh()
        try:
            blocks.append(server.get(block))
            colds.append(server.get(store))
            warms.append(server.get(store))
        finally:
            server.stop()
    best = {name: min(runs, key=lambda r: r["seconds"])
            for name, runs in (("block", blocks), ("cold", colds), ("warm", warms))}  # fmt: skip
    total = best["warm"]["bytes"]
    out["whole"] = best
    out["store_warm_vs_block"] = (best["block"]["seconds"] / best["block"]["bytes"]) / (
        best["warm"]["seconds"] / total
    )
    out["store_cold_vs_block"] = (best["block"]["seconds"] / best["block"]["bytes"]) / (
        best["cold"]["seconds"] / total
    )

    # Resume at 90 %: cold (a fresh process asked only for the rest), then warm.
    server = fresh()
    try:
        at = total * 9 // 10
        head = server.client.head(store)
        ranged = {"range": f"bytes={at}-", "if-range": head.headers["etag"]}
        out["resume_cold"] = server.get(store, ranged)
        server.get(store)  # every CRC now cached
        out["resume_warm"] = server.get(store, ranged)
        middle = total // 2
        probe = {"range": f"bytes={middle}-{middle + RANGE_PROBE - 1}"}
        firsts = [server.get(store, probe)["first_byte"] for _ in range(TTFB_RUNS)]
        out["mid_range_first_byte_warm"] = statistics.median(firsts)
    finally:
        server.stop()
    server = fresh()
    try:
        out["mid_range_first_byte_first_request"] = server.get(store, probe)["first_byte"]
    finally:
        server.stop()
    out["archive_bytes"] = total
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the small set, a smoke test")
    result = run(parser.parse_args().quick)
    total = result["archive_bytes"]
    for name in ("resume_cold", "resume_warm"):
        r = result[name]
        read = r["server_read"]
        print(f"{name}: {r['status']} {r['bytes']} bytes in {r['seconds']:.3f} s, server "
              f"read {read} bytes ({read / total:.1%} of the archive)")  # fmt: skip
    for name, r in result["whole"].items():
        print(f"whole {name}: {r['bytes'] / r['seconds'] / MIB:.0f} MiB/s, "
              f"server read {r['server_read'] / total:.2f}x the archive")  # fmt: skip
    warm, cold = result["store_warm_vs_block"], result["store_cold_vs_block"]
    print(f"store warm vs block reader: {warm:.2f}x (target >= {STORE_TARGET}: "
          f"{'PASS' if warm >= STORE_TARGET else 'FAIL'}); cold: {cold:.2f}x")  # fmt: skip
    ttfb = result["mid_range_first_byte_warm"]
    first = result["mid_range_first_byte_first_request"]
    print(f"first byte of a mid-archive range, warm: {ttfb * 1000:.1f} ms (target <= "
          f"{TTFB_TARGET * 1000:.0f} ms: {'PASS' if ttfb <= TTFB_TARGET else 'FAIL'}); first "
          f"request of a process: {first * 1000:.1f} ms")  # fmt: skip
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS / f"ranges-{stamp}.json"
    path.write_text(json.dumps(result, indent=1))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
