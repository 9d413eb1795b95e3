"""A gateway over one folder: a browsable page, and any file or selection as zip or multipart.

::

    from multiresp.gateway import create_app

    app = create_app("/srv/share")          # run it: uvicorn, or `multiresp serve /srv/share`
    api.mount("/share", create_app("/srv/share"))   # or mount it in a FastAPI/Starlette app

Routes (``{path}`` is relative to the folder; ``GET /zip/`` is all of it):

- ``GET /`` and ``GET /browse/{path}``: the HTML page of a folder;
- ``GET /zip/{path}``: a streaming zip of that file or folder, or with repeated ``?name=``
  of those names inside it; ``GET /multipart/{path}``: the same as ``multipart/mixed``;
- ``GET /files/{path}``: one file, with ``Range``, as Starlette's ``FileResponse`` serves it;
- ``POST /upload/{path}``: a ``multipart/form-data`` upload into that folder, through
  :func:`~multiresp.receive_files` (all or nothing; no file replaced), only when the app was
  made with ``allow_upload=True``, else 403. A browser (``Accept: text/html``) is sent back to
  the folder's page (303); other clients get the saved files as JSON.

Every path from a request, in the URL or in ``?name=``, goes through :meth:`_Gateway.resolve`,
the one place that maps request paths to the disk: nothing outside the folder (``..``, absolute
paths, symbolic links leading out) and nothing but regular files and folders (no FIFO, socket
or device) is ever reached; anything else is 404. The access log (the ``multiresp.gateway``
logger, at INFO) gets one line per response when its body ends, with its size and duration.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pathlib
import posixpath
import stat
import time
from urllib.parse import quote

import anyio
import anyio.to_thread
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import _fs
from ._entries import Entry, entry_beneath, walk_beneath
from ._errors import MultirespError, UnsafeNameError
from ._names import check_name
from ._page import Row, render_page
from ._progress import human_bytes
from .responses import MultipartResponse, ZipStreamResponse
from .uploads import _receive_into, error_response

__all__ = ("create_app",)

logger = logging.getLogger("multiresp.gateway")

_ENCODED_SEPARATORS = (b"%2f", b"%5c", b"%00")  # an encoded "/", "\" or NUL in the raw path


def create_app(root: str | os.PathLike[str], *, allow_upload: bool = False) -> Starlette:
    """The gateway over ``root`` as a Starlette app, to run under any ASGI server or mount.

    Args:
        root: The folder to serve. Nothing outside it is ever served or written.
        allow_upload: Accept uploads into its folders (``POST /upload/{path}``), and show an
            upload form on the page.

    Returns:
        The app. Its access log goes to the ``multiresp.gateway`` logger.

    Raises:
        NotADirectoryError: ``root`` is not a folder.
    """
    gateway = _Gateway(pathlib.Path(root), allow_upload=allow_upload)
    routes = [
        Route("/", gateway.page, name="page"),
        Route("/browse/{path:path}", gateway.page, name="browse"),
        Route("/zip/{path:path}", gateway.zip, name="zip"),
        Route("/multipart/{path:path}", gateway.multipart, name="multipart"),
        Route("/files/{path:path}", gateway.file, name="files"),
        Route("/upload/{path:path}", gateway.upload, methods=["POST"], name="upload"),
    ]
    return Starlette(routes=routes, middleware=[Middleware(_AccessLog)])


@dataclasses.dataclass(frozen=True, slots=True)
class _Found:
    """A request path that :meth:`_Gateway.resolve` let through."""

    relative: str  # "" for the root, else a checked relative name without trailing "/"
    path: pathlib.Path  # its real path, inside the root
    is_dir: bool
    identity: tuple[int, int]  # its device and inode, as checked

    def beneath(self, root: pathlib.Path) -> str:
        """Its real path relative to ``root``: no link and no ``..`` in it."""
        return self.path.relative_to(root).as_posix() if self.path != root else ""


class _OpenedFileResponse(FileResponse):
    """Starlette's ``FileResponse`` (``Range``, ``HEAD``, validators) over a descriptor already
    opened safely: it reads ``/proc/self/fd/N``, which is that open file whatever has been
    put at its path since, and closes the descriptor when the response ends. Without
    ``/proc`` it reads the checked path, which leaves the window between check and open."""

    def __init__(self, fd: int, path: pathlib.Path, *, filename: str) -> None:
        self._fd = fd
        by_fd = f"/proc/self/fd/{fd}"
        super().__init__(
            by_fd if os.path.exists(by_fd) else path,
            filename=filename,
            stat_result=os.fstat(fd),
            content_disposition_type="inline",
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            os.close(self._fd)


class _Gateway:
    def __init__(self, root: pathlib.Path, *, allow_upload: bool) -> None:
        if not root.is_dir():
            raise NotADirectoryError(f"{root}: not a directory")
        self.root = pathlib.Path(os.path.realpath(root))
        self.allow_upload = allow_upload

    def resolve(self, relative: str) -> _Found:
        """Map a path relative to the root onto the disk, or refuse it with 404.

        This is the only place a request reaches the file system. The path must be a safe
        relative name (the entry-name rule: no ``..``, ``.`` or empty segment, not absolute, no
        backslash or control character); once symbolic links are resolved it must still lie
        inside the root; and it must be a regular file or a folder. What a request then reads
        is opened beneath the root from that real path, with no link followed (see
        :meth:`entries` and :meth:`open_file`), so a file or folder swapped for a link after
        this check is refused, not followed.

        Raises:
            HTTPException: 404, for every path refused, as for one that does not exist.
        """
        name = relative[:-1] if relative.endswith("/") else relative
        if name:
            try:
                check_name(name)
            except UnsafeNameError:
                raise HTTPException(404) from None
        real = pathlib.Path(os.path.realpath(self.root / name))
        if real != self.root and self.root not in real.parents:
            raise HTTPException(404)
        try:
            st = os.stat(real, follow_symlinks=False)
        except (OSError, ValueError):
            raise HTTPException(404) from None
        if not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)):
            raise HTTPException(404)
        return _Found(name, real, stat.S_ISDIR(st.st_mode), (st.st_dev, st.st_ino))

    def target(self, request: Request) -> _Found:
        """The ``{path}`` of a request, refused when the raw URL encoded a separator in it."""
        raw = request.scope.get("raw_path") or b""
        if any(bad in raw.lower() for bad in _ENCODED_SEPARATORS):
            raise HTTPException(404)
        return self.resolve(str(request.path_params.get("path", "")))

    def selection(self, request: Request) -> tuple[list[Entry], str]:
        """The entries a ``/zip`` or ``/multipart`` request asks for, and a download name."""
        found = self.target(request)
        names = request.query_params.getlist("name")
        stem = posixpath.basename(found.relative) or self.root.name
        if not names:
            if found.is_dir:
                return self.entries(found), stem
            return self.entries(found, stem), posixpath.splitext(stem)[0] or stem
        if not found.is_dir:
            raise HTTPException(404)
        entries: dict[str, Entry] = {}
        for name in names:
            inner = self.resolve(posixpath.join(found.relative, name) if found.relative else name)
            label = inner.relative[len(found.relative) :].lstrip("/")
            for entry in self.entries(inner, label):
                entries.setdefault(entry.name, entry)
        if len(names) == 1:
            stem = posixpath.basename(names[0].rstrip("/")) or stem
        return sorted(entries.values(), key=lambda e: e.name), stem

    def entries(self, found: _Found, name: str = "") -> list[Entry]:
        """The entries of a file (named ``name``) or a folder (under ``name``) that
        :meth:`resolve` let through, each file read beneath the root with no link followed.

        Raises:
            HTTPException: 404, when it is no longer a regular file or a folder.
        """
        root = self.root_facts()
        try:
            if found.is_dir:
                return walk_beneath(root, found.beneath(self.root), prefix=name)
            return [entry_beneath(root, found.beneath(self.root), name)]
        except OSError:
            raise HTTPException(404) from None

    def root_facts(self) -> _fs.Root:
        """The root as files beneath it record it: its path, device and inode.

        Raises:
            HTTPException: 404, when the root cannot be stat'ed.
        """
        try:
            st = os.stat(self.root)
        except OSError:
            raise HTTPException(404) from None
        return _fs.Root(str(self.root), st.st_dev, st.st_ino)

    # The endpoints stat and walk folders in a worker thread: a big folder never blocks the loop.

    async def zip(self, request: Request) -> Response:
        entries, stem = await anyio.to_thread.run_sync(self.selection, request)
        return ZipStreamResponse(entries, filename=f"{stem}.zip")

    async def multipart(self, request: Request) -> Response:
        entries, _ = await anyio.to_thread.run_sync(self.selection, request)
        return MultipartResponse(entries)

    async def file(self, request: Request) -> Response:
        found = await anyio.to_thread.run_sync(self.target, request)
        if found.is_dir:
            raise HTTPException(404)
        fd = await anyio.to_thread.run_sync(self.open_file, found)
        return _OpenedFileResponse(fd, found.path, filename=posixpath.basename(found.relative))

    def open_file(self, found: _Found) -> int:
        """A descriptor of the file :meth:`resolve` let through, opened beneath the root with
        no symbolic link followed and checked to be that regular file (``_fs.open_source``):
        a file swapped for a link or a FIFO after the check is refused (404), not served."""
        root = self.root_facts()
        try:
            st = os.stat(found.path, follow_symlinks=False)
        except OSError:
            raise HTTPException(404) from None
        source = _fs.PathSource.from_stat(str(found.path), st, root, found.beneath(self.root))
        try:
            return _fs.open_source(source, found.relative)
        except (OSError, MultirespError):
            raise HTTPException(404) from None

    async def page(self, request: Request) -> Response:
        found = await anyio.to_thread.run_sync(self.target, request)
        if not found.is_dir:
            raise HTTPException(404)
        rows = await anyio.to_thread.run_sync(self.listing, found)
        base = request.scope.get("root_path", "")
        return HTMLResponse(
            render_page(
                base=base,
                root_name=self.root.name,
                folder=found.relative,
                rows=rows,
                upload=self.allow_upload,
            )
        )

    async def upload(self, request: Request) -> Response:
        if not self.allow_upload:
            raise HTTPException(403, "uploads are off: start the gateway with --allow-upload")
        found = await anyio.to_thread.run_sync(self.target, request)
        if not found.is_dir:
            raise HTTPException(404)
        try:
            saved = await _receive_into(request, found.path, folder=found.identity)
        except MultirespError as exc:  # 413, 409 or 400, with what was wrong
            return await error_response(request, exc)
        if "text/html" in request.headers.get("accept", ""):
            base = request.scope.get("root_path", "")
            folder = quote(found.relative, safe="/")
            return RedirectResponse(f"{base}/browse/{folder}/" if folder else f"{base}/", 303)
        return JSONResponse(
            {
                "folder": found.relative,
                "files": [{"name": f.name, "size": f.size, "sha256": f.sha256} for f in saved],
            }
        )

    def listing(self, found: _Found) -> list[Row]:
        """The rows of a folder's page: its files, and its folders with what they hold."""
        rows: dict[str, Row] = {}
        for entry in self.entries(found):
            head, sep, _ = entry.name.partition("/")
            row = rows.get(head)
            if row is None:
                row = rows[head] = Row(name=head, is_dir=bool(sep), size=0, files=0, mtime=None)
            if entry.name.endswith("/"):
                continue
            row.size += entry.size or 0
            row.files += 1
            if entry.mtime is not None and (row.mtime is None or entry.mtime > row.mtime):
                row.mtime = entry.mtime
        return sorted(rows.values(), key=lambda r: (not r.is_dir, r.name.lower()))


class _AccessLog:
    """ASGI middleware: one log line per HTTP response, when its body has ended or broke off."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0
        sent = 0
        finished = False

        async def counting(message: Message) -> None:
            nonlocal status, sent, finished
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
                finished = not message.get("more_body", False)
            await send(message)

        try:
            await self.app(scope, receive, counting)
        finally:
            elapsed = time.perf_counter() - started
            client = scope.get("client")
            who = client[0] if client else "-"
            line = f"{scope['method']} {scope.get('root_path', '')}{_route_path(scope)}"
            query = scope.get("query_string", b"")
            if query:
                line += "?" + query.decode("latin-1")
            rate = f"{human_bytes(int(sent / elapsed))}/s" if elapsed > 0 else "-"
            outcome = "" if finished else " (broke off)"
            logger.info(
                '%s "%s" %d, %s in %.3f s (%s)%s',
                who,
                line,
                status,
                human_bytes(sent),
                elapsed,
                rate,
                outcome,
            )


def _route_path(scope: Scope) -> str:
    path: str = scope.get("path", "")
    root_path: str = scope.get("root_path", "")
    return path[len(root_path) :] if root_path and path.startswith(root_path) else path
