"""Send files to the model endpoint of ``fastapi_model.py`` and unpack its outputs.

::

    python examples/model_client.py http://127.0.0.1:8000/predict out/ photo.jpg scan.png

The inputs go up as ``multipart/form-data`` (httpx's ``files=``), with a text field; the
answer, asked for as ``multipart/mixed``, is unpacked under ``out/`` by ``download`` while it
streams, each file verified before it takes its name.
"""

from __future__ import annotations

import contextlib
import json
import pathlib
import sys

from multiresp.client import download


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    url, out, *paths = argv
    with contextlib.ExitStack() as stack:
        files = [
            ("files", (pathlib.Path(path).name, stack.enter_context(open(path, "rb"))))
            for path in paths
        ]
        saved = download(
            url,
            out,
            method="POST",
            resume=False,  # a POST is not asked again
            files=files,
            data={"threshold": "0.5"},
            headers={"Accept": "multipart/mixed"},
        )
    for item in saved:
        print(f"{item.sha256[:12]} {item.size:>8}  {item.name}")
    report = json.loads((pathlib.Path(out) / "report.json").read_text())
    for facts in report:
        print(f"{facts['input']}: {facts['entropy_bits_per_byte']} bits/byte")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
