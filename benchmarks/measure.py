"""How one measurement is taken: a fresh server process, a client in another process.

Every run starts its own uvicorn (``benchmarks/server.py``) so that neither a peak of memory
nor a cache (multiresp's CRC cache, Python's allocator arenas) carries over from the run
before; the data itself is in the page cache (the harness reads it once beforehand).

- A *transfer* run fetches the response with ``benchmarks/probe.py`` (time to the first
  content byte, total time, content and wire bytes). It reads the idle RSS of the fresh,
  warmed-up server (before the priming request of a "warm" strategy, so what that request
  left behind counts), resets the peak RSS (``5`` into ``/proc/PID/clear_refs``) just before
  the timed request and reads the peak (``VmHWM``) just after: the difference is the memory
  the transfer cost the server. Where ``clear_refs`` cannot be written, a thread samples the
  RSS every 5 ms instead.
- A *disk* run times how long until the files are on the client's disk: ``curl -o`` of the
  response (the bytes only), then ``unzip`` of it for zip formats, and, in another fresh
  server, ``multiresp.client.download`` (``benchmarks/fetch.py``) when it is importable.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import psutil

from .datasets import Dataset
from .strategies import Stack, Strategy

REPO = pathlib.Path(__file__).resolve().parent.parent
START_TIMEOUT = 30.0  # seconds for a server to answer /health
RUN_TIMEOUT = 900.0  # seconds for one client run
SAMPLE_EVERY = 0.005  # seconds between RSS samples, when clear_refs is not writable
STOP_TIMEOUT = 10.0  # seconds for a server to exit after SIGKILL


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _status_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


class _Sampler(threading.Thread):
    """The highest RSS of a process, sampled every ``SAMPLE_EVERY`` seconds."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.process = psutil.Process(pid)
        self.peak = self.process.memory_info().rss
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(SAMPLE_EVERY):
            with contextlib.suppress(psutil.Error):
                self.peak = max(self.peak, self.process.memory_info().rss)

    def stop(self) -> int:
        self._stop_event.set()
        self.join()
        return self.peak


class Server:
    """``benchmarks.server:app`` on uvicorn in a subprocess, for one run."""

    def __init__(self, stack: Stack, data: pathlib.Path, scratch: pathlib.Path, log: Any) -> None:
        self.port = _free_port()
        self.scratch = scratch
        command = [
            sys.executable, "-m", "uvicorn", "benchmarks.server:app",
            "--host", "127.0.0.1", "--port", str(self.port),
            "--http", stack.http, "--loop", stack.loop,
            "--log-level", "warning", "--no-access-log",
        ]  # fmt: skip
        env = {**os.environ, "BENCH_DATA": str(data), "TMPDIR": str(scratch)}
        self.process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=log)
        self.pid = self.process.pid
        self._sampler: _Sampler | None = None
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}")
            try:
                with urllib.request.urlopen(self.url("health"), timeout=1) as response:
                    response.read()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def url(self, *path: str) -> str:
        return f"http://127.0.0.1:{self.port}/" + "/".join(path)

    def rss(self) -> int:
        """The resident set now, in bytes."""
        return _status_kib(self.pid, "VmRSS") * 1024

    def reset_peak(self) -> None:
        """Start measuring the peak RSS from now."""
        try:
            with open(f"/proc/{self.pid}/clear_refs", "w") as clear:
                clear.write("5")
        except OSError:
            self._sampler = _Sampler(self.pid)
            self._sampler.start()

    def peak_memory(self) -> int:
        """The peak RSS in bytes since :meth:`reset_peak`."""
        if self._sampler is not None:
            return self._sampler.stop()
        return _status_kib(self.pid, "VmHWM") * 1024

    def cpu_seconds(self) -> float:
        times = psutil.Process(self.pid).cpu_times()
        return float(times.user + times.system)

    def close(self) -> None:
        """Stop the server at once: a graceful shutdown takes 0.2 s and proves nothing here
        (the harness removes the temporary files itself)."""
        self.process.kill()
        self.process.wait(STOP_TIMEOUT)


