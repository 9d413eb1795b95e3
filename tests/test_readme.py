"""Every ```python block of README.md runs, so that the README cannot drift from the code.

The convention (also in the README's "Development" section):

- Each block is self-contained: it imports what it uses and defines every name it uses
  (ruff's pyflakes rules check each block alone). No top-level ``await``: an async example
  wraps its code in ``async def main()`` and ends with ``anyio.run(main)``.
- The blocks run in README order, each in a fresh namespace, in a temporary working folder
  that holds the sample files listed in ``SAMPLE_FILES`` below (``exports/``, ``jobs/42/``).
- A block that defines a module-level ``app`` is a server: after it runs, its app is served
  by uvicorn on loopback, together with the apps of the server blocks above it (a request
  goes to the latest app with a matching route).
- Every other block is a client: it talks to ``http://127.0.0.1:8000`` (what ``uvicorn``
  serves by default), which the test rewrites to the live server's address.
- Every route a server block defines must be requested by some client block, and answered
  with a status below 400: an example nobody runs is an example that drifts.
- A block fenced ```` ```python s3 ```` needs an S3 server; it is skipped here and run against
  moto by ``tests/test_objects.py``.
"""

from __future__ import annotations

import dataclasses
import pathlib
import re
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
from starlette.routing import Match

from conftest import LiveServer

README = pathlib.Path(__file__).parent.parent / "README.md"
ORIGIN = "http://127.0.0.1:8000"
SAMPLE_FILES = {
    "exports/summary.txt": b"42 files exported\n",
    "exports/tables/scores.csv": b"name,score\na,0.9\nb,0.8\n",
    "jobs/42/mask.png": b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4,
}


@dataclasses.dataclass
class Block:
    line: int  # where the block starts in README.md (1-based, the line after the fence)
    code: str

    @property
    def is_server(self) -> bool:
        return re.search(r"^app\s*[:=]", self.code, re.MULTILINE) is not None


def _blocks() -> list[Block]:
    blocks = []
    lines = README.read_text().splitlines()
    start = None
    for number, line in enumerate(lines, 1):
        if start is None and line.strip() == "```python":
            start = number
        elif start is not None and line.strip() == "```":
            blocks.append(Block(start + 1, "\n".join(lines[start : number - 1]) + "\n"))
            start = None
    return blocks


BLOCKS = _blocks()


def test_the_readme_has_server_and_client_blocks() -> None:
    assert any(block.is_server for block in BLOCKS)
    assert any(not block.is_server for block in BLOCKS)


PYFLAKES = [sys.executable, "-m", "ruff", "check", "--isolated", "--select", "F", "--quiet"]


@pytest.mark.parametrize("block", BLOCKS, ids=[f"line-{b.line}" for b in BLOCKS])
def test_each_block_defines_every_name_it_uses(block: Block) -> None:
    name = f"README.md-line-{block.line}.py"
    result = subprocess.run(
        [*PYFLAKES, "--stdin-filename", name, "-"],
        input=block.code,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


class Dispatcher:
    """One ASGI app over the README's apps: a request goes to the latest one that matches."""

    def __init__(self) -> None:
        self.apps: list[Any] = []
        self.answered: list[tuple[Any, int]] = []  # (route, status) per request

    def _route(self, scope: dict[str, Any]) -> tuple[Any, Any]:
        for app in reversed(self.apps):
            for route in app.router.routes:
                if route.matches(scope)[0] == Match.FULL:
                    return app, route
        return None, None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        app, route = self._route(scope)
        if app is None:
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": b"no README app has this route"})
            return

        async def recording_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                self.answered.append((route, message["status"]))
            await send(message)

        await app(scope, receive, recording_send)


def test_the_blocks_run_against_a_live_server(
    live_server: Callable[..., LiveServer],
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, data in SAMPLE_FILES.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(data)
    monkeypatch.chdir(tmp_path)
    dispatcher = Dispatcher()
    server = live_server(dispatcher)
    defined: list[tuple[Any, int]] = []  # (route, README line of its block)
    for block in BLOCKS:
        module = f"readme_line_{block.line}"
        namespace: dict[str, Any] = {"__name__": module}
        code = block.code.replace(ORIGIN, server.url)
        try:
            exec(compile(code, f"README.md, block at line {block.line}", "exec"), namespace)
        except Exception as exc:
            raise AssertionError(f"the README block at line {block.line} failed") from exc
        if block.is_server:
            app = namespace["app"]
            dispatcher.apps.append(app)
            defined.extend(
                (route, block.line)
                for route in app.router.routes
                if getattr(getattr(route, "endpoint", None), "__module__", None) == module
            )
    assert defined, "the server blocks define no route"
    for route, line in defined:
        statuses = [status for answered, status in dispatcher.answered if answered is route]
        assert statuses, f"no README block requests {route.path} (defined at line {line})"
        assert max(statuses) < 400, f"{route.path} (line {line}) answered {statuses}"
