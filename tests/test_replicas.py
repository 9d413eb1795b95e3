"""Many replicas: separate gateway processes agree on bytes and validators, behind a real nginx.

Each replica is ``multiresp serve`` in a process of its own, with its own time zone, over the
same folder or over a copy of it made as replicas get theirs (``cp -a``, ``copy2``: other
inodes, the same mtimes). They share ``MULTIRESP_BOUNDARY_KEY``. Then the same selection gives
the same bytes, ``ETag`` and ``Last-Modified`` from any of them, so a resume (``Range`` +
``If-Range``) that a load balancer sends to another replica gets ``206`` and the rest.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pathlib
import shutil
import subprocess
from collections.abc import Iterator

import httpx
import pytest

from balancer import Nginx, Replica
from multiresp import _transfer
from multiresp.client import download
from proxy import CuttingProxy

from conftest import require_tool

KEY = "a-secret-the-replicas-share"
ZONES = ("UTC0", "NPT-5:45")  # POSIX zone strings: no tzdata needed, and 5:45 apart
MTIME_NS = 1_700_000_000_123_456_789  # odd nanoseconds: a copy must keep them all
FILES = {
    "a.txt": b"alpha\n",
    "empty.txt": b"",
    "images/mask-0.png": os.urandom(300_001),
    "images/mask-1.png": os.urandom(5),
    "reports/résumé.json": b'{"ok": true}',
    "big/one.bin": os.urandom(1_500_000),
}
SELECTIONS = ("", "?name=images&name=a.txt")  # all of the folder; two names in it
FORMATS = ("zip", "multipart")
VALIDATORS = ("etag", "last-modified", "content-length", "accept-ranges")


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_transfer, "RESUME_BACKOFF", 0.01)


def make_share(root: pathlib.Path) -> pathlib.Path:
    """The sample folder, with an empty folder, each mtime set to the nanosecond."""
    for index, (name, data) in enumerate(FILES.items()):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.utime(path, ns=(MTIME_NS, MTIME_NS + index * 1_000_000_007))
    (root / "nothing").mkdir()
    for folder in [root / "nothing", *{(root / name).parent for name in FILES}]:
        os.utime(folder, ns=(MTIME_NS, MTIME_NS))
    return root


def copy_share(root: pathlib.Path, dest: pathlib.Path, how: str) -> pathlib.Path:
    """A replica's copy: other inodes, the same names, sizes, modes and mtimes."""
    if how == "cp-a":
        subprocess.run(["cp", "-a", str(root), str(dest)], check=True)
    else:
        shutil.copytree(root, dest, copy_function=shutil.copy2)
    return dest


def tree(root: pathlib.Path) -> dict[str, bytes]:
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


@contextlib.contextmanager
def replicas(
    tmp: pathlib.Path, roots: list[pathlib.Path], key: str | None = KEY
) -> Iterator[list[Replica]]:
    """One replica per root, each in its own time zone."""
    with contextlib.ExitStack() as stack:
        yield [
            stack.enter_context(
                Replica(root, tz=ZONES[i % len(ZONES)], key=key, log=tmp / f"replica-{i}.log")
            )
            for i, root in enumerate(roots)
        ]


# -- same validators --------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["one-folder", "cp-a", "copy2"])
def test_replicas_give_the_same_bytes_and_validators(tmp_path: pathlib.Path, layout: str) -> None:
    share = make_share(tmp_path / "one" / "share")
    roots = [share, share]
    if layout != "one-folder":
        (tmp_path / "two").mkdir()
        roots[1] = copy_share(share, tmp_path / "two" / "share", layout)
        assert os.stat(roots[1] / "big/one.bin").st_ino != os.stat(share / "big/one.bin").st_ino
    with replicas(tmp_path, roots) as (a, b), httpx.Client(timeout=60) as http:
        for fmt in FORMATS:
            for selection in SELECTIONS:
                first = http.get(f"{a.url}/{fmt}/{selection}")
                second = http.get(f"{b.url}/{fmt}/{selection}")
                assert first.status_code == second.status_code == 200
                assert first.content == second.content, (fmt, selection)
                for name in VALIDATORS:
                    assert first.headers[name] == second.headers[name], (fmt, selection, name)
                assert not first.headers["etag"].startswith("W/")
                # the other replica honours the first one's validators
                rest = http.get(
                    f"{b.url}/{fmt}/{selection}",
                    headers={"Range": "bytes=1000-", "If-Range": first.headers["etag"]},
                )
                assert rest.status_code == 206
                assert rest.content == first.content[1000:]
                dated = http.get(
                    f"{a.url}/{fmt}/{selection}",
                    headers={"If-Modified-Since": second.headers["last-modified"]},
                )
                assert dated.status_code == 304
    # each process answered its own requests: two per format and selection
    each = 2 * len(FORMATS) * len(SELECTIONS)
    assert len(a.requests(each)) == len(b.requests(each)) == each


