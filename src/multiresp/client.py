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
import ssl
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import anyio.to_thread
import httpx

from ._decoding import BodyDecoder, Format, check_format
from ._errors import MultirespError
from ._iteration import AsyncEntries, ReceivedEntry, Walker, iter_walker
from ._progress import Progress, ProgressCallback
from ._sink import FileSink, IfExists
from ._transfer import HeaderWatch, Transfer
from ._types import Limits, SavedFile
from ._uploading import aupload as aupload
from ._uploading import upload as upload
from ._writer import Writer, aexit_writer, aput, in_thread_shielded

__all__ = (
    "Progress",
    "ReceivedEntry",
    "adownload",
    "aiter_entries",
    "aupload",
    "download",
    "iter_entries",
    "upload",
)

CONNECT_TIMEOUT = 10.0  # seconds, for the client download() makes when given none
READ_TIMEOUT = 60.0  # seconds without a byte, for the client download() makes when given none


def _decoder(
    response: httpx.Response, limits: Limits | None, format: Format | None, caller: str
) -> BodyDecoder:
    """Check a response given to ``caller`` before its body is read, and make its decoder.

    Raises:
        TypeError: ``response`` is not an ``httpx.Response``.
        RuntimeError: its body was already read (it was not opened with ``stream=True``).
        httpx.HTTPStatusError: it has an error status.
        ProtocolError: its format cannot be told, or its Content-Encoding is not supported.
    """
    if not isinstance(response, httpx.Response):
        raise TypeError(f"response must be an httpx.Response, not {type(response).__name__}")
    check_format(format)
    if response.is_stream_consumed or response.is_closed:
        raise RuntimeError(
            f"{caller}() needs a response opened with stream=True (client.stream(...) or"
            " client.send(request, stream=True)) whose body was not read yet; this one's body"
            " was already read"
        )
    response.raise_for_status()
    headers = response.headers
    return BodyDecoder(
        headers.get("content-type", ""),
        limits=limits if limits is not None else Limits(),
        content_encoding=headers.get("content-encoding"),
        format=format,
    )


def iter_entries(
    response: httpx.Response, *, limits: Limits | None = None, format: Format | None = None
) -> Iterator[ReceivedEntry]:
    """Give the entries of a zip or multipart response while its body arrives.

    Each entry is given as soon as its header has arrived; its bytes are read with
    :meth:`ReceivedEntry.iter_bytes` before moving on (an entry not read is skipped). Nothing is
    written anywhere: use :func:`download` to save files.

    Args:
        response: A response opened with ``stream=True`` (``client.stream(...)``), whose body
            has not been read. The format comes from its Content-Type: ``application/zip``
            (or ``application/x-zip-compressed``) or ``multipart/*``.
        limits: Bounds checked while reading; ``Limits()`` when None.
        format: ``"zip"`` or ``"multipart"`` to read the body as that whatever its
            Content-Type says (a zip served as ``application/octet-stream``, say); None to go
            by the Content-Type.

    Returns:
        An iterator of the entries, in order. The response is checked at once, before any of
        its body is read.

    Raises:
        TypeError: ``response`` is not an ``httpx.Response``.
        ValueError: ``format`` is neither None, ``"zip"`` nor ``"multipart"``.
        RuntimeError: the response's body was already read (not opened with ``stream=True``).
        httpx.HTTPStatusError: the response has an error status (4xx, 5xx).
        ProtocolError: the Content-Type is neither zip nor multipart, or the body is malformed
            or truncated.
        IntegrityError: an entry's CRC-32 or size does not match its bytes.
        LimitExceeded: a bound of ``limits`` was crossed.
        UnsafeNameError: an entry name could escape its folder.
    """
    decoder = _decoder(response, limits, format, "iter_entries")
    return iter_walker(Walker(decoder, raw=response.iter_raw()))


def aiter_entries(
    response: httpx.Response, *, limits: Limits | None = None, format: Format | None = None
) -> AsyncIterator[ReceivedEntry]:
    """Iterate over the entries of a zip or multipart response; the twin of :func:`iter_entries`.

    ``async for entry in aiter_entries(response): ...``. The iterator is a plain object, not an
    async generator, so leaving the loop early needs no ``aclosing()``.

    Args:
        response: A response from ``httpx.AsyncClient.stream(...)``, whose body has not been
            read.
        limits: Bounds checked while reading; ``Limits()`` when None.
        format: As for :func:`iter_entries`.

    Returns:
        An async iterator of the entries, in order; read each one's bytes with
        :meth:`ReceivedEntry.aiter_bytes`. The response is checked at once.

    Raises:
        TypeError, ValueError, RuntimeError, httpx.HTTPStatusError: as for
            :func:`iter_entries`.
        ProtocolError: the Content-Type is neither zip nor multipart, or the body is malformed
            or truncated.
        IntegrityError: an entry's CRC-32 or size does not match its bytes.
        LimitExceeded: a bound of ``limits`` was crossed.
        UnsafeNameError: an entry name could escape its folder.
    """
    decoder = _decoder(response, limits, format, "aiter_entries")
    return AsyncEntries(lambda: Walker(decoder, araw=response.aiter_raw()))


