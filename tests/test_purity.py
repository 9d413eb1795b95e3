"""The formats are pure (docs/style.md): their modules import no I/O library."""

from __future__ import annotations

import ast
import pathlib

import pytest

import multiresp

CORE = [
    "_errors",
    "_names",
    "_events",
    "_types",
    "_zipformat",
    "_zipwriter",
    "_zipreader",
    "_multipart",
    "_multipart_reader",
    "_http",
    "_limits",
    "_plan",
    "_ranges",
]
FORBIDDEN = {"anyio", "starlette", "httpx", "aiofiles", "socket", "asyncio", "trio", "uvicorn"}


@pytest.mark.parametrize("module", CORE)
def test_core_module_imports_no_io(module: str) -> None:
    path = pathlib.Path(multiresp.__file__).parent / f"{module}.py"
    tree = ast.parse(path.read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            imported.add(node.module.split(".")[0])
    assert not imported & FORBIDDEN
    assert "open(" not in path.read_text()
