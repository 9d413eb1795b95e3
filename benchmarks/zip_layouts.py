"""Zip layout 1 (CRC ahead, no data descriptor) against layout 2 (CRC in a descriptor).

DESIGN.md asks for both to be measured before choosing. Both routes serve the same 64 x 16 MiB
(page-cached) files as a stored ZipStreamResponse from one uvicorn process; curl in another
process fetches each and reports time to first byte and total time; a block reader (the
same files read in 4 MiB blocks, one thread hop each) is the reference. Layout 1 is measured with
a cold CRC cache (the first download of those files: one extra read pass, overlapped) and a
warm one (every later download). Run: ``.venv/bin/python benchmarks/zip_layouts.py``.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

import anyio.to_thread
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from multiresp import Entry, _fs, _pace
from multiresp import _pump as pump
from multiresp._crccache import CrcCache
from multiresp._encoders import _ZipEncoder
from multiresp._zipwriter import zip_size
from multiresp.responses import ZipStreamResponse

DATA = pathlib.Path(os.environ.get("LAYOUT_DATA", tempfile.gettempdir())) / "multiresp-layouts"


class _DescriptorEncoder(_ZipEncoder):
    """Layout 2 for every file: sizes in the local header, the CRC in a data descriptor."""

    def crc_first(self, entry: Entry, sample: bytes | None) -> bool:
        return False


class _DescriptorResponse(ZipStreamResponse):
    async def _respond(self, scope, receive, send, transfer):  # type: ignore[no-untyped-def]
        entries = await self._entries()
        assert isinstance(entries, list)
        size = zip_size(_ZipEncoder.info(e, None) for e in entries)
        self._set_header("content-length", str(size))
        await self._start(send)
        pace = _pace.Pace()
        body = pump.Pump(entries, _DescriptorEncoder("store", None), pace).batches()
        await self._send_body(scope, receive, send, body, pace=pace, transfer=transfer)


def app() -> Starlette:
    files = sorted(DATA.glob("*.bin"))

    async def crc_cold(request: Request) -> Response:
        _fs.crc_cache = CrcCache()  # the one module that binds the shared cache
        return ZipStreamResponse(files)

    async def crc_warm(request: Request) -> Response:
        return ZipStreamResponse(files)

    async def descriptor(request: Request) -> Response:
        return _DescriptorResponse(files)

    async def block_reader(request: Request) -> Response:
        async def blocks():  # type: ignore[no-untyped-def]
            for path in files:
                with path.open("rb", buffering=0) as f:
                    while block := await anyio.to_thread.run_sync(f.read, 4 << 20):
                        yield block

        return StreamingResponse(blocks(), media_type="application/octet-stream")

    return Starlette(
        routes=[Route("/crc-cold", crc_cold), Route("/crc-warm", crc_warm),
                Route("/descriptor", descriptor), Route("/block-reader", block_reader)]
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--files", type=int, default=64)
    args = parser.parse_args()
    DATA.mkdir(exist_ok=True)
    for i in range(args.files):
        path = DATA / f"f{i:03}.bin"
        if not path.exists():
            path.write_bytes(os.urandom(16 << 20))
    port = 8791
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "benchmarks.zip_layouts:app", "--factory",
         "--port", str(port), "--log-level", "warning"],
    )  # fmt: skip
    time.sleep(2.0)
    try:
        url = f"http://127.0.0.1:{port}"
        subprocess.run(["curl", "-s", "-o", "/dev/null", url + "/crc-warm"], check=True)  # warm up
        results: dict[str, list[tuple[float, float]]] = {}
        for _ in range(args.runs):
            for route in ["/block-reader", "/crc-cold", "/crc-warm", "/descriptor"]:
                out = subprocess.run(
                    ["curl", "-s", "-o", "/dev/null", "-w",
                     "%{time_starttransfer} %{time_total}", url + route],
                    check=True, capture_output=True, text=True,
                ).stdout.split()  # fmt: skip
                results.setdefault(route, []).append((float(out[0]), float(out[1])))
        total = args.files * 16 / 1024
        print(f"{total:.2f} GiB stored, {args.runs} runs, median:")
        print(f"{'layout':<14} {'first byte':>11} {'total':>8} {'GiB/s':>7}")
        for route, runs in results.items():
            ttfb = statistics.median(r[0] for r in runs)
            seconds = statistics.median(r[1] for r in runs)
            print(
                f"{route[1:]:<14} {ttfb * 1000:>8.1f} ms {seconds:>7.3f}s {total / seconds:>7.2f}"
            )
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
