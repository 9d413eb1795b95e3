"""What one download decides, without doing I/O: requests, responses, resuming, progress.

The loops in :func:`~multiresp.client.download` / :func:`~multiresp.client.adownload` ask a
:class:`Transfer` for each request's arguments, show it each response (:meth:`Transfer.open`)
and each raw piece of the body (:meth:`Transfer.feed`, which yields batches of events for the
file writer), tell it when the connection was lost (:meth:`Transfer.dropped`, which says how
long to wait before resuming, or raises), and report progress through it. The body itself goes
through the httpx-free :class:`~multiresp._decoding.BodyDecoder`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx

from ._decoding import Batcher, BodyDecoder, inflater_for
from ._errors import ProtocolError
from ._events import Event
from ._progress import Progress, ProgressCallback, Reporter
from ._types import Limits

MAX_RESUME_ATTEMPTS = 3  # resume attempts in a row that bring no new byte before giving up
RESUME_BACKOFF = 0.25  # seconds before the first resume attempt; doubles for each further one

_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)", re.ASCII)


def _content_length(headers: httpx.Headers) -> int | None:
    value = headers.get("content-length", "")
    return int(value) if value.isdigit() else None


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
    ) -> None:
        self.url = url
        self.method = method.upper()
        self.limits = limits if limits is not None else Limits()
        self.resume = resume
        self.reporter = Reporter(progress)
        self.batcher: Batcher | None = None
        self.total: int | None = None  # Content-Length of the first response
        self.etag: str | None = None  # its strong ETag
        self.resumable = False
        self._attempts = 0  # resume attempts since the last one that brought bytes
        self._received_at_drop = -1

    @property
    def decoder(self) -> BodyDecoder | None:
        """The body's decoder, once the first response was opened."""
        return self.batcher.decoder if self.batcher is not None else None

    def request_kwargs(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """The arguments of the next request: the caller's, plus encoding and range headers."""
        headers = httpx.Headers(kwargs.get("headers"))
        headers.setdefault("accept-encoding", "identity")
        decoder = self.decoder
        if decoder is not None and self.etag is not None:
            headers["range"] = f"bytes={decoder.received}-"
            headers["if-range"] = self.etag
        return {**kwargs, "headers": headers}

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
        )
        self.batcher = Batcher(decoder)
        self.total = _content_length(headers)
        etag = headers.get("etag")
        self.etag = etag if etag and not etag.startswith("W/") else None
        ranges = {token.strip().lower() for token in headers.get("accept-ranges", "").split(",")}
        self.resumable = (
            self.resume
            and self.method == "GET"
            and self.etag is not None
            and "bytes" in ranges
            and decoder.inflater is None
        )

    def _check_resumed(self, response: httpx.Response) -> None:
        decoder = self._decoder()
        where = f"resuming {self.url} at byte {decoder.received}, {decoder.where()}"

        def refuse(problem: str) -> ProtocolError:
            return ProtocolError(f"{where}: {problem}", entry=decoder.current)

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
        expected_total = str(self.total) if self.total is not None else total
        if int(start) != decoder.received or total != expected_total:
            raise refuse(f"the server sent {match.group(0)!r}")
        if total != "*" and int(end) != int(total) - 1:
            raise refuse(f"the server sent {match.group(0)!r}, not the rest of the body")
        etag = response.headers.get("etag")
        if etag is not None and etag != self.etag:
            raise refuse(f"the ETag changed from {self.etag} to {etag}")
        if inflater_for(response.headers.get("content-encoding")) is not None:
            raise refuse("the rest came with a Content-Encoding")

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
        """Take a piece of the body (``b""`` at its end) and yield batches of events to write."""
        return self._batcher().feed(raw)

    def finish(self) -> Iterator[list[Event]]:
        """The body ended: yield the last events (through ``End``)."""
        return self._batcher().finish()

    def pending(self) -> list[Event]:
        """Take the events gathered so far (none before the first response)."""
        return self.batcher.pending() if self.batcher is not None else []

    def dropped(self, exc: httpx.TransportError) -> float:
        """The connection failed: the seconds to wait before asking for the rest.

        Raises:
            httpx.TransportError: ``exc`` itself, when no response had arrived yet.
            ProtocolError: the body cannot be resumed, or attempts ran out; it names the entry
                in progress.
        """
        decoder = self.decoder
        if decoder is None:
            raise exc
        if decoder.received > self._received_at_drop:
            self._attempts = 0
        self._received_at_drop = decoder.received
        self._attempts += 1
        if not self.resumable:
            reason = (
                "the response cannot be resumed (that needs a GET, a strong ETag, Accept-Ranges:"
                " bytes and no Content-Encoding; resume=False turns it off)"
            )
        elif self._attempts > MAX_RESUME_ATTEMPTS:
            reason = f"gave up after {MAX_RESUME_ATTEMPTS} attempts to resume"
        else:
            return float(RESUME_BACKOFF * 2 ** (self._attempts - 1))
        total = self.total if self.total is not None else "?"
        raise ProtocolError(
            f"connection to {self.url} lost {decoder.where()}, after {decoder.received} of"
            f" {total} bytes ({type(exc).__name__}: {exc}); {reason}",
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
