"""Multi-file uploads: paths, folders and entries in, a ``multipart/form-data`` body out.

How this works: :func:`plan_upload` turns what the caller passed into entries (a folder
becomes its files under the folder's name, as a browser's folder upload names them) and
decides everything about the body before a byte is read: the boundary, the ``Content-Type``
and, when every size is known, the exact ``Content-Length``, by running the multipart writer
over the sizes alone. The part headers it writes then are kept and sent as they are, so the
length cannot disagree with the body and each header is formatted once. The bytes come from
the pump that sends the responses (``_pump``): files opened beneath their walk's root, small
ones whole and many per step, larger ones in blocks of ``READ_BLOCK``, each checked to be the
file listed when it is opened and again after its last byte; a file that changed aborts the
body.

:func:`iter_body` runs those steps on the calling thread, for :func:`~multiresp.client.upload`.
:class:`AsyncBody` runs them in worker threads from a task of their own that stays
``PREFETCH_BATCHES`` ahead of what httpx sends, for :func:`~multiresp.client.aupload`, so the
event loop never waits for the disk and the next block is read while this one is sent. Both
count progress when httpx takes the bytes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, cast

import anyio
import anyio.to_thread
import httpx
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ._entries import Entry, entries_for_path
from ._multipart import MultipartWriter
from ._progress import Progress, ProgressCallback, Reporter
from ._sources import settle_all

FORM_SUBTYPE = "form-data"
PREFETCH_BATCHES = 1  # batches (about READ_BLOCK each) read ahead of the one being sent

Files = Iterable[Entry | str | os.PathLike[str]] | Entry | str | os.PathLike[str]


def upload_entries(files: Files) -> list[Entry]:
    """The files to send, in order: entries as given, a path as :class:`Entry.from_path`
    reads it, a folder as its files under the folder's name (``photos/2026/a.jpg``); each
    settled by its source (an object named by its key alone gets its size, so the body has
    an exact length). Blocking: the caller runs it in a worker thread from async code.

    Directory entries are left out: a form upload carries files only, as a browser's does.

    Raises:
        TypeError: an item is neither an entry nor a path.
        UnsafeNameError: two files would have the same name.
        ValueError: there is no file to send.
        OSError: a path cannot be listed.
        IntegrityError: an object is not in its store.
    """
    if isinstance(files, (Entry, str, os.PathLike)):
        files = [files]
    entries: list[Entry] = []
    for item in files:
        if isinstance(item, Entry):
            entries.append(item)
        elif isinstance(item, (str, os.PathLike)):
            entries.extend(entries_for_path(item))
        else:
            raise TypeError(f"files must be paths or Entry objects, not {type(item).__name__}")
    entries = settle_all(entry for entry in entries if not entry.is_dir)
    from ._pump import check_unique  # the pump loads on first use: downloads never need it

    check_unique(entries, set())
    if not entries:
        raise ValueError("nothing to upload: no file among the paths and entries given")
    return entries


@dataclass(frozen=True, slots=True)
class UploadPlan:
    """Everything about an upload's body that is known before it is read.

    Attributes:
        entries: The files, in the order they are sent.
        field: The form field every file belongs to.
        boundary: The multipart boundary (random).
        length: The body's exact length, or None when an entry's size is unknown (the body
            is then sent with chunked transfer encoding).
        heads: When the length is known, each part's delimiter and headers as the writer
            wrote them to measure the body, to be sent as they are.
        part_end: The framing the writer ends every part with.
    """

    entries: list[Entry]
    field: str
    boundary: str
    length: int | None
    heads: tuple[bytes, ...] | None = None
    part_end: bytes = b""

    @property
    def headers(self) -> dict[str, str]:
        """``Content-Type`` and, when known, ``Content-Length``."""
        headers = {"Content-Type": self.writer().content_type}
        if self.length is not None:
            headers["Content-Length"] = str(self.length)
        return headers

    def writer(self) -> MultipartWriter:
        """A fresh writer for this body."""
        return MultipartWriter(subtype=FORM_SUBTYPE, boundary=self.boundary, field=self.field)


def plan_upload(files: Files, *, field: str) -> UploadPlan:
    """Decide the body for ``files``: entries, boundary and length.

    Raises:
        TypeError, UnsafeNameError, ValueError, OSError, IntegrityError: as
            :func:`upload_entries`; also UnsafeNameError for a field name with CR, LF or NUL.
    """
    if not isinstance(field, str):
        raise TypeError(f"field must be str, not {type(field).__name__}")
    entries = upload_entries(files)
    writer = MultipartWriter(subtype=FORM_SUBTYPE, field=field)
    plan = UploadPlan(entries, field, writer.boundary, None)
    if any(entry.size is None for entry in entries):
        return plan
    heads: list[bytes] = []
    length = 0
    part_end = b""
    for entry in entries:  # the writer over the sizes alone: the body's exact length
        size = entry.size or 0
        heads.append(writer.start_part(entry.name, size=size, media_type=entry.media_type))
        writer.skip(size)
        part_end = writer.end_part()
        length += len(heads[-1]) + size + len(part_end)
    length += len(writer.finish())
    return dataclasses.replace(plan, length=length, heads=tuple(heads), part_end=part_end)


class _FormEncoder:
    """Adapts the pure writer to the pump, and counts the files it has closed.

    A part whose headers the plan kept, and whose bytes cannot differ from its size (a file,
    whose size the pump checks when it reads it, or bytes), is sent with those headers as
    they are; any other part (an iterable) goes through the writer, which counts its bytes
    against the size it declared.
    """

    def __init__(self, plan: UploadPlan) -> None:
        self.writer = plan.writer()
        self._heads = iter(plan.heads) if plan.heads is not None else None
        self._part_end = plan.part_end
        self._kept = False  # the open part is sent with the plan's headers
        self.ended = 0

    def start(self, entry: Entry, crc: int | None, sample: bytes) -> bytes:
        head = next(self._heads) if self._heads is not None else None
        # A re-readable source's bytes always match its size: the pump reads exactly that
        # many and refuses a source that changed or ended early.
        self._kept = head is not None and (entry.source is None or entry.source.rereadable)
        if head is not None and self._kept:
            return head
        return self.writer.start_part(entry.name, size=entry.size, media_type=entry.media_type)

    def write(self, data: bytes) -> bytes:
        return data if self._kept else self.writer.write(data)

    def end(self) -> bytes:
        self.ended += 1
        return self._part_end if self._kept else self.writer.end_part()

    def finish(self) -> bytes:
        return self.writer.finish()


@dataclass(frozen=True, slots=True)
class _Batch:
    """One step's output, with how far the upload is once it is sent."""

    pieces: list[bytes]
    files_done: int
    current: str | None


