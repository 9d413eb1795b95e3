"""Writers into a served folder or an upload destination who swap what a request names for a
link between the check of the path and its use, over a real uvicorn; and Range numbers too long
for int()."""

from __future__ import annotations

import os
import pathlib
from collections.abc import Callable

import httpx
import pytest

from multiresp.gateway import create_app

from conftest import LiveServer

SECRET = b"the secret outside the served folder"


@pytest.fixture
def share(tmp_path: pathlib.Path) -> pathlib.Path:
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "c.txt").write_bytes(SECRET)
    (tmp_path / "secret.txt").write_bytes(SECRET)
    root = tmp_path / "share"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "c.txt").write_bytes(b"gamma\n")
    (root / "a.txt").write_bytes(b"alpha\n")
    return root


@pytest.mark.parametrize(
    "target",
    ["/zip/sub", "/multipart/sub", "/zip/?name=sub", "/zip/a.txt", "/zip/?name=a.txt",
     "/multipart/a.txt"],
)  # fmt: skip
def test_a_path_swapped_for_a_link_out_after_the_check_is_not_served(
    share: pathlib.Path,
    live_server: Callable[..., LiveServer],
    monkeypatch: pytest.MonkeyPatch,
    target: str,
) -> None:
    """``/zip/`` and ``/multipart/`` check a path, then list or stat it: a folder or file
    swapped for a link out of the folder in between must not lead the response outside."""
    from multiresp import gateway as module

    check = module._Gateway.resolve

    def resolve_then_swap(self: module._Gateway, relative: str) -> module._Found:
        found = check(self, relative)
        if found.relative:
            if found.is_dir:
                found.path.rename(found.path.with_name("was-" + found.path.name))
                found.path.symlink_to(share.parent / "outside")
            else:
                found.path.unlink()
                found.path.symlink_to(share.parent / "secret.txt")
        return found

    monkeypatch.setattr(module._Gateway, "resolve", resolve_then_swap)
    url = live_server(create_app(share)).url
    try:
        with httpx.stream("GET", url + target, timeout=10) as answer:
            body = b"".join(answer.iter_raw())
    except httpx.HTTPError:  # the response aborted: fine, as long as no secret went out
        body = b""
    assert SECRET not in body


def _swap_after_check(monkeypatch: pytest.MonkeyPatch, share: pathlib.Path) -> None:
    """Make the gateway's path check swap what it let through (below the root) for a link to
    the folder outside the share, right after checking it."""
    from multiresp import gateway as module

    check = module._Gateway.resolve

    def resolve_then_swap(self: module._Gateway, relative: str) -> module._Found:
        found = check(self, relative)
        if found.relative:
            found.path.rename(found.path.with_name("was-" + found.path.name))
            found.path.symlink_to(share.parent / "outside")
        return found

    monkeypatch.setattr(module._Gateway, "resolve", resolve_then_swap)


