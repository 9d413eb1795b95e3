"""receive_files over a real uvicorn: bodies from httpx, requests and curl, and hostile ones.

Every hostile upload gets its status, leaves nothing in ``dest`` (not even the files that came
before the bad part: an upload is all or nothing), nothing next to it, and a server that goes
on serving.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import psutil
import pytest
import requests
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from multiresp import Limits, UnsafeNameError, receive_files
from multiresp._events import Data, EntryEnd, EntryStart
from multiresp.uploads import EXCEPTION_HANDLERS, ReceivedFiles, _UploadSink

from conftest import LiveServer, require_tool

BOUNDARY = "test-boundary-1234"
MIB = 1 << 20  # bytes
WAIT = 10  # seconds for the server to finish with a request the client gave up on
LIMIT_PARAMS = ("max_files", "max_file_size", "max_total_size", "max_name_length")


class Uploads:
    """An app whose ``POST /up`` stores into ``dest``; ``?max_files=`` etc. set the limits."""

    def __init__(self, dest: pathlib.Path) -> None:
        self.dest = dest
        self.outcomes: list[str] = []  # "ok", or the name of the error, per request
        self.app = Starlette(
            routes=[
                Route("/up", self.up, methods=["POST"]),
                Route("/health", self.health),
            ],
            exception_handlers=EXCEPTION_HANDLERS,
        )

    async def health(self, request: Request) -> Response:
        return Response("ok")

    async def up(self, request: Request) -> Response:
        query = request.query_params
        limits = Limits(**{key: int(query[key]) for key in LIMIT_PARAMS if key in query})
        try:
            saved = await receive_files(request, self.dest, limits=limits)
        except BaseException as exc:
            self.outcomes.append(type(exc).__name__)
            raise
        self.outcomes.append("ok")
        return JSONResponse(report(saved))


def report(saved: ReceivedFiles) -> dict[str, Any]:
    return {
        "files": [
            {"name": f.name, "size": f.size, "sha256": f.sha256, "path": str(f.path)} for f in saved
        ],
        "fields": [list(item) for item in saved.fields.multi_items()],
    }


@pytest.fixture
def dest(tmp_path: pathlib.Path) -> pathlib.Path:
    return tmp_path / "box" / "dest"


@pytest.fixture
def uploads(dest: pathlib.Path) -> Uploads:
    return Uploads(dest)


@pytest.fixture
def server(uploads: Uploads, live_server: Callable[..., LiveServer]) -> Iterator[str]:
    yield live_server(uploads.app).url


def tree(root: pathlib.Path) -> dict[str, bytes | None]:
    """Everything under ``root``: files with their bytes, folders as None."""
    if not root.exists():
        return {}
    return {
        p.relative_to(root).as_posix(): (p.read_bytes() if p.is_file() else None)
        for p in sorted(root.rglob("*"))
    }


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


SIZES = [0, 1, 2, 7, 4095, 4096, 4097, 65_537, 1_000_003, 5 * MIB + 3]


def sample_files() -> dict[str, bytes]:
    files = {f"odd/size-{size}.bin": os.urandom(size) for size in SIZES}
    files["top.txt"] = b"top\n"
    files["photos/2026/r\u00e9sum\u00e9 \u65e5\u672c.txt"] = b"unicode name\n"
    files["photos/2026/a b.jpg"] = os.urandom(30_000)
    return files


def check_saved(body: dict[str, Any], files: dict[str, bytes], dest: pathlib.Path) -> None:
    assert [(f["name"], f["size"], f["sha256"]) for f in body["files"]] == [
        (name, len(data), sha(data)) for name, data in files.items()
    ]
    for f in body["files"]:
        assert pathlib.Path(f["path"]) == dest.joinpath(*f["name"].split("/"))
    assert {k: v for k, v in tree(dest).items() if v is not None} == files


def test_round_trip_with_httpx(server: str, dest: pathlib.Path) -> None:
    files = sample_files()
    response = httpx.post(
        server + "/up",
        files=[("files", (name, data)) for name, data in files.items()],
        data={"title": "run 7", "tag": ["a", "b"], "evil.txt": "a field is never a file"},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    check_saved(body, files, dest)
    assert body["fields"] == [
        ["title", "run 7"],
        ["tag", "a"],
        ["tag", "b"],
        ["evil.txt", "a field is never a file"],
    ]
    assert not (dest / "evil.txt").exists()


def test_round_trip_with_requests(server: str, dest: pathlib.Path) -> None:
    files = sample_files()
    response = requests.post(
        server + "/up",
        files=[("files", (name, data)) for name, data in files.items()],
        data={"note": "from requests"},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    check_saved(response.json(), files, dest)
    assert response.json()["fields"] == [["note", "from requests"]]


def test_round_trip_with_curl(server: str, dest: pathlib.Path, tmp_path: pathlib.Path) -> None:
    curl = require_tool("curl")
    files = {name: data for name, data in sample_files().items() if name.isascii()}
    source = tmp_path / "source"
    arguments = [curl, "-sS", "--fail-with-body", "-F", "note=from curl"]
    for number, (name, data) in enumerate(files.items()):
        path = source / f"{number}.bin"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(data)
        arguments += ["-F", f"files=@{path};filename={name}"]
    run = subprocess.run([*arguments, server + "/up"], capture_output=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    body = json.loads(run.stdout)
    check_saved(body, files, dest)
    assert body["fields"] == [["note", "from curl"]]


def test_an_empty_file_input_is_skipped(server: str, dest: pathlib.Path) -> None:
    # What a browser sends for <input type="file"> with nothing picked.
    body = form_body(
        part('name="files"; filename=""', b"", "application/octet-stream"),
        part('name="files"; filename="a.txt"', b"alpha"),
    )
    response = post_raw(server, body)
    assert response.status_code == 200, response.text
    assert [f["name"] for f in response.json()["files"]] == ["a.txt"]
    assert tree(dest) == {"a.txt": b"alpha"}


def test_a_name_already_in_dest_is_refused_and_kept(server: str, dest: pathlib.Path) -> None:
    dest.mkdir(parents=True)
    (dest / "keep.txt").write_bytes(b"was here first")
    response = httpx.post(
        server + "/up", files=[("f", ("new.txt", b"new")), ("f", ("keep.txt", b"replaced?"))]
    )
    assert response.status_code == 409, response.text
    assert "keep.txt" in response.text
    assert tree(dest) == {"keep.txt": b"was here first"}  # new.txt went too: all or nothing


def test_the_upload_sink_stats_no_file_yet_tells_a_second_name_for_one_of_its_files(
    dest: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An upload never replaces a file: the inode of each file it placed matters only when a
    name turns out taken, so it is looked up then, not with an fstat per file."""
    fstat = os.fstat
    calls: list[int] = []

    def counted_fstat(fd: int) -> os.stat_result:
        calls.append(fd)
        return fstat(fd)

    monkeypatch.setattr(os, "fstat", counted_fstat)

    def events(name: str, data: bytes) -> list[Any]:
        return [EntryStart(name=name), Data(data), EntryEnd(name=name, size=len(data))]

    sink = _UploadSink(dest, Limits())
    try:
        sink.handle(events("a", b"first") + events("c/d", b"second"))
        assert calls == []
        # what a case-insensitive file system does to "A" and "a", shown with a hard link
        os.link(dest / "a", dest / "b")
        with pytest.raises(UnsafeNameError, match="already wrote"):
            sink.handle(events("b", b"third"))
    finally:
        sink.roll_back()
    assert tree(dest) == {"b": b"first"}


