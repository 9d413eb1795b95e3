"""The quick-start demo: serve a sample folder with `multiresp serve`, fetch it back, verify.

It makes a sample folder (model-output-like files, a larger binary, a unicode name, an empty
folder), starts `multiresp serve` on it (a free loopback port), fetches it back with
`multiresp get` as a zip, as multipart and as a selection of two files, checks every file byte
for byte against the folder, reads the browser page, stops the server with Ctrl-C (SIGINT),
prints what it did at each step and exits (status 1 if any check failed). It needs only Python
and multiresp: every command runs as `python -m multiresp`.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import tempfile
import urllib.request

MULTIRESP = [sys.executable, "-m", "multiresp"]
TIMEOUT = 60  # seconds any one command may take


def make_sample(root: pathlib.Path) -> None:
    """A folder like a model's outputs: images (incompressible), JSON, CSV, one big file."""
    (root / "images").mkdir(parents=True)
    (root / "reports").mkdir()
    (root / "empty-folder").mkdir()
    seed = hashlib.sha256(b"multiresp demo").digest()
    for i in range(8):
        (root / "images" / f"mask-{i}.png").write_bytes(
            b"\x89PNG\r\n\x1a\n" + hashlib.sha256(seed + bytes([i])).digest() * 4000
        )
    for i in range(5):
        report = {"id": i, "scores": [round(0.1 * j * i, 3) for j in range(500)]}
        (root / "reports" / f"report-{i}.json").write_text(json.dumps(report, indent=1))
    rows = "\n".join(f"{i},{i * i},{i % 7},label-{i % 13}" for i in range(40_000))
    (root / "table.csv").write_text("a,b,c,label\n" + rows)
    (root / "résumé ünïcode.txt").write_text("names are UTF-8 in the archive\n")
    (root / "weights.bin").write_bytes(os.urandom(16 << 20))


def contents(root: pathlib.Path) -> dict[str, bytes]:
    """Every file (and empty folder, as ``name/``) under ``root``, with its bytes."""
    found: dict[str, bytes] = {}
    for path in sorted(root.rglob("*")):
        name = path.relative_to(root).as_posix()
        if path.is_file():
            found[name] = path.read_bytes()
        elif not any(path.iterdir()):
            found[name + "/"] = b""
    return found


def show(command: list[str]) -> str:
    shown = ["multiresp", *command[len(MULTIRESP) :]] if command[:3] == MULTIRESP else command
    return "$ " + " ".join(f"'{part}'" if " " in part or "?" in part else part for part in shown)


def main() -> int:
    failures = 0
    with tempfile.TemporaryDirectory(prefix="multiresp-demo-") as tmp:
        root = pathlib.Path(tmp) / "sample"
        make_sample(root)
        want = contents(root)
        size = sum(len(data) for data in want.values())
        print(f"sample folder {root}: {len(want)} entries, {size / 2**20:.1f} MiB")

        serve = [*MULTIRESP, "serve", str(root), "--port", "0"]
        print(show(serve))
        server = subprocess.Popen(serve, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert server.stdout is not None
            started = server.stdout.readline()
            print("  " + started.strip())
            match = re.search(r"http://\S+/", started)
            if match is None:
                raise SystemExit(f"the server did not start: {started}{server.communicate()[1]}")
            url = match.group(0)

            def get(path: str, dest: str, expected: dict[str, bytes]) -> None:
                nonlocal failures
                command = [*MULTIRESP, "get", url + path, "-o", str(pathlib.Path(tmp) / dest),
                           "--no-progress"]  # fmt: skip
                print(show(command))
                run = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT)
                print("  " + (run.stdout or run.stderr).strip())
                ok = run.returncode == 0 and contents(pathlib.Path(tmp) / dest) == expected
                failures += not ok
                verdict = "every file identical to the folder" if ok else "MISMATCH"
                print(f"  checked {len(expected)} entries byte for byte: {verdict}")

            get("zip/", "fetched-zip", want)
            get("multipart/", "fetched-multipart", want)
            picked = {n: want[f"images/{n}"] for n in ["mask-0.png", "mask-1.png"]}
            get("zip/images?name=mask-0.png&name=mask-1.png", "fetched-selection", picked)

            with urllib.request.urlopen(url, timeout=TIMEOUT) as reply:
                page = reply.read().decode()
            rows = page.count('type="checkbox" name="name"')
            print(f"GET {url} -> the browser page, {rows} rows with checkboxes, "
                  f"{len(page)} bytes of HTML")  # fmt: skip
            failures += rows != len(os.listdir(root))
        finally:
            server.send_signal(signal.SIGINT)
            _, log = server.communicate(timeout=TIMEOUT)
        print("Ctrl-C (SIGINT) -> the server stopped with exit status", server.returncode)
        failures += server.returncode != 0
        print("its access log:")
        for line in log.splitlines():
            print("  " + line)
    print()
    print(
        "served, fetched 3 ways and compared byte for byte: "
        + ("all verified" if not failures else f"{failures} check(s) FAILED")
    )
    print("try it yourself: multiresp serve SOME_FOLDER, then open http://127.0.0.1:8000/")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