def test_without_a_shared_key_multipart_replicas_disagree(tmp_path: pathlib.Path) -> None:
    """Why the key must be shared: each process draws its own, so boundaries and ETags differ
    (the zip, which has no boundary, still agrees)."""
    share = make_share(tmp_path / "share")
    with replicas(tmp_path, [share, share], key=None) as (a, b), httpx.Client() as http:
        one, two = (http.get(f"{r.url}/multipart/") for r in (a, b))
        assert one.headers["etag"] != two.headers["etag"]
        assert one.content != two.content
        zips = [http.get(f"{r.url}/zip/") for r in (a, b)]
        assert zips[0].headers["etag"] == zips[1].headers["etag"]
        assert zips[0].content == zips[1].content


def test_a_file_with_another_mtime_gives_another_etag(tmp_path: pathlib.Path) -> None:
    """A copy that lost its mtimes (plain ``cp``) is another archive: the replicas disagree,
    and a resume across them gets the whole body (200), never a splice."""
    share = make_share(tmp_path / "one" / "share")
    (tmp_path / "two").mkdir()
    copy = copy_share(share, tmp_path / "two" / "share", "copy2")
    os.utime(copy / "a.txt", ns=(MTIME_NS, MTIME_NS + 1))  # one nanosecond later
    with replicas(tmp_path, [share, copy]) as (a, b), httpx.Client() as http:
        first = http.get(f"{a.url}/zip/")
        rest = http.get(
            f"{b.url}/zip/", headers={"Range": "bytes=1000-", "If-Range": first.headers["etag"]}
        )
    assert rest.status_code == 200
    assert rest.headers["etag"] != first.headers["etag"]


# -- behind nginx -----------------------------------------------------------------------------


@pytest.fixture
def balanced(tmp_path: pathlib.Path) -> Iterator[tuple[Nginx, list[Replica]]]:
    """Two replicas over two copies of the share, and nginx (examples/nginx.conf) in front."""
    nginx = require_tool("nginx")
    share = make_share(tmp_path / "one" / "share")
    (tmp_path / "two").mkdir()
    copy = copy_share(share, tmp_path / "two" / "share", "cp-a")
    with (
        replicas(tmp_path, [share, copy]) as both,
        Nginx(nginx, tmp_path / "nginx", [r.port for r in both]) as lb,
    ):
        yield lb, both


@pytest.mark.parametrize("fmt", FORMATS)
def test_downloads_through_nginx_alternate_between_the_replicas(
    balanced: tuple[Nginx, list[Replica]], fmt: str
) -> None:
    lb, (a, b) = balanced
    with httpx.Client(timeout=60) as http:
        responses = [http.get(f"{lb.url}/{fmt}/") for _ in range(4)]
        ranged = http.get(f"{lb.url}/{fmt}/", headers={"Range": "bytes=100-199"})
    upstreams = [r.headers["x-upstream"] for r in responses]
    assert set(upstreams) == {f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"}
    assert all(one != two for one, two in itertools.pairwise(upstreams))
    assert {r.status_code for r in responses} == {200}
    assert len({r.content for r in responses}) == 1
    for name in VALIDATORS:
        assert len({r.headers[name] for r in responses}) == 1, name
    assert int(responses[0].headers["content-length"]) == len(responses[0].content)
    # nginx passes the range through: the replica's 206, not a range of nginx's own
    assert ranged.status_code == 206
    assert ranged.headers["content-range"] == f"bytes 100-199/{len(responses[0].content)}"
    assert ranged.content == responses[0].content[100:200]
    answered = [r.headers["x-upstream"] for r in [*responses, ranged]]
    for replica in (a, b):  # the header and the replicas' own logs agree
        count = answered.count(f"127.0.0.1:{replica.port}")
        assert len(replica.requests(count)) == count
    assert lb.errors().count("[error]") == 0


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_resume_through_nginx_gets_206_from_the_other_replica(
    balanced: tuple[Nginx, list[Replica]], tmp_path: pathlib.Path, fmt: str
) -> None:
    lb, replicas_ = balanced
    cut = 700_000  # in the middle of big/one.bin
    dest = tmp_path / "out"
    with CuttingProxy(lb.port, [cut]) as proxy:
        saved = download(f"{proxy.url}/{fmt}/", dest)
    assert tree(dest) == FILES
    assert sorted(file.name for file in saved) == sorted(FILES)
    assert [exchange.status for exchange in proxy.exchanges] == [200, 206]
    assert proxy.ranges == [None, f"bytes={cut}-"]
    etag = proxy.exchanges[1].if_range
    assert etag is not None and not etag.startswith("W/")
    log = [line for line in lb.access_log() if f"/{fmt}/" in line["request"]]
    assert [line["range"] for line in log] == ["-", f"bytes={cut}-"]
    assert log[1]["if_range"] == etag and log[1]["status"] == "206"
    first, second = (line["upstream"] for line in log)
    assert first != second
    assert {first, second} == {f"127.0.0.1:{r.port}" for r in replicas_}