class _LazyTrustContext(ssl.SSLContext):
    """httpx's default TLS settings, with the CA bundle loaded at the first TLS connection.

    Loading the bundle takes tens of milliseconds; a plain ``http://`` upload or download
    never needs it. Until then the context trusts nothing, so it cannot be used unverified:
    both ways in (``wrap_socket`` for sync clients, ``wrap_bio`` for async ones) load first.
    """

    _trust: tuple[str | None, str | None]  # (SSL_CERT_FILE, SSL_CERT_DIR) as httpx reads them
    _loaded: bool
    _lock: threading.Lock

    def _load(self) -> None:
        with self._lock:
            if not self._loaded:
                cafile, capath = self._trust
                if cafile:
                    self.load_verify_locations(cafile=cafile)
                elif capath:
                    self.load_verify_locations(capath=capath)
                else:  # httpx's own default bundle (certifi's), copied in
                    default = httpx.create_ssl_context(trust_env=False)
                    self.load_verify_locations(
                        cadata=b"".join(default.get_ca_certs(binary_form=True))
                    )
                self._loaded = True

    def wrap_socket(self, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        self._load()
        return super().wrap_socket(*args, **kwargs)

    def wrap_bio(self, *args: Any, **kwargs: Any) -> ssl.SSLObject:
        self._load()
        return super().wrap_bio(*args, **kwargs)


@functools.cache
def _ssl_context(cafile: str | None, capath: str | None) -> ssl.SSLContext:
    """The TLS context of the default clients: one per process and CA setting.

    httpx makes a context, and loads the CA bundle, for each new client; the clients made here
    share one, which loads the bundle only when a TLS connection is first made. ``cafile`` and
    ``capath`` are ``SSL_CERT_FILE`` and ``SSL_CERT_DIR``, which httpx reads by default.
    """
    context = _LazyTrustContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies peers and host names
    keylog = os.environ.get("SSLKEYLOGFILE")  # as ssl.create_default_context does
    if keylog and not sys.flags.ignore_environment:
        context.keylog_filename = keylog
    context._trust, context._loaded, context._lock = (cafile, capath), False, threading.Lock()
    return context


def _default_ssl_context() -> ssl.SSLContext:
    return _ssl_context(os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))


def _client() -> httpx.Client:
    return httpx.Client(
        follow_redirects=True,
        timeout=httpx.Timeout(READ_TIMEOUT, connect=CONNECT_TIMEOUT),
        verify=_default_ssl_context(),
    )


