"""``uvicorn --workers 2`` with the shared CRC cache: a file whose CRC one worker computed is
not read for its CRC by the other. The bytes each worker reads come from its /proc/<pid>/io."""

from __future__ import annotations

import contextlib
import io
import os
import pathlib
import socket
import subprocess
import sys
import textwrap
import time
import zipfile
from collections.abc import Iterator

import httpx
import pytest

from multiresp._crccache import ENV_VAR, RACY_SECONDS

SIZE = 64 << 20  # bytes of the large file; small files are read once whatever the cache
STARTUP_SECONDS = 30.0  # longest wait for both workers
TWICE = 2 * SIZE - (1 << 20)  # read twice (the first block is read once, its CRC kept)
ATTEMPTS = 60  # connections opened at most to find both workers

APP = """
import os

from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from multiresp import ZipStreamResponse, use_crc_cache, walk  # before any count


async def pid(request):
    return PlainTextResponse(str(os.getpid()))


async def memory_only(request):
    use_crc_cache(None)
    return PlainTextResponse(str(os.getpid()))


async def archive(request):
    folder = os.path.join(os.environ["FOLDER"], request.path_params["name"])
    return ZipStreamResponse(walk(folder), compression="store")


app = Starlette(
    routes=[
        Route("/pid", pid),
        Route("/memory-only", memory_only, methods=["POST"]),
        Route("/zip/{name}", archive),
    ]
)
"""

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/io"), reason="needs /proc/<pid>/io")


@pytest.fixture
def folder(tmp_path: pathlib.Path) -> pathlib.Path:
    root = tmp_path / "served"
    for fill, name in enumerate(("one", "two")):
        (root / name).mkdir(parents=True)
        (root / name / "big.bin").write_bytes(bytes([fill]) * SIZE)
        (root / name / "small.txt").write_bytes(b"small\n")
    (tmp_path / "app.py").write_text(textwrap.dedent(APP))
    return root


def read_bytes(pid: int) -> int:
    """Bytes the process has read with read(2) and its kin so far."""
    with open(f"/proc/{pid}/io") as f:
        fields = dict(line.split(": ") for line in f.read().splitlines())
    return int(fields["rchar"])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def uvicorn_workers(folder: pathlib.Path, cache: pathlib.Path) -> Iterator[str]:
    port = free_port()
    env = {**os.environ, "FOLDER": str(folder), "PYTHONPATH": os.pathsep.join(sys.path)}
    env[ENV_VAR] = str(cache)  # every worker shares it, without code
    command = [sys.executable, "-m", "uvicorn", "app:app", "--app-dir", str(folder.parent),
               "--workers", "2", "--port", str(port), "--timeout-keep-alive", "60",
               "--log-level", "warning"]  # fmt: skip
    server = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        _, err = server.communicate(timeout=30)
        assert "CRC cache" not in err  # the shared file never failed


def one_client_per_worker(url: str, stack: contextlib.ExitStack) -> dict[int, httpx.Client]:
    """A kept-alive connection to each worker: every request on it goes to that worker."""
    clients: dict[int, httpx.Client] = {}
    deadline = time.monotonic() + STARTUP_SECONDS
    attempts = 0
    while len(clients) < 2 and attempts < ATTEMPTS:
        client = stack.enter_context(
            httpx.Client(base_url=url, limits=httpx.Limits(max_connections=1))
        )
        try:
            pid = int(client.get("/pid").text)
        except httpx.TransportError:
            client.close()
            assert time.monotonic() < deadline, "the workers did not start"
            time.sleep(0.1)
            continue
        attempts += 1
        if pid in clients:
            client.close()
        else:
            clients[pid] = client
    assert len(clients) == 2, f"{attempts} connections all went to one worker"
    return clients


def download(client: httpx.Client, name: str, pids: list[int]) -> tuple[bytes, list[int]]:
    """The archive, and the bytes each worker read while one of them sent it."""
    before = [read_bytes(pid) for pid in pids]
    response = client.get(f"/zip/{name}")
    response.raise_for_status()
    body = response.content
    return body, [read_bytes(pid) - b for pid, b in zip(pids, before, strict=True)]


def test_a_crc_one_worker_computed_is_read_by_the_other_from_the_shared_cache_only(
    folder: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    # A file changed less than RACY_SECONDS before its read is not remembered.
    settled = (folder / "two" / "big.bin").stat().st_ctime + RACY_SECONDS + 0.1
    with uvicorn_workers(folder, tmp_path / "crc.sqlite") as url, contextlib.ExitStack() as stack:
        clients = one_client_per_worker(url, stack)
        first, second = list(clients)
        time.sleep(max(0.0, settled - time.time()))
        shared = download_on_both(clients, "one")
        for client in clients.values():
            client.post("/memory-only").raise_for_status()
        memory_only = download_on_both(clients, "two")
    for reads in (shared, memory_only):
        assert reads[first][0] > TWICE  # cold: read for its CRC, then to be sent
        assert reads[first][1] < SIZE // 8 and reads[second][1] < SIZE // 8  # the other: idle
    assert SIZE <= shared[second][0] < SIZE * 3 // 2, shared  # sent, not read for its CRC
    assert memory_only[second][0] > TWICE, memory_only  # without the file: computed again


def download_on_both(clients: dict[int, httpx.Client], name: str) -> dict[int, list[int]]:
    """Download ``name`` from each worker in turn; the bytes each worker read meanwhile."""
    pids = list(clients)
    bodies, reads = [], {}
    for pid, client in clients.items():
        body, read = download(client, name, pids)
        bodies.append(body)
        reads[pid] = [read[pids.index(pid)], read[1 - pids.index(pid)]]  # its own, the other's
    assert bodies[0] == bodies[1]
    with zipfile.ZipFile(io.BytesIO(bodies[1])) as archive:
        assert archive.testzip() is None  # the CRC the second worker used is right
        assert not archive.getinfo("big.bin").flag_bits & 8  # CRC in the local header
    return reads
