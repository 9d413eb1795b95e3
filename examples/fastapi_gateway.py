"""The multiresp gateway mounted inside a FastAPI app, next to the app's own routes.

::

    python examples/fastapi_gateway.py path/to/folder
    # the page: http://127.0.0.1:8000/share/   a zip of everything: /share/zip/

``create_app(folder)`` is the same app ``multiresp serve`` runs: a browsable page, ``/zip/...``,
``/multipart/...`` and ``/files/...``, never anything outside the folder. Mounted under a path,
its links carry that path. Its access log is the ``multiresp.gateway`` logger.
"""

from __future__ import annotations

import logging
import os
import sys

from fastapi import FastAPI

from multiresp.gateway import create_app


def build_app(folder: str | os.PathLike[str]) -> FastAPI:
    app = FastAPI()

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    app.mount("/share", create_app(folder))
    return app


if __name__ == "__main__":
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    uvicorn.run(build_app(sys.argv[1] if len(sys.argv) > 1 else "."), host="127.0.0.1", port=8000)
