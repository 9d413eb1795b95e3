"""Ranges, validators and conditional requests, against a real uvicorn and a real httpx."""

from __future__ import annotations

import io
import os
import pathlib
import random
import socket
import subprocess
import sys
import textwrap
import time
import zipfile
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import python_multipart
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

import multiresp
from multiresp import Entry, MultipartResponse, ZipStreamResponse, _fs, negotiate
from multiresp._crccache import RACY_SECONDS

from conftest import LiveServer

Start = Callable[..., LiveServer]


def _tree(root: pathlib.Path, sizes: list[int], seed: int = 1, dirs: bool = True) -> pathlib.Path:
    rng = random.Random(seed)
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "empty.txt").write_bytes(b"")
    if dirs:
        (root / "dir" / "nested").mkdir(parents=True)
    for number, size in enumerate(sizes):
        (root / f"f{number}.bin").write_bytes(rng.randbytes(size))
    past = time.time_ns() - 60 * 10**9  # a minute old: Last-Modified is a strong validator
    for path in [*root.rglob("*"), root]:
        os.utime(path, ns=(past, past))
    return root


def _app(root: pathlib.Path, **multipart: Any) -> Starlette:
    def zipped(request: Request) -> Response:
        return ZipStreamResponse([root, Entry.from_bytes(b"hello", name="hello.txt")])

    def parts(request: Request) -> Response:
        return MultipartResponse([root], **multipart)

    def chosen(request: Request) -> Response:
        return negotiate(request, [root])

    def one_shot(request: Request) -> Response:
        return ZipStreamResponse([Entry.from_iter([b"abc"], name="a.txt", size=3)])

    return Starlette(
        routes=[
            Route("/zip", zipped, methods=["GET", "HEAD"]),
            Route("/multipart", parts, methods=["GET", "HEAD"]),
            Route("/negotiate", chosen),
            Route("/one-shot", one_shot),
        ]
    )


@pytest.fixture
def small(tmp_path: pathlib.Path, live_server: Start) -> Iterator[httpx.Client]:
    server = live_server(_app(_tree(tmp_path / "t", [40, 3])))
    with httpx.Client(base_url=server.url) as client:
        yield client


@pytest.fixture
def tiny(tmp_path: pathlib.Path, live_server: Start) -> Iterator[httpx.Client]:
    server = live_server(_app(_tree(tmp_path / "t", [5], dirs=False)))
    with httpx.Client(base_url=server.url) as client:
        yield client


@pytest.fixture
def larger(tmp_path: pathlib.Path, live_server: Start) -> Iterator[httpx.Client]:
    server = live_server(_app(_tree(tmp_path / "t", [300_000, 70_000, 1, 1_200_000])))
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


@pytest.mark.parametrize("path", ["/zip", "/multipart"])
def test_every_split_point_of_a_small_body_joins_back(tiny: httpx.Client, path: str) -> None:
    small = tiny
    whole = small.get(path)
    full = whole.content
    assert whole.headers["accept-ranges"] == "bytes"
    assert int(whole.headers["content-length"]) == len(full)
    for k in range(len(full)):
        part = small.get(path, headers={"range": f"bytes={k}-"})
        assert part.status_code == 206, k
        assert part.headers["content-range"] == f"bytes {k}-{len(full) - 1}/{len(full)}"
        assert full[:k] + part.content == full, k


@pytest.mark.parametrize("path", ["/zip", "/multipart"])
def test_sampled_split_points_of_a_larger_body_join_back(larger: httpx.Client, path: str) -> None:
    full = larger.get(path).content
    rng = random.Random(7)
    for k in sorted(rng.sample(range(len(full)), 200)):
        part = larger.get(path, headers={"range": f"bytes={k}-"})
        assert full[:k] + part.content == full, k
    if path == "/zip":
        assert zipfile.ZipFile(io.BytesIO(full)).testzip() is None