def test_an_upload_folder_swapped_for_a_link_out_after_the_check_writes_nothing_outside(
    share: pathlib.Path,
    live_server: Callable[..., LiveServer],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``/upload/sub`` checks the folder, then writes into it: a folder swapped for a link out
    of the served folder in between must not take the upload outside."""
    _swap_after_check(monkeypatch, share)
    url = live_server(create_app(share, allow_upload=True)).url
    answer = httpx.post(url + "/upload/sub", files={"files": ("planted.txt", b"x")}, timeout=10)
    assert not (share.parent / "outside" / "planted.txt").exists(), answer.text


def test_the_page_of_a_folder_swapped_for_a_link_out_shows_nothing_from_outside(
    share: pathlib.Path,
    live_server: Callable[..., LiveServer],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The page lists the folder it checked, not one a link swapped in since leads to."""
    (share.parent / "outside" / "private-name.txt").write_bytes(b"x")
    _swap_after_check(monkeypatch, share)
    url = live_server(create_app(share)).url
    answer = httpx.get(url + "/browse/sub/", timeout=10)
    assert "private-name" not in answer.text


@pytest.mark.parametrize("openat2", [True, False], ids=["openat2", "by-segments"])
def test_walk_lists_nothing_from_a_folder_swapped_for_a_link_while_it_lists(
    share: pathlib.Path, monkeypatch: pytest.MonkeyPatch, openat2: bool
) -> None:
    """``walk`` says nothing outside its root is included at listing time: a subfolder
    swapped for a link out after its parent was listed must not bring in the outside names."""
    from multiresp import _fs, walk

    monkeypatch.setattr(_fs, "USE_OPENAT2", openat2)

    (share.parent / "outside" / "private-name.txt").write_bytes(b"x")
    real_scandir = os.scandir
    swapped = False

    class Listing:
        def __init__(self, arg: object) -> None:
            self.inner = real_scandir(arg)  # type: ignore[call-overload]

        def __enter__(self) -> Listing:
            return self

        def __iter__(self) -> object:
            return iter(self.inner)

        def __exit__(self, *exc: object) -> None:
            nonlocal swapped
            self.inner.close()
            if not swapped:  # the root was listed: now swap its subfolder
                swapped = True
                (share / "sub").rename(share / "was-sub")
                (share / "sub").symlink_to(share.parent / "outside")

    monkeypatch.setattr(os, "scandir", Listing)
    names = [entry.name for entry in walk(share)]
    assert swapped
    assert not any("private-name" in name or name.startswith("sub/") for name in names), names


def test_an_empty_folder_swapped_for_a_link_once_listed_shows_nothing_of_the_outside(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An empty folder gets an entry of its own, dated and moded as it is: not as the folder
    a link put in its place after it was listed leads to."""
    from multiresp import _entries, walk

    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "empty").mkdir(parents=True)
    outside.mkdir()
    os.utime(outside, (1_000_000_000, 1_000_000_000))  # 2001: a date to recognise
    scan = _entries.scan

    def scan_then_swap(top: str) -> object:
        for directory, relative, items in scan(top):
            if relative == "empty/":  # listed (empty): now swapped for a link out
                os.rename(directory, f"{directory}-was")
                os.symlink(outside, directory)
            yield directory, relative, items

    monkeypatch.setattr(_entries, "scan", scan_then_swap)
    entries = walk(root)
    assert all(e.mtime is None or e.mtime.year != 2001 for e in entries), entries
    assert [e.name for e in entries] == []  # it is no longer a folder: skipped


def test_a_failed_upload_removes_nothing_through_a_folder_swapped_for_a_link(
    share: pathlib.Path, live_server: Callable[..., LiveServer]
) -> None:
    """An upload that fails removes the files it saved: not, through a folder swapped for a
    link since, a file of the same name outside the destination."""
    import time

    victim = share.parent / "outside" / "x.txt"
    victim.write_bytes(b"someone else's file")
    url = live_server(create_app(share, allow_upload=True)).url
    boundary = "B0undary"

    def part(name: str, data: bytes) -> bytes:
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{name}"'
        return head.encode() + b"\r\n\r\n" + data + b"\r\n"

    def body() -> object:
        yield part("new/x.txt", b"mine") + part("big.bin", bytes(2 << 20))
        deadline = time.monotonic() + 10
        while not (share / "new" / "x.txt").exists():  # saved: the upload is under way
            assert time.monotonic() < deadline
            time.sleep(0.01)
        (share / "new").rename(share / "was-new")
        (share / "new").symlink_to(share.parent / "outside")
        yield part("../bad", b"refused") + f"--{boundary}--\r\n".encode()

    answer = httpx.post(
        url + "/upload/",
        content=body(),  # type: ignore[arg-type]
        headers={"content-type": f"multipart/form-data; boundary={boundary}"},
        timeout=10,
    )
    assert answer.status_code == 400
    assert victim.read_bytes() == b"someone else's file"


@pytest.mark.parametrize(
    "spec",
    ["9" * 5000 + "-", "-" + "9" * 5000, "0-" + "9" * 5000, "0" * 5000 + "1-2"],
    ids=["start", "suffix", "last", "zeros"],
)
def test_a_range_with_a_huge_number_is_answered_not_a_crash(
    share: pathlib.Path, live_server: Callable[..., LiveServer], spec: str
) -> None:
    """A ``Range`` number too long for ``int()`` (Python refuses strings over 4,300 digits)
    is still a number: the request is answered as any range past or within the body is,
    never with a 500."""
    url = live_server(create_app(share)).url
    whole = httpx.get(url + "/zip/", timeout=10)
    answer = httpx.get(url + "/zip/", headers={"Range": f"bytes={spec}"}, timeout=10)
    assert answer.status_code in (200, 206, 416), answer.text[:200]
    if spec.startswith("9"):
        assert answer.status_code == 416
    elif spec.startswith("-") or spec.startswith("0-"):
        assert answer.status_code == 206 and answer.content == whole.content
    else:
        assert answer.status_code == 206 and answer.content == whole.content[1:3]
