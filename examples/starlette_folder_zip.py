"""A Starlette app that streams a folder as a zip, built while it is sent.

Run it on a folder, then download the archive with any client::

    python examples/starlette_folder_zip.py path/to/folder
    curl -o folder.zip http://127.0.0.1:8000/folder.zip      # or: multiresp get URL -o out/

Sizes are known (files on disk, stored), so the response has an exact ``Content-Length``,
answers ``HEAD`` without reading a file and serves ``Range`` requests (a browser can resume).
``walk`` lists the folder without leaving it: links that lead out and special files are skipped.
"""

from __future__ import annotations

import os
import pathlib
import sys

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from multiresp import ZipStreamResponse, walk


def build_app(folder: str | os.PathLike[str]) -> Starlette:
    root = pathlib.Path(folder).resolve()

    async def export(request: Request) -> Response:
        return ZipStreamResponse(walk(root), filename=f"{root.name or 'files'}.zip")

    return Starlette(routes=[Route("/folder.zip", export, methods=["GET", "HEAD"])])


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(build_app(sys.argv[1] if len(sys.argv) > 1 else "."), host="127.0.0.1", port=8000)
