"""Resume end to end: a real uvicorn, a TCP proxy that cuts the body, a real httpx client.

The stand-in server below serves fixed bodies with a strong ETag, ``Accept-Ranges: bytes`` and
RFC 9110 single ranges (206, ``Content-Range``, ``If-Range``, 416), as multiresp's own sized
responses are meant to. The proxy (tests/proxy.py) ends connections mid-body; the client must
ask for exactly the missing bytes, never splice two versions of the files, and say what
happened when it cannot resume.
"""

from __future__ import annotations

import dataclasses
import io
import itertools
import os
import pathlib
import random
import re
import subprocess
import sys
import zipfile
from collections.abc import Callable
from urllib.parse import quote

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from multiresp import Entry, ProtocolError, TransferTimeout, _transfer
from multiresp._sink import TEMP_SUFFIX
from multiresp.client import adownload, download
from proxy import CuttingProxy

from conftest import LiveServer

BOUNDARY = "resume-test-boundary"
MULTIPART = f'multipart/mixed; boundary="{BOUNDARY}"'
SCRIPT = pathlib.Path(sys.executable).parent / "multiresp"
SRC = pathlib.Path(__file__).resolve().parent.parent / "src"


def sample(version: int) -> dict[str, bytes]:
    """Files whose every byte depends on ``version``, with the same sizes in each version."""
    rng = random.Random(version)
    return {
        "first.txt": f"version {version}\n".encode() * 500,
        "big/one.bin": rng.randbytes(700_000),
        "big/two.bin": rng.randbytes(500_000),
        "last.txt": f"the end of version {version}\n".encode(),
    }


FILES = sample(1)


def zip_body(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, data in files.items():
            archive.writestr(zipfile.ZipInfo(name, (2024, 1, 1, 0, 0, 0)), data)
    return out.getvalue()


def multipart_body(files: dict[str, bytes]) -> bytes:
    out = bytearray()
    for name, data in files.items():
        head = (
            f"--{BOUNDARY}\r\nContent-Type: application/octet-stream\r\n"
            f"Content-Disposition: attachment; filename*=UTF-8''{quote(name)}\r\n"
            f"Content-Length: {len(data)}\r\n\r\n"
        )
        out += head.encode() + data + b"\r\n"
    out += f"--{BOUNDARY}--\r\n".encode()
    return bytes(out)


FORMATS = {"zip": (zip_body, "application/zip"), "multipart": (multipart_body, MULTIPART)}


def data_offset(body: bytes, fmt: str, name: str) -> int:
    """Where ``name``'s content starts in a body made by ``FORMATS[fmt]``."""
    if fmt == "multipart":
        marker = f"filename*=UTF-8''{quote(name)}".encode()
        return body.index(b"\r\n\r\n", body.index(marker)) + 4
    info = zipfile.ZipFile(io.BytesIO(body)).getinfo(name)
    local = body[info.header_offset : info.header_offset + 30]
    return (
        info.header_offset
        + 30
        + int.from_bytes(local[26:28], "little")
        + int.from_bytes(local[28:30], "little")
    )


# -- the stand-in range server ------------------------------------------------------------


@dataclasses.dataclass
class Site:
    """What the stand-in server serves; tests change it between attempts."""

    version: int = 1
    validators: bool = True  # send ETag and Accept-Ranges, and honour Range
    honour_if_range: bool = True  # False: a sloppy server that sends 206 whatever If-Range says
    content_range: str | None = None  # "from-zero" or "other-total": a wrong 206
    unavailable: int = 0  # answer this many range requests with 503, as a restarting server

    def body(self, fmt: str) -> bytes:
        make, _ = FORMATS[fmt]
        return make(sample(self.version))

    def etag(self) -> str:
        return f'"v{self.version}"'


RANGE = re.compile(r"bytes=(\d+)-(\d*)")


def range_app(site: Site) -> Starlette:
    async def serve(request: Request) -> Response:
        fmt = request.path_params["fmt"]
        body, (_, media_type) = site.body(fmt), FORMATS[fmt]
        headers = {"etag": site.etag(), "accept-ranges": "bytes"} if site.validators else {}
        wanted = request.headers.get("range")
        if_range = request.headers.get("if-range")
        current = if_range is None or if_range == site.etag() or not site.honour_if_range
        match = RANGE.fullmatch(wanted or "")
        if match and site.unavailable:
            site.unavailable -= 1
            return Response(b"restarting", 503, headers={"retry-after": "1"})
        if site.validators and match and current:
            start = int(match[1])
            end = min(int(match[2]) if match[2] else len(body) - 1, len(body) - 1)
            if start >= len(body):
                headers["content-range"] = f"bytes */{len(body)}"
                return Response(b"", 416, headers=headers)
            if site.content_range == "from-zero":  # the start asked for is ignored
                start, end = 0, len(body) - 1
            total = len(body) + (1 if site.content_range == "other-total" else 0)
            headers["content-range"] = f"bytes {start}-{end}/{total}"
            return Response(body[start : end + 1], 206, headers=headers, media_type=media_type)
        return Response(body, headers=headers, media_type=media_type)

    return Starlette(routes=[Route("/{fmt}", serve)])


@pytest.fixture
def site() -> Site:
    return Site()


@pytest.fixture
def server(live_server: Callable[..., LiveServer], site: Site) -> LiveServer:
    return live_server(range_app(site))


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_transfer, "RESUME_BACKOFF", 0.01)


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def tree(root: pathlib.Path) -> dict[str, bytes]:
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def temp_files(root: pathlib.Path) -> list[pathlib.Path]:
    return [path for path in root.rglob("*") if path.name.endswith(TEMP_SUFFIX)]


