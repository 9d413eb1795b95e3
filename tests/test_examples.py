"""Every example in examples/ runs: served by a real uvicorn, fetched by a real client."""

from __future__ import annotations

import importlib.util
import io
import json
import pathlib
import re
import subprocess
import sys
import types
import zipfile
from collections.abc import Callable

import httpx
import pytest

from multiresp.client import download, iter_entries

from conftest import LiveServer

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"
TIMEOUT = 60  # seconds


def load(name: str) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def folder(tmp_path: pathlib.Path) -> pathlib.Path:
    root = tmp_path / "folder"
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_bytes(b"alpha\n")
    (root / "sub" / "b.bin").write_bytes(bytes(range(256)) * 2000)
    return root


def files(root: pathlib.Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


WANT = {"a.txt": b"alpha\n", "sub/b.bin": bytes(range(256)) * 2000}


def test_fastapi_outputs_negotiates(live_server: Callable[..., LiveServer]) -> None:
    url = live_server(load("fastapi_outputs").app).url + "/predict?prompt=a+cat"
    names = ["mask.png", "report.json", "scores.csv"]
    zipped = httpx.get(url, headers={"Accept": "application/zip"})
    assert zipped.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(zipped.content)) as archive:
        assert archive.namelist() == names
        assert archive.read("mask.png").startswith(b"\x89PNG\r\n\x1a\n")
        assert json.loads(archive.read("report.json"))["prompt"] == "a cat"
        assert archive.read("scores.csv").count(b"\n") == 1001
        zipped_files = {name: archive.read(name) for name in names}
    with httpx.stream("GET", url, headers={"Accept": "multipart/mixed"}) as response:
        assert response.headers["content-type"].startswith("multipart/mixed")
        parts = {entry.name: b"".join(entry.iter_bytes()) for entry in iter_entries(response)}
    assert parts == zipped_files
    assert httpx.get(url, headers={"Accept": "text/html"}).status_code == 406


def test_starlette_folder_zip(
    live_server: Callable[..., LiveServer], folder: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    url = live_server(load("starlette_folder_zip").build_app(folder)).url + "/folder.zip"
    head = httpx.head(url)
    assert head.status_code == 200 and int(head.headers["content-length"]) > 0
    download(url, tmp_path / "out")
    assert files(tmp_path / "out") == WANT


def test_download_progress_script(
    live_server: Callable[..., LiveServer], folder: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    url = live_server(load("starlette_folder_zip").build_app(folder)).url + "/folder.zip"
    run = subprocess.run(
        [sys.executable, str(EXAMPLES / "download_progress.py"), url, str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert run.returncode == 0, run.stderr
    assert files(tmp_path / "out") == WANT
    lines = run.stdout.splitlines()
    assert re.fullmatch(r"100% of 0\.5 MiB  2 files saved  now: -", lines[-4]), lines
    assert re.fullmatch(r"[0-9a-f]{12} +6  a\.txt", lines[-3])
    assert re.fullmatch(r"[0-9a-f]{12} +512000  sub/b\.bin", lines[-2])
    assert lines[-1] == f"2 files in {tmp_path / 'out'}"


def test_fastapi_gateway_mounted(
    live_server: Callable[..., LiveServer], folder: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    base = live_server(load("fastapi_gateway").build_app(folder)).url
    assert httpx.get(base + "/health").json() == {"status": "ok"}
    page = httpx.get(base + "/share/").text
    assert 'href="/share/zip/sub"' in page and 'action="/share/zip/"' in page
    assert 'href="/share/browse/sub/"' in page
    sub = httpx.get(base + "/share/browse/sub/").text
    assert '<a class="file" href="/share/files/sub/b.bin">b.bin</a>' in sub
    download(base + "/share/zip/", tmp_path / "all")
    assert files(tmp_path / "all") == WANT
    download(base + "/share/multipart/sub", tmp_path / "sub")
    assert files(tmp_path / "sub") == {"b.bin": WANT["sub/b.bin"]}
    assert httpx.get(base + "/share/files/a.txt").content == b"alpha\n"
    assert httpx.get(base + "/share/files/%2e%2e/folder/a.txt").status_code == 404


def test_fastapi_model_takes_inputs_and_gives_outputs(
    live_server: Callable[..., LiveServer], tmp_path: pathlib.Path
) -> None:
    url = live_server(load("fastapi_model").app).url + "/predict"
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    (inputs / "photo.jpg").write_bytes(bytes(range(256)) * 3000)
    (inputs / "notes.txt").write_bytes(b"mostly text, " * 500)
    run = subprocess.run(
        [
            sys.executable,
            str(EXAMPLES / "model_client.py"),
            url,
            str(tmp_path / "out"),
            str(inputs / "photo.jpg"),
            str(inputs / "notes.txt"),
        ],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert run.returncode == 0, run.stderr
    out = files(tmp_path / "out")
    assert sorted(out) == ["histograms/00.png", "histograms/01.png", "report.json"]
    assert out["histograms/00.png"].startswith(b"\x89PNG\r\n\x1a\n")
    report = json.loads(out["report.json"])
    assert [(r["input"], r["bytes"]) for r in report] == [
        ("photo.jpg", 768_000),
        ("notes.txt", 6500),
    ]
    assert report[0]["entropy_bits_per_byte"] == 8.0 and report[0]["flagged"] is True
    assert run.stdout.splitlines()[-2:] == [
        "photo.jpg: 8.0 bits/byte",
        f"notes.txt: {report[1]['entropy_bits_per_byte']} bits/byte",
    ]
    # a zip for a client that asks for one, and 413 past the endpoint's limits
    zipped = httpx.post(
        url, files={"files": ("a.bin", b"abc")}, headers={"Accept": "application/zip"}
    )
    assert zipped.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(zipped.content)) as archive:
        assert archive.namelist() == ["histograms/00.png", "report.json"]
    too_many = [("files", (f"{i}.bin", b"x")) for i in range(17)]
    refused = httpx.post(url, files=too_many)
    assert refused.status_code == 413 and "max_files" in refused.text