def _async_client() -> httpx.AsyncClient:
    return httpx.AsyncClient(
        follow_redirects=True,
        timeout=httpx.Timeout(READ_TIMEOUT, connect=CONNECT_TIMEOUT),
        verify=_default_ssl_context(),
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
    format: Format | None = None,
    if_exists: IfExists = "replace",
    deadline: float | None = None,
    min_rate: float | None = None,
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
        client: The httpx client to use; by default a new one that follows redirects, with a
            10 s connect timeout and a 60 s read timeout (the longest wait for a byte).
        method: The HTTP method. Only ``GET`` transfers are resumed.
        limits: Bounds on the entries (count, sizes, names, folders, compression ratios);
            ``Limits()`` when None.
        progress: None; True for a progress bar on stderr (tqdm when installed); or a callable
            that receives a :class:`Progress` about ten times a second and once at the end.
        resume: When the connection drops mid-body and the response (a ``GET``, sent without
            Content-Encoding) had a strong ``ETag`` and ``Accept-Ranges: bytes``, ask for
            exactly the missing bytes with ``Range: bytes=N-`` and ``If-Range: <ETag>``, and
            carry on with the same decoder, so each file is still verified as a whole. Resuming
            goes on while attempts bring bytes; after 5 attempts in a row that bring none
            (a dropped connection, a refused one, or a 429/500/502/503/504 answer), it gives
            up. Before each attempt of such a run it waits 0.5 s, doubling up to 8 s. The 206
            that answers must repeat the same ``ETag`` and a ``Content-Range`` for exactly the
            rest, else the download fails with ``ProtocolError``: a server whose files changed
            (a 200, another ETag, another start or total) is never spliced into the old body,
            and the download is not restarted either. The entry in progress then leaves
            nothing; the files verified before stay, each whole and from one version. When the
            body ends early and cannot be resumed, the ``ProtocolError`` says the server ended
            the response early (or the connection broke), names the entry in progress, the
            bytes received of the total, and why it was not resumed.
        format: ``"zip"`` or ``"multipart"`` to read the body as that whatever its
            Content-Type says (a zip served as ``application/octet-stream``, say); None (the
            default) to go by the Content-Type.
        if_exists: What to do with an entry whose file already exists in ``dest``:
            ``"replace"`` it (the default, as ``unzip -o`` and ``zipfile`` do), ``"skip"`` it
            (its bytes are read and verified but not written, and it is not in the returned
            list), or ``"error"`` (``FileExistsError`` before anything of it is written).
        deadline: Seconds the whole download may take, resumes included; None (the default)
            for no bound beyond the read timeout. It is checked whenever bytes arrive, and
            each request's timeouts are cut to the time left when it is sent, so a server that
            trickles bytes is stopped at most that much late (:func:`adownload` stops it the
            moment the deadline passes).
        min_rate: Fewest body bytes a second, measured over each 5 s; None (the default) for no
            bound, as a server may rightly pause while it produces the next entry. A server
            that stays silent for 5 s fails it too.
        **request_kwargs: Passed to ``client.stream()`` (``params``, ``headers``, ``json``...).
            ``Accept-Encoding: identity`` is sent unless ``headers`` set it.

    Returns:
        The files saved, in the order they arrived (directories are created, not listed).

    Raises:
        TypeError: ``url`` or ``dest`` has the wrong type.
        ValueError: ``format``, ``if_exists``, ``deadline`` or ``min_rate`` is not allowed.
        NotADirectoryError: ``dest`` exists and is not a folder.
        FileExistsError: ``if_exists="error"`` and an entry's file is already in ``dest``.
        httpx.HTTPStatusError: the response has an error status (raised before any of its
            body is read).
        httpx.TransportError: the request failed before any response arrived.
        TransferTimeout: the deadline passed, the rate fell under ``min_rate``, or the server
            went silent for the read timeout mid-body (also a ``TimeoutError``).
        ProtocolError: the Content-Type is neither zip nor multipart, the body is malformed or
            truncated, the body ended early and could not be resumed, or the resumed response
            was of another version.
        IntegrityError: an entry's CRC-32 or size does not match its bytes.
        LimitExceeded: a bound of ``limits`` was crossed.
        UnsafeNameError: an entry name is unsafe or not portable, repeats, clashes with another
            entry, or meets a symbolic link in ``dest``.
    """
    transfer = Transfer(
        url,
        method=method,
        limits=limits,
        resume=resume,
        progress=progress,
        format=format,
        deadline=deadline,
        min_rate=min_rate,
    )
    with contextlib.ExitStack() as stack:
        stack.callback(transfer.reporter.close)
        sink = stack.enter_context(FileSink(dest, limits=transfer.limits, if_exists=if_exists))
        http = client if client is not None else stack.enter_context(_client())
        writer = stack.enter_context(Writer(sink))
        while True:
            watch = HeaderWatch(transfer, transfer.request_kwargs(request_kwargs, http.timeout))
            try:
                with http.stream(method, url, **watch.kwargs) as resp:
                    watch.close()
                    transfer.open(resp)
                    for raw in resp.iter_raw():
                        for batch in transfer.feed(raw):
                            writer.put(batch)
                        transfer.report(writer.files_done)
                break
            except httpx.TransportError as exc:
                writer.put(transfer.pending())
                time.sleep(transfer.dropped(exc))
            finally:
                watch.close()
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
    format: Format | None = None,
    if_exists: IfExists = "replace",
    deadline: float | None = None,
    min_rate: float | None = None,
    **request_kwargs: Any,
) -> list[SavedFile]:
    """Download and unpack under ``dest``; the async twin of :func:`download`.

    Runs on anyio (asyncio or trio). Files are hashed and written on a worker thread, handed
    ``BATCH_BYTES`` of content at a time (small files are batched together), never a chunk at a
    time; the event loop only waits for it when the disk falls behind. Arguments, return value
    and errors are those of :func:`download`, with an ``httpx.AsyncClient`` as ``client``;
    here the ``deadline`` also cancels a wait for the server the moment it passes.
    """
    transfer = Transfer(
        url,
        method=method,
        limits=limits,
        resume=resume,
        progress=progress,
        format=format,
        deadline=deadline,
        min_rate=min_rate,
    )
    async with contextlib.AsyncExitStack() as stack:
        stack.callback(transfer.reporter.close)
        sink = await anyio.to_thread.run_sync(
            functools.partial(FileSink, dest, limits=transfer.limits, if_exists=if_exists)
        )
        stack.push_async_callback(in_thread_shielded, sink.close)
        http = client if client is not None else await stack.enter_async_context(_async_client())
        writer = Writer(sink)
        stack.push_async_exit(functools.partial(aexit_writer, writer))
        try:
            with anyio.fail_after(transfer.remaining()):
                await _areceive(http, transfer, writer, method, url, request_kwargs)
        except TimeoutError as exc:
            if isinstance(exc, MultirespError):
                raise
            transfer.past_deadline(exc)
        await anyio.to_thread.run_sync(writer.finish)
        transfer.report(writer.files_done, final=True)
        return sink.saved


async def _areceive(
    http: httpx.AsyncClient,
    transfer: Transfer,
    writer: Writer,
    method: str,
    url: httpx.URL | str,
    request_kwargs: dict[str, Any],
) -> None:
    """The receiving loop of :func:`adownload`, through the body's end."""
    while True:
        kwargs = transfer.request_kwargs(request_kwargs, http.timeout)
        try:
            async with http.stream(method, url, **kwargs) as resp:
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