def cut_points(body: bytes, fmt: str) -> list[int]:
    """Cuts, each counted from where the previous connection started: in the first file's
    content, in a part or local header, deep in the big files, and in the last bytes."""
    at = [
        data_offset(body, fmt, "first.txt") + 1000,
        data_offset(body, fmt, "big/one.bin") - 10,  # inside the header before its data
        data_offset(body, fmt, "big/one.bin") + 350_000,
        data_offset(body, fmt, "big/two.bin") + 499_999,
        len(body) - 3,
    ]
    return [at[0]] + [b - a for a, b in itertools.pairwise(at)]


def expected_ranges(cuts: list[int]) -> list[str | None]:
    starts = [sum(cuts[: index + 1]) for index in range(len(cuts))]
    return [None] + [f"bytes={start}-" for start in starts]


def check_resumed(proxy: CuttingProxy, cuts: list[int], etag: str) -> None:
    """Each retry asked for exactly the bytes not yet received, under the first ETag."""
    assert proxy.ranges == expected_ranges(cuts)
    assert [exchange.body_bytes for exchange in proxy.exchanges[:-1]] == cuts
    assert [exchange.if_range for exchange in proxy.exchanges[1:]] == [etag] * len(cuts)
    assert [exchange.status for exchange in proxy.exchanges] == [200] + [206] * len(cuts)


# -- (1) cut several times: byte-identical files, only the missing bytes asked for -----------


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_download_resumes_through_a_cutting_proxy(
    server: LiveServer, site: Site, tmp_path: pathlib.Path, fmt: str
) -> None:
    cuts = cut_points(site.body(fmt), fmt)
    with CuttingProxy(server.port, cuts) as proxy:
        saved = download(f"{proxy.url}/{fmt}", tmp_path)
    assert tree(tmp_path) == FILES
    assert [file.name for file in saved] == list(FILES)
    check_resumed(proxy, cuts, '"v1"')


@pytest.mark.anyio
@pytest.mark.parametrize("fmt", list(FORMATS))
async def test_adownload_resumes_through_a_cutting_proxy(
    server: LiveServer, site: Site, tmp_path: pathlib.Path, fmt: str
) -> None:
    cuts = cut_points(site.body(fmt), fmt)
    with CuttingProxy(server.port, cuts) as proxy:
        saved = await adownload(f"{proxy.url}/{fmt}", tmp_path)
    assert tree(tmp_path) == FILES
    assert [file.name for file in saved] == list(FILES)
    check_resumed(proxy, cuts, '"v1"')


# -- (2) the files changed between attempts: no splice ----------------------------------------


