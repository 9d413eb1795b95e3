"""Download a zip or multipart response with ``multiresp.client.download`` and show progress.

::

    python examples/download_progress.py http://127.0.0.1:8000/folder.zip out/

The ``progress`` callback gets a ``Progress`` about ten times a second and once at the end:
bytes received, the total when the server sent ``Content-Length``, files saved so far and the
entry being received. Each file is verified (size, CRC-32 or digest) before it is renamed into
place; ``download`` returns them with their SHA-256.
"""

from __future__ import annotations

import sys

from multiresp.client import Progress, download


def report(progress: Progress) -> None:
    done, total = progress.bytes_done, progress.bytes_total
    amount = f"{done / 2**20:.1f} MiB"
    if total:
        amount = f"{100 * done // total:3d}% of {total / 2**20:.1f} MiB"
    print(
        f"{amount}  {progress.files_done} files saved  now: {progress.current or '-'}", flush=True
    )


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: download_progress.py URL DEST", file=sys.stderr)
        return 2
    url, dest = argv
    saved = download(url, dest, progress=report)
    for file in saved:
        print(f"{file.sha256[:12]}  {file.size:>10}  {file.name}")
    print(f"{len(saved)} files in {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
