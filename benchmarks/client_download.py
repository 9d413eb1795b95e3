"""Download + unpack of a 1 GiB zip with multiresp.client, against ``curl -o`` of the same URL.

What it does:

1. makes ``--files`` random files of ``--file-mib`` MiB each (64 x 16 MiB = 1 GiB by default) in
   a work folder, and a STORE zip of them;
2. serves it from a small Starlette app on uvicorn, in a subprocess, in one of four ways:
   the zip with ``starlette`` (Starlette's own ``FileResponse``: 64 KiB reads, one thread hop
   each) or ``blocks`` (4 MiB reads, one thread hop each, the faster way DESIGN.md measured),
   or the files themselves with multiresp's own responses, ``mr-store``
   (``ZipStreamResponse``, store) and ``mr-multipart`` (``MultipartResponse``);
3. for each server and each round (each run after an ``os.sync()``), times
   ``curl -s -o FILE URL`` and then, each in a fresh subprocess, ``download()`` and
   ``adownload()`` (asyncio and trio) into a fresh folder, checking every saved file's
   SHA-256; it reads the client's peak RSS (``VmHWM`` in ``/proc/self/status``: ``ru_maxrss``
   would carry the parent's peak across ``exec``) and the CPU seconds (user + system) of curl
   and of the client.

Run: ``.venv/bin/python benchmarks/client_download.py [--files 64 --file-mib 16 --rounds 3]``
(``--servers`` and ``--clients`` pick, comma-separated, which servers and clients run).
The medians are printed and written to ``benchmarks/results/client_download.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pathlib
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile

MIB = 1 << 20  # bytes
READ_BLOCK = 4 * MIB  # bytes per read in the "blocks" server
SERVER_START_TIMEOUT = 30.0  # seconds
RESULTS = pathlib.Path(__file__).parent / "results" / "client_download.json"
CLIENTS = ("download", "adownload-asyncio", "adownload-trio")
SERVERS = ("starlette", "blocks", "mr-store", "mr-multipart")


def make_archive(
    work: pathlib.Path, files: int, file_mib: int
) -> tuple[pathlib.Path, dict[str, str]]:
    """Random files and a STORE zip of them; returns the zip and each name's SHA-256."""
    sources = work / "sources"
    sources.mkdir()
    digests: dict[str, str] = {}
    archive = work / "archive.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_STORED) as zf:
        for index in range(files):
            name = f"file{index:03}.bin"
            data = os.urandom(file_mib * MIB)
            digests[name] = hashlib.sha256(data).hexdigest()
            (sources / name).write_bytes(data)
            zf.write(sources / name, name)
    return archive, digests


# -- the server (run in a subprocess: ``--serve PATH``) ------------------------------------


def serve(path: str, how: str) -> None:
    """Serve ``path`` at ``/archive.zip`` on loopback; print the port, then run until killed."""
    import anyio
    import anyio.to_thread
    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import FileResponse, Response, StreamingResponse
    from starlette.routing import Route

    from multiresp import MultipartResponse, ZipStreamResponse, walk

    size = os.path.getsize(path)
    sources = pathlib.Path(path).parent / "sources"

    async def blocks() -> object:
        with open(path, "rb") as f:  # noqa: ASYNC230 - opening is instant; reads go to threads
            while block := await anyio.to_thread.run_sync(f.read, READ_BLOCK):
                yield block

    async def archive(request: object) -> Response:
        if how == "starlette":
            return FileResponse(path, media_type="application/zip")
        if how == "mr-store":
            return ZipStreamResponse(walk(sources), compression="store")
        if how == "mr-multipart":
            return MultipartResponse(walk(sources))
        return StreamingResponse(
            blocks(),  # type: ignore[arg-type]
            media_type="application/zip",
            headers={"content-length": str(size)},
        )

    app = Starlette(routes=[Route("/archive.zip", archive)])
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    print(sock.getsockname()[1], flush=True)
    config = uvicorn.Config(app, log_level="warning", lifespan="off", ws="none")
    uvicorn.Server(config).run(sockets=[sock])


def start_server(path: pathlib.Path, how: str) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(path), "--server", how],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    port = int(process.stdout.readline())
    url = f"http://127.0.0.1:{port}/archive.zip"
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    return process, url


# -- the client (run in a subprocess: ``--client KIND``) -----------------------------------


def peak_rss_mib() -> float:
    """This process's peak resident set size, in MiB."""
    for line in pathlib.Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # the value is in kB
    raise RuntimeError("no VmHWM in /proc/self/status")