def test_suffix_open_ended_single_byte_and_unsatisfiable(small: httpx.Client) -> None:
    full = small.get("/zip").content
    n = len(full)
    assert small.get("/zip", headers={"range": "bytes=-7"}).content == full[-7:]
    assert small.get("/zip", headers={"range": f"bytes=-{n + 50}"}).content == full
    assert small.get("/zip", headers={"range": "bytes=5-"}).content == full[5:]
    one = small.get("/zip", headers={"range": "bytes=9-9"})
    assert (one.status_code, one.content) == (206, full[9:10])
    assert one.headers["content-range"] == f"bytes 9-9/{n}"
    assert small.get("/zip", headers={"range": f"bytes=3-{n * 2}"}).content == full[3:]
    for spec in (f"bytes={n}-", f"bytes={n + 9}-{n + 20}", "bytes=-0"):
        refused = small.get("/zip", headers={"range": spec})
        assert refused.status_code == 416, spec
        assert refused.headers["content-range"] == f"bytes */{n}"
        assert refused.content == b""
    for ignored in ("items=0-1", "bytes=5-2", "bytes=x-", "bytes=0-3,2-5"):
        whole = small.get("/zip", headers={"range": ignored})
        assert (whole.status_code, whole.content) == (200, full), ignored


@pytest.mark.parametrize("path", ["/zip", "/multipart"])
def test_several_ranges_come_as_multipart_byteranges(small: httpx.Client, path: str) -> None:
    whole = small.get(path)
    full = whole.content
    asked = [(0, 9), (20, 29), (len(full) - 5, len(full) - 1)]
    spec = ",".join(f"{a}-{b}" for a, b in asked)
    answer = small.get(path, headers={"range": f"bytes={spec}"})
    assert answer.status_code == 206
    assert answer.headers["content-type"].startswith("multipart/byteranges; boundary=")
    assert int(answer.headers["content-length"]) == len(answer.content)
    parts = _byteranges(answer)
    assert len(parts) == len(asked)
    for (headers, data), (a, b) in zip(parts, asked, strict=True):
        assert headers["content-range"] == f"bytes {a}-{b}/{len(full)}"
        assert headers["content-type"] == whole.headers["content-type"]
        assert data == full[a : b + 1]


