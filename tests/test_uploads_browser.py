"""Bodies made by a real browser engine: headless Chromium submits forms to receive_files.

Chromium writes its parts without Content-Length, names the files of a folder picked with
``webkitdirectory`` by their relative paths, and sends ``filename=""`` for a file input left
empty: the receiver must take all of it as a browser sends it.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
from collections.abc import Callable
from typing import Any

import pytest
from selenium.webdriver.common.by import By
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from multiresp import receive_files
from multiresp.uploads import EXCEPTION_HANDLERS
from test_gateway_browser import browser, wait_for

from conftest import LiveServer

__all__ = ("browser",)  # the fixture, shared with the gateway's browser tests

FORM = """<!doctype html><html><head><meta charset="utf-8"><title>upload</title></head><body>
<form method="post" action="/up" enctype="multipart/form-data">
<input type="text" name="title" id="title">
<input type="file" name="inputs" id="files" multiple>
<input type="file" name="folder" id="folder" webkitdirectory>
<input type="file" name="unused" id="unused">
<button type="submit" id="send">Send</button>
</form></body></html>"""


def build_app(dest: pathlib.Path) -> Starlette:
    async def form(request: Request) -> Response:
        return HTMLResponse(FORM)

    async def up(request: Request) -> Response:
        saved = await receive_files(request, dest)
        return JSONResponse(
            {
                "files": {f.name: [f.size, f.sha256] for f in saved},
                "fields": list(saved.fields.multi_items()),
            }
        )

    return Starlette(
        routes=[Route("/", form), Route("/up", up, methods=["POST"])],
        exception_handlers=EXCEPTION_HANDLERS,
    )


@pytest.fixture
def picked(tmp_path: pathlib.Path) -> tuple[list[pathlib.Path], pathlib.Path]:
    """Loose files of odd sizes, and a folder with a subfolder, as a user would pick them."""
    loose = tmp_path / "loose"
    loose.mkdir()
    files = []
    for name, size in [("empty.bin", 0), ("one.bin", 1), ("odd.bin", 65_537), ("big.bin", 3 << 20)]:
        path = loose / name
        path.write_bytes(os.urandom(size))
        files.append(path)
    (loose / "r\u00e9sum\u00e9.txt").write_text("unicode name\n")
    files.append(loose / "r\u00e9sum\u00e9.txt")
    photos = tmp_path / "photos"
    (photos / "2026").mkdir(parents=True)
    (photos / "cover.jpg").write_bytes(os.urandom(40_000))
    (photos / "2026" / "a.jpg").write_bytes(os.urandom(123_457))
    return files, photos


def digest(path: pathlib.Path) -> list[Any]:
    data = path.read_bytes()
    return [len(data), hashlib.sha256(data).hexdigest()]


def test_chromium_form_with_files_a_folder_and_a_text_field(
    browser: Any,
    picked: tuple[list[pathlib.Path], pathlib.Path],
    tmp_path: pathlib.Path,
    live_server: Callable[..., LiveServer],
) -> None:
    files, photos = picked
    dest = tmp_path / "dest"
    url = live_server(build_app(dest)).url
    browser.get(url + "/")
    browser.find_element(By.ID, "title").send_keys("run 7 \u2713")
    browser.find_element(By.ID, "files").send_keys("\n".join(map(str, files)))
    browser.find_element(By.ID, "folder").send_keys(str(photos))
    browser.find_element(By.ID, "send").click()
    text = wait_for(
        lambda: (
            browser.current_url.endswith("/up") and browser.find_element(By.TAG_NAME, "body").text
        ),
        "the upload's answer",
    )
    answer = json.loads(text)
    want = {path.name: digest(path) for path in files}
    want["photos/cover.jpg"] = digest(photos / "cover.jpg")
    want["photos/2026/a.jpg"] = digest(photos / "2026" / "a.jpg")
    assert answer["files"] == want
    assert answer["fields"] == [["title", "run 7 \u2713"]]  # and the empty input was skipped
    for name, (size, sha256) in want.items():
        data = dest.joinpath(*name.split("/")).read_bytes()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (size, sha256)
    stored = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file())
    assert stored == sorted(want)