# -- hostile bodies -----------------------------------------------------------------------------


def part(disposition: str, data: bytes, media_type: str | None = None) -> bytes:
    head = f"Content-Disposition: form-data; {disposition}\r\n"
    if media_type is not None:
        head += f"Content-Type: {media_type}\r\n"
    return f"--{BOUNDARY}\r\n".encode() + head.encode() + b"\r\n" + data + b"\r\n"


def form_body(*parts: bytes, close: bool = True) -> bytes:
    return b"".join(parts) + (f"--{BOUNDARY}--\r\n".encode() if close else b"")


GOOD_FIRST = part('name="files"; filename="ok/first.txt"', b"a good file before the bad part")


def post_raw(
    server: str, body: bytes, *, query: str = "", content_type: str | None = None
) -> httpx.Response:
    if content_type is None:
        content_type = f"multipart/form-data; boundary={BOUNDARY}"
    return httpx.post(
        server + "/up" + query, content=body, headers={"Content-Type": content_type}, timeout=30
    )


HOSTILE = {
    "traversal": (400, "", form_body(GOOD_FIRST, part('name="f"; filename="../evil.txt"', b"x"))),
    "deep traversal": (
        400,
        "",
        form_body(GOOD_FIRST, part('name="f"; filename="a/../../evil.txt"', b"x")),
    ),
    "absolute": (400, "", form_body(GOOD_FIRST, part('name="f"; filename="/tmp/evil.txt"', b"x"))),
    "backslash": (
        400,
        "",
        form_body(GOOD_FIRST, part('name="f"; filename="..\\..\\evil.txt"', b"x")),
    ),
    "escaped backslash": (
        400,
        "",
        form_body(GOOD_FIRST, part('name="f"; filename="a\\\\evil.txt"', b"x")),
    ),
    "drive letter": (400, "", form_body(GOOD_FIRST, part('name="f"; filename="C:evil"', b"x"))),
    "NUL": (400, "", form_body(GOOD_FIRST, part('name="f"; filename="evil\x00.txt"', b"x"))),
    "duplicate": (
        400,
        "",
        form_body(GOOD_FIRST, part('name="f"; filename="ok/first.txt"', b"again")),
    ),
    "file over its folder": (
        400,
        "",
        form_body(GOOD_FIRST, part('name="f"; filename="ok"', b"a file where a folder is")),
    ),
    "too many files": (
        413,
        "?max_files=3",
        form_body(GOOD_FIRST, *(part(f'name="f"; filename="{i}.txt"', b"x") for i in range(4))),
    ),
    "a file too large": (
        413,
        "?max_file_size=1000",
        form_body(GOOD_FIRST, part('name="f"; filename="big.bin"', b"x" * 1001)),
    ),
    "too much in total": (
        413,
        "?max_total_size=3000",
        form_body(*(part(f'name="f"; filename="{i}.bin"', b"x" * 900) for i in range(4))),
    ),
    "a name too long": (  # a Limits bound, as in a zip: 413
        413,
        "?max_name_length=20",
        form_body(GOOD_FIRST, part(f'name="f"; filename="{"n" * 21}"', b"x")),
    ),
    "truncated body": (
        400,
        "",
        form_body(GOOD_FIRST, part('name="f"; filename="cut.txt"', b"x" * 5000), close=False),
    ),
    "truncated in a part": (
        400,
        "",
        GOOD_FIRST + part('name="f"; filename="cut.txt"', b"x" * 5000)[:-100],
    ),
    "huge part headers": (
        413,
        "",
        form_body(GOOD_FIRST, part('name="f"; filename="h.txt"\r\nX-Pad: ' + "p" * 20_000, b"x")),
    ),
    "a part with no name": (400, "", form_body(GOOD_FIRST, part("", b"x").replace(b"; \r", b"\r"))),
    "not form-data": (
        400,
        "",
        form_body(GOOD_FIRST).replace(b"form-data;", b"attachment;"),
    ),
    "content in an empty file input": (
        400,
        "",
        form_body(GOOD_FIRST, part('name="f"; filename=""', b"data without a name")),
    ),
    "content in a file input whose filename* is empty": (  # the reader names it by field
        400,
        "",
        form_body(GOOD_FIRST, part('name="f"; filename*=UTF-8\'\'; filename="a.txt"', b"x")),
    ),
    "a text field too large": (
        413,
        "",
        form_body(GOOD_FIRST, part('name="notes"', b"n" * ((1 << 20) + 1))),
    ),
    "too many text fields": (
        413,
        "",
        form_body(GOOD_FIRST, *(part(f'name="k{i}"', b"v") for i in range(1001))),
    ),
    "a text field that is not UTF-8": (
        400,
        "",
        form_body(GOOD_FIRST, part('name="title"', b"\xff\xfe")),
    ),
}


