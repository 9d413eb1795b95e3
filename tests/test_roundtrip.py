"""Every response multiresp serves, unpacked by every way its client downloads, on real uvicorn.

The folder that comes back must be the folder that was served, byte for byte, with its empty
folders; and the client's memory must not grow with the size of the response.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from multiresp import Entry
from multiresp.client import adownload, aiter_entries, download, iter_entries
from multiresp.responses import MultipartResponse, ZipResponse, ZipStreamResponse, negotiate

from conftest import LiveServer

MIB = 1 << 20  # bytes


def make_tree(root: pathlib.Path) -> None:
    (root / "images" / "deep" / "er").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "images" / "a.png").write_bytes(os.urandom(300_000))
    (root / "images" / "deep" / "er" / "b.bin").write_bytes(os.urandom(5 * MIB + 7))
    (root / "report.json").write_text(json.dumps({"scores": list(range(3000))}))
    (root / "table.csv").write_text("a,b\n" * 50_000)
    (root / "zero.txt").write_bytes(b"")
    (root / "ünïcödé 名前.txt").write_text("UTF-8 names\n")


def snapshot(root: pathlib.Path) -> dict[str, str | None]:
    """Relative path -> sha256 of a file, or None for a folder."""
    found: dict[str, str | None] = {}
    for path in sorted(root.rglob("*")):
        name = path.relative_to(root).as_posix()
        assert not path.is_symlink(), name
        if path.is_dir():
            found[name] = None
        else:
            found[name] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


RESPONSES: dict[str, tuple[Callable[[Request, pathlib.Path], Response], dict[str, str]]] = {
    "zip-stream-store": (lambda request, root: ZipStreamResponse([root]), {}),
    "zip-stream-deflate": (
        lambda request, root: ZipStreamResponse([root], compression="deflate"),
        {},
    ),
    "zip-stream-auto": (lambda request, root: ZipStreamResponse([root], compression="auto"), {}),
    "zip-spooled": (lambda request, root: ZipResponse([root]), {}),
    "multipart": (lambda request, root: MultipartResponse([root]), {}),
    "negotiate-zip": (lambda request, root: negotiate(request, [root]), {"accept": "*/*"}),
    "negotiate-multipart": (
        lambda request, root: negotiate(request, [root]),
        {"accept": "multipart/mixed"},
    ),
}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("source") / "data"
    make_tree(root)

    def route(kind: str) -> Route:
        build = RESPONSES[kind][0]

        async def endpoint(request: Request) -> Response:
            return build(request, root)

        return Route(f"/{kind}", endpoint)

    with LiveServer(Starlette(routes=[route(kind) for kind in RESPONSES])) as server:
        yield server.url, snapshot(root.parent)


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.mark.parametrize("kind", list(RESPONSES))
def test_download(served: Any, tmp_path: pathlib.Path, kind: str) -> None:
    url, want = served
    saved = download(f"{url}/{kind}", tmp_path / "out", headers=RESPONSES[kind][1])
    assert snapshot(tmp_path / "out") == want
    assert {f.name: f.sha256 for f in saved} == {k: v for k, v in want.items() if v is not None}


@pytest.mark.anyio
@pytest.mark.parametrize("kind", list(RESPONSES))
async def test_adownload(served: Any, tmp_path: pathlib.Path, kind: str) -> None:
    url, want = served
    saved = await adownload(f"{url}/{kind}", tmp_path / "out", headers=RESPONSES[kind][1])
    assert snapshot(tmp_path / "out") == want
    assert len(saved) == sum(v is not None for v in want.values())


@pytest.mark.parametrize("kind", ["zip-stream-deflate", "multipart"])
def test_iter_entries(served: Any, kind: str) -> None:
    url, want = served
    seen: dict[str, str | None] = {}
    with httpx.stream("GET", f"{url}/{kind}") as response:
        for entry in iter_entries(response):
            data = b"".join(entry.iter_bytes())
            seen[entry.name.rstrip("/")] = (
                None if entry.is_dir else hashlib.sha256(data).hexdigest()
            )
    assert {k: v for k, v in seen.items() if v is not None} == {
        k: v for k, v in want.items() if v is not None
    }


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["zip-stream-store", "multipart"])
async def test_aiter_entries(served: Any, kind: str) -> None:
    url, want = served
    seen: dict[str, str] = {}
    async with httpx.AsyncClient() as client, client.stream("GET", f"{url}/{kind}") as response:
        async for entry in aiter_entries(response):
            digest = hashlib.sha256()
            async for chunk in entry.aiter_bytes():
                digest.update(chunk)
            if not entry.is_dir:
                seen[entry.name] = digest.hexdigest()
    assert seen == {k: v for k, v in want.items() if v is not None}


# -- memory -------------------------------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import resource, sys
    from multiresp.client import download
    saved = download(sys.argv[1], sys.argv[2])
    print(sum(f.size for f in saved), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    """
)


def generated_app() -> Starlette:
    """``/{mib}``: a ZipStreamResponse of 64 files of ``mib / 64`` MiB each, made on the fly."""

    async def chunks(size: int, fill: int) -> AsyncIterator[bytes]:
        block = bytes([fill]) * MIB
        for _ in range(size // MIB):
            yield block

    async def endpoint(request: Request) -> Response:
        size = int(request.path_params["mib"]) * MIB // 64
        entries = [
            Entry.from_iter(chunks(size, i), f"part-{i:02}.bin", size=size) for i in range(64)
        ]
        return ZipStreamResponse(entries)

    return Starlette(routes=[Route("/{mib:int}", endpoint)])


def peak_rss_mib(url: str, dest: pathlib.Path) -> tuple[int, float]:
    run = subprocess.run(
        [sys.executable, "-c", CHILD, url, str(dest)],
        capture_output=True,
        text=True,
        check=True,
        timeout=240,
    )
    size, rss_kib = run.stdout.split()
    return int(size), int(rss_kib) / 1024


@pytest.mark.slow
def test_client_memory_does_not_grow_with_the_response(
    live_server: Callable[..., LiveServer], tmp_path: pathlib.Path
) -> None:
    server = live_server(generated_app())
    small_size, small_rss = peak_rss_mib(f"{server.url}/64", tmp_path / "small")
    large_size, large_rss = peak_rss_mib(f"{server.url}/1024", tmp_path / "large")
    assert (small_size, large_size) == (64 * MIB, 1024 * MIB)
    # 16 times the bytes; the client's peak may differ only by noise, far from the 960 MiB added.
    assert large_rss - small_rss < 24, (small_rss, large_rss)
    print(f"client peak RSS: 64 MiB response {small_rss:.1f} MiB, 1 GiB {large_rss:.1f} MiB")