class Tracker:
    """Counts what httpx has taken and reports it to the ``progress`` callback.

    Args:
        plan: The upload.
        progress: None, True (a terminal bar) or a callable receiving :class:`Progress`.
    """

    def __init__(self, plan: UploadPlan, progress: ProgressCallback | bool | None) -> None:
        self.reporter = Reporter(progress)
        self.total = plan.length
        self.files = len(plan.entries)
        self.bytes_done = 0
        self.files_done = 0
        self.current: str | None = None

    def sent(self, batch: _Batch) -> None:
        """Record that ``batch`` was handed to httpx (throttled report)."""
        self.bytes_done += sum(len(piece) for piece in batch.pieces)
        self.files_done, self.current = batch.files_done, batch.current
        self.reporter.report(self._progress)

    def finished(self) -> None:
        """The server has answered: the final report."""
        self.files_done, self.current = self.files, None
        self.reporter.report(self._progress, final=True)

    def _progress(self) -> Progress:
        return Progress(
            bytes_done=self.bytes_done,
            bytes_total=self.total,
            files_done=self.files_done,
            current=self.current,
        )


def iter_body(plan: UploadPlan, tracker: Tracker) -> Iterator[bytes]:
    """The body, read on the calling thread a step (about a block) at a time.

    Raises:
        TypeError: an entry's source is an async iterable (use ``aupload``).
        IntegrityError: a file changed since it was listed, or a source gave more or fewer
            bytes than its declared size.
    """
    from ._pace import READ_BLOCK
    from ._pump import _BlockingWork

    encoder = _FormEncoder(plan)
    work = _BlockingWork(encoder)
    work.pending.extend(plan.entries)
    try:
        while work.busy:
            batch = _Batch(work.step(READ_BLOCK), encoder.ended, work.current)
            yield from batch.pieces
            tracker.sent(batch)
        end = _Batch([encoder.finish()], encoder.ended, None)
        yield from end.pieces
        tracker.sent(end)
    finally:
        work.close()