def _byteranges(answer: httpx.Response) -> list[tuple[dict[str, str], bytes]]:
    """The parts of a multipart/byteranges body, read by python-multipart's parser."""
    boundary = answer.headers["content-type"].partition("boundary=")[2]
    parts: list[tuple[dict[str, str], bytes]] = []
    field: list[bytes] = []
    value: list[bytes] = []

    def on_part_begin() -> None:
        parts.append(({}, b""))

    def on_header_field(data: bytes, start: int, end: int) -> None:
        field.append(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        value.append(data[start:end])

    def on_header_end() -> None:
        parts[-1][0][b"".join(field).decode().lower()] = b"".join(value).decode()
        field.clear()
        value.clear()

    def on_part_data(data: bytes, start: int, end: int) -> None:
        headers, body = parts[-1]
        parts[-1] = (headers, body + data[start:end])

    parser = python_multipart.MultipartParser(
        boundary,
        callbacks={
            "on_part_begin": on_part_begin, "on_header_field": on_header_field,
            "on_header_value": on_header_value, "on_header_end": on_header_end,
            "on_part_data": on_part_data,
        },
    )  # fmt: skip
    parser.write(answer.content)
    parser.finalize()
    return parts


def test_too_many_ranges_get_the_whole_body(small: httpx.Client) -> None:
    full = small.get("/zip").content
    many = ",".join(f"{i * 3}-{i * 3 + 1}" for i in range(20))
    answer = small.get("/zip", headers={"range": f"bytes={many}"})
    assert (answer.status_code, answer.content) == (200, full)


def test_conditional_requests(small: httpx.Client) -> None:
    whole = small.get("/zip")
    etag, modified = whole.headers["etag"], whole.headers["last-modified"]
    assert etag.startswith('"') and not etag.startswith("W/")
    fresh = small.get("/zip", headers={"range": "bytes=10-", "if-range": etag})
    assert (fresh.status_code, fresh.content) == (206, whole.content[10:])
    by_date = small.get("/zip", headers={"range": "bytes=10-", "if-range": modified})
    assert by_date.status_code == 206
    stale = small.get("/zip", headers={"range": "bytes=10-", "if-range": '"other"'})
    assert (stale.status_code, stale.content) == (200, whole.content)
    weak = small.get("/zip", headers={"range": "bytes=10-", "if-range": "W/" + etag})
    assert weak.status_code == 200
    earlier = "Tue, 01 Jan 2002 00:00:00 GMT"
    old = small.get("/zip", headers={"range": "bytes=10-", "if-range": earlier})
    assert old.status_code == 200
    for headers in ({"if-none-match": etag}, {"if-none-match": f'"x", W/{etag}'},
                    {"if-none-match": "*"}, {"if-modified-since": modified}):  # fmt: skip
        unchanged = small.get("/zip", headers=headers)
        assert (unchanged.status_code, unchanged.content) == (304, b""), headers
        assert unchanged.headers["etag"] == etag
    assert small.get("/zip", headers={"if-none-match": '"x"'}).status_code == 200
    assert small.get("/zip", headers={"if-modified-since": earlier}).status_code == 200


def test_the_etag_follows_the_content(tmp_path: pathlib.Path, live_server: Start) -> None:
    root = _tree(tmp_path / "t", [10])
    server = live_server(_app(root))
    with httpx.Client(base_url=server.url) as client:
        first = client.get("/zip").headers["etag"]
        assert client.get("/zip").headers["etag"] == first
        os.utime(root / "f0.bin", ns=(0, 1_000_000_007))
        second = client.get("/zip").headers["etag"]
        os.utime(root / "f0.bin", ns=(0, 1_000_000_008))  # the same second, another ns
        assert len({first, second, client.get("/zip").headers["etag"]}) == 3


def test_negotiate_varies_on_accept(small: httpx.Client) -> None:
    for accept in ("application/zip", "multipart/mixed", "text/html"):
        assert small.get("/negotiate", headers={"accept": accept}).headers["vary"] == "Accept"


def test_a_one_shot_source_is_sent_whole_without_a_validator(small: httpx.Client) -> None:
    answer = small.get("/one-shot", headers={"range": "bytes=0-3"})
    assert answer.status_code == 200
    assert "etag" not in answer.headers and "accept-ranges" not in answer.headers
    assert zipfile.ZipFile(io.BytesIO(answer.content)).read("a.txt") == b"abc"


@pytest.mark.parametrize("path", ["/zip", "/multipart"])
def test_head_and_304_read_no_source(
    small: httpx.Client, path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    etag = small.get(path).headers["etag"]
    opened: list[str] = []
    real = _fs.open_source

    def counting(source: _fs.PathSource, entry: str) -> int:
        opened.append(entry)
        return real(source, entry)

    monkeypatch.setattr(_fs, "open_source", counting)
    head = small.head(path)
    assert head.status_code == 200 and head.headers["etag"] == etag
    assert small.get(path, headers={"if-none-match": etag}).status_code == 304
    assert opened == []
    small.get(path)
    assert opened  # the counter does see a GET's reads


def test_a_range_reads_only_the_sources_it_overlaps(
    larger: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The multipart parts are found by their offsets: no other file is opened."""
    full = larger.get("/multipart").content
    at = full.index(b"\r\n\r\n", full.index(b"f2.bin")) + 4  # its one byte of data
    opened: list[str] = []
    real = _fs.open_source

    def counting(source: _fs.PathSource, entry: str) -> int:
        opened.append(entry)
        return real(source, entry)

    monkeypatch.setattr(_fs, "open_source", counting)
    assert (
        larger.get("/multipart", headers={"range": f"bytes={at - 50}-{at + 5}"}).content
        == (full[at - 50 : at + 6])
    )
    assert len(opened) == 1 and opened[0].endswith("f2.bin")


# -- separate server processes ------------------------------------------------------------------

SERVER = textwrap.dedent(
    """
    import os, pathlib, sys
    import uvicorn
    from starlette.applications import Starlette
    from starlette.routing import Route
    from multiresp import MultipartResponse, ZipStreamResponse

    root = pathlib.Path(os.environ["TREE"])
    routes = [
        Route("/zip", lambda request: ZipStreamResponse([root])),
        Route("/multipart", lambda request: MultipartResponse([root])),
    ]
    uvicorn.run(Starlette(routes=routes), host="127.0.0.1", port=int(sys.argv[1]),
                log_level="critical", lifespan="off")
    """
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class _Process:
    """A uvicorn in a process of its own, whose reads ``/proc/<pid>/io`` counts."""

    def __init__(self, tree: pathlib.Path, script: pathlib.Path, **env: str) -> None:
        self.port = _free_port()
        environment = {**os.environ, "TREE": str(tree), **env}
        src = str(pathlib.Path(multiresp.__file__).parent.parent)
        environment["PYTHONPATH"] = src + os.pathsep + environment.get("PYTHONPATH", "")
        self.process = subprocess.Popen(
            [sys.executable, str(script), str(self.port)], env=environment
        )
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 20
        while not self._up():
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.stop()
                raise RuntimeError("the server did not start")
            time.sleep(0.05)

    def _up(self) -> bool:
        try:
            httpx.head(self.url + "/zip")
        except httpx.TransportError:
            return False
        return True

    def read_bytes(self) -> int:
        """Bytes the process read by read(2) and friends so far (files and sockets)."""
        for line in pathlib.Path(f"/proc/{self.process.pid}/io").read_text().splitlines():
            name, _, value = line.partition(":")
            if name == "rchar":
                return int(value)
        raise AssertionError("no rchar in /proc/<pid>/io")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


@pytest.fixture
def server_script(tmp_path: pathlib.Path) -> pathlib.Path:
    script = tmp_path / "server.py"
    script.write_text(SERVER)
    return script


@pytest.mark.skipif(not pathlib.Path("/proc/self/io").exists(), reason="needs /proc/<pid>/io")
def test_replicas_in_other_time_zones_agree(
    tmp_path: pathlib.Path, server_script: pathlib.Path
) -> None:
    tree = _tree(tmp_path / "t", [1000, 70_000])
    key = {"MULTIRESP_BOUNDARY_KEY": "shared secret"}
    east = _Process(tree, server_script, TZ="Asia/Tokyo", **key)
    try:
        west = _Process(tree, server_script, TZ="America/Los_Angeles", **key)
        try:
            for path in ("/zip", "/multipart"):
                ranges = {"range": "bytes=100-70500"}
                a, b = (
                    httpx.get(east.url + path, headers=ranges),
                    httpx.get(west.url + path, headers=ranges),
                )
                assert a.status_code == b.status_code == 206
                assert a.headers["etag"] == b.headers["etag"]
                assert a.headers["last-modified"] == b.headers["last-modified"]
                assert a.content == b.content
                resumed = httpx.get(
                    west.url + path, headers={"range": "bytes=5-", "if-range": a.headers["etag"]}
                )
                assert resumed.status_code == 206
        finally:
            west.stop()
    finally:
        east.stop()


@pytest.mark.skipif(not pathlib.Path("/proc/self/io").exists(), reason="needs /proc/<pid>/io")
def test_a_boundary_without_the_shared_key_differs_per_process(
    tmp_path: pathlib.Path, server_script: pathlib.Path
) -> None:
    tree = _tree(tmp_path / "t", [10])
    env = {k: v for k, v in os.environ.items() if k != "MULTIRESP_BOUNDARY_KEY"}
    one = _Process(tree, server_script, **env)
    try:
        two = _Process(tree, server_script, **env)
        try:
            a, b = httpx.get(one.url + "/multipart"), httpx.get(two.url + "/multipart")
            assert a.headers["content-type"] != b.headers["content-type"]
            assert a.headers["etag"] != b.headers["etag"]  # the ETag covers the boundary
            again = httpx.get(one.url + "/multipart")
            assert again.headers["etag"] == a.headers["etag"] and again.content == a.content
        finally:
            two.stop()
    finally:
        one.stop()


@pytest.mark.skipif(not pathlib.Path("/proc/self/io").exists(), reason="needs /proc/<pid>/io")
def test_the_last_tenth_reads_well_under_half_once_crcs_are_cached(
    tmp_path: pathlib.Path, server_script: pathlib.Path
) -> None:
    tree = _tree(tmp_path / "t", [2 << 20] * 20)  # 40 MiB
    # The cache remembers no CRC of a file changed within RACY_SECONDS of its read: a write in
    # the same tick of the file system's clock would leave its times, and so the key, unchanged.
    time.sleep(RACY_SECONDS + 0.1)
    server = _Process(tree, server_script)
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            full = client.get("/zip").content  # computes and caches every CRC
            tenth = len(full) - len(full) // 10
            before = server.read_bytes()
            tail = client.get("/zip", headers={"range": f"bytes={tenth}-"})
            read = server.read_bytes() - before
            head = client.head("/zip")
            after_head = server.read_bytes() - before - read
        assert tail.content == full[tenth:]
        assert read < len(full) // 2, (read, len(full))
        assert read < len(full) // 10 + (1 << 20), (read, len(full))
        assert head.status_code == 200 and after_head < 64 << 10  # the request, no source
    finally:
        server.stop()


def test_a_date_within_the_last_second_is_no_if_range_validator(
    tmp_path: pathlib.Path, live_server: Start
) -> None:
    root = _tree(tmp_path / "t", [10])
    (root / "f0.bin").write_bytes(b"fresh")  # modified now: another write may follow this second
    server = live_server(_app(root))
    with httpx.Client(base_url=server.url) as client:
        modified = client.get("/zip").headers["last-modified"]
        answer = client.get("/zip", headers={"range": "bytes=10-", "if-range": modified})
    assert answer.status_code in (200, 206)
    if time.time() - (root / "f0.bin").stat().st_mtime < 1:  # still within the second
        assert answer.status_code == 200


def test_auto_has_a_plan_only_when_no_entry_is_sampled(
    tmp_path: pathlib.Path, live_server: Start
) -> None:
    images = tmp_path / "images"
    images.mkdir()
    (images / "a.png").write_bytes(random.Random(3).randbytes(70_000))
    (images / "b.jpg").write_bytes(b"")
    texts = tmp_path / "texts"
    texts.mkdir()
    (texts / "a.txt").write_bytes(b"words " * 1000)

    def auto(request: Request) -> Response:
        root = images if request.query_params.get("kind") == "images" else texts
        return ZipStreamResponse([root], compression="auto")

    server = live_server(Starlette(routes=[Route("/auto", auto)]))
    with httpx.Client(base_url=server.url) as client:
        whole = client.get("/auto?kind=images")
        assert int(whole.headers["content-length"]) == len(whole.content)
        part = client.get("/auto?kind=images", headers={"range": "bytes=100-"})
        assert (part.status_code, part.content) == (206, whole.content[100:])
        sampled = client.get("/auto?kind=texts", headers={"range": "bytes=100-"})
        assert sampled.status_code == 200 and "etag" not in sampled.headers
        assert "content-length" not in sampled.headers  # chunked: deflate decided by a sample
        assert zipfile.ZipFile(io.BytesIO(sampled.content)).read("texts/a.txt").startswith(b"words")
