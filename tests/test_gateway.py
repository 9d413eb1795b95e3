"""The gateway app: listing, downloads, and nothing outside its folder, over a real uvicorn."""

from __future__ import annotations

import io
import logging
import os
import pathlib
import re
import signal
import socket
import stat
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Iterator

import httpx
import pytest

from multiresp._progress import human_bytes
from multiresp.client import download, iter_entries
from multiresp.gateway import create_app

from conftest import LiveServer

SECRET = b"the secret outside the served folder"


@pytest.fixture
def share(tmp_path: pathlib.Path) -> pathlib.Path:
    """A served folder, with a secret next to it and links, a FIFO and odd names inside it."""
    (tmp_path / "secret.txt").write_bytes(SECRET)
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "also-secret.txt").write_bytes(SECRET)
    root = tmp_path / "share"
    (root / "sub" / "deep").mkdir(parents=True)
    (root / "a.txt").write_bytes(b"alpha\n")
    (root / "<script>x.txt").write_bytes(b"not a script\n")
    (root / "sub" / "b.bin").write_bytes(os.urandom(200_000))
    (root / "sub" / "deep" / "c.txt").write_bytes(b"gamma\n")
    (root / "sub" / "résumé.txt").write_bytes(b"unicode\n")
    (root / "out.txt").symlink_to(tmp_path / "secret.txt")
    (root / "outdir").symlink_to(tmp_path / "outside")
    (root / "in.txt").symlink_to(root / "a.txt")
    os.mkfifo(root / "fifo")
    return root


@pytest.fixture
def gateway(share: pathlib.Path, live_server: Callable[..., LiveServer]) -> Iterator[str]:
    yield live_server(create_app(share)).url


SERVED = {
    "a.txt": b"alpha\n",
    "<script>x.txt": b"not a script\n",
    "in.txt": b"alpha\n",
    "sub/deep/c.txt": b"gamma\n",
    "sub/résumé.txt": b"unicode\n",
}


def served(share: pathlib.Path) -> dict[str, bytes]:
    return {**SERVED, "sub/b.bin": (share / "sub" / "b.bin").read_bytes()}


