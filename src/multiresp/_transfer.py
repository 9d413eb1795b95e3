"""What one download decides, without doing I/O: requests, responses, resuming, progress.

The loops in :func:`~multiresp.client.download` / :func:`~multiresp.client.adownload` ask a
:class:`Transfer` for each request's arguments, show it each response (:meth:`Transfer.open`)
and each raw piece of the body (:meth:`Transfer.feed`, which yields batches of events for the
file writer), tell it when the connection was lost (:meth:`Transfer.dropped`, which says how
long to wait before resuming, or raises), and report progress through it. The body itself goes
through the httpx-free :class:`~multiresp._decoding.BodyDecoder`.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

import httpx

from ._decoding import Batcher, BodyDecoder, Format, check_format, inflater_for
from ._errors import ProtocolError, TransferTimeout
from ._events import Event
from ._progress import Progress, ProgressCallback, Reporter
from ._types import Limits

MAX_RESUME_ATTEMPTS = 5  # resume attempts in a row that bring no new byte before giving up
RESUME_BACKOFF = 0.5  # seconds before the first resume attempt; doubles for each further one
RESUME_BACKOFF_MAX = 8.0  # seconds: the longest wait before a resume attempt
# A resume answered with one of these is retried like a dropped connection: a server being
# restarted, or a gateway in front of it, says so for a moment.
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
RATE_WINDOW = 5.0  # seconds over which min_rate is measured

_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)", re.ASCII)


class ServerUnavailable(httpx.TransportError):
    """A resume was answered with a status that says "try again soon" (``RETRY_STATUSES``).

    The download loops treat it as a dropped connection: it counts as an attempt that brought
    no byte, and the next one waits longer.
    """


def _how_it_ended(exc: httpx.TransportError) -> str:
    """How the body stopped, as the start of an error message."""
    if isinstance(exc, httpx.RemoteProtocolError):  # a clean close before the body's end
        return "the server ended the response early"
    if isinstance(exc, httpx.TimeoutException):
        return "the server went silent"
    return "the connection failed before the response ended"


def _shown(value: str) -> str:
    """A header value for an error message: as sent when it is printable ASCII, else escaped
    (bytes over 0x7F arrive as C1 controls, which a terminal acts on when it prints them)."""
    return value if value.isascii() and value.isprintable() else repr(value)


def _content_length(headers: httpx.Headers) -> int | None:
    value = headers.get("content-length", "")
    return int(value) if value.isascii() and value.isdigit() else None


class Transfer:
    """The state of one download across the responses it takes (see the module docstring)."""

    def __init__(
        self,
        url: httpx.URL | str,
        *,
        method: str,
        limits: Limits | None,
        resume: bool,
        progress: ProgressCallback | bool | None,
        format: Format | None = None,
        deadline: float | None = None,
        min_rate: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not isinstance(url, str | httpx.URL):
            raise TypeError(f"url must be a str or an httpx.URL, not {type(url).__name__}")
        check_format(format)
        for option, value in (("deadline", deadline), ("min_rate", min_rate)):
            if value is not None and not value > 0:
                raise ValueError(f"{option} must be None or a positive number, not {value!r}")
        self.url = url
        self.method = method.upper()
        self.limits = limits if limits is not None else Limits()
        self.resume = resume
        self.format = format
        self.deadline = deadline
        self.min_rate = min_rate
        self._clock = clock
        self._started = clock()
        self._window = (self._started, 0)  # (time, bytes received) where the rate window began
        self.reporter = Reporter(progress)
        self.batcher: Batcher | None = None
        self.total: int | None = None  # Content-Length of the first response
        self.etag: str | None = None  # its strong ETag
        self.not_resumable: str | None = None  # why the body cannot be resumed, once opened
        self._attempts = 0  # resume attempts since the last one that brought bytes
        self._received_at_drop = -1
        self._drop = ""  # what ended the body the last time bytes had arrived before a drop

    @property
    def decoder(self) -> BodyDecoder | None:
        """The body's decoder, once the first response was opened."""
        return self.batcher.decoder if self.batcher is not None else None

    def request_kwargs(
        self, kwargs: dict[str, Any], timeout: httpx.Timeout | None = None
    ) -> dict[str, Any]:
        """The arguments of the next request: the caller's, plus encoding and range headers.

        With a ``deadline`` or a ``min_rate``, the timeouts (the caller's, else the client's
        ``timeout``) are cut so that a silent server is noticed in time.

        Raises:
            TransferTimeout: the deadline already passed.
        """
        headers = httpx.Headers(kwargs.get("headers"))
        headers.setdefault("accept-encoding", "identity")
        decoder = self.decoder
        if decoder is not None and self.etag is not None:
            headers["range"] = f"bytes={decoder.received}-"
            headers["if-range"] = self.etag
        out = {**kwargs, "headers": headers}
        bound = self._wait_bound()
        if bound is not None:
            base = httpx.Timeout(kwargs["timeout"]) if "timeout" in kwargs else timeout
            base = base if base is not None else httpx.Timeout(None)

            def cut(value: float | None) -> float:
                return bound if value is None else min(value, bound)

            out["timeout"] = httpx.Timeout(
                connect=cut(base.connect), read=cut(base.read), write=base.write, pool=base.pool
            )
        return out

    def remaining(self) -> float | None:
        """Seconds left before the deadline, or None without one.

        Raises:
            TransferTimeout: the deadline passed.
        """
        if self.deadline is None:
            return None
        left = self.deadline - (self._clock() - self._started)
        if left <= 0:
            self._timed_out(f"took longer than its deadline of {self.deadline:g} s")
        return left

    def seconds_left(self) -> float | None:
        """Seconds left before the deadline (negative once past), or None without one."""
        if self.deadline is None:
            return None
        return self.deadline - (self._clock() - self._started)

    def _wait_bound(self) -> float | None:
        """The longest a single wait for the server may last, or None for no bound."""
        bounds = [RATE_WINDOW] if self.min_rate is not None else []
        remaining = self.remaining()
        if remaining is not None:
            bounds.append(remaining)
        return min(bounds) if bounds else None

    def check_time(self) -> None:
        """Hold the transfer to its ``deadline`` and ``min_rate``.

        Raises:
            TransferTimeout: the deadline passed, or fewer than ``min_rate`` bytes a second
                arrived over the last ``RATE_WINDOW`` seconds.
        """
        self.remaining()
        if self.min_rate is None:
            return
        now = self._clock()
        since, before = self._window
        elapsed = now - since
        if elapsed < RATE_WINDOW:
            return
        received = self.decoder.received if self.decoder is not None else 0
        rate = (received - before) / elapsed
        if rate < self.min_rate:
            self._timed_out(
                f"received {rate:.0f} bytes/s over the last {elapsed:.1f} s, under its minimum"
                f" rate of {self.min_rate:g} bytes/s (min_rate)"
            )
        self._window = (now, received)

    def past_deadline(self, cause: BaseException) -> NoReturn:
        """The deadline cancelled a wait for the server.

        Raises:
            TransferTimeout: always.
        """
        self._timed_out(f"took longer than its deadline of {self.deadline:g} s", cause)

    def _timed_out(self, problem: str, cause: BaseException | None = None) -> NoReturn:
        decoder = self.decoder
        where = f" {decoder.where()}, after {decoder.received} bytes" if decoder else ""
        raise TransferTimeout(
            f"the transfer from {self.url} timed out{where}: it {problem}",
            entry=decoder.current if decoder else None,
        ) from cause

    def open(self, response: httpx.Response) -> None:
        """Check a response before its body is read: the first one, or one that resumes.

        Raises:
            httpx.HTTPStatusError: the first response has an error status.
            ProtocolError: the content type cannot be unpacked, or a resumed response does not
                continue the body where it broke off.
        """
        if self.batcher is not None:
            self._check_resumed(response)
            return
        response.raise_for_status()
        headers = response.headers
        decoder = BodyDecoder(
            headers.get("content-type", ""),
            limits=self.limits,
            content_encoding=headers.get("content-encoding"),
            format=self.format,
        )
        self.batcher = Batcher(decoder)
        self.total = _content_length(headers)
        etag = headers.get("etag")
        self.etag = etag if etag and not etag.startswith("W/") else None
        self.not_resumable = self._not_resumable(headers, etag, decoder)

    def _not_resumable(
        self, headers: httpx.Headers, etag: str | None, decoder: BodyDecoder
    ) -> str | None:
        """Why the first response could not be resumed, or None when it can."""
        ranges = {token.strip().lower() for token in headers.get("accept-ranges", "").split(",")}
        if not self.resume:
            return "resume=False"
        if self.method != "GET":
            return f"only GET is resumed, not {self.method}"
        if self.etag is None:
            return f"its ETag {_shown(etag)} is weak" if etag else "it has no strong ETag"
        if "bytes" not in ranges:
            return "it has no Accept-Ranges: bytes"
        if decoder.inflater is not None:
            return f"it came with Content-Encoding {_shown(headers['content-encoding'])}"
        return None

    @property
    def resumable(self) -> bool:
        """The first response can be resumed: a GET with a strong ETag, Accept-Ranges: bytes
        and no Content-Encoding, and ``resume`` is on."""
        return self.batcher is not None and self.not_resumable is None

    def _check_resumed(self, response: httpx.Response) -> None:
        decoder = self._decoder()
        where = f"resuming {self.url} at byte {decoder.received}, {decoder.where()}"

        def refuse(problem: str) -> ProtocolError:
            return ProtocolError(f"{where}: {problem}", entry=decoder.current)

        if response.status_code in RETRY_STATUSES:
            raise ServerUnavailable(
                f"the server answered {response.status_code} {_shown(response.reason_phrase)}"
                f" to the resume at byte {decoder.received}",
                request=response.request,
            )
        if response.status_code != httpx.codes.PARTIAL_CONTENT:
            changed = (
                " (the resource changed, or the server ignores Range)"
                if response.status_code == httpx.codes.OK
                else ""
            )
            raise refuse(f"the server answered {response.status_code}{changed}, not 206")
        match = _CONTENT_RANGE.fullmatch(response.headers.get("content-range", "").strip())
        if match is None:
            raise refuse(f"Content-Range {response.headers.get('content-range')!r} is unusable")
        start, end, total = match.groups()
        sent = f"asked for bytes={decoder.received}- and the server sent {match.group(0)!r}"
        if int(start) != decoder.received:
            raise refuse(f"{sent}, which starts elsewhere")
        if self.total is not None and total != str(self.total):
            raise refuse(f"{sent}, whose total is not the {self.total} bytes of the body")
        if total != "*" and int(end) != int(total) - 1:
            raise refuse(f"{sent}, not the rest of the body")
        etag = response.headers.get("etag")
        if etag != self.etag:  # without it, the rest may come from another version
            said = f"changed to {_shown(etag)}" if etag is not None else "is missing from the 206"
            raise refuse(
                f"the ETag {_shown(self.etag or '')} {said}: the rest may be of another version"
            )
        if inflater_for(response.headers.get("content-encoding")) is not None:
            raise refuse("the rest came with a Content-Encoding")
        if self.total is None and total != "*":  # a chunked first response: now it is known
            self.total = int(total)

    def _decoder(self) -> BodyDecoder:
        decoder = self.decoder
        if decoder is None:  # pragma: no cover - open() always comes first
            raise RuntimeError("no response was opened")
        return decoder

    def _batcher(self) -> Batcher:
        if self.batcher is None:  # pragma: no cover - open() always comes first
            raise RuntimeError("no response was opened")
        return self.batcher

    def feed(self, raw: bytes) -> Iterator[list[Event]]:
        """Take a piece of the body (``b""`` at its end) and yield batches of events to write.

        Raises:
            TransferTimeout: past the deadline, or under the minimum rate.
        """
        yield from self._batcher().feed(raw)
        self.check_time()

    def finish(self) -> Iterator[list[Event]]:
        """The body ended: yield the last events (through ``End``)."""
        return self._batcher().finish()

    def pending(self) -> list[Event]:
        """Take the events gathered so far (none before the first response)."""
        return self.batcher.pending() if self.batcher is not None else []

    def dropped(self, exc: httpx.TransportError) -> float:
        """The connection failed: the seconds to wait before asking for the rest.

        Resuming goes on as long as each attempt brings new bytes; after
        ``MAX_RESUME_ATTEMPTS`` attempts in a row that bring none, it gives up. The wait before
        the ``n``-th attempt of such a run is ``RESUME_BACKOFF * 2 ** (n - 1)`` seconds, at most
        ``RESUME_BACKOFF_MAX``, and never past the ``deadline``.

        Raises:
            httpx.TransportError: ``exc`` itself, when no response had arrived yet.
            TransferTimeout: the deadline passed, the rate fell under ``min_rate``, or the
                server went silent (a read timeout) and the body cannot be resumed.
            ProtocolError: the body cannot be resumed, or attempts ran out. It says how the
                body ended (the server ended it early, or the connection failed), the entry in
                progress, how many bytes had arrived, and why it was not resumed.
        """
        self.check_time()
        decoder = self.decoder
        if decoder is None:
            raise exc
        if decoder.received > self._received_at_drop:
            self._attempts = 0
            self._drop = _how_it_ended(exc)
        self._received_at_drop = decoder.received
        self._attempts += 1
        if self.not_resumable is not None:
            reason = (
                f"it cannot be resumed: {self.not_resumable} (resuming needs a GET, a strong"
                " ETag, Accept-Ranges: bytes and no Content-Encoding)"
            )
        elif self._attempts > MAX_RESUME_ATTEMPTS:
            reason = (
                f"gave up after {MAX_RESUME_ATTEMPTS} attempts to resume in a row brought no"
                f" byte (the last: {type(exc).__name__}: {exc})"
            )
        else:
            wait = min(RESUME_BACKOFF * 2 ** (self._attempts - 1), RESUME_BACKOFF_MAX)
            left = self.remaining()  # never sleep past the deadline
            return float(wait if left is None else min(wait, left))
        total = self.total if self.total is not None else "?"
        if isinstance(exc, httpx.TimeoutException):
            self._timed_out(f"got no byte within the read timeout ({exc}); {reason}", exc)
        cause = f" ({type(exc).__name__}: {exc})" if self._attempts == 1 else ""
        raise ProtocolError(
            f"{self._drop}: connection lost {decoder.where()}, after {decoder.received} of"
            f" {total} bytes from {self.url}{cause}; {reason}",
            entry=decoder.current,
        ) from exc

    def report(self, files_done: int, *, final: bool = False) -> None:
        """Tell the ``progress`` callback how far the transfer is (throttled)."""
        decoder = self.decoder
        if decoder is None:
            return
        self.reporter.report(
            lambda: Progress(
                bytes_done=decoder.received,
                bytes_total=self.total,
                files_done=files_done,
                current=None if final else decoder.current,
            ),
            final=final,
        )


