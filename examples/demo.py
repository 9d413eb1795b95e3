"""The quick-start demo: serve a sample folder, fetch it back every way, verify, report.

It makes a sample folder (a few model-output-like files and a larger binary), serves it with
uvicorn on a free loopback port, fetches it back with each strategy multiresp provides, checks
every file byte for byte against the folder, prints what it did and exits (status 1 if any
check failed).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import pathlib
import socket
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable, Iterator

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from multiresp import Entry
from multiresp.responses import ZipResponse, ZipStreamResponse


def make_sample(root: pathlib.Path) -> None:
    """A folder like a model's outputs: images (incompressible), JSON, CSV, one big file."""
    (root / "images").mkdir(parents=True)
    (root / "reports").mkdir()
    (root / "empty-folder").mkdir()
    seed = hashlib.sha256(b"multiresp demo").digest()
    for i in range(8):
        (root / "images" / f"mask-{i}.png").write_bytes(
            b"\x89PNG\r\n\x1a\n" + hashlib.sha256(seed + bytes([i])).digest() * 4000
        )
    for i in range(5):
        report = {"id": i, "scores": [round(0.1 * j * i, 3) for j in range(500)]}
        (root / "reports" / f"report-{i}.json").write_text(json.dumps(report, indent=1))
    rows = "\n".join(f"{i},{i * i},{i % 7},label-{i % 13}" for i in range(40_000))
    (root / "table.csv").write_text("a,b,c,label\n" + rows)
    (root / "résumé ünïcode.txt").write_text("names are UTF-8 in the archive\n")
    (root / "weights.bin").write_bytes(os.urandom(24 << 20))


def expected_files(root: pathlib.Path) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    for path in sorted(root.rglob("*")):
        name = path.relative_to(root).as_posix()
        if path.is_file():
            found[name] = path.read_bytes()
        elif not any(path.iterdir()):
            found[name + "/"] = b""
    return found


def build_app(root: pathlib.Path) -> Starlette:
    def stream(compression: str) -> Callable[[Request], Response]:
        async def endpoint(request: Request) -> Response:
            return ZipStreamResponse(
                [root],
                filename="sample.zip",
                compression=compression,  # type: ignore[arg-type]
            )

        return endpoint

    async def spooled(request: Request) -> Response:
        return ZipResponse([root], filename="sample.zip")

    async def generated(request: Request) -> Response:
        async def produce():  # type: ignore[no-untyped-def]
            for i in range(3):  # entries made while the response is already streaming
                yield Entry.from_bytes(json.dumps({"step": i}).encode(), f"steps/{i}.json")

        return ZipStreamResponse(produce(), filename="steps.zip")

    return Starlette(
        routes=[
            Route("/zip-stream/store", stream("store"), methods=["GET", "HEAD"]),
            Route("/zip-stream/deflate", stream("deflate")),
            Route("/zip-stream/auto", stream("auto")),
            Route("/zip", spooled),
            Route("/generated", generated),
        ]
    )


@contextlib.contextmanager
def serve(app: Starlette) -> Iterator[str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join()


def fetch_zip(client: httpx.Client, url: str) -> tuple[dict[str, bytes], dict[str, str], float]:
    started = time.perf_counter()
    first = None
    body = io.BytesIO()
    with client.stream("GET", url) as response:
        response.raise_for_status()
        for chunk in response.iter_raw():
            first = first or time.perf_counter() - started
            body.write(chunk)
        headers = dict(response.headers)
    headers["x-demo-bytes"] = str(body.tell())
    with zipfile.ZipFile(body) as archive:
        bad = archive.testzip()
        if bad is not None:
            raise SystemExit(f"CRC error in {bad}")
        files = {info.filename: archive.read(info) for info in archive.infolist()}
    headers["x-demo-ttfb"] = f"{(first or 0) * 1000:.1f} ms"
    return files, headers, time.perf_counter() - started


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="multiresp-demo-") as tmp:
        root = pathlib.Path(tmp) / "sample"
        make_sample(root)
        want = {f"sample/{name}": data for name, data in expected_files(root).items()}
        total = sum(len(d) for d in want.values())
        print(f"sample folder: {len(want)} entries, {total / 2**20:.1f} MiB")
        print()
        print(f"{'strategy':<24} {'bytes sent':>12} {'length':>9} {'first byte':>11} "
              f"{'total':>8}  result")  # fmt: skip
        failures = 0
        with serve(build_app(root)) as base, httpx.Client(timeout=60) as client:
            for path in ["/zip-stream/store", "/zip-stream/deflate", "/zip-stream/auto", "/zip"]:
                files, headers, elapsed = fetch_zip(client, base + path)
                ok = files == want
                failures += not ok
                length = "exact" if "content-length" in headers else "chunked"
                sent = headers["x-demo-bytes"]
                print(f"{path:<24} {sent:>12} {length:>9} {headers['x-demo-ttfb']:>11} "
                      f"{elapsed * 1000:>6.0f} ms  {'verified' if ok else 'MISMATCH'}")  # fmt: skip
            head = client.head(base + "/zip-stream/store")
            print(f"HEAD /zip-stream/store -> Content-Length {head.headers['content-length']}")
            files, _, _ = fetch_zip(client, base + "/generated")
            ok = files == {f"steps/{i}.json": json.dumps({"step": i}).encode() for i in range(3)}
            failures += not ok
            verdict = "verified" if ok else "MISMATCH"
            print(f"entries produced while streaming: {len(files)} {verdict}")
        print()
        print("all strategies verified" if not failures else f"{failures} check(s) FAILED")
        return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
