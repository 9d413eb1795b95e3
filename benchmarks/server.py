"""The server side of the benchmark: one Starlette app, one route per strategy.

The harness runs this app on uvicorn in its own process (``python -m uvicorn
benchmarks.server:app --http h11 --loop asyncio``, or ``--http httptools --loop uvloop``) and
fetches ``GET /<strategy>/<dataset>`` from another process. ``BENCH_DATA`` names the folder
holding the generated datasets (``<dataset>/files/`` and ``<dataset>/concat.bin``, see
``benchmarks/datasets.py``); ``TMPDIR`` should point where the temporary archives may go.

Every strategy sends the same files. The naive ones are written the way the snippets people
copy are written (zipping on the event loop included); the references are the fastest ways
this server can send the same number of bytes, one from a file and one from memory.
"""

from __future__ import annotations

import io
import mimetypes
import os
import pathlib
import tempfile
import zipfile
from collections.abc import Awaitable, Callable
from typing import Any

import anyio.to_thread
import zipstream
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Route

from multiresp import ZipResponse, ZipStreamResponse

try:  # built by another issue; the suite runs with or without it
    from multiresp import MultipartResponse
except ImportError:  # pragma: no cover - depends on the checkout
    MultipartResponse = None  # type: ignore[assignment,misc]

MIB = 1 << 20  # bytes
BLOCK_READ = 4 * MIB  # bytes per read (and per thread hop) of the block reader
MEMORY_CHUNK = 1 * MIB  # bytes per send of the memory ceiling
DATA = pathlib.Path(os.environ.get("BENCH_DATA", "benchmarks/data/full")).resolve()
ZIP_MEDIA_TYPE = "application/zip"
_FROM_MEMORY = os.urandom(MEMORY_CHUNK)  # allocated at start: part of the idle process

Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]


def _paths(root: pathlib.Path) -> list[tuple[pathlib.Path, str]]:
    """Every file under ``root`` with its name in the archive, in name order."""
    found = [
        (pathlib.Path(folder, name), pathlib.Path(folder, name).relative_to(root).as_posix())
        for folder, _, names in os.walk(root)
        for name in names
    ]
    return sorted(found, key=lambda item: item[1])


# -- the naive versions, as the seed wrote them -----------------------------------------------


def naive_tempfile(root: pathlib.Path) -> FileResponse:
    """zipfile (deflate) into ``NamedTemporaryFile(delete=False)``, then ``FileResponse``.

    On the event loop, and the file is never deleted (the harness removes it)."""
    tmp = tempfile.NamedTemporaryFile(delete=False, suffix=".zip")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
        for path, name in _paths(root):
            archive.write(path, name)
    tmp.close()
    return FileResponse(tmp.name, media_type=ZIP_MEDIA_TYPE, filename="files.zip")


def naive_bytesio(root: pathlib.Path) -> StreamingResponse:
    """zipfile (deflate) into a ``BytesIO``, yielded as one chunk."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path, name in _paths(root):
            archive.write(path, name)
    return StreamingResponse(iter([buffer.getvalue()]), media_type=ZIP_MEDIA_TYPE)


# -- zipstream-ng, the library baseline -------------------------------------------------------


def _zipstream(root: pathlib.Path, compress_type: int) -> StreamingResponse:
    archive = zipstream.ZipStream.from_path(root, compress_type=compress_type)
    headers = {"content-length": str(len(archive))} if archive.sized else None
    return StreamingResponse(archive, media_type=ZIP_MEDIA_TYPE, headers=headers)


def zipstream_store(root: pathlib.Path) -> StreamingResponse:
    """zipstream-ng, stored, with its exact length, iterated by ``StreamingResponse``."""
    return _zipstream(root, zipstream.ZIP_STORED)


def zipstream_deflate(root: pathlib.Path) -> StreamingResponse:
    """zipstream-ng, deflated at zlib's default level, chunked."""
    return _zipstream(root, zipstream.ZIP_DEFLATED)


