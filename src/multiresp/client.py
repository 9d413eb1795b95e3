"""The httpx client: read zip and multipart responses while they stream, and save them safely.

::

    from multiresp.client import download, iter_entries

    saved = download("https://example.org/export.zip", "out/")

    with httpx.stream("GET", url) as response:
        for entry in iter_entries(response):
            print(entry.name, entry.size)
            for chunk in entry.iter_bytes(): ...

How this works: the raw body (``iter_raw`` / ``aiter_raw``: the bytes as sent, in the pieces
the connection gives) goes through the httpx-free receive path: a
:class:`~multiresp._decoding.BodyDecoder` undoes any Content-Encoding and feeds the pure format
reader picked from the Content-Type (``ZipReader`` or ``MultipartReader``), giving h11-style
events. :func:`iter_entries` walks them entry by entry (``_iteration``); :func:`download` lets
a :class:`~multiresp._transfer.Transfer` decide requests, resuming and progress, and hands the
events, in batches of about ``BATCH_BYTES``, to a :class:`~multiresp._writer.Writer`: a thread
of its own that drives a :class:`~multiresp._sink.FileSink`, so that hashing and disk writes
overlap with receiving and parsing, in both loops, and the async loop (anyio: asyncio or trio)
never blocks on the disk. This module holds only the public functions: the short loops that
move bytes, written once for sync and once for async.

Why ``iter_raw`` and our own Content-Encoding decoder rather than httpx's ``iter_bytes``: a
resumed transfer continues one body over several responses, and a ``Range`` counts bytes of the
*encoded* body, so the decoder state must outlive a response; a gzip bomb must come out in
bounded pieces; and a zip body gains nothing from a second compression. ``download`` therefore
asks for ``Accept-Encoding: identity`` (a caller's own header wins) and resumes only bodies
sent that way, while ``iter_entries`` accepts whatever response it is given and decodes gzip
and deflate itself.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import anyio.to_thread
import httpx

from ._decoding import BodyDecoder
from ._iteration import AsyncEntries, ReceivedEntry, _Walker, iter_walker
from ._progress import Progress, ProgressCallback
from ._sink import FileSink
from ._transfer import Transfer
from ._types import Limits, SavedFile
from ._writer import Writer, aexit_writer, aput, in_thread_shielded

__all__ = (
    "Progress",
    "ReceivedEntry",
    "adownload",
    "aiter_entries",
    "download",
    "iter_entries",
)

CONNECT_TIMEOUT = 10.0  # seconds, for the client download() makes when given none
READ_TIMEOUT = 60.0  # seconds without a byte, for the client download() makes when given none


def _decoder(response: httpx.Response, limits: Limits | None) -> BodyDecoder:
    headers = response.headers
    return BodyDecoder(
        headers.get("content-type", ""),
        limits=limits if limits is not None else Limits(),
        content_encoding=headers.get("content-encoding"),
    )


def iter_entries(
    response: httpx.Response, *, limits: Limits | None = None
) -> Iterator[ReceivedEntry]:
    """Yield the entries of a zip or multipart response while its body arrives.

    Each entry is given as soon as its header has arrived; its bytes are read with
    :meth:`ReceivedEntry.iter_bytes` before moving on (an entry not read is skipped). Nothing is
    written anywhere: use :func:`download` to save files.

    Args:
        response: A response opened with ``stream=True`` (``client.stream(...)``), whose body
            has not been read. The format comes from its Content-Type: ``application/zip``
            (or ``application/x-zip-compressed``) or ``multipart/*``.
        limits: Bounds checked while reading; ``Limits()`` when None.

    Yields:
        The entries, in order.

    Raises:
        ProtocolError: the Content-Type is neither zip nor multipart, or the body is malformed
            or truncated.
        IntegrityError: an entry's CRC-32 or size does not match its bytes.
        LimitExceeded: a bound of ``limits`` was crossed.
        UnsafeNameError: an entry name could escape its folder.
    """
    yield from iter_walker(_Walker(_decoder(response, limits), raw=response.iter_raw()))


def aiter_entries(
    response: httpx.Response, *, limits: Limits | None = None
) -> AsyncIterator[ReceivedEntry]:
    """Iterate over the entries of a zip or multipart response; the twin of :func:`iter_entries`.

    ``async for entry in aiter_entries(response): ...``. The iterator is a plain object, not an
    async generator, so leaving the loop early needs no ``aclosing()``.

    Args:
        response: A response from ``httpx.AsyncClient.stream(...)``, whose body has not been
            read.
        limits: Bounds checked while reading; ``Limits()`` when None.

    Returns:
        An async iterator of the entries, in order; read each one's bytes with
        :meth:`ReceivedEntry.aiter_bytes`.

    Raises:
        ProtocolError: the Content-Type is neither zip nor multipart, or the body is malformed
            or truncated.
        IntegrityError: an entry's CRC-32 or size does not match its bytes.
        LimitExceeded: a bound of ``limits`` was crossed.
        UnsafeNameError: an entry name could escape its folder.
    """
    return AsyncEntries(lambda: _Walker(_decoder(response, limits), araw=response.aiter_raw()))


def _client() -> httpx.Client:
    return httpx.Client(
        follow_redirects=True, timeout=httpx.Timeout(READ_TIMEOUT, connect=CONNECT_TIMEOUT)
    )


def _async_client() -> httpx.AsyncClient:
    return httpx.AsyncClient(
        follow_redirects=True, timeout=httpx.Timeout(READ_TIMEOUT, connect=CONNECT_TIMEOUT)
    )


def download(
    url: httpx.URL | str,
    dest: str | os.PathLike[str],
    *,
    client: httpx.Client | None = None,
    method: str = "GET",
    limits: Limits | None = None,
    progress: ProgressCallback | bool | None = None,
    resume: bool = True,
    **request_kwargs: Any,
) -> list[SavedFile]:
    """Download a zip or multipart response and unpack it under ``dest`` while it streams.

    Every file is written to a hidden temporary name next to its final place and renamed only
    after its size and checksum were verified. If anything fails, the entry in progress leaves
    nothing behind, and the files verified before it stay.

    Args:
        url: What to request.
        dest: The folder to unpack into; created when missing. Nothing is ever written outside
            it, and no symbolic link in it is followed.
        client: The httpx client to use; by default a new one that follows redirects.
        method: The HTTP method. Only ``GET`` transfers are resumed.
        limits: Bounds on the entries (count, sizes, names, compression ratio);
            ``Limits()`` when None.
        progress: None; True for a progress bar on stderr (tqdm when installed); or a callable
            that receives a :class:`Progress` about ten times a second and once at the end.
        resume: When the connection drops mid-body and the response had a strong ``ETag`` and
            ``Accept-Ranges: bytes``, ask for the rest with ``Range`` and ``If-Range``.
        **request_kwargs: Passed to ``client.stream()`` (``params``, ``headers``, ``json``...).
            ``Accept-Encoding: identity`` is sent unless ``headers`` set it.

    Returns:
        The files saved, in the order they arrived (directories are created, not listed).

    Raises:
        httpx.HTTPStatusError: the response has an error status.
        httpx.TransportError: the request failed before any response arrived.
        ProtocolError: the Content-Type is neither zip nor multipart, the body is malformed or
            truncated, or the connection was lost and could not be resumed.
        IntegrityError: an entry's CRC-32 or size does not match its bytes.
        LimitExceeded: a bound of ``limits`` was crossed.
        UnsafeNameError: an entry name is unsafe or not portable, repeats, clashes with another
            entry, or meets a symbolic link in ``dest``.
    """
    transfer = Transfer(url, method=method, limits=limits, resume=resume, progress=progress)
    with contextlib.ExitStack() as stack:
        stack.callback(transfer.reporter.close)
        http = client if client is not None else stack.enter_context(_client())
        sink = stack.enter_context(FileSink(dest, limits=transfer.limits))
        writer = stack.enter_context(Writer(sink))
        while True:
            try:
                with http.stream(method, url, **transfer.request_kwargs(request_kwargs)) as resp:
                    transfer.open(resp)
                    for raw in resp.iter_raw():
                        for batch in transfer.feed(raw):
                            writer.put(batch)
                        transfer.report(writer.files_done)
                break
            except httpx.TransportError as exc:
                writer.put(transfer.pending())
                time.sleep(transfer.dropped(exc))
        for batch in transfer.finish():
            writer.put(batch)
        writer.finish()
        transfer.report(writer.files_done, final=True)
        return sink.saved


async def adownload(
    url: httpx.URL | str,
    dest: str | os.PathLike[str],
    *,
    client: httpx.AsyncClient | None = None,
    method: str = "GET",
    limits: Limits | None = None,
    progress: ProgressCallback | bool | None = None,
    resume: bool = True,
    **request_kwargs: Any,
) -> list[SavedFile]:
    """Download and unpack under ``dest``; the async twin of :func:`download`.

    Runs on anyio (asyncio or trio). Files are hashed and written on a worker thread, handed
    ``BATCH_BYTES`` of content at a time (small files are batched together), never a chunk at a
    time; the event loop only waits for it when the disk falls behind. Arguments, return value
    and errors are those of :func:`download`, with an ``httpx.AsyncClient`` as ``client``.
    """
    transfer = Transfer(url, method=method, limits=limits, resume=resume, progress=progress)
    async with contextlib.AsyncExitStack() as stack:
        stack.callback(transfer.reporter.close)
        http = client if client is not None else await stack.enter_async_context(_async_client())
        sink = await anyio.to_thread.run_sync(
            functools.partial(FileSink, dest, limits=transfer.limits)
        )
        stack.push_async_callback(in_thread_shielded, sink.close)
        writer = Writer(sink)
        stack.push_async_exit(functools.partial(aexit_writer, writer))
        while True:
            try:
                async with http.stream(
                    method, url, **transfer.request_kwargs(request_kwargs)
                ) as resp:
                    transfer.open(resp)
                    async for raw in resp.aiter_raw():
                        for batch in transfer.feed(raw):
                            await aput(writer, batch)
                        transfer.report(writer.files_done)
                break
            except httpx.TransportError as exc:
                await aput(writer, transfer.pending())
                await anyio.sleep(transfer.dropped(exc))
        for batch in transfer.finish():
            await aput(writer, batch)
        await anyio.to_thread.run_sync(writer.finish)
        transfer.report(writer.files_done, final=True)
        return sink.saved