@contextlib.contextmanager
def server(stack: Stack, data: pathlib.Path, scratch: pathlib.Path, log: Any) -> Iterator[Server]:
    """A fresh server; afterwards, whatever it or the client left in ``scratch`` is removed."""
    scratch.mkdir(parents=True, exist_ok=True)
    running = Server(stack, data, scratch, log)
    try:
        yield running
    finally:
        running.close()
        empty(scratch)
        os.sync()  # no write-back of what the run wrote may land in the next run


def empty(folder: pathlib.Path) -> None:
    for child in folder.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def _run_json(command: list[str]) -> dict[str, Any]:
    done = subprocess.run(
        command, cwd=REPO, capture_output=True, text=True, timeout=RUN_TIMEOUT, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{command[2]} failed: {done.stderr.strip()[-500:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def probe(url: str) -> dict[str, Any]:
    """One GET with ``benchmarks.probe`` in its own process."""
    return _run_json([sys.executable, "-m", "benchmarks.probe", url])


def transfer(
    stack: Stack, strategy: Strategy, dataset: Dataset, data: pathlib.Path,
    scratch: pathlib.Path, log: Any,
) -> dict[str, Any]:  # fmt: skip
    """One transfer run: timings, bytes, and the server's peak RSS growth and CPU time."""
    with server(stack, data, scratch, log) as running:
        url = running.url(strategy.path, dataset.name)
        idle = running.rss()  # the fresh process, before any priming request
        if strategy.prime:
            probe(url)
        running.reset_peak()
        cpu = running.cpu_seconds()
        result = probe(url)
        result["server_cpu_s"] = running.cpu_seconds() - cpu
        result["rss_idle"] = idle
        result["rss_growth"] = max(0, running.peak_memory() - idle)
    if result["status"] != 200 or not result["complete"]:
        raise RuntimeError(f"status {result['status']}, complete={result['complete']}")
    return result


def to_disk(
    stack: Stack, strategy: Strategy, dataset: Dataset, data: pathlib.Path,
    scratch: pathlib.Path, log: Any, *, client: bool,
) -> dict[str, Any]:  # fmt: skip
    """One disk run: ``curl -o`` (+ ``unzip``), and ``download`` in a second fresh server."""
    result: dict[str, Any] = {}
    with server(stack, data, scratch, log) as running:
        url = running.url(strategy.path, dataset.name)
        if strategy.prime:
            probe(url)
        target = scratch / "client" / "body"
        target.parent.mkdir()
        curl = subprocess.run(
            ["curl", "-s", "-o", str(target), "-w", "%{http_code} %{time_total}", url],
            capture_output=True, text=True, timeout=RUN_TIMEOUT, check=True,
        )  # fmt: skip
        code, seconds = curl.stdout.split()
        if code != "200":
            raise RuntimeError(f"curl got status {code}")
        result["curl_s"] = float(seconds)
        if strategy.format == "zip":
            unpacked = scratch / "client" / "unzipped"
            started = time.perf_counter()
            subprocess.run(
                ["unzip", "-q", "-o", str(target), "-d", str(unpacked)],
                timeout=RUN_TIMEOUT, check=True,
            )  # fmt: skip
            result["unzip_s"] = time.perf_counter() - started
            result["curl_unzip_s"] = result["curl_s"] + result["unzip_s"]
            result["unzip_files"] = sum(len(names) for _, _, names in os.walk(unpacked))
    if client and strategy.format in ("zip", "multipart"):
        with server(stack, data, scratch, log) as running:
            url = running.url(strategy.path, dataset.name)
            if strategy.prime:
                probe(url)
            fetched = _run_json(
                [sys.executable, "-m", "benchmarks.fetch", url, str(scratch / "client")]
            )
        result["download_s"] = fetched["seconds"]
        result["download_files"] = fetched["files"]
        result["download_rss"] = fetched["peak_rss"]
    for key in ("unzip_files", "download_files"):
        if key in result and result[key] != dataset.files:
            raise RuntimeError(f"{key}: {result[key]} files, not {dataset.files}")
    return result
