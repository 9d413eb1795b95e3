"""The ``multiresp`` command: ``serve`` a folder through the gateway, ``get`` files back.

::

    multiresp serve DIR [--host 127.0.0.1] [--port 8000] [--allow-upload]
    multiresp get URL [-o DIR] [--format zip|multipart] [--no-progress]
    multiresp put URL PATH... [--field files] [--no-progress]

``python -m multiresp`` is the same command.
"""

from __future__ import annotations

import argparse
import functools
import logging
import pathlib
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

import anyio

from ._progress import human_bytes, plain_line
from ._types import SavedFile
from .client import Progress, _client, download

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
PLAIN_INTERVAL = 1.0  # seconds between two progress lines when stderr is not a terminal
GRACEFUL_SHUTDOWN = 5  # seconds Ctrl-C waits for transfers in flight before closing them
ACCEPT = {"zip": "application/zip", "multipart": "multipart/mixed"}
WAKE_INTERVAL = 0.2  # seconds: how often the main thread wakes to notice Ctrl-C
EXIT_INTERRUPTED = 130  # as a shell reports a command stopped by SIGINT
PUT_ERROR_TEXT = 200  # characters of an error response's body shown by put


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line.

    Args:
        argv: The arguments after the program name; ``sys.argv[1:]`` when None.

    Returns:
        The exit status: 0 on success, 1 when the transfer failed, 2 for a usage error.
    """
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "put":
        return _put(args.url, args.paths, field=args.field, progress=not args.no_progress)
    if args.command == "serve":
        return _serve(args.dir, host=args.host, port=args.port, allow_upload=args.allow_upload)
    return _get(args.url, args.output, fmt=args.format, progress=not args.no_progress)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="multiresp",
        description="Serve a folder as zip and multipart downloads, or download and unpack one.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser(
        "serve",
        help="serve a folder: a browsable page, and any selection as zip or multipart",
        description="Serve DIR: GET / is a page listing it; /zip/PATH, /multipart/PATH and "
        "/files/PATH download from it; with --allow-upload, POST /upload/PATH stores "
        "multipart/form-data uploads into it. Nothing outside DIR is served or written.",
    )
    serve.add_argument("dir", metavar="DIR", type=pathlib.Path, help="the folder to serve")
    serve.add_argument("--host", default=DEFAULT_HOST, help=f"default {DEFAULT_HOST}")
    serve.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}; 0 picks one"
    )
    serve.add_argument(
        "--allow-upload",
        action="store_true",
        help="accept uploads into DIR (POST /upload/PATH, and a form on the page); an upload "
        "never replaces a file",
    )
    get = commands.add_parser(
        "get",
        help="download a zip or multipart response and unpack it",
        description="Download URL and unpack it into DIR while it streams; every file is "
        "verified before it is renamed into place, and nothing is written outside DIR.",
    )
    get.add_argument("url", metavar="URL")
    get.add_argument(
        "-o",
        "--output",
        metavar="DIR",
        type=pathlib.Path,
        default=pathlib.Path(),
        help="the folder to unpack into (default: the current folder)",
    )
    get.add_argument(
        "--format",
        choices=sorted(ACCEPT),
        help="ask for this format (the Accept header); the reply's Content-Type decides",
    )
    get.add_argument("--no-progress", action="store_true", help="no progress bar or progress lines")
    _add_put(commands)
    return parser


# -- serve ---------------------------------------------------------------------------------


def _serve(root: pathlib.Path, *, host: str, port: int, allow_upload: bool = False) -> int:
    try:
        import uvicorn
    except ImportError:
        return _fail("serve", "uvicorn is not installed: pip install 'multiresp[cli]'")
    from .gateway import create_app

    try:
        app = create_app(root, allow_upload=allow_upload)
        sock = _listen(host, port)
    except OSError as exc:
        return _fail("serve", str(exc))
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    access = logging.getLogger("multiresp.gateway")
    access.addHandler(handler)
    access.setLevel(logging.INFO)
    bound_host, bound_port = sock.getsockname()[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    print(f"Serving {root.resolve()} at http://{shown}:{bound_port}/  (Ctrl-C to stop)", flush=True)
    if allow_upload:
        print(f"Uploads allowed into {root.resolve()}", flush=True)
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN,
    )
    try:
        uvicorn.Server(config).run(sockets=[sock])
    except KeyboardInterrupt:
        pass  # uvicorn stopped, then re-raised the SIGINT it had caught
    finally:
        sock.close()
        access.removeHandler(handler)
    print("Stopped.", flush=True)
    return 0


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket, bound before uvicorn starts, so the URL printed is already live."""
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    return socket.create_server((host, port), family=family)


# -- get -----------------------------------------------------------------------------------


