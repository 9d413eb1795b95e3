"""A FastAPI app that returns a model's several outputs in one response, zip or multipart.

Run it, then fetch a prediction as a zip or as multipart (the client picks with ``Accept``)::

    python examples/fastapi_outputs.py
    multiresp get 'http://127.0.0.1:8000/predict?prompt=a+cat' -o out/ --format multipart

``negotiate`` answers ``Accept: multipart/mixed`` with a ``MultipartResponse``, and
``application/zip``, ``*/*`` or no ``Accept`` with a ``ZipStreamResponse``; anything else gets
406. The outputs here are made up (a mask image, a JSON report and a CSV of scores produced
while the response streams), so the example runs without a model.
"""

from __future__ import annotations

import hashlib
import json
import struct
import zlib
from collections.abc import Iterator

from fastapi import FastAPI, Request
from fastapi.responses import Response

from multiresp import Entry, negotiate

SIDE = 64  # pixels: the mask is SIDE x SIDE, 8-bit grey

app = FastAPI()


def png(pixels: bytes, side: int) -> bytes:
    """A minimal greyscale PNG, so the mask opens in any image viewer."""

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


def fake_model(prompt: str) -> tuple[bytes, dict[str, object]]:
    """Stands in for a model: a mask and a report that depend on the prompt."""
    seed = hashlib.sha256(prompt.encode()).digest()
    pixels = bytes(
        255 if (x * seed[0] + y * seed[1]) % 97 < 40 else 0
        for y in range(SIDE)
        for x in range(SIDE)
    )
    report = {"prompt": prompt, "score": seed[2] / 255, "mask_pixels": sum(p > 0 for p in pixels)}
    return png(pixels, SIDE), report


def scores(prompt: str) -> Iterator[bytes]:
    """A CSV made row by row while it is sent (its size is not known in advance)."""
    yield b"step,score\n"
    for step in range(1000):
        yield f"{step},{(step * 7919 + len(prompt)) % 1000 / 1000:.3f}\n".encode()


@app.get("/predict")
async def predict(request: Request, prompt: str = "a cat") -> Response:
    mask, report = fake_model(prompt)
    return negotiate(
        request,
        [
            Entry.from_bytes(mask, "mask.png"),
            Entry.from_bytes(json.dumps(report, indent=2).encode(), "report.json"),
            Entry.from_iter(scores(prompt), "scores.csv"),
        ],
        filename="prediction.zip",
    )


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=8000)