@pytest.mark.parametrize("honour_if_range", [True, False], ids=["200-full", "206-new-etag"])
@pytest.mark.parametrize("fmt", list(FORMATS))
def test_no_splice_when_the_files_changed_between_attempts(
    server: LiveServer, site: Site, tmp_path: pathlib.Path, fmt: str, honour_if_range: bool
) -> None:
    site.honour_if_range = honour_if_range
    # Both versions have the same sizes, so a splice would keep every length and the total.
    cut = data_offset(site.body(fmt), fmt, "big/one.bin") + 300_000

    def change(index: int) -> None:
        site.version = 2

    with (
        CuttingProxy(server.port, [cut], on_cut=change) as proxy,
        pytest.raises(ProtocolError) as caught,
    ):
        download(f"{proxy.url}/{fmt}", tmp_path)
    message = str(caught.value)
    if honour_if_range:
        assert "answered 200" in message
    else:
        assert 'the ETag "v1" changed to "v2"' in message
    assert caught.value.entry == "big/one.bin"
    assert "big/one.bin" in message
    assert proxy.ranges == [None, f"bytes={cut}-"]  # it asked, under If-Range, and refused
    assert proxy.exchanges[1].if_range == '"v1"'
    # The file verified before the change stays (it is whole, from version 1); nothing else.
    assert tree(tmp_path) == {"first.txt": FILES["first.txt"]}
    assert temp_files(tmp_path) == []


@pytest.mark.parametrize(
    ("content_range", "problem"),
    [("from-zero", "which starts elsewhere"), ("other-total", "whose total is not the")],
)
def test_no_splice_when_the_206_is_not_the_rest(
    server: LiveServer,
    site: Site,
    tmp_path: pathlib.Path,
    content_range: str,
    problem: str,
) -> None:
    site.content_range = content_range
    cut = data_offset(site.body("multipart"), "multipart", "big/two.bin") + 10
    with (
        CuttingProxy(server.port, [cut]) as proxy,
        pytest.raises(ProtocolError, match=re.escape(problem)) as caught,
    ):
        download(f"{proxy.url}/multipart", tmp_path)
    assert caught.value.entry == "big/two.bin"
    assert f"resuming {proxy.url}/multipart at byte {cut}" in str(caught.value)
    assert tree(tmp_path) == {name: FILES[name] for name in ("first.txt", "big/one.bin")}
    assert temp_files(tmp_path) == []


def test_a_resume_answered_503_is_retried(
    server: LiveServer, site: Site, tmp_path: pathlib.Path
) -> None:
    site.unavailable = _transfer.MAX_RESUME_ATTEMPTS - 1
    cut = data_offset(site.body("zip"), "zip", "big/one.bin") + 5000
    with CuttingProxy(server.port, [cut]) as proxy:
        download(f"{proxy.url}/zip", tmp_path)
    assert tree(tmp_path) == FILES
    assert proxy.ranges == [None] + [f"bytes={cut}-"] * _transfer.MAX_RESUME_ATTEMPTS
    assert [exchange.status for exchange in proxy.exchanges[1:]] == [503] * (
        _transfer.MAX_RESUME_ATTEMPTS - 1
    ) + [206]


@pytest.mark.anyio
async def test_a_server_that_stays_unavailable_is_given_up_on(
    server: LiveServer, site: Site, tmp_path: pathlib.Path
) -> None:
    site.unavailable = 100
    cut = data_offset(site.body("multipart"), "multipart", "big/one.bin") + 5000
    with (
        CuttingProxy(server.port, [cut]) as proxy,
        pytest.raises(ProtocolError) as caught,
    ):
        await adownload(f"{proxy.url}/multipart", tmp_path)
    attempts = _transfer.MAX_RESUME_ATTEMPTS
    assert str(caught.value).startswith(
        "the server ended the response early: connection lost in entry 'big/one.bin', after"
        f" {cut} of"
    )
    assert f"gave up after {attempts} attempts" in str(caught.value)
    assert "answered 503 Service Unavailable to the resume" in str(caught.value)
    assert len(proxy.exchanges) == 1 + attempts
    assert tree(tmp_path) == {"first.txt": FILES["first.txt"]}
    assert temp_files(tmp_path) == []