# -- one file, and the references -------------------------------------------------------------


def file_response(root: pathlib.Path) -> FileResponse:
    """Starlette's ``FileResponse`` of the dataset's bytes concatenated in one file."""
    return FileResponse(root.parent / "concat.bin", media_type="application/octet-stream")


class BlockReader:
    """The concatenated file read in ``BLOCK_READ`` blocks, one thread hop per block."""

    def __init__(self, path: pathlib.Path) -> None:
        self.path = path

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        with self.path.open("rb", buffering=0) as f:
            size = os.fstat(f.fileno()).st_size
            await _start(send, size)
            while block := await anyio.to_thread.run_sync(f.read, BLOCK_READ):
                await send({"type": "http.response.body", "body": block, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


class MemoryCeiling:
    """As many bytes as the dataset holds, sent from memory in ``MEMORY_CHUNK`` pieces."""

    def __init__(self, size: int) -> None:
        self.size = size

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        await _start(send, self.size)
        left = self.size
        while left:
            body = _FROM_MEMORY if left >= MEMORY_CHUNK else _FROM_MEMORY[:left]
            left -= len(body)
            await send({"type": "http.response.body", "body": body, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _start(send: Send, size: int) -> None:
    headers = [
        (b"content-type", b"application/octet-stream"),
        (b"content-length", str(size).encode()),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})


def block_reader(root: pathlib.Path) -> BlockReader:
    return BlockReader(root.parent / "concat.bin")


def memory_ceiling(root: pathlib.Path) -> MemoryCeiling:
    return MemoryCeiling((root.parent / "concat.bin").stat().st_size)


# -- multiresp --------------------------------------------------------------------------------


def mr_zip(root: pathlib.Path) -> ZipResponse:
    return ZipResponse([root])  # deflate, the default


def mr_store(root: pathlib.Path) -> ZipStreamResponse:
    return ZipStreamResponse([root], compression="store")


def mr_deflate(root: pathlib.Path) -> ZipStreamResponse:
    return ZipStreamResponse([root], compression="deflate")


def mr_auto(root: pathlib.Path) -> ZipStreamResponse:
    return ZipStreamResponse([root], compression="auto")


def mr_multipart(root: pathlib.Path) -> Any:
    assert MultipartResponse is not None
    return MultipartResponse([root])


HANDLERS: dict[str, Callable[[pathlib.Path], Any]] = {
    "naive-tempfile": naive_tempfile,
    "naive-bytesio": naive_bytesio,
    "zipstream-store": zipstream_store,
    "zipstream-deflate": zipstream_deflate,
    "fileresponse": file_response,
    "block-reader": block_reader,
    "memory-ceiling": memory_ceiling,
    "mr-zip": mr_zip,
    "mr-store": mr_store,
    "mr-deflate": mr_deflate,
    "mr-auto": mr_auto,
}
if MultipartResponse is not None:
    HANDLERS["mr-multipart"] = mr_multipart


async def serve(request: Request) -> Any:
    strategy = request.path_params["strategy"]
    root = DATA / request.path_params["dataset"] / "files"
    handler = HANDLERS.get(strategy)
    if handler is None or not root.is_dir():
        return PlainTextResponse(f"no strategy {strategy!r} or no dataset here\n", 404)
    return handler(root)  # on the event loop, like an `async def` endpoint in an app


async def health(request: Request) -> PlainTextResponse:
    """Ready, and warmed up like a server that has been running for a while: the first
    thread hop of a process imports anyio's backend (about 20 ms here) and the first media
    type guess reads the system's tables (about 5 ms). No strategy is charged for those."""
    pid = await anyio.to_thread.run_sync(os.getpid)
    mimetypes.init()
    return PlainTextResponse(f"{pid}\n")


app = Starlette(routes=[Route("/health", health), Route("/{strategy}/{dataset}", serve)])