def check_sync(plan: UploadPlan) -> None:
    """Refuse async sources before anything is sent: a sync upload cannot read them.

    Raises:
        TypeError: an entry's source is read on the event loop (an async iterable).
    """
    for entry in plan.entries:
        if entry.source is not None and not entry.source.blocking:
            raise TypeError(
                f"entry {entry.name!r} reads an async iterable: send it with aupload(),"
                " not upload()"
            )


class AsyncBody:
    """The body for httpx's async client, read ahead by :meth:`produce` in its own task.

    Start :meth:`produce` in a task group around the request and pass :meth:`chunks` as its
    content. A failure while reading (a changed file, a source of the wrong size) ends the
    body there: httpx gets the exception from the body and the request fails with it, the
    server seeing a body cut short of its length.
    """

    def __init__(self, plan: UploadPlan, tracker: Tracker) -> None:
        self._plan = plan
        self._tracker = tracker
        self._send: MemoryObjectSendStream[_Batch]
        self._receive: MemoryObjectReceiveStream[_Batch]
        self._send, self._receive = anyio.create_memory_object_stream[_Batch](PREFETCH_BATCHES)
        self._error: Exception | None = None

    async def produce(self) -> None:
        """Read the body into the stream, ``PREFETCH_BATCHES`` ahead of the sender."""
        from ._pump import Pump

        encoder = _FormEncoder(self._plan)
        pump = Pump(self._plan.entries, encoder)
        async with self._send:
            try:
                # Closed on the spot when the request stops early (no connection, an error).
                batches = cast(AsyncGenerator[list[bytes], None], pump.batches())
                async with contextlib.aclosing(batches):
                    async for pieces in batches:
                        await self._send.send(_Batch(pieces, encoder.ended, pump.current))
            except Exception as exc:  # handed to the sender, which raises it inside httpx
                self._error = exc

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body's bytes, as httpx takes them."""
        async with self._receive:
            async for batch in self._receive:
                for piece in batch.pieces:
                    yield piece
                self._tracker.sent(batch)
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        """Release the stream, also when httpx never read the body (no connection)."""
        self._receive.close()


def _request_kwargs(plan: UploadPlan, request_kwargs: dict[str, Any]) -> dict[str, Any]:
    for name in ("content", "data", "files", "json"):
        if name in request_kwargs:
            raise TypeError(f"upload() builds the body itself; {name}= cannot be given")
    headers = httpx.Headers(request_kwargs.pop("headers", None))
    headers.update(plan.headers)
    return {**request_kwargs, "headers": headers}


def _client_options() -> dict[str, Any]:
    """The default client's options: download's timeouts, and no redirect followed (a
    redirected upload would need its body again: the 3xx is returned instead)."""
    from .client import CONNECT_TIMEOUT, READ_TIMEOUT, _default_ssl_context

    return {
        "follow_redirects": False,
        "timeout": httpx.Timeout(READ_TIMEOUT, connect=CONNECT_TIMEOUT),
        "verify": _default_ssl_context(),  # one CA bundle load per process, not per upload
    }


