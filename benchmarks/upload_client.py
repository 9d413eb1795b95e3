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
   server counted exactly the ``Content-Length`` each client announced.

Two comparisons, both against curl's whole run (a fresh process, which is all curl has):

- **fresh process**: from starting the Python subprocess to its first response: interpreter
  start, imports (of bytecode compiled before the first round, as an installed package's is,
  even where ``PYTHONDONTWRITEBYTECODE`` is set) and the call, what a command-line upload
  costs. Starting Python and importing
  ``multiresp.client`` alone is measured too (``import``): it bounds this comparison;
- **warm call**: the same call made again inside that process (median of ``WARM_CALLS``),
  what an application that uploads pays; its CPU seconds (user + system) are recorded.

Target: ``aupload`` <= 1.3x curl's time, judged on both. Run:
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
WARM_CALLS = 3  # calls timed in the client's process after its first one


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
    """Upload the folder ``root`` (named as ``upload`` names it) once, then ``WARM_CALLS``
    times more; print when the imports and the first call were done (wall clock), the warm
    calls' seconds and CPU, and the answer."""
    import anyio

    from multiresp.client import aupload, upload

    imported_at = time.time()

    def call() -> Any:
        if kind == "upload":
            return upload(url, [root])
        backend = kind.partition("-")[2]
        return anyio.run(lambda: aupload(url, [root]), backend=backend)

    response = call()
    first_done_at = time.time()
    warm, warm_cpu = [], []
    for _ in range(WARM_CALLS):
        start, cpu_start = time.perf_counter(), cpu_seconds(resource.RUSAGE_SELF)
        response = call()
        warm.append(time.perf_counter() - start)
        warm_cpu.append(cpu_seconds(resource.RUSAGE_SELF) - cpu_start)
    report = {
        "imported_at": imported_at,
        "first_done_at": first_done_at,
        "warm": statistics.median(warm),
        "cpu_s": statistics.median(warm_cpu),
        "answer": response.json(),
    }
    print(json.dumps(report))


def client_env() -> dict[str, str]:
    """The environment of a client process. An installed package has its bytecode compiled
    when it is installed: a client must not compile multiresp's source anew at every start,
    as it would where ``PYTHONDONTWRITEBYTECODE`` is set."""
    return {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}


def compile_client() -> None:
    """Write the client's bytecode once, before anything is timed."""
    command = [sys.executable, "-c", "import multiresp.client"]
    subprocess.run(command, env=client_env(), check=True)


def run_client(kind: str, url: str, root: pathlib.Path) -> dict[str, Any]:
    env = client_env()
    started_at = time.time()
    out = subprocess.run(
        [sys.executable, __file__, "--client", kind, "--url", url, "--root", str(root)],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    report = json.loads(out.stdout)
    return {
        "fresh": report["first_done_at"] - started_at,
        "import": report["imported_at"] - started_at,
        "warm": report["warm"],
        "cpu_s": report["cpu_s"],
        "answer": report["answer"],
    }


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
    return {"fresh": seconds, "warm": seconds, "cpu_s": cpu, "answer": json.loads(out.stdout)}


def measure(dataset: Dataset, url: str, rounds: int, clients: list[str]) -> dict[str, Any]:
    warm_page_cache(dataset)
    runs: dict[str, list[dict[str, Any]]] = {kind: [] for kind in clients}
    compile_client()
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
        row: dict[str, Any] = {"body_bytes": results[0]["body_bytes"]}
        for key in ("fresh", "warm", "import", "cpu_s"):
            if key in results[0]:
                row[key] = statistics.median(r[key] for r in results)
        row["runs"] = {key: [round(r[key], 3) for r in results] for key in ("fresh", "warm")}
        row["MiB_per_s_warm"] = dataset.size / MIB / row["warm"]
        summary["clients"][kind] = row
    if "curl" in runs:
        curl = runs["curl"]
        for kind, row in summary["clients"].items():
            for key in ("fresh", "warm", "import"):  # medians of ratios within each round
                if key in row:
                    pairs = zip(runs[kind], curl, strict=True)
                    row[f"{key}_vs_curl"] = statistics.median(r[key] / c["fresh"] for r, c in pairs)
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
            print(
                f"  {'client':16} {'fresh process':>22}  {'warm call in process':>22}"
                f"  {'warm CPU':>8}  (x: time / curl's whole run, median of rounds)"
            )
            for kind, row in summary["clients"].items():
                fresh = f"{row['fresh']:6.3f} s {row.get('fresh_vs_curl', 1):5.2f}x"
                warm = f"{row['warm']:6.3f} s {row.get('warm_vs_curl', 1):5.2f}x"
                if kind == "curl":
                    warm = "(its whole run)"
                print(
                    f"  {kind:16} {fresh:>22}  {warm:>22}  {row['cpu_s']:6.2f} s"
                    f"  fresh {row['runs']['fresh']}",
                    flush=True,
                )
    finally:
        server.terminate()
        server.wait()
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    print(
        "fresh process: from starting the client's process to its response (for curl, its"
        " whole run);\nwarm call: the same call again in that process, timed inside it."
    )
    for name, summary in results["datasets"].items():
        row = summary["clients"].get("aupload-asyncio")
        if row is None or "warm_vs_curl" not in row:
            continue
        for key, label in (("warm", "warm call in process"), ("fresh", "fresh process")):
            ratio = row[f"{key}_vs_curl"]
            verdict = "PASS" if ratio <= TARGET else "FAIL"
            print(f"{verdict}  {name}: aupload ({label}) {ratio:.2f}x curl, target {TARGET}x")
        print(
            f"      {name}: starting Python and importing multiresp.client alone takes"
            f" {row['import_vs_curl']:.2f}x curl's whole run"
        )


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
