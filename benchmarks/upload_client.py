"""Uploads from the client side: ``aupload`` (and ``upload``) against ``curl -F``, same files.

What it does:

1. takes the ``large`` (64 x 16 MiB = 1 GiB) and ``small`` (2,000 x 32 KiB) datasets of
   ``datasets.py`` (``--quick``: their small versions), and reads them once into the page cache;
2. starts a receiver in its own uvicorn process: a raw ASGI app that counts the body's bytes
   and throws them away, so only the client and the server's HTTP parsing are measured;
3. for each dataset and each round, times ``curl -s -F files=@PATH;filename=NAME ...`` (every
   file one ``-F``, with ``Expect:`` turned off, curl's fastest) and, each in a fresh
   subprocess, ``aupload`` on asyncio and on trio and the sync ``upload``, all sending the
   same files under the same names (the dataset folder given as a path); checks that the
   server counted exactly the ``Content-Length`` each client announced; records the CPU
   seconds (user + system) of each client.

Target: ``aupload`` <= 1.3x curl's time. Run:
``.venv/bin/python benchmarks/upload_client.py [--quick] [--rounds 3] [--datasets large,small]``.
Medians are printed and written to ``benchmarks/results/upload_client.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from datasets import Dataset, ensure, tree_files, warm_page_cache  # noqa: E402

MIB = 1 << 20  # bytes
SERVER_START_TIMEOUT = 30.0  # seconds
RESULTS = HERE / "results" / "upload_client.json"
CLIENTS = ("curl", "aupload-asyncio", "aupload-trio", "upload")
TARGET = 1.3  # aupload's time over curl's at most


# -- the receiver (run in a subprocess: ``--serve``) ------------------------------------------


def serve() -> None:
    """Count each request body's bytes and answer them with its Content-Length, as JSON."""
    import uvicorn

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        received = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            received += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        headers = dict(scope["headers"])
        length = headers.get(b"content-length", b"").decode() or None
        body = json.dumps({"received": received, "content_length": length}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    print(sock.getsockname()[1], flush=True)
    config = uvicorn.Config(app, log_level="warning", lifespan="off", ws="none")
    uvicorn.Server(config).run(sockets=[sock])


def start_server() -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, __file__, "--serve"], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    port = int(process.stdout.readline())
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    return process, f"http://127.0.0.1:{port}/upload"


# -- the clients ----------------------------------------------------------------------------------


def cpu_seconds(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def client(kind: str, url: str, root: str) -> None:
    """Upload the folder ``root`` (named as ``upload`` names it); print seconds, CPU, answer."""
    import anyio

    from multiresp.client import aupload, upload

    start, cpu_start = time.perf_counter(), cpu_seconds(resource.RUSAGE_SELF)
    if kind == "upload":
        response = upload(url, [root])
    else:
        backend = kind.partition("-")[2]
        response = anyio.run(lambda: aupload(url, [root]), backend=backend)
    seconds = time.perf_counter() - start
    cpu = cpu_seconds(resource.RUSAGE_SELF) - cpu_start
    print(json.dumps({"seconds": seconds, "cpu_s": cpu, "answer": response.json()}))


def run_client(kind: str, url: str, root: pathlib.Path) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--client", kind, "--url", url, "--root", str(root)],
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(json.loads(out.stdout))


def curl_config(root: pathlib.Path, config: pathlib.Path) -> None:
    """A curl config with one ``-F`` per file, named as the uploader names it."""
    lines = []
    for path in tree_files(root):
        name = f"{root.name}/{path.relative_to(root).as_posix()}"
        lines.append(f'form = "files=@{path};filename={name}"')
    config.write_text("\n".join(lines) + "\n")


def run_curl(url: str, config: pathlib.Path) -> dict[str, Any]:
    start, cpu_start = time.perf_counter(), cpu_seconds(resource.RUSAGE_CHILDREN)
    out = subprocess.run(
        ["curl", "-s", "--fail", "-H", "Expect:", "-K", str(config), url],
        capture_output=True,
        text=True,
        check=True,
    )
    seconds = time.perf_counter() - start
    cpu = cpu_seconds(resource.RUSAGE_CHILDREN) - cpu_start
    return {"seconds": seconds, "cpu_s": cpu, "answer": json.loads(out.stdout)}


def measure(dataset: Dataset, url: str, rounds: int, clients: list[str]) -> dict[str, Any]:
    warm_page_cache(dataset)
    runs: dict[str, list[dict[str, Any]]] = {kind: [] for kind in clients}
    with tempfile.TemporaryDirectory() as temp:
        config = pathlib.Path(temp) / "curl.cfg"
        curl_config(dataset.root, config)
        for _ in range(rounds):  # interleaved, so that a busy moment hits every client alike
            for kind in clients:
                result = (
                    run_curl(url, config) if kind == "curl" else run_client(kind, url, dataset.root)
                )
                answer = result.pop("answer")
                if str(answer["received"]) != answer["content_length"]:
                    raise SystemExit(f"{kind}: the server got {answer} (bytes != Content-Length)")
                result["body_bytes"] = answer["received"]
                runs[kind].append(result)
    summary: dict[str, Any] = {"files": dataset.files, "bytes": dataset.size, "clients": {}}
    for kind, results in runs.items():
        seconds = statistics.median(r["seconds"] for r in results)
        summary["clients"][kind] = {
            "seconds": seconds,
            "runs": [round(r["seconds"], 3) for r in results],
            "cpu_s": statistics.median(r["cpu_s"] for r in results),
            "body_bytes": results[0]["body_bytes"],
            "MiB_per_s": dataset.size / MIB / seconds,
        }
    curl = summary["clients"].get("curl")
    if curl is not None:
        for row in summary["clients"].values():
            row["vs_curl"] = row["seconds"] / curl["seconds"]
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the small versions of the datasets")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--datasets", default="large,small")
    parser.add_argument("--clients", default=",".join(CLIENTS))
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--client", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve()
        return
    if args.client:
        client(args.client, args.url, args.root)
        return

    clients = args.clients.split(",")
    results: dict[str, Any] = {"rounds": args.rounds, "quick": args.quick, "datasets": {}}
    server, url = start_server()
    try:
        for name in args.datasets.split(","):
            dataset = ensure(name, quick=args.quick)
            print(f"{name}: {dataset.files} files, {dataset.size / MIB:.0f} MiB", flush=True)
            summary = measure(dataset, url, args.rounds, clients)
            results["datasets"][name] = summary
            for kind, row in summary["clients"].items():
                ratio = f"  {row['vs_curl']:.2f}x curl" if "vs_curl" in row else ""
                print(
                    f"  {kind:16} {row['seconds']:6.3f} s  {row['MiB_per_s']:7.0f} MiB/s"
                    f"  cpu {row['cpu_s']:5.2f} s{ratio}  runs {row['runs']}",
                    flush=True,
                )
    finally:
        server.terminate()
        server.wait()
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    for name, summary in results["datasets"].items():
        row = summary["clients"].get("aupload-asyncio")
        if row is not None and "vs_curl" in row:
            verdict = "meets" if row["vs_curl"] <= TARGET else "MISSES"
            print(f"{name}: aupload {row['vs_curl']:.2f}x curl: {verdict} the {TARGET}x target")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