def upload(
    url: httpx.URL | str,
    files: Files,
    *,
    client: httpx.Client | None = None,
    field: str = "files",
    progress: ProgressCallback | bool | None = None,
    method: str = "POST",
    **request_kwargs: Any,
) -> httpx.Response:
    """Upload files as one ``multipart/form-data`` request, as a browser's form does.

    Each file is a part of the form field ``field``, named by a quoted UTF-8 ``filename``
    (RFC 7578; ``"`` and ``\\`` sent as ``\\"`` and ``\\\\``, which python-multipart, and so
    Starlette's and FastAPI's ``request.form()``, read back as they were). The body has an
    exact ``Content-Length`` unless an entry's size is unknown (then it is sent chunked).
    Files are read in large blocks; a file that changed since it was listed (size, mtime,
    ctime, or another file at its path) aborts the upload with
    :class:`~multiresp.IntegrityError` in the middle of the body, so the server sees a body
    cut short, never a complete one that lies about the file.

    Args:
        url: Where to send the form.
        files: Paths, folders and :class:`~multiresp.Entry` objects (or one of them). A
            folder sends its files under its own name, as a browser's folder upload does
            (``photos/2026/a.jpg``; empty folders are not sent); a file sends its basename.
            Entries from :meth:`~multiresp.Entry.from_iter` need a ``size`` for an exact
            ``Content-Length``; synchronous iterables only (async ones: :func:`aupload`).
        client: The httpx client to use; by default a new one with a 10 s connect timeout
            and a 60 s read timeout, which follows no redirect (a redirected upload would
            have to send its body again: the 3xx response is returned).
        field: The form field name of every file part.
        progress: None; True for a progress bar on stderr; or a callable that receives a
            :class:`~multiresp.client.Progress` (bytes sent, body length, files sent, the
            current file) about ten times a second and once when the server has answered.
        method: The HTTP method (``POST``; ``PUT`` for APIs that want it).
        **request_kwargs: Passed to ``client.request()`` (``params``, ``headers``...); the
            body's ``Content-Type`` and ``Content-Length`` always win.

    Returns:
        The server's response, whatever its status (call ``raise_for_status()`` to refuse
        an error status).

    Raises:
        TypeError: an item of ``files`` is neither a path nor an entry, an entry reads an
            async iterable, or ``request_kwargs`` holds a body.
        ValueError: there is no file to send.
        UnsafeNameError: two files have the same name, or ``field`` holds CR, LF or NUL.
        OSError: a path cannot be read.
        IntegrityError: a file changed since it was listed, or a source gave more or fewer
            bytes than its declared size.
        httpx.HTTPError: the request failed.
    """
    plan = plan_upload(files, field=field)
    check_sync(plan)
    tracker = Tracker(plan, progress)
    kwargs = _request_kwargs(plan, request_kwargs)
    try:
        if client is None:
            with httpx.Client(**_client_options()) as http:
                response = http.request(method, url, content=iter_body(plan, tracker), **kwargs)
        else:
            response = client.request(method, url, content=iter_body(plan, tracker), **kwargs)
        tracker.finished()
        return response
    finally:
        tracker.reporter.close()


async def aupload(
    url: httpx.URL | str,
    files: Files,
    *,
    client: httpx.AsyncClient | None = None,
    field: str = "files",
    progress: ProgressCallback | bool | None = None,
    method: str = "POST",
    **request_kwargs: Any,
) -> httpx.Response:
    """Upload files as one ``multipart/form-data`` request; the async twin of :func:`upload`.

    Runs on anyio (asyncio or trio) and never blocks the event loop: folders are listed, and
    files opened and read, in worker threads, and the next block is read while this one is
    sent. Entries may read async iterables too. Arguments, return value and errors are those
    of :func:`upload`, with an ``httpx.AsyncClient`` as ``client``.
    """
    # Listing a folder stats each of its files: thousands of them would hold the loop.
    plan = await anyio.to_thread.run_sync(functools.partial(plan_upload, files, field=field))
    tracker = Tracker(plan, progress)
    kwargs = _request_kwargs(plan, request_kwargs)
    try:
        async with contextlib.AsyncExitStack() as stack:
            if client is None:
                http = httpx.AsyncClient(**_client_options())
                client = await stack.enter_async_context(http)
            response = await _asend(client, method, url, AsyncBody(plan, tracker), kwargs)
        tracker.finished()
        return response
    finally:
        tracker.reporter.close()


async def _asend(
    client: httpx.AsyncClient,
    method: str,
    url: httpx.URL | str,
    body: AsyncBody,
    kwargs: dict[str, Any],
) -> httpx.Response:
    """The request, with the body's reader in a task beside it. A failure is raised as it
    is (not in an exception group): the reader hands its own to the body, and the request's
    is kept until the reader has stopped."""
    failure: Exception | None = None
    try:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(body.produce)
            try:
                response = await client.request(method, url, content=body.chunks(), **kwargs)
            except Exception as exc:
                failure = exc
            tasks.cancel_scope.cancel()
    finally:
        body.close()
    if failure is not None:
        raise failure
    return response