def tree(root: pathlib.Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def raw_get(url: str, target: str) -> tuple[int, bytes]:
    """GET ``target`` exactly as written: no client normalises ``..`` or re-encodes it."""
    port = httpx.URL(url).port
    assert port is not None
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    status = int(reply.split(b" ", 2)[1])
    return status, reply.partition(b"\r\n\r\n")[2]


def test_zip_of_everything_is_the_folder(gateway: str, share: pathlib.Path) -> None:
    reply = httpx.get(gateway + "/zip/")
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "application/zip"
    assert 'filename="share.zip"' in reply.headers["content-disposition"]
    with zipfile.ZipFile(io.BytesIO(reply.content)) as archive:
        assert {i.filename: archive.read(i) for i in archive.infolist()} == served(share)


def test_multipart_of_a_folder(gateway: str, share: pathlib.Path) -> None:
    with httpx.stream("GET", gateway + "/multipart/sub") as response:
        assert response.headers["content-type"].startswith("multipart/mixed")
        got = {entry.name: b"".join(entry.iter_bytes()) for entry in iter_entries(response)}
    want = {name[4:]: data for name, data in served(share).items() if name.startswith("sub/")}
    assert got == want


def test_selection_with_names_is_exactly_those(
    gateway: str, share: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    dest = tmp_path / "picked"
    download(gateway + "/zip/sub", dest, params=[("name", "deep"), ("name", "résumé.txt")])
    assert tree(dest) == {"deep/c.txt": b"gamma\n", "résumé.txt": b"unicode\n"}
    reply = httpx.get(gateway + "/multipart/", params=[("name", "a.txt"), ("name", "a.txt")])
    assert reply.status_code == 200
    assert reply.content.count(b"filename=") == 1  # a name picked twice is sent once


def test_one_file_with_range(gateway: str, share: pathlib.Path) -> None:
    data = (share / "sub" / "b.bin").read_bytes()
    whole = httpx.get(gateway + "/files/sub/b.bin")
    assert whole.content == data
    part = httpx.get(gateway + "/files/sub/b.bin", headers={"Range": "bytes=100-199"})
    assert part.status_code == 206
    assert part.content == data[100:200]
    assert httpx.get(gateway + "/files/r%C3%A9sum%C3%A9.txt").status_code == 404
    assert httpx.get(gateway + "/files/sub/r%C3%A9sum%C3%A9.txt").content == b"unicode\n"
    assert httpx.get(gateway + "/files/sub").status_code == 404  # a folder is not a file


def test_a_link_inside_keeps_its_own_name(gateway: str) -> None:
    assert (
        'filename="in.txt"' in httpx.get(gateway + "/files/in.txt").headers["content-disposition"]
    )
    reply = httpx.get(gateway + "/zip/in.txt")
    assert 'filename="in.zip"' in reply.headers["content-disposition"]
    with zipfile.ZipFile(io.BytesIO(reply.content)) as archive:
        assert archive.namelist() == ["in.txt"]


def test_page_lists_the_folder_and_escapes_names(gateway: str) -> None:
    page = httpx.get(gateway + "/").text
    assert "&lt;script&gt;x.txt" in page
    assert "<script>x.txt" not in page
    assert page.count("<script>") == 1  # the page's own script only
    for name in ["a.txt", "in.txt", "sub/"]:
        assert f">{name}<" in page
    for hidden in ["out.txt", "outdir", "fifo"]:
        assert hidden not in page
    assert 'href="/zip/sub"' in page and 'href="/multipart/sub"' in page
    assert 'action="/zip/"' in page
    sub = httpx.get(gateway + "/browse/sub/").text
    assert ">deep/<" in sub and ">résumé.txt<" in sub
    assert 'href="/files/sub/r%C3%A9sum%C3%A9.txt"' in sub
    assert 'action="/zip/sub"' in sub
    assert httpx.get(gateway + "/browse/a.txt").status_code == 404


REFUSED = [
    "/files/../secret.txt",
    "/files/sub/../../secret.txt",
    "/files/%2e%2e/secret.txt",
    "/files/%2E%2E/secret.txt",
    "/files/sub/..%2f..%2fsecret.txt",
    "/files/..%5csecret.txt",
    "/files/sub%2Fb.bin",
    "/files//etc/passwd",
    "/files/%2Fetc%2Fpasswd",
    "/files/a.txt%00",
    "/files/./a.txt",
    "/files/out.txt",
    "/files/outdir/also-secret.txt",
    "/files/fifo",
    "/zip/..",
    "/zip/%2e%2e/",
    "/zip/outdir",
    "/zip/fifo",
    "/zip/?name=../secret.txt",
    "/zip/?name=%2Fetc%2Fpasswd",
    "/zip/?name=out.txt",
    "/zip/?name=outdir",
    "/zip/?name=fifo",
    "/zip/sub?name=..",
    "/zip/sub?name=../../secret.txt",
    "/zip/a.txt?name=x",
    "/multipart/..",
    "/multipart/?name=..%2Fsecret.txt",
    "/multipart/outdir",
    "/browse/..",
    "/browse/outdir",
    "/browse/%2e%2e/",
]


@pytest.mark.parametrize("target", REFUSED)
def test_nothing_outside_the_folder(gateway: str, target: str) -> None:
    status, body = raw_get(gateway, target)
    assert status in (400, 404), (status, body[:200])
    assert SECRET not in body


def test_the_raw_requests_do_reach_files_inside(gateway: str) -> None:
    """The refusals above are not a broken client: the same requests get what is inside."""
    assert raw_get(gateway, "/files/a.txt") == (200, b"alpha\n")
    assert raw_get(gateway, "/files/in.txt") == (200, b"alpha\n")  # a link that stays inside
    assert raw_get(gateway, "/files/sub/deep/c.txt") == (200, b"gamma\n")
    assert raw_get(gateway, "/zip/?name=a.txt")[0] == 200


@pytest.mark.parametrize("swap", ["link-out", "fifo", "folder-link-out"])
def test_a_file_swapped_after_the_check_is_not_served(
    share: pathlib.Path,
    live_server: Callable[..., LiveServer],
    monkeypatch: pytest.MonkeyPatch,
    swap: str,
) -> None:
    """``/files/`` checks a path, then opens it: whatever is put there in between (a link to a
    secret, a FIFO, a folder swapped for a link out) is refused, never served or waited on."""
    from multiresp import gateway as module

    check = module._Gateway.resolve

    def resolve_then_swap(self: module._Gateway, relative: str) -> module._Found:
        found = check(self, relative)
        if not found.is_dir:
            if swap == "folder-link-out":
                (share / "sub" / "deep").rename(share / "sub" / "deep-was")
                (share / "sub" / "deep").symlink_to(share.parent / "outside")
            else:
                found.path.unlink()
                if swap == "link-out":
                    found.path.symlink_to(share.parent / "secret.txt")
                else:
                    os.mkfifo(found.path)
        return found

    monkeypatch.setattr(module._Gateway, "resolve", resolve_then_swap)
    url = live_server(create_app(share)).url
    target = "/files/sub/deep/c.txt"
    if swap == "folder-link-out":
        (share.parent / "outside" / "c.txt").write_bytes(SECRET)
    answer = httpx.get(url + target, timeout=10)
    assert answer.status_code == 404
    assert SECRET not in answer.content


def test_a_device_is_not_served(
    share: pathlib.Path, live_server: Callable[..., LiveServer]
) -> None:
    try:
        os.mknod(share / "null", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("creating a device node needs root")
    url = live_server(create_app(share)).url
    assert raw_get(url, "/files/null")[0] == 404
    assert raw_get(url, "/zip/?name=null")[0] == 404
    assert "null" not in httpx.get(url + "/").text


def test_access_log_has_size_and_duration(
    gateway: str, share: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="multiresp.gateway"):
        reply = httpx.get(gateway + "/zip/sub")
        httpx.get(gateway + "/files/nope")
    lines = [r.getMessage() for r in caplog.records if r.name == "multiresp.gateway"]
    size = int(reply.headers["content-length"])
    assert any(
        re.fullmatch(r'127\.0\.0\.1 "GET /zip/sub" 200, ' + re.escape(human_bytes(size))
                     + r" in \d+\.\d{3} s \(.*/s\)", line)
        for line in lines
    ), lines  # fmt: skip
    assert any('"GET /files/nope" 404' in line for line in lines), lines


def test_access_log_says_when_a_transfer_broke_off(
    share: pathlib.Path, live_server: Callable[..., LiveServer], caplog: pytest.LogCaptureFixture
) -> None:
    (share / "big.bin").write_bytes(os.urandom(64 << 20))
    url = live_server(create_app(share)).url
    with caplog.at_level(logging.INFO, logger="multiresp.gateway"):
        with httpx.stream("GET", url + "/zip/?name=big.bin") as response:
            next(response.iter_raw())  # the first bytes, then hang up
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not caplog.records:
            time.sleep(0.05)
    lines = [r.getMessage() for r in caplog.records if r.name == "multiresp.gateway"]
    assert len(lines) == 1 and lines[0].endswith(" (broke off)"), lines
    assert '"GET /zip/?name=big.bin" 200, ' in lines[0]


def test_not_a_folder(tmp_path: pathlib.Path) -> None:
    with pytest.raises(NotADirectoryError):
        create_app(tmp_path / "missing")


# -- uploads (--allow-upload) -------------------------------------------------------------------


@pytest.fixture
def open_gateway(share: pathlib.Path, live_server: Callable[..., LiveServer]) -> Iterator[str]:
    yield live_server(create_app(share, allow_upload=True)).url


def test_uploads_are_refused_without_allow_upload(gateway: str, share: pathlib.Path) -> None:
    before = tree(share.parent)
    response = httpx.post(gateway + "/upload/sub", files={"files": ("new.txt", b"new")})
    assert response.status_code == 403
    assert "--allow-upload" in response.text
    assert httpx.get(gateway + "/upload/sub").status_code == 405
    assert 'action="/upload/' not in httpx.get(gateway + "/").text
    assert tree(share.parent) == before


def test_upload_into_a_folder(open_gateway: str, share: pathlib.Path) -> None:
    files = [
        ("files", ("new.txt", b"new\n")),
        ("files", ("photos/2026/a.jpg", os.urandom(70_000))),  # a browser folder upload
        ("files", ("empty", b"")),
    ]
    response = httpx.post(open_gateway + "/upload/sub", files=files)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["folder"] == "sub"
    assert [(f["name"], f["size"]) for f in body["files"]] == [
        ("new.txt", 4),
        ("photos/2026/a.jpg", 70_000),
        ("empty", 0),
    ]
    for name, data in (file for _, file in files):
        assert (share / "sub" / name).read_bytes() == data
    # ... and it is served back
    assert httpx.get(open_gateway + "/files/sub/photos/2026/a.jpg").content == files[1][1][1]
    page = httpx.get(open_gateway + "/browse/sub/").text
    assert 'action="/upload/sub"' in page and ">photos/<" in page
    # the root takes uploads too
    assert httpx.post(open_gateway + "/upload/", files={"f": ("top.txt", b"t")}).status_code == 200
    assert (share / "top.txt").read_bytes() == b"t"


def test_a_browser_is_sent_back_to_the_folder(open_gateway: str, share: pathlib.Path) -> None:
    response = httpx.post(
        open_gateway + "/upload/sub/deep",
        files={"files": ("x.txt", b"x")},
        headers={"Accept": "text/html,application/xhtml+xml"},
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/browse/sub/deep/"


UPLOAD_REFUSED = [
    ("/upload/..", 404),
    ("/upload/%2e%2e/", 404),
    ("/upload/sub%2F..%2F..", 404),
    ("/upload/outdir", 404),  # a link leading out
    ("/upload/a.txt", 404),  # not a folder
    ("/upload/fifo", 404),
    ("/upload/missing", 404),
]


@pytest.mark.parametrize(("target", "status"), UPLOAD_REFUSED)
def test_uploads_never_land_outside_the_folder(
    open_gateway: str, share: pathlib.Path, target: str, status: int
) -> None:
    before = tree(share.parent)
    port = httpx.URL(open_gateway).port
    body = (
        b"--b\r\nContent-Disposition: form-data; name=f; filename=evil.txt\r\n\r\nevil\r\n--b--\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            f"POST {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n".encode()
            + b"Content-Type: multipart/form-data; boundary=b\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    assert int(reply.split(b" ", 2)[1]) == status, reply[:300]
    assert tree(share.parent) == before


@pytest.mark.parametrize(
    ("name", "status"),
    [("../evil.txt", 400), ("/tmp/evil.txt", 400), ("a.txt", 409), ("sub", 409)],
)
def test_an_upload_with_a_bad_name_is_refused_whole(
    open_gateway: str, share: pathlib.Path, name: str, status: int
) -> None:
    before = tree(share.parent)
    response = httpx.post(
        open_gateway + "/upload/",
        files=[("files", ("fine.txt", b"fine")), ("files", (name, b"evil"))],
    )
    assert response.status_code == status, response.text
    assert tree(share.parent) == before  # fine.txt went too
    assert (share / "a.txt").read_bytes() == b"alpha\n"


def test_serve_allow_upload_on_the_command_line(tmp_path: pathlib.Path) -> None:
    root = tmp_path / "box"
    root.mkdir()
    for flags, status in (([], 403), (["--allow-upload"], 200)):
        with subprocess.Popen(
            [sys.executable, "-m", "multiresp", "serve", str(root), "--port", "0", *flags],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        ) as server:
            try:
                assert server.stdout is not None
                first = server.stdout.readline()
                match = re.search(r"http://127\.0\.0\.1:\d+/", first)
                assert match, first
                if flags:
                    assert server.stdout.readline().startswith("Uploads allowed into")
                response = httpx.post(match.group(0) + "upload/", files={"f": ("up.txt", b"up")})
                assert response.status_code == status, response.text
            finally:
                server.send_signal(signal.SIGINT)
                server.wait(30)
    assert tree(root) == {"up.txt": b"up"}