@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_upload(
    case: str, server: str, dest: pathlib.Path, tmp_path: pathlib.Path, uploads: Uploads
) -> None:
    status, query, body = HOSTILE[case]
    before = tree(tmp_path)
    response = post_raw(server, body, query=query)
    assert response.status_code == status, response.text
    assert response.text.strip()  # the message says what was wrong
    assert tree(tmp_path) == {**before, "box": None, "box/dest": None}  # dest left empty
    assert uploads.outcomes[-1] != "ok"
    assert_still_serving(server, dest)


@pytest.mark.parametrize(
    "content_type",
    [
        "multipart/form-data",  # no boundary
        "multipart/form-data; boundary=",
        "application/json",
        "multipart/mixed; boundary=" + BOUNDARY,
        "",
    ],
)
def test_an_upload_that_is_no_form_is_refused(
    content_type: str, server: str, dest: pathlib.Path
) -> None:
    response = post_raw(server, form_body(GOOD_FIRST), content_type=content_type)
    assert response.status_code == 400, response.text
    assert tree(dest) == {}
    assert_still_serving(server, dest)


def assert_still_serving(server: str, dest: pathlib.Path) -> None:
    response = httpx.post(server + "/up", files={"f": ("after.txt", b"fine")})
    assert response.status_code == 200, response.text
    assert tree(dest) == {"after.txt": b"fine"}
    (dest / "after.txt").unlink()