# -- (3) the server ends early and the body cannot be resumed: say so -------------------------


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_an_early_end_without_validators_names_the_entry(
    server: LiveServer, site: Site, tmp_path: pathlib.Path, fmt: str
) -> None:
    site.validators = False
    body = site.body(fmt)
    cut = data_offset(body, fmt, "big/two.bin") + 1234
    with CuttingProxy(server.port, [cut]) as proxy, pytest.raises(ProtocolError) as caught:
        download(f"{proxy.url}/{fmt}", tmp_path)
    message = str(caught.value)
    assert "the server ended the response early" in message
    assert "in entry 'big/two.bin'" in message
    assert f"after {cut} of {len(body)} bytes" in message
    assert "cannot be resumed" in message
    assert "no strong ETag" in message
    assert caught.value.entry == "big/two.bin"
    assert len(proxy.exchanges) == 1
    assert tree(tmp_path) == {name: FILES[name] for name in ("first.txt", "big/one.bin")}
    assert temp_files(tmp_path) == []


@pytest.mark.anyio
async def test_adownload_says_the_server_ended_early_once_retries_are_spent(
    server: LiveServer, site: Site, tmp_path: pathlib.Path
) -> None:
    body = site.body("zip")
    first = data_offset(body, "zip", "big/one.bin") + 100
    attempts = _transfer.MAX_RESUME_ATTEMPTS
    # The first connection brings bytes; every resume is cut before any body byte.
    with (
        CuttingProxy(server.port, [first] + [0] * attempts) as proxy,
        pytest.raises(ProtocolError) as caught,
    ):
        await adownload(f"{proxy.url}/zip", tmp_path)
    message = str(caught.value)
    assert "the server ended the response early" in message
    assert f"in entry 'big/one.bin', after {first} of {len(body)} bytes" in message
    assert f"gave up after {attempts} attempts" in message
    assert caught.value.entry == "big/one.bin"
    assert proxy.ranges == [None] + [f"bytes={first}-"] * attempts
    assert tree(tmp_path) == {"first.txt": FILES["first.txt"]}
    assert temp_files(tmp_path) == []


# -- (4) multiresp's own sized responses behind the proxy ------------------------------------


def own_app(kind: str) -> Starlette:
    from multiresp.responses import MultipartResponse, ZipStreamResponse

    def entries() -> list[Entry]:
        return [Entry.from_bytes(data, name) for name, data in FILES.items()]

    async def serve(request: Request) -> Response:
        if kind == "zip":
            return ZipStreamResponse(entries(), compression="store")
        return MultipartResponse(entries())

    return Starlette(routes=[Route("/files", serve)])


@pytest.mark.parametrize(
    "kind", ["zip", "multipart"], ids=["ZipStreamResponse", "MultipartResponse"]
)
def test_download_resumes_multiresp_responses_through_a_cutting_proxy(
    live_server: Callable[..., LiveServer], tmp_path: pathlib.Path, kind: str
) -> None:
    server = live_server(own_app(kind))
    cuts = [150_000, 400_000, 300_000]
    with CuttingProxy(server.port, cuts) as proxy:
        saved = download(f"{proxy.url}/files", tmp_path)
    assert tree(tmp_path) == FILES
    assert [file.name for file in saved] == list(FILES)
    etag = proxy.exchanges[1].if_range
    assert etag is not None and not etag.startswith("W/")
    check_resumed(proxy, cuts, etag)


