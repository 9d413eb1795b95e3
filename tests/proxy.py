"""A TCP proxy on loopback that cuts connections mid-body, for resume tests.

::

    with CuttingProxy(server.port, cuts=[100_000, 250_000]) as proxy:
        download(proxy.url + "/archive.zip", dest)
    proxy.exchanges  # one Exchange per connection: its Range header, what was forwarded

Connection ``i`` (in the order they were accepted) is cut after ``cuts[i]`` bytes of the
response *body* (the bytes after the response's header block) have been forwarded: the proxy
sends FIN to the client, so the client sees the server end the response early, and closes the
upstream connection. Connections past the end of ``cuts`` are passed through untouched.
``on_cut(i)`` runs just before connection ``i`` is cut, so a test can change the server's
files between two attempts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import selectors
import socket
import threading
from collections.abc import Callable, Sequence

HEAD_END = b"\r\n\r\n"
RECV_SIZE = 64 << 10  # bytes read from a socket at a time
POLL = 0.2  # seconds between checks that the proxy was closed


@dataclasses.dataclass
class Exchange:
    """What one proxied connection carried."""

    requests: list[dict[str, str]] = dataclasses.field(default_factory=list)  # lowercase names
    status: int | None = None  # of the first response
    body_bytes: int = 0  # bytes forwarded to the client after the first response's head
    cut: bool = False  # the proxy cut it

    @property
    def range(self) -> str | None:
        """The Range header of the connection's first request."""
        return self.requests[0].get("range") if self.requests else None

    @property
    def if_range(self) -> str | None:
        """The If-Range header of the connection's first request."""
        return self.requests[0].get("if-range") if self.requests else None


def _parse_head(head: bytes) -> dict[str, str]:
    lines = head.decode("latin-1").split("\r\n")
    fields = {":request": lines[0]}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name:
            fields[name.strip().lower()] = value.strip()
    return fields


class CuttingProxy:
    """Forwards ``127.0.0.1:<port>`` to ``127.0.0.1:<upstream_port>``, cutting as told.

    Args:
        upstream_port: The server's port on loopback.
        cuts: Body bytes after which connection ``i`` is cut; later connections pass through.
        on_cut: Called with the connection's index just before it is cut.
    """

    def __init__(
        self,
        upstream_port: int,
        cuts: Sequence[int] = (),
        on_cut: Callable[[int], None] | None = None,
    ) -> None:
        self.upstream_port = upstream_port
        self.cuts = list(cuts)
        self.on_cut = on_cut
        self.exchanges: list[Exchange] = []
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(POLL)
        self.port = self._listener.getsockname()[1]
        self._closed = threading.Event()
        self._threads: list[threading.Thread] = []
        self._accepter = threading.Thread(target=self._accept, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ranges(self) -> list[str | None]:
        """The Range header each connection's first request carried, in order."""
        return [exchange.range for exchange in self.exchanges]

    def __enter__(self) -> CuttingProxy:
        self._accepter.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closed.set()
        self._accepter.join(5)
        for thread in self._threads:
            thread.join(5)
        self._listener.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            with self._lock:
                index = len(self.exchanges)
                exchange = Exchange()
                self.exchanges.append(exchange)
            cut = self.cuts[index] if index < len(self.cuts) else None
            thread = threading.Thread(
                target=self._relay, args=(index, exchange, client, cut), daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def _relay(
        self, index: int, exchange: Exchange, client: socket.socket, cut: int | None
    ) -> None:
        with contextlib.ExitStack() as stack:
            stack.enter_context(client)
            client.settimeout(None)  # not the listener's polling timeout: sendall must not stop
            upstream = stack.enter_context(
                socket.create_connection(("127.0.0.1", self.upstream_port))
            )
            selector = stack.enter_context(selectors.DefaultSelector())
            selector.register(client, selectors.EVENT_READ)
            selector.register(upstream, selectors.EVENT_READ)
            requests = b""  # client bytes not yet parsed into request heads
            response = b""  # the first response's bytes, until its head is complete
            head_length: int | None = None
            forwarded = 0  # bytes of the first response forwarded to the client
            while not self._closed.is_set():
                for key, _ in selector.select(POLL):
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    try:
                        data = sock.recv(RECV_SIZE)
                    except OSError:
                        return
                    if not data:
                        return  # either side closed: close both
                    if sock is client:
                        requests += data
                        while HEAD_END in requests:
                            head, _, requests = requests.partition(HEAD_END)
                            exchange.requests.append(_parse_head(head))
                        upstream.sendall(data)
                        continue
                    if head_length is None:
                        response += data
                        if HEAD_END in response:
                            head_length = response.index(HEAD_END) + len(HEAD_END)
                            exchange.status = int(response.split(b" ", 2)[1])
                    if cut is not None and head_length is not None:
                        data = data[: max(0, head_length + cut - forwarded)]
                    with contextlib.suppress(OSError):
                        client.sendall(data)
                    forwarded += len(data)
                    if head_length is not None:
                        exchange.body_bytes = forwarded - head_length
                        if cut is not None and exchange.body_bytes >= cut:
                            exchange.cut = True
                            if self.on_cut is not None:
                                self.on_cut(index)
                            with contextlib.suppress(OSError):
                                client.shutdown(socket.SHUT_RDWR)  # FIN: the body ends early
                            return