def cpu_seconds(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def client(kind: str, url: str, dest: str) -> None:
    """Download ``url`` into ``dest``; print seconds, CPU, peak RSS and the digests as JSON."""
    import anyio

    from multiresp.client import adownload, download

    start, cpu_start = time.perf_counter(), cpu_seconds(resource.RUSAGE_SELF)
    if kind == "download":
        saved = download(url, dest)
    else:
        backend = kind.partition("-")[2]
        saved = anyio.run(adownload, url, dest, backend=backend)
    seconds = time.perf_counter() - start
    cpu = cpu_seconds(resource.RUSAGE_SELF) - cpu_start
    digests = {file.name: file.sha256 for file in saved}
    print(
        json.dumps(
            {"seconds": seconds, "cpu_s": cpu, "peak_rss_mib": peak_rss_mib(), "digests": digests}
        )
    )


def baseline_rss() -> float:
    """Peak RSS (MiB) of a process that only imports what the client imports."""
    code = "import anyio, httpx, trio, multiresp.client as c, client_download as b\n"
    code += "print(b.peak_rss_mib())"
    here = str(pathlib.Path(__file__).parent)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=here
    )
    return float(out.stdout)


def settle() -> None:
    """Flush dirty pages first, so that no run pays for the writeback of the one before."""
    os.sync()


def run_client(
    kind: str, url: str, dest: pathlib.Path, digests: dict[str, str]
) -> dict[str, float]:
    settle()
    out = subprocess.run(
        [sys.executable, __file__, "--client", kind, "--url", url, "--dest", str(dest)],
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(out.stdout)
    if result["digests"] != digests:
        raise SystemExit(f"{kind}: the saved files differ from the sources")
    shutil.rmtree(dest)
    return {key: result[key] for key in ("seconds", "cpu_s", "peak_rss_mib")}


def run_curl(url: str, target: pathlib.Path) -> dict[str, float]:
    settle()
    start, cpu_start = time.perf_counter(), cpu_seconds(resource.RUSAGE_CHILDREN)
    subprocess.run(["curl", "-s", "-o", str(target), url], check=True)
    seconds = time.perf_counter() - start
    cpu = cpu_seconds(resource.RUSAGE_CHILDREN) - cpu_start
    target.unlink()
    return {"seconds": seconds, "cpu_s": cpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=64)
    parser.add_argument("--file-mib", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--clients", default=",".join(CLIENTS))
    parser.add_argument("--work", help="work folder (default: a temporary one, removed)")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--server", default="starlette", help=argparse.SUPPRESS)
    parser.add_argument("--client", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--dest", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.server)
        return
    if args.client:
        client(args.client, args.url, args.dest)
        return

    with tempfile.TemporaryDirectory(dir=args.work) as temp:
        work = pathlib.Path(temp)
        archive, digests = make_archive(work, args.files, args.file_mib)
        size = archive.stat().st_size
        print(f"archive: {args.files} x {args.file_mib} MiB, {size / MIB:.0f} MiB (STORE)")
        results: dict[str, object] = {
            "archive_bytes": size,
            "rounds": args.rounds,
            "baseline_rss_mib": baseline_rss(),
        }
        for how in args.servers.split(","):
            process, url = start_server(archive, how)
            clients = args.clients.split(",")
            runs: dict[str, list[dict[str, float]]] = {"curl": [], **{k: [] for k in clients}}
            try:
                for _ in range(args.rounds):
                    runs["curl"].append(run_curl(url, work / "curl.out"))
                    for kind in clients:
                        runs[kind].append(run_client(kind, url, work / "dest", digests))
            finally:
                process.terminate()
                process.wait()
            curl = statistics.median(run["seconds"] for run in runs["curl"])
            summary: dict[str, object] = {}
            print(f"\nserver: {how}; medians of {args.rounds} rounds")
            for kind, measured in runs.items():
                seconds = statistics.median(run["seconds"] for run in measured)
                cpu = statistics.median(run["cpu_s"] for run in measured)
                line = f"  {kind:<18} {seconds:6.2f} s  x{seconds / curl:4.2f}  CPU {cpu:5.2f} s"
                entry: dict[str, object] = {
                    "seconds": seconds,
                    "ratio_to_curl": seconds / curl,
                    "cpu_s": cpu,
                    "runs": measured,
                }
                if kind != "curl":
                    entry["peak_rss_mib"] = peak = max(run["peak_rss_mib"] for run in measured)
                    line += f"  peak RSS {peak:5.1f} MiB"
                summary[kind] = entry
                print(line)
            results[how] = summary
        print(f"\nbaseline RSS (imports only): {results['baseline_rss_mib']:.1f} MiB")
        RESULTS.parent.mkdir(exist_ok=True)
        RESULTS.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
