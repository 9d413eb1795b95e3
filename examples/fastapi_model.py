"""A FastAPI "model" endpoint: several input files in, several output files out.

Run it, then send it files with the client script (or curl)::

    python examples/fastapi_model.py
    python examples/model_client.py http://127.0.0.1:8000/predict out/ photo.jpg scan.png
    curl -F files=@photo.jpg -F threshold=0.3 -H 'Accept: application/zip' \\
        -o outputs.zip http://127.0.0.1:8000/predict

The inputs arrive as ``multipart/form-data``: ``receive_files`` streams each one to a file in a
folder of this request (off the event loop, hashed on the way), with the form's text fields
beside them (``threshold`` here). Limits bound what a caller may send; a bad upload gets 413 or
400 from ``EXCEPTION_HANDLERS`` without any try/except here, and leaves nothing behind. The
outputs go back in one response through ``negotiate``: multipart for ``Accept:
multipart/mixed``, else a streaming zip. The "model" is made up (a PNG picture of each input's
byte histogram, and a JSON report), so the example runs without one.
"""

from __future__ import annotations

import json
import math
import shutil
import struct
import tempfile
import zlib

from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from multiresp import Entry, Limits, SavedFile, negotiate, receive_files
from multiresp.uploads import EXCEPTION_HANDLERS

SIDE = 64  # pixels: each histogram picture is SIDE x SIDE, 8-bit grey
READ_BLOCK = 1 << 20  # bytes read at once from an input
INPUT_LIMITS = Limits(max_files=16, max_file_size=256 << 20, max_total_size=1 << 30)

app = FastAPI(exception_handlers=EXCEPTION_HANDLERS)


def png(pixels: bytes, side: int) -> bytes:
    """A minimal greyscale PNG, so the picture opens in any image viewer."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    rows = b"".join(b"\x00" + pixels[y * side : (y + 1) * side] for y in range(side))
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def fake_model(saved: SavedFile, threshold: float) -> tuple[bytes, dict[str, object]]:
    """Stands in for a model: reads one input and gives a picture and a few numbers."""
    counts = [0] * 256
    with open(saved.path, "rb") as source:
        while block := source.read(READ_BLOCK):
            for value in range(256):
                counts[value] += block.count(value)
    total = max(saved.size, 1)
    entropy = -sum(c / total * math.log2(c / total) for c in counts if c)
    tallest = max(counts) or 1
    pixels = bytes(
        255 if counts[x * 4] * SIDE >= (SIDE - y) * tallest else 0
        for y in range(SIDE)
        for x in range(SIDE)
    )
    facts = {
        "input": saved.name,
        "bytes": saved.size,
        "sha256": saved.sha256,
        "entropy_bits_per_byte": round(entropy, 4),
        "flagged": entropy / 8 > threshold,
    }
    return png(pixels, SIDE), facts


@app.post("/predict")
async def predict(request: Request) -> Response:
    inputs = tempfile.mkdtemp(prefix="model-inputs-")
    try:
        saved = await receive_files(request, inputs, limits=INPUT_LIMITS)
        threshold = float(saved.fields.get("threshold", "0.9"))
    except BaseException:
        shutil.rmtree(inputs)
        raise
    outputs: list[Entry] = []
    report = []
    for number, item in enumerate(saved):
        picture, facts = await run_in_threadpool(fake_model, item, threshold)
        outputs.append(Entry.from_bytes(picture, f"histograms/{number:02d}.png"))
        report.append(facts)
    outputs.append(Entry.from_bytes(json.dumps(report, indent=2).encode(), "report.json"))
    response = negotiate(request, outputs, filename="outputs.zip")
    response.background = BackgroundTask(shutil.rmtree, inputs)  # once the answer is sent
    return response


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=8000)
