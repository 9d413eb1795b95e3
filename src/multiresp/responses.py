"""The ASGI responses: thin edges that drive the pure encoders with I/O.

:class:`ZipStreamResponse` and :class:`MultipartResponse` stream their body as it is built;
:class:`ZipResponse` builds the archive in an unlinked temporary file first; :func:`negotiate`
picks one by the request's ``Accept`` header. What they share is in private modules: the send
loop, read-ahead, disconnect watching and failure logging (:mod:`multiresp._sending`), the
exact size and the validators (:mod:`multiresp._validators`), the format adapters
(:mod:`multiresp._encoders`) and the reading of sources (:mod:`multiresp._pump`).
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from typing import IO, Any

import anyio
import anyio.to_thread
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import Receive, Scope, Send

from ._encoders import _MultipartEncoder, _ZipEncoder
from ._entries import Entry
from ._http import choose
from ._multipart import MultipartWriter
from ._pace import Pace
from ._plan import MultipartPlan, PartFacts, plan_multipart
from ._pump import Pump
from ._ranges import derived_boundary, manifest_etag
from ._sending import (
    Entries,
    EntryLike,
    _aclose,
    _disconnected,
    _FilesResponse,
    _read_blocks,
    _Transfer,
)
from ._validators import _facts, _newest, _Ranged, _zip_plan, boundary_key, predict_zip_size
from ._zipwriter import Compression

ZIP_MEDIA_TYPE = "application/zip"
MULTIPART_MEDIA_TYPE = "multipart/mixed"


class ZipStreamResponse(_FilesResponse):
    """A zip archive built while it is sent, in bounded memory.

    When every size is known and compression is ``"store"`` (or ``"auto"`` with only
    incompressible media types), the exact ``Content-Length`` is sent and ``HEAD`` is answered
    without reading any source; otherwise the body is chunked. When, in addition, every source
    can be read again (paths, bytes), the response carries a strong ``ETag`` (a hash of the
    manifest: names, sizes, mtimes, modes, media types, never an inode or absolute path),
    ``Last-Modified`` and ``Accept-Ranges: bytes``, and answers ``Range`` (206, several
    ranges as ``multipart/byteranges``, 416), ``If-Range``, ``If-None-Match`` and
    ``If-Modified-Since`` (304). A range reads only the sources it overlaps, and the CRCs of
    the entries whose records it covers.

    Args:
        entries: Entries or paths (a folder's path sends its content), or an async iterable
            of entries produced while the response streams.
        filename: The download name for ``Content-Disposition``.
        compression: ``"store"``, ``"deflate"`` or ``"auto"`` (deflate what compresses).
        level: zlib level 0-9 for deflate; None for the fast default.
        status_code: The HTTP status.
        headers: Extra headers; ones given here win over the computed ones.
        background: A Starlette ``BackgroundTask`` (or ``BackgroundTasks``) run after the
            body, as Starlette's own responses do; FastAPI attaches an endpoint's
            ``BackgroundTasks`` here. It runs once the transfer has ended however it ended:
            complete, left by the client, or failed (a source failed: then it runs before
            the connection is aborted; the failure is logged on the ``multiresp`` logger).

    Raises:
        UnsafeNameError: ``filename`` holds CR, LF or NUL.
        ValueError: an unknown compression.
    """

    media_type = ZIP_MEDIA_TYPE  # what FastAPI's OpenAPI documents for this response_class

    def __init__(
        self,
        entries: Entries,
        *,
        filename: str = "files.zip",
        compression: Compression = "store",
        level: int | None = None,
        status_code: int = 200,
        headers: Mapping[str, str] | None = None,
        background: BackgroundTask | None = None,
    ) -> None:
        super().__init__(
            entries, media_type=ZIP_MEDIA_TYPE, status_code=status_code, headers=headers,
            background=background,
        )  # fmt: skip
        self._zip_options(filename, compression, level)

    def _length(self, entries: list[Entry]) -> int | None:
        if self._ranged is not None:
            return self._ranged.plan.total
        return predict_zip_size(entries, self.compression)

    def _validators(self, entries: list[Entry]) -> _Ranged | None:
        plan = _zip_plan(entries, self.compression)
        if plan is None:
            return None
        etag = manifest_etag(f"zip {self.compression}", _facts(entries))
        return _Ranged(plan, etag, _newest(entries))

    async def _respond(
        self, scope: Scope, receive: Receive, send: Send, transfer: _Transfer
    ) -> None:
        entries = await self._entries()
        if await self._conditional(scope, receive, send, transfer, entries):
            return
        await self._start(send)
        pace = Pace()
        pump = Pump(entries, _ZipEncoder(self.compression, self.level), pace)
        await self._send_body(
            scope, receive, send, pump.batches(), pace=pace, transfer=transfer, pump=pump
        )


class ZipResponse(_FilesResponse):
    """ "Zip and send" done right: built in a temporary file off the event loop, then sent.

    The temporary file is unlinked as soon as it is created (it lives only through its open
    descriptor), so it disappears when the response ends, fails, or the client goes away,
    and even if the process dies. A client that leaves while the archive is being built
    stops the build within one block of reading. ``HEAD`` builds nothing and reads no
    source: it carries the exact ``Content-Length`` when compression is ``"store"`` and
    every size is known, and no ``Content-Length`` otherwise.

    Args:
        entries: Entries or paths (a folder's path sends its content), or an async iterable.
        filename: The download name for ``Content-Disposition``.
        compression: ``"deflate"`` (default), ``"store"`` or ``"auto"``.
        level: zlib level 0-9 for deflate; None for the fast default.
        status_code: The HTTP status.
        headers: Extra headers; ones given here win over the computed ones.
        background: Run after the body, as for :class:`ZipStreamResponse`. A source that
            fails while the archive is built fails the request before its headers (a 500
            from the server), and then the task does not run, as with Starlette's own
            responses when the endpoint raises.
    """

    media_type = ZIP_MEDIA_TYPE  # what FastAPI's OpenAPI documents for this response_class

    def __init__(
        self,
        entries: Entries,
        *,
        filename: str = "files.zip",
        compression: Compression = "deflate",
        level: int | None = None,
        status_code: int = 200,
        headers: Mapping[str, str] | None = None,
        background: BackgroundTask | None = None,
    ) -> None:
        super().__init__(
            entries, media_type=ZIP_MEDIA_TYPE, status_code=status_code, headers=headers,
            background=background,
        )  # fmt: skip
        self._zip_options(filename, compression, level)

    def _length(self, entries: list[Entry]) -> int | None:
        # Only HEAD uses it: a GET sends the spooled archive's own size.
        return predict_zip_size(entries, self.compression)

    async def _respond(
        self, scope: Scope, receive: Receive, send: Send, transfer: _Transfer
    ) -> None:
        head = scope.get("method") == "HEAD"
        entries = await self._entries()
        if head:
            await self._start(send)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            transfer.outcome = "complete"
            return
        if "content-length" in self.headers:  # predicted for HEAD; the spool's size counts
            del self.headers["content-length"]
        spool: IO[bytes] = await anyio.to_thread.run_sync(tempfile.TemporaryFile)
        try:
            pump = Pump(entries, _ZipEncoder(self.compression, self.level))
            if not await self._spool(receive, pump, spool, transfer):
                transfer.outcome = "client left"
                return
            size = await anyio.to_thread.run_sync(spool.tell)
            self._set_header("content-length", str(size))
            await self._start(send)
            await anyio.to_thread.run_sync(spool.seek, 0)
            pace = Pace()
            await self._send_body(
                scope, receive, send, _read_blocks(spool, pace), pace=pace, transfer=transfer
            )
        finally:
            spool.close()

    @staticmethod
    async def _spool(receive: Receive, pump: Pump, spool: IO[bytes], transfer: _Transfer) -> bool:
        """Write the archive to ``spool``; False when the client left first. A failure of a
        source is raised as itself (the server answers 500)."""
        failure: Exception | None = None
        left = False

        async def watch(cancel: anyio.CancelScope) -> None:
            nonlocal left
            await _disconnected(receive)
            left = True
            cancel.cancel()

        async with anyio.create_task_group() as group:
            group.start_soon(watch, group.cancel_scope)
            batches = pump.batches()
            try:
                async for batch in batches:
                    # Not abandoned on cancel: the spool is closed only once no thread writes.
                    await anyio.to_thread.run_sync(spool.writelines, batch, limiter=pump.limiter)
            except Exception as exc:  # raised bare below, not in a group
                failure = exc
            finally:
                await _aclose(batches)
            group.cancel_scope.cancel()
        transfer.entries = pump.entries_started
        if failure is not None:
            raise failure
        return not left


class MultipartResponse(_FilesResponse):
    """One part per entry in a ``multipart/<subtype>`` body, streamed in bounded memory.

    Each part carries ``Content-Type``, ``Content-Disposition: attachment; filename="..."``
    (plus ``filename*=UTF-8''...`` for non-ASCII names) and ``Content-Length`` when its size is
    known. When every size is known the total ``Content-Length`` is exact and ``HEAD`` reads no
    source. When every source can also be read again (paths, bytes), the boundary is fixed
    and the body serves validators and ranges as :class:`ZipStreamResponse` does.

    Args:
        entries: Entries or paths (a folder's path sends its content), or an async iterable
            of entries produced while the response streams.
        subtype: The multipart subtype; ``mixed`` by default.
        boundary: The boundary. Leave it out: then it is derived from the manifest with a
            key only the servers hold (``MULTIRESP_BOUNDARY_KEY``, else a random key of the
            process), so no file can forge it and replicas sharing the key agree; it is
            random per response when the body cannot serve ranges.
        status_code: The HTTP status.
        headers: Extra headers; ones given here win over the computed ones.
        background: Run after the body, as for :class:`ZipStreamResponse` (also when the
            client left or a source failed).

    Raises:
        ValueError: the subtype is not a token or the boundary breaks RFC 2046.
    """

    media_type = MULTIPART_MEDIA_TYPE  # what FastAPI's OpenAPI documents for response_class

    def __init__(
        self,
        entries: Entries,
        *,
        subtype: str = "mixed",
        boundary: str | None = None,
        status_code: int = 200,
        headers: Mapping[str, str] | None = None,
        background: BackgroundTask | None = None,
    ) -> None:
        writer = MultipartWriter(subtype=subtype, boundary=boundary)  # validates both now
        self.subtype, self.boundary = subtype, writer.boundary
        self._boundary_given = boundary is not None
        super().__init__(
            entries,
            media_type=writer.content_type,
            status_code=status_code,
            headers=headers,
            background=background,
        )

    def _length(self, entries: list[Entry]) -> int | None:
        if any(entry.size is None for entry in entries):
            return None
        return self._plan(entries).total

    def _plan(self, entries: list[Entry]) -> MultipartPlan:
        parts = (PartFacts(e.name, e.size or 0, e.media_type) for e in entries)
        return plan_multipart(parts, boundary=self.boundary, subtype=self.subtype)

    def _validators(self, entries: list[Entry]) -> _Ranged | None:
        """A sized body of re-readable sources gets a fixed boundary: the one given, or one
        derived from the manifest with the servers' key (:func:`boundary_key`)."""
        if any(e.size is None or not e.rereadable for e in entries):
            return None
        facts = list(_facts(entries))
        if not self._boundary_given:
            base = manifest_etag(f"multipart {self.subtype}", facts)
            self.boundary = derived_boundary(boundary_key(), base)
        etag = manifest_etag(f"multipart {self.subtype} {self.boundary}", facts)
        plan = self._plan(entries)
        self.headers["content-type"] = plan.content_type
        return _Ranged(plan, etag, _newest(entries))

    async def _respond(
        self, scope: Scope, receive: Receive, send: Send, transfer: _Transfer
    ) -> None:
        entries = await self._entries()
        if await self._conditional(scope, receive, send, transfer, entries):
            return
        await self._start(send)
        writer = MultipartWriter(subtype=self.subtype, boundary=self.boundary)
        pace = Pace()
        pump = Pump(entries, _MultipartEncoder(writer), pace)
        await self._send_body(
            scope, receive, send, pump.batches(), pace=pace, transfer=transfer, pump=pump
        )


NEGOTIATED_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The files, as the request's Accept header asks",
        "content": {ZIP_MEDIA_TYPE: {}, MULTIPART_MEDIA_TYPE: {}},
    },
    406: {"description": f"Accept allows neither {ZIP_MEDIA_TYPE} nor {MULTIPART_MEDIA_TYPE}"},
}
"""What a route that returns :func:`negotiate` answers, for FastAPI's OpenAPI: pass it as
``@app.get(path, responses=NEGOTIATED_RESPONSES)``."""


def negotiate(
    request: Request,
    entries: Entries,
    *,
    filename: str = "files.zip",
    compression: Compression = "store",
    background: BackgroundTask | None = None,
) -> Response:
    """The response the client's ``Accept`` header asks for.

    ``multipart/mixed`` gives a :class:`MultipartResponse`; ``application/zip``, ``*/*`` or no
    ``Accept`` gives a :class:`ZipStreamResponse` (preferred on a tie of q-values); when
    neither is acceptable the answer is ``406 Not Acceptable``.

    Args:
        request: The Starlette request (its ``Accept`` header is read).
        entries: As for the responses.
        filename: The zip download name.
        compression: The zip compression.
        background: Run after the response, whichever it is (see
            :class:`ZipStreamResponse`). For FastAPI's OpenAPI, declare the route with
            ``responses=NEGOTIATED_RESPONSES``.
    """
    chosen = choose(request.headers.get("accept"), [ZIP_MEDIA_TYPE, MULTIPART_MEDIA_TYPE])
    vary = {"vary": "Accept"}  # caches must key the answer on Accept
    if chosen == ZIP_MEDIA_TYPE:
        return ZipStreamResponse(
            entries, filename=filename, compression=compression, headers=vary,
            background=background,
        )  # fmt: skip
    if chosen == MULTIPART_MEDIA_TYPE:
        return MultipartResponse(entries, headers=vary, background=background)
    return PlainTextResponse(
        f"Not Acceptable: this resource is available as {ZIP_MEDIA_TYPE} or "
        f"{MULTIPART_MEDIA_TYPE}\n",
        status_code=406,
        headers=vary,
        background=background,
    )


__all__ = (
    "NEGOTIATED_RESPONSES",
    "Entries",
    "EntryLike",
    "MultipartResponse",
    "ZipResponse",
    "ZipStreamResponse",
    "negotiate",
)