# httpcore's trace events that hand over the connection's stream, and those of the headers
_CONNECTED = frozenset(
    {
        "connection.connect_tcp.complete",
        "connection.connect_unix_socket.complete",
        "connection.start_tls.complete",
    }
)
_HEADERS = "http11.receive_response_headers."


class HeaderWatch:
    """Holds a sync request's response headers to the transfer's deadline.

    httpcore bounds each read of the headers, not the headers as a whole: a server that sends
    them a byte at a time never lets a read time out, and would hold a sync download past its
    deadline. The watch learns the connection's socket from httpcore's ``trace`` extension
    when the connection is made, and shuts the socket down if the headers are still arriving
    at the deadline: the request then fails, and the transfer raises
    :class:`TransferTimeout`. A connection taken from the pool, made for an earlier request,
    is not seen. (``adownload`` needs no watch: its deadline cancels the whole request.)
    A ``trace`` of the caller's in ``extensions`` is still called, first.
    """

    def __init__(self, transfer: Transfer, kwargs: dict[str, Any]) -> None:
        self._transfer = transfer
        self._socket: socket.socket | None = None
        self._timer: threading.Timer | None = None
        self.kwargs = kwargs
        if transfer.deadline is not None:
            extensions = dict(kwargs.get("extensions") or {})
            self._traced: Callable[[str, dict[str, Any]], object] | None = extensions.get("trace")
            extensions["trace"] = self._trace
            self.kwargs = {**kwargs, "extensions": extensions}

    def _trace(self, name: str, info: dict[str, Any]) -> None:
        if self._traced is not None:
            self._traced(name, info)
        if name in _CONNECTED:
            stream = info.get("return_value")
            found = stream.get_extra_info("socket") if stream is not None else None
            self._socket = found if isinstance(found, socket.socket) else None
        elif name == _HEADERS + "started":
            left = self._transfer.seconds_left()
            if self._socket is not None and left is not None:
                self._timer = threading.Timer(max(left, 0.0), self._cut, (self._socket,))
                self._timer.daemon = True
                self._timer.start()
        elif name.startswith(_HEADERS):  # complete, or failed
            self.close()

    @staticmethod
    def _cut(sock: socket.socket) -> None:
        # socket.socket's own shutdown, also for a TLS socket: the blocked read then fails
        # as a transport error (ssl.SSLSocket.shutdown would drop its TLS state under it).
        with contextlib.suppress(OSError):
            socket.socket.shutdown(sock, socket.SHUT_RDWR)

    def close(self) -> None:
        """Stop watching (the headers arrived, or the request ended)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