class _PlainLines:
    """The progress callback when stderr is not a terminal: a plain line each second."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._started = self._last = time.monotonic()

    def __call__(self, progress: Progress) -> None:
        now = time.monotonic()
        if now - self._last < PLAIN_INTERVAL:
            return  # the first line after a second: a rate from the first packet means nothing
        self._last = now
        print(plain_line(progress, now - self._started), file=self._stream, flush=True)


def _get(url: str, dest: pathlib.Path, *, fmt: str | None, progress: bool) -> int:
    headers = {"Accept": ACCEPT[fmt]} if fmt else {}
    reporter: _PlainLines | bool | None = None
    if progress:
        reporter = True if sys.stderr.isatty() else _PlainLines(sys.stderr)
    started = time.perf_counter()
    try:
        saved = _download_until_interrupted(url, dest, progress=reporter, headers=headers)
    except KeyboardInterrupt:
        return _fail("get", "interrupted", status=EXIT_INTERRUPTED)
    except Exception as exc:  # every failure is one line, never a traceback
        return _fail("get", _one_line(exc))
    elapsed = time.perf_counter() - started
    size = sum(f.size for f in saved)
    rate = f"{human_bytes(int(size / elapsed))}/s" if elapsed > 0 else "-"
    files = "1 file" if len(saved) == 1 else f"{len(saved)} files"
    print(f"Saved {files}, {human_bytes(size)} in {elapsed:.2f} s ({rate}) to {dest}", flush=True)
    return 0


def _download_until_interrupted(url: str, dest: pathlib.Path, **options: Any) -> list[SavedFile]:
    """``download`` on a worker thread, so that Ctrl-C never lands in the middle of it.

    On Ctrl-C the main thread closes the HTTP client: the transfer then fails the way a dropped
    connection does, ``download`` removes what it had not verified, and KeyboardInterrupt is
    raised here. A second Ctrl-C leaves at once (the worker is a daemon thread).
    """
    outcome: list[list[SavedFile] | BaseException] = []
    done = threading.Event()  # not Thread.join: once Ctrl-C interrupts it, it may not wait again
    with _client() as http:

        def run() -> None:
            try:
                outcome.append(download(url, dest, client=http, **options))
            except BaseException as exc:  # handed to the main thread
                outcome.append(exc)
            finally:
                done.set()

        threading.Thread(target=run, name="multiresp-get", daemon=True).start()
        try:
            while not done.wait(WAKE_INTERVAL):
                pass
        except KeyboardInterrupt:
            http.close()
            while not done.wait(WAKE_INTERVAL):
                pass
            raise
    result = outcome[0]
    if isinstance(result, BaseException):
        raise result
    return result


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _fail(command: str, message: str, *, status: int = 1) -> int:
    print(f"multiresp {command}: error: {message}", file=sys.stderr, flush=True)
    return status


# -- put -----------------------------------------------------------------------------------


def _add_put(commands: Any) -> None:
    put = commands.add_parser(
        "put",
        help="upload files and folders as one multipart/form-data request",
        description="Upload each PATH (a folder sends its files under its own name, as a "
        "browser's folder upload does) to URL as one multipart/form-data POST, as the "
        "gateway's POST /upload/PATH and receive_files take it.",
    )
    put.add_argument("url", metavar="URL")
    put.add_argument("paths", metavar="PATH", nargs="+", type=pathlib.Path)
    put.add_argument(
        "--field", default="files", help="the form field of the files (default: files)"
    )
    put.add_argument("--no-progress", action="store_true", help="no progress bar or progress lines")


class _LastReport:
    """Keeps the last progress report (for the summary) and passes each on to ``show``."""

    def __init__(self, show: Callable[[Progress], object] | None) -> None:
        self.show = show
        self.last: Progress | None = None

    def __call__(self, progress: Progress) -> None:
        self.last = progress
        if self.show is not None:
            self.show(progress)


def _put(url: str, paths: list[pathlib.Path], *, field: str, progress: bool) -> int:
    from ._progress import TerminalBar
    from .client import aupload

    bar: TerminalBar | None = None
    show: Callable[[Progress], object] | None = None
    if progress:
        show = bar = TerminalBar() if sys.stderr.isatty() else None
        show = show or _PlainLines(sys.stderr)
    report = _LastReport(show)
    started = time.perf_counter()
    try:
        response = anyio.run(functools.partial(aupload, url, paths, field=field, progress=report))
    except KeyboardInterrupt:
        return _fail("put", "interrupted", status=EXIT_INTERRUPTED)
    except Exception as exc:  # every failure is one line, never a traceback
        return _fail("put", _one_line(exc))
    finally:
        if bar is not None:
            bar.close()
    elapsed = time.perf_counter() - started
    status = f"{response.status_code} {response.reason_phrase}".strip()
    if not response.is_success:
        said = " ".join(response.text.split())[:PUT_ERROR_TEXT]
        return _fail("put", f"{url} answered {status}" + (f": {said}" if said else ""))
    done = report.last
    size = done.bytes_done if done is not None else 0
    count = done.files_done if done is not None else 0
    rate = f"{human_bytes(int(size / elapsed))}/s" if elapsed > 0 else "-"
    files = "1 file" if count == 1 else f"{count} files"
    print(f"Sent {files}, {human_bytes(size)} in {elapsed:.2f} s ({rate}) to {url}: {status}",
          flush=True)  # fmt: skip
    return 0