def writing_under(dest: pathlib.Path) -> bool:
    """Whether this process (the live server's thread) holds a file open for writing under
    ``dest`` that has no name yet: unnamed (O_TMPFILE, shown as ``#inode (deleted)``) or a
    hidden temporary name."""
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(f"{dest}/") and target.endswith((" (deleted)", ".multiresp-part")):
            return True
    return False


def test_a_client_that_disconnects_mid_file(
    server: str, dest: pathlib.Path, tmp_path: pathlib.Path, uploads: Uploads
) -> None:
    before = tree(tmp_path)
    head = (
        GOOD_FIRST
        + (
            f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=f; filename=big.bin\r\n\r\n"
        ).encode()
    )
    port = int(server.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(
            b"POST /up HTTP/1.1\r\nHost: test\r\n"
            + f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n".encode()
            + f"Content-Length: {100 * MIB}\r\n\r\n".encode()
            + head
            + os.urandom(3 * MIB)
        )
        deadline = time.monotonic() + WAIT
        while not writing_under(dest):
            assert time.monotonic() < deadline, "the server never started writing big.bin"
            time.sleep(0.02)
        assert (dest / "ok" / "first.txt").exists()  # saved before the client left
    deadline = time.monotonic() + WAIT
    while not uploads.outcomes:
        assert time.monotonic() < deadline, "the server never noticed the disconnect"
        time.sleep(0.02)
    assert uploads.outcomes == ["_Disconnected"]
    assert tree(tmp_path) == {**before, "box": None, "box/dest": None}
    assert_still_serving(server, dest)


# -- memory -------------------------------------------------------------------------------------

SERVER_SCRIPT = textwrap.dedent(
    """
    import sys, uvicorn
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route
    from multiresp import receive_files
    from multiresp.uploads import EXCEPTION_HANDLERS

    async def up(request):
        saved = await receive_files(request, sys.argv[2])
        return Response(str(sum(f.size for f in saved)))

    async def health(request):
        return Response("ok")

    app = Starlette(routes=[Route("/up", up, methods=["POST"]), Route("/health", health)],
                    exception_handlers=EXCEPTION_HANDLERS)
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
    """
)
RSS_UPLOAD = 512 * MIB  # bytes uploaded by the memory test
RSS_GROWTH_MAX = 64 * MIB  # bytes the server's RSS may grow by while it receives them


@pytest.mark.slow
def test_server_memory_stays_flat_during_a_large_upload(tmp_path: pathlib.Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    script = tmp_path / "server.py"
    script.write_text(SERVER_SCRIPT)
    process = subprocess.Popen(
        [sys.executable, str(script), str(port), str(tmp_path / "dest")],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + WAIT
        while True:
            try:
                httpx.get(url + "/health")
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and process.poll() is None
                time.sleep(0.05)
        server = psutil.Process(process.pid)
        baseline = server.memory_info().rss
        peak = baseline
        block = os.urandom(MIB)
        pieces = RSS_UPLOAD // MIB

        def body() -> Iterator[bytes]:
            nonlocal peak
            yield f"--{BOUNDARY}\r\n".encode()
            yield b"Content-Disposition: form-data; name=f; filename=big\r\n\r\n"
            for number in range(pieces):
                if number % 16 == 0:
                    peak = max(peak, server.memory_info().rss)
                yield block
            yield f"\r\n--{BOUNDARY}--\r\n".encode()

        response = httpx.post(
            url + "/up",
            content=body(),
            headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
            timeout=120,
        )
        peak = max(peak, server.memory_info().rss)
        assert response.status_code == 200, response.text
        assert int(response.text) == RSS_UPLOAD
        assert peak - baseline <= RSS_GROWTH_MAX, (baseline, peak)
    finally:
        process.terminate()
        process.wait(WAIT)