@pytest.mark.parametrize(
    "kind", ["zip", "multipart"], ids=["ZipStreamResponse", "MultipartResponse"]
)
def test_no_splice_from_multiresp_responses_when_a_file_changed(
    live_server: Callable[..., LiveServer], tmp_path: pathlib.Path, kind: str
) -> None:
    """A folder served from disk whose file is rewritten between attempts (same size): the
    server's ETag changes with the mtime, its If-Range check sends the whole new body, and the
    client refuses it rather than splice two versions."""
    from multiresp import walk
    from multiresp.responses import MultipartResponse, ZipStreamResponse

    root = tmp_path / "served"
    for name, data in FILES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)

    async def serve(request: Request) -> Response:
        entries = walk(root)
        if kind == "zip":
            return ZipStreamResponse(entries, compression="store")
        return MultipartResponse(entries)

    server = live_server(Starlette(routes=[Route("/files", serve)]))
    changed = sample(2)

    def change(index: int) -> None:
        (root / "big/one.bin").write_bytes(changed["big/one.bin"])
        stat = (root / "big/one.bin").stat()
        os.utime(root / "big/one.bin", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))

    dest = tmp_path / "dest"
    with (
        CuttingProxy(server.port, [900_000], on_cut=change) as proxy,
        pytest.raises(ProtocolError, match="answered 200") as caught,
    ):
        download(f"{proxy.url}/files", dest)
    assert proxy.ranges == [None, "bytes=900000-"]
    assert proxy.exchanges[1].if_range is not None
    assert caught.value.entry is not None
    # Whatever was verified before the change is whole and from the first version; no file is
    # made of two versions and no temporary file stays.
    for name, data in tree(dest).items():
        assert data == FILES[name], name
    assert temp_files(dest) == []


# -- (5) the command line resumes too ----------------------------------------------------------


def multiresp_get(url: str, dest: pathlib.Path) -> subprocess.CompletedProcess[str]:
    """The console script, run as users do, on this worktree's code."""
    return subprocess.run(
        [str(SCRIPT), "get", url, "-o", str(dest), "--no-progress"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(SRC)},
        timeout=60,
    )


def test_multiresp_get_resumes_through_a_cutting_proxy(
    server: LiveServer, site: Site, tmp_path: pathlib.Path
) -> None:
    cuts = cut_points(site.body("zip"), "zip")[:3]
    dest = tmp_path / "out"
    with CuttingProxy(server.port, cuts) as proxy:
        run = multiresp_get(f"{proxy.url}/zip", dest)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith(f"Saved {len(FILES)} files")
    assert tree(dest) == FILES
    check_resumed(proxy, cuts, '"v1"')


def test_the_proxy_log_is_what_the_client_sent(server: LiveServer, tmp_path: pathlib.Path) -> None:
    """The proxy itself: a pass-through connection is logged and not cut."""
    with CuttingProxy(server.port) as proxy:
        download(f"{proxy.url}/multipart", tmp_path, headers={"x-probe": "1"})
    (exchange,) = proxy.exchanges
    assert exchange.requests[0][":request"] == "GET /multipart HTTP/1.1"
    assert exchange.requests[0]["x-probe"] == "1"
    assert exchange.status == 200 and not exchange.cut
    assert exchange.body_bytes == len(multipart_body(FILES))


# -- the retry schedule, without a network ----------------------------------------------------


def opened_transfer(**headers: str) -> _transfer.Transfer:
    transfer = _transfer.Transfer(
        "http://example.invalid/files", method="GET", limits=None, resume=True, progress=None
    )
    response = httpx.Response(
        200,
        headers={"content-type": MULTIPART, **headers},
        request=httpx.Request("GET", "http://example.invalid/files"),
    )
    transfer.open(response)
    return transfer


def test_backoff_doubles_up_to_its_cap_and_restarts_after_progress(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_transfer, "RESUME_BACKOFF", 1.0)
    monkeypatch.setattr(_transfer, "RESUME_BACKOFF_MAX", 4.0)
    monkeypatch.setattr(_transfer, "MAX_RESUME_ATTEMPTS", 5)
    transfer = opened_transfer(etag='"v1"', **{"accept-ranges": "bytes"})
    drop = httpx.RemoteProtocolError("peer closed connection")
    body = multipart_body(FILES)
    list(transfer.feed(body[:1000]))
    assert [transfer.dropped(drop) for _ in range(5)] == [1.0, 2.0, 4.0, 4.0, 4.0]
    list(transfer.feed(body[1000:2000]))  # an attempt brought bytes: a fresh run of attempts
    assert transfer.dropped(drop) == 1.0
    assert transfer.request_kwargs({})["headers"]["range"] == "bytes=2000-"
    for _ in range(4):
        transfer.dropped(drop)
    with pytest.raises(ProtocolError, match="gave up after 5 attempts") as caught:
        transfer.dropped(drop)
    assert str(caught.value).startswith(
        "the server ended the response early: connection lost in entry 'first.txt', after 2000"
        " of ? bytes"
    )


