"""Replicas and a load balancer on loopback, for tests/test_replicas.py.

::

    with Replica(root, tz="UTC0", key=KEY, log=tmp / "a.log") as a, Replica(...) as b:
        with Nginx(tmp / "nginx", [a.port, b.port]) as lb:
            httpx.get(lb.url + "/zip/")      # X-Upstream names the replica that answered

``Replica`` is ``python -m multiresp serve ROOT --port 0`` in a subprocess of its own, with its
own environment (time zone, boundary key); its access log goes to a file. ``Nginx`` runs
Debian's nginx unprivileged with examples/nginx.conf, its ports replaced by the test's.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import time

EXAMPLE = pathlib.Path(__file__).resolve().parent.parent / "examples" / "nginx.conf"
LOG_WAIT = 10  # seconds a replica's access log may lag behind the response it logs
TIMEOUT = 30  # seconds a process may take to start or stop
POLL = 0.02  # seconds between two checks that nginx listens
EXAMPLE_LISTEN = "listen 127.0.0.1:8080;"
EXAMPLE_SERVERS = ("server 127.0.0.1:8001;", "server 127.0.0.1:8002;")


def _stop(process: subprocess.Popen[bytes], sig: int) -> None:
    if process.poll() is None:
        process.send_signal(sig)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(TIMEOUT)
    if process.poll() is None:
        process.kill()
        process.wait()


class Replica:
    """``multiresp serve root --port 0`` in its own process, with ``TZ`` and the boundary key.

    Args:
        root: The folder it serves.
        tz: Its ``TZ`` (a POSIX zone string such as ``"NPT-5:45"`` needs no tzdata).
        key: Its ``MULTIRESP_BOUNDARY_KEY``, or None to leave it unset.
        log: The file its stderr (the gateway's access log) goes to.
    """

    def __init__(self, root: pathlib.Path, *, tz: str, key: str | None, log: pathlib.Path):
        self.root, self.log = root, log
        self.env = {**os.environ, "TZ": tz}
        self.env.pop("MULTIRESP_BOUNDARY_KEY", None)
        self.env.pop("MULTIRESP_CRC_CACHE", None)
        if key is not None:
            self.env["MULTIRESP_BOUNDARY_KEY"] = key
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def requests(self, at_least: int = 0) -> list[str]:
        """The ``"GET /path"`` of each response in its access log so far, waiting up to
        ``LOG_WAIT`` seconds for ``at_least`` of them: the gateway logs a response once its
        app has returned, which may be just after the client has the last byte."""
        give_up = time.monotonic() + LOG_WAIT
        while True:
            found = re.findall(r'"(GET [^"]*)"', self.log.read_text("utf-8", "replace"))
            if len(found) >= at_least or time.monotonic() > give_up:
                return found
            time.sleep(0.05)

    def __enter__(self) -> Replica:
        with self.log.open("wb") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "multiresp", "serve", str(self.root), "--port", "0"],
                stdout=subprocess.PIPE,
                stderr=err,
                env=self.env,
            )
        assert self.process.stdout is not None
        first = self.process.stdout.readline().decode()
        match = re.search(r"http://127\.0\.0\.1:(\d+)/", first)
        if not match:
            _stop(self.process, signal.SIGKILL)
            raise RuntimeError(f"the replica did not start: {first!r} {self.log.read_text()}")
        self.port = int(match.group(1))
        return self

    def __exit__(self, *exc: object) -> None:
        _stop(self.process, signal.SIGINT)
        if self.process.stdout is not None:
            self.process.stdout.close()


def free_port() -> int:
    """A loopback port nothing listens on now (nginx cannot be told to pick one itself)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def nginx_conf(port: int, upstreams: list[int]) -> str:
    """examples/nginx.conf, listening on ``port`` and balancing over ``upstreams``."""
    text = EXAMPLE.read_text()
    assert EXAMPLE_LISTEN in text and all(server in text for server in EXAMPLE_SERVERS)
    text = text.replace(EXAMPLE_LISTEN, f"listen 127.0.0.1:{port};")
    servers = "\n        ".join(f"server 127.0.0.1:{up};" for up in upstreams)
    text = text.replace(EXAMPLE_SERVERS[0], servers).replace(EXAMPLE_SERVERS[1] + "\n", "")
    return text


class Nginx:
    """Debian's nginx, unprivileged, in the foreground, with everything under ``prefix``.

    Args:
        nginx: The nginx executable.
        prefix: A fresh folder: the config, temp folders, pid file and access log go there.
        upstreams: The replicas' ports.
    """

    def __init__(self, nginx: str, prefix: pathlib.Path, upstreams: list[int]) -> None:
        self.nginx, self.prefix, self.upstreams = nginx, prefix, upstreams
        self.port = free_port()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def access_log(self) -> list[dict[str, str]]:
        """Its access log: per request, the request line, status, range, if_range, upstream."""
        pattern = re.compile(
            r'"(?P<request>[^"]*)" (?P<status>\d+) \d+ range="(?P<range>[^"]*)" '
            r'if_range="(?P<if_range>[^"]*)" upstream=(?P<upstream>\S+)'
        )
        lines = (self.prefix / "access.log").read_text("utf-8", "replace").splitlines()
        found = [m.groupdict() for line in lines if (m := pattern.search(line))]
        return [{k: v.replace("\\x22", '"') for k, v in f.items()} for f in found]

    def __enter__(self) -> Nginx:
        self.prefix.mkdir(parents=True, exist_ok=True)
        conf = self.prefix / "nginx.conf"
        conf.write_text(nginx_conf(self.port, self.upstreams))
        self.stderr = (self.prefix / "stderr.log").open("wb")
        self.process = subprocess.Popen(
            [self.nginx, "-p", str(self.prefix), "-c", str(conf), "-e", "stderr",
             "-g", "daemon off;"],
            stdout=subprocess.DEVNULL,
            stderr=self.stderr,
        )  # fmt: skip
        deadline = time.monotonic() + TIMEOUT
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port)):
                return self
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.__exit__()
                raise RuntimeError("nginx did not start: " + self.errors())
            time.sleep(POLL)

    def errors(self) -> str:
        return (self.prefix / "stderr.log").read_text("utf-8", "replace")

    def __exit__(self, *exc: object) -> None:
        _stop(self.process, signal.SIGQUIT)  # graceful: finish the requests, then exit
        self.stderr.close()
