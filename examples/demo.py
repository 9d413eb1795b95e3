"""The quick-start demo: serve a sample folder, fetch it back every way, verify, report.

It makes a sample folder (a few model-output-like files and a larger binary), serves it with
uvicorn on a free loopback port, fetches it back with each strategy multiresp provides, checks
every file byte for byte against the folder, prints what it did and exits (status 1 if any
check failed).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
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
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from multiresp import Entry
from multiresp.client import Progress, adownload, download, iter_entries
from multiresp.responses import MultipartResponse, ZipResponse, ZipStreamResponse, negotiate


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
    def stream(compression: str) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            return ZipStreamResponse(
                [root],
                filename="sample.zip",
                compression=compression,  # type: ignore[arg-type]
            )

        return endpoint

    async def spooled(request: Request) -> Response:
        return ZipResponse([root], filename="sample.zip")

    async def multipart(request: Request) -> Response:
        return MultipartResponse([root])

    async def negotiated(request: Request) -> Response:
        return negotiate(request, [root], filename="sample.zip")

    async def generated(request: Request) -> Response:
        async def produce() -> AsyncIterator[Entry]:
            for i in range(3):  # entries made while the response is already streaming
                yield Entry.from_bytes(json.dumps({"step": i}).encode(), f"steps/{i}.json")

        return ZipStreamResponse(produce(), filename="steps.zip")

    return Starlette(
        routes=[
            Route("/zip-stream/store", stream("store"), methods=["GET", "HEAD"]),
            Route("/zip-stream/deflate", stream("deflate")),
            Route("/zip-stream/auto", stream("auto")),
            Route("/zip", spooled),
            Route("/multipart", multipart, methods=["GET", "HEAD"]),
            Route("/negotiate", negotiated),
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


class Row:
    """One line of the summary: what was fetched, how, and whether every byte came back."""

    def __init__(self, path: str, how: str) -> None:
        self.path, self.how = path, how
        self.started = time.perf_counter()
        self.first: float | None = None
        self.sent = 0
        self.length = "-"

    def seen(self, count: int) -> None:
        if self.first is None:
            self.first = time.perf_counter() - self.started
        self.sent += count

    def line(self, ok: bool, files: int) -> str:
        elapsed = (time.perf_counter() - self.started) * 1000
        first = f"{self.first * 1000:.1f} ms" if self.first is not None else "-"
        verdict = f"verified, {files} entries" if ok else "MISMATCH"
        return (
            f"{self.path:<20} {self.how:<12} {self.sent / 2**20:>7.1f} MiB {self.length:>8} "
            f"{first:>9} {elapsed:>6.0f} ms  {verdict}"
        )


def with_zipfile(client: httpx.Client, url: str, row: Row) -> dict[str, bytes]:
    """What any zip tool sees: the whole body, opened by the standard library."""
    body = io.BytesIO()
    with client.stream("GET", url) as response:
        response.raise_for_status()
        row.length = "exact" if "content-length" in response.headers else "chunked"
        for chunk in response.iter_raw():
            row.seen(len(chunk))
            body.write(chunk)
    with zipfile.ZipFile(body) as archive:
        bad = archive.testzip()
        if bad is not None:
            raise SystemExit(f"CRC error in {bad}")
        return {info.filename: archive.read(info) for info in archive.infolist()}


def on_disk(dest: pathlib.Path) -> dict[str, bytes]:
    return expected_files(dest)


def track(row: Row, report: Progress) -> None:
    """The progress callback of the client rows (throttled: it does not time the first byte)."""
    row.sent = report.bytes_done
    row.first = None
    if report.bytes_total is not None:
        row.length = "exact"


def with_download(url: str, dest: pathlib.Path, row: Row) -> dict[str, bytes]:
    """multiresp's client: unpacked while it streams, each file verified, then renamed."""

    row.length = "chunked"
    download(url, dest, progress=functools.partial(track, row))
    return on_disk(dest)


def with_adownload(url: str, dest: pathlib.Path, row: Row) -> dict[str, bytes]:
    """The async twin, on asyncio."""

    row.length = "chunked"
    asyncio.run(adownload(url, dest, progress=functools.partial(track, row)))
    return on_disk(dest)


def with_iter_entries(client: httpx.Client, url: str, row: Row) -> dict[str, bytes]:
    """Entries read one by one as they arrive, nothing written to disk."""
    files: dict[str, bytes] = {}
    with client.stream("GET", url) as response:
        response.raise_for_status()
        row.length = "exact" if "content-length" in response.headers else "chunked"
        for entry in iter_entries(response):
            data = b"".join(entry.iter_bytes())
            row.seen(len(data))
            files[entry.name] = data
    return files


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="multiresp-demo-") as tmp:
        root = pathlib.Path(tmp) / "sample"
        make_sample(root)
        want = {f"sample/{name}": data for name, data in expected_files(root).items()}
        total = sum(len(d) for d in want.values())
        print(f"sample folder: {len(want)} entries, {total / 2**20:.1f} MiB")
        print()
        print(f"{'GET':<20} {'fetched by':<12} {'received':>11} {'length':>8} {'1st byte':>9} "
              f"{'total':>9}  result")  # fmt: skip
        failures = 0
        fetched = 0
        with serve(build_app(root)) as base, httpx.Client(timeout=60) as client:

            def check(path: str, how: str, fetch: Callable[[Row], dict[str, bytes]]) -> None:
                nonlocal failures, fetched
                row = Row(path, how)
                files = fetch(row)
                ok = files == want
                failures += not ok
                fetched += 1
                print(row.line(ok, len(files)))

            zips = ["/zip-stream/store", "/zip-stream/deflate", "/zip-stream/auto", "/zip"]
            for path in [*zips, "/multipart"]:
                if path != "/multipart":
                    url = base + path
                    check(path, "zipfile", lambda row, url=url: with_zipfile(client, url, row))
                for how, fetch in [("download()", with_download), ("adownload()", with_adownload)]:
                    dest = pathlib.Path(tmp) / f"fetched-{fetched}"
                    check(path, how, functools.partial(fetch, base + path, dest))

            print()
            for path in ["/zip-stream/store", "/multipart"]:
                head = client.head(base + path)
                print(f"HEAD {path:<18} -> Content-Length {head.headers['content-length']}, "
                      "no source read")  # fmt: skip
            for accept in ["application/zip", "multipart/mixed", "text/html"]:
                reply = client.get(base + "/negotiate", headers={"Accept": accept})
                kind = reply.headers.get("content-type", "").split(";")[0]
                print(f"GET /negotiate, Accept: {accept:<16} -> {reply.status_code} {kind}")
                ok = reply.status_code == 406 if accept == "text/html" else kind == accept
                failures += not ok

            row = Row("/generated", "iter_entries")
            files = with_iter_entries(client, base + "/generated", row)
            ok = files == {f"steps/{i}.json": json.dumps({"step": i}).encode() for i in range(3)}
            failures += not ok
            print()
            print("entries produced while the response streams:")
            print(row.line(ok, len(files)))
        print()
        print(f"{fetched} fetches of the sample folder, every file compared byte for byte: "
              + ("all verified" if not failures else f"{failures} check(s) FAILED"))  # fmt: skip
        return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
