"""The transfer client: one HTTP/1.1 GET on a plain socket, timed from the inside.

``python -m benchmarks.probe URL`` prints one JSON line: the status, the seconds until the
response headers (``headers_s``) and until the first byte of *content* (``ttfb_s``), the
total seconds, the content bytes (``body_bytes``, after undoing chunked framing) and every
byte read from the socket (``wire_bytes``: status line, headers, framing and content), and
whether the body ended as HTTP says it must (``complete``).

curl's ``time_starttransfer`` stops at the headers, which a streaming response may send long
before its first content byte: this client tells the two apart. It reads into one 1 MiB
buffer and never keeps the content, so it costs about what ``curl -o /dev/null`` costs.
"""

from __future__ import annotations

import json
import socket
import sys
import time
import urllib.parse

RECV_BUFFER = 1 << 20  # bytes per recv_into
HEADER_LIMIT = 64 << 10  # bytes of status line and headers accepted


class _Chunked:
    """Counts the content bytes of a chunked body as it arrives, without copying them."""

    def __init__(self) -> None:
        self.state = "size"  # size line, data, CRLF after data, trailer lines
        self.left = 0
        self.line = bytearray()
        self.done = False

    def feed(self, buffer: bytearray, start: int, end: int) -> int:
        """Consume ``buffer[start:end]``; return how many content bytes it held."""
        content = 0
        i = start
        while i < end and not self.done:
            if self.state == "data":
                take = min(self.left, end - i)
                i += take
                content += take
                self.left -= take
                if not self.left:
                    self.state = "crlf"
                continue
            newline = buffer.find(b"\n", i, end)
            if newline < 0:
                self.line += buffer[i:end]
                break
            self.line += buffer[i:newline]
            i = newline + 1
            line = bytes(self.line).strip()
            self.line.clear()
            if self.state == "crlf":
                self.state = "size"
            elif self.state == "size":
                self.left = int(line.split(b";")[0], 16)
                self.state = "data" if self.left else "trailer"
            elif not line:  # the empty line after the trailers ends the body
                self.done = True
        return content


def fetch(url: str) -> dict[str, object]:
    """GET ``url`` and measure it (see the module docstring)."""
    parts = urllib.parse.urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    request = (
        f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nAccept-Encoding: identity\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    buffer = bytearray(RECV_BUFFER)
    head = bytearray()
    started = time.perf_counter()
    with socket.create_connection((parts.hostname, parts.port or 80)) as sock:
        sock.sendall(request)
        wire = 0
        while True:  # the status line and headers
            n = sock.recv_into(buffer)
            if not n:
                raise ConnectionError("closed before the end of the headers")
            wire += n
            head += buffer[:n]
            end = head.find(b"\r\n\r\n")
            if end >= 0:
                break
            if len(head) > HEADER_LIMIT:
                raise ConnectionError("headers too long")
        headers_at = time.perf_counter()
        lines = head[:end].decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        fields = {
            key.strip().lower(): value.strip()
            for key, _, value in (line.partition(":") for line in lines[1:])
        }
        chunked = "chunked" in fields.get("transfer-encoding", "").lower()
        length = None if chunked else int(fields.get("content-length", "-1"))
        decoder = _Chunked() if chunked else None
        rest = head[end + 4 :]
        buffer[: len(rest)] = rest
        n = len(rest)
        body = 0
        first_at = None
        while True:
            if n:
                got = decoder.feed(buffer, 0, n) if decoder is not None else n
                if got and first_at is None:
                    first_at = time.perf_counter()
                body += got
            if (decoder is not None and decoder.done) or (length is not None and body >= length):
                break
            n = sock.recv_into(buffer)
            if not n:
                break
            wire += n
    finished = time.perf_counter()
    complete = decoder.done if decoder is not None else body == length
    return {
        "status": status,
        "headers_s": headers_at - started,
        "ttfb_s": (first_at if first_at is not None else finished) - started,
        "total_s": finished - started,
        "body_bytes": body,
        "wire_bytes": wire,
        "complete": complete,
        "chunked": chunked,
    }


if __name__ == "__main__":
    print(json.dumps(fetch(sys.argv[1])))