@pytest.mark.parametrize(
    ("headers", "why"),
    [
        ({}, "it has no strong ETag"),
        ({"etag": 'W/"v1"', "accept-ranges": "bytes"}, 'its ETag W/"v1" is weak'),
        ({"etag": '"v1"'}, "it has no Accept-Ranges: bytes"),
        ({"etag": '"v1"', "accept-ranges": "none"}, "it has no Accept-Ranges: bytes"),
        (
            {"etag": '"v1"', "accept-ranges": "bytes", "content-encoding": "gzip"},
            "it came with Content-Encoding gzip",
        ),
    ],
)
def test_the_error_says_why_a_body_cannot_be_resumed(headers: dict[str, str], why: str) -> None:
    transfer = opened_transfer(**headers)
    assert not transfer.resumable
    with pytest.raises(ProtocolError) as caught:
        transfer.dropped(httpx.ReadError("connection reset by peer"))
    message = str(caught.value)
    assert message.startswith("the connection failed before the response ended: connection lost")
    assert f"it cannot be resumed: {why} (" in message


def test_multiresp_get_says_the_server_ended_early_in_one_line(
    server: LiveServer, site: Site, tmp_path: pathlib.Path
) -> None:
    site.validators = False
    cut = data_offset(site.body("zip"), "zip", "big/one.bin") + 4321
    dest = tmp_path / "out"
    with CuttingProxy(server.port, [cut]) as proxy:
        run = multiresp_get(f"{proxy.url}/zip", dest)
    assert run.returncode == 1
    assert run.stdout == ""
    (line,) = run.stderr.splitlines()
    assert line.startswith(
        "multiresp get: error: ProtocolError: the server ended the response early: connection"
        " lost in entry"
        f" 'big/one.bin', after {cut} of {len(site.body('zip'))} bytes"
    )
    assert "it cannot be resumed: it has no strong ETag" in line
    assert tree(dest) == {"first.txt": FILES["first.txt"]}
    assert temp_files(dest) == []


def test_a_206_fixes_the_total_of_a_chunked_body_for_the_next_resumes() -> None:
    transfer = opened_transfer(etag='"v1"', **{"accept-ranges": "bytes"})  # no Content-Length
    body = multipart_body(FILES)
    drop = httpx.RemoteProtocolError("incomplete chunked read")
    request = httpx.Request("GET", "http://example.invalid/files")

    def partial(start: int, total: int) -> httpx.Response:
        headers = {"etag": '"v1"', "content-range": f"bytes {start}-{total - 1}/{total}"}
        return httpx.Response(206, headers=headers, request=request)

    list(transfer.feed(body[:1000]))
    transfer.dropped(drop)
    transfer.open(partial(1000, len(body)))
    assert transfer.total == len(body)
    list(transfer.feed(body[1000:2000]))
    transfer.dropped(drop)
    with pytest.raises(ProtocolError, match=f"whose total is not the {len(body)} bytes"):
        transfer.open(partial(2000, len(body) + 10))


def test_the_backoff_never_sleeps_past_the_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_transfer, "RESUME_BACKOFF", 0.5)
    now = [0.0]
    transfer = _transfer.Transfer(
        "http://example.invalid/files",
        method="GET",
        limits=None,
        resume=True,
        progress=None,
        deadline=10.0,
        clock=lambda: now[0],
    )
    request = httpx.Request("GET", "http://example.invalid/files")
    headers = {"content-type": MULTIPART, "etag": '"v1"', "accept-ranges": "bytes"}
    transfer.open(httpx.Response(200, headers=headers, request=request))
    list(transfer.feed(multipart_body(FILES)[:1000]))
    now[0] = 9.9
    assert transfer.dropped(httpx.RemoteProtocolError("cut")) == pytest.approx(0.1)
    now[0] = 10.0
    with pytest.raises(TransferTimeout, match="deadline of 10 s"):
        transfer.request_kwargs({})
