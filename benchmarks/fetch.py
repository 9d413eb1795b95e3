"""The unpacking client: ``multiresp.client.download`` in its own process, timed from inside.

``python -m benchmarks.fetch URL DEST`` downloads URL (a zip or multipart response), unpacks
it under DEST while it streams (every file verified, then renamed into place), and prints one
JSON line: the seconds from the request to the last file on disk (imports excluded, as curl's
own start-up is excluded from its ``time_total``), the files and bytes saved, and the peak
RSS of this process.
"""

from __future__ import annotations

import json
import sys
import time

from multiresp.client import download


def _peak_rss() -> int:
    """This process's peak resident set, in bytes (``VmHWM``: not inherited across exec)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def main(url: str, dest: str) -> None:
    started = time.perf_counter()
    saved = download(url, dest, progress=None)
    seconds = time.perf_counter() - started
    report = {
        "seconds": seconds,
        "files": len(saved),
        "bytes": sum(item.size for item in saved),
        "peak_rss": _peak_rss(),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
