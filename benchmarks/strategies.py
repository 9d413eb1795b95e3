"""What is measured: the strategies (ways to send many files) and the uvicorn stacks.

Each strategy is one route of ``benchmarks/server.py``; this module holds what the harness
and the report need to know about it (its label, the format a client receives, which
zipstream-ng baseline it is compared with). Strategies and stacks whose code is not
importable in this checkout (``MultipartResponse`` before it lands, uvloop or httptools when
not installed) are left out at run time, so the suite runs before and after they land.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass


@dataclass(frozen=True)
class Strategy:
    """One way of sending a dataset.

    Attributes:
        name: The key used on the command line, in the results and in the route.
        label: What the tables and plots call it.
        family: ``naive``, ``zipstream-ng``, ``starlette``, ``reference`` or ``multiresp``.
        format: What the client receives: ``zip``, ``multipart`` or ``raw`` (the
            concatenated bytes, not unpackable into files).
        compressed: True when it deflates (compared with zipstream-ng deflate, not store).
        route: The server route; several strategies may share one.
        prime: True to send one untimed request first (a warm CRC cache).
        needs: A module that must be importable for the strategy to run.
    """

    name: str
    label: str
    family: str
    format: str
    compressed: bool = False
    route: str = ""
    prime: bool = False
    needs: str = ""

    @property
    def path(self) -> str:
        return self.route or self.name


STRATEGIES = (
    Strategy("naive-tempfile", "naive: zipfile > NamedTemporaryFile > FileResponse", "naive",
             "zip", compressed=True),
    Strategy("naive-bytesio", "naive: zipfile > BytesIO, one chunk", "naive", "zip",
             compressed=True),
    Strategy("zipstream-store", "zipstream-ng store", "zipstream-ng", "zip"),
    Strategy("zipstream-deflate", "zipstream-ng deflate", "zipstream-ng", "zip", compressed=True),
    Strategy("fileresponse", "Starlette FileResponse (one file)", "starlette", "raw"),
    Strategy("block-reader", "reference: 4 MiB block reader", "reference", "raw"),
    Strategy("memory-ceiling", "reference: memory ceiling", "reference", "raw"),
    Strategy("mr-zip", "multiresp ZipResponse (deflate)", "multiresp", "zip", compressed=True),
    Strategy("mr-store", "multiresp ZipStreamResponse store", "multiresp", "zip"),
    Strategy("mr-store-warm", "multiresp ZipStreamResponse store, CRC cached", "multiresp",
             "zip", route="mr-store", prime=True),
    Strategy("mr-deflate", "multiresp ZipStreamResponse deflate", "multiresp", "zip",
             compressed=True),
    Strategy("mr-auto", "multiresp ZipStreamResponse auto", "multiresp", "zip", compressed=True),
    Strategy("mr-multipart", "multiresp MultipartResponse", "multiresp", "multipart",
             needs="multiresp:MultipartResponse"),
)  # fmt: skip
BY_NAME = {strategy.name: strategy for strategy in STRATEGIES}

# The references every figure is also given as a ratio to (see report.py).
BLOCK, CEILING, FILE, ZS_STORE, ZS_DEFLATE = (
    "block-reader", "memory-ceiling", "fileresponse", "zipstream-store", "zipstream-deflate",
)  # fmt: skip


def importable(needs: str) -> bool:
    """True when ``module`` or ``module:name`` can be imported in this checkout."""
    if not needs:
        return True
    module, _, name = needs.partition(":")
    try:
        imported = importlib.import_module(module)
    except ImportError:
        return False
    return not name or hasattr(imported, name)


def client_available() -> bool:
    """True when ``multiresp.client.download`` exists (it times files onto the disk)."""
    return importable("multiresp.client:download")


@dataclass(frozen=True)
class Stack:
    """A uvicorn configuration: its HTTP implementation and its event loop."""

    name: str
    http: str
    loop: str

    def available(self) -> bool:
        needed = [m for m in (self.http, self.loop) if m in ("httptools", "uvloop")]
        return all(importlib.util.find_spec(module) is not None for module in needed)


STACKS = {
    "h11": Stack("h11+asyncio", "h11", "asyncio"),
    "httptools": Stack("httptools+uvloop", "httptools", "uvloop"),
}
