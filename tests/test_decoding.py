"""The receive path without HTTP: body bytes and a content type in, verified files out."""

from __future__ import annotations

import gzip
import io
import pathlib
import random
import subprocess
import sys
import zipfile
import zlib

import pytest

from multiresp import LimitExceeded, Limits, MultirespError
from multiresp._decoding import DECODE_STEP, TOTAL_RATIO_FLOOR, Batcher, BodyDecoder
from multiresp._events import NEED_DATA, End
from multiresp._sink import FileSink
from multiresp._writer import Writer

RECEIVE_PATH = ("_decoding", "_iteration", "_writer", "_sink")


def test_the_receive_path_does_not_import_httpx() -> None:
    imports = "; ".join(f"import multiresp.{module}" for module in RECEIVE_PATH)
    code = f"import sys; {imports}; print('httpx' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    assert out.strip() == "False"


def receive(body: bytes, content_type: str, dest: pathlib.Path, *, step: int = 7) -> list[str]:
    """Bytes in pieces of ``step``, through decoder, batcher, writer thread and sink."""
    limits = Limits()
    batcher = Batcher(BodyDecoder(content_type, limits=limits))
    with FileSink(dest, limits=limits) as sink, Writer(sink) as writer:
        for start in range(0, len(body), step):
            for batch in batcher.feed(body[start : start + step]):
                writer.put(batch)
        for batch in batcher.finish():
            writer.put(batch)
    return [saved.name for saved in sink.saved]


def test_bytes_and_a_content_type_become_files(tmp_path: pathlib.Path) -> None:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a.txt", b"alpha " * 1000)
        zf.writestr("sub/b.bin", bytes(range(256)))
    assert receive(out.getvalue(), "application/zip", tmp_path) == ["a.txt", "sub/b.bin"]
    assert (tmp_path / "a.txt").read_bytes() == b"alpha " * 1000
    assert (tmp_path / "sub" / "b.bin").read_bytes() == bytes(range(256))


def drain(decoder: BodyDecoder, body: bytes, step: int) -> None:
    for start in range(0, len(body), step):
        decoder.receive(body[start : start + step])
        while decoder.next_event() is not NEED_DATA:
            pass
    decoder.receive(b"")
    while not isinstance(decoder.next_event(), End):
        pass


def multipart(files: dict[str, bytes]) -> bytes:
    out = b""
    for name, data in files.items():
        out += (
            b'--BOUNDARY\r\nContent-Disposition: attachment; filename="' + name.encode() + b'"\r\n'
            b"Content-Length: " + str(len(data)).encode() + b"\r\n\r\n" + data + b"\r\n"
        )
    return out + b"--BOUNDARY--\r\n"


SAMPLE = {"a.txt": b"alpha " * 300, "b/c.bin": bytes(range(256)) * 8}


def sample_zip() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in SAMPLE.items():
            zf.writestr(name, data)
    return out.getvalue()


CASES = {
    "gzip-multipart": ("multipart/mixed; boundary=BOUNDARY", "gzip", gzip.compress),
    "deflate-zip": ("application/zip", "deflate", zlib.compress),
    "identity-zip": ("application/zip", None, lambda body: body),
    "identity-multipart": ("multipart/mixed; boundary=BOUNDARY", None, lambda body: body),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_mangled_body_raises_only_multiresp_errors(case: str) -> None:
    content_type, encoding, encode = CASES[case]
    plain = sample_zip() if "zip" in case else multipart(SAMPLE)
    body = encode(plain)
    rng = random.Random(case)
    for _ in range(150):
        mangled = bytearray(body)
        for _ in range(rng.randint(1, 4)):
            mangled[rng.randrange(len(mangled))] = rng.randrange(256)
        if rng.random() < 0.3:
            del mangled[rng.randrange(len(mangled)) :]
        decoder = BodyDecoder(content_type, limits=Limits(), content_encoding=encoding)
        try:
            drain(decoder, bytes(mangled), rng.choice((1, 7, 4096)))
        except MultirespError:
            pass


@pytest.mark.parametrize(
    ("content_type", "encoding", "body"),
    [
        ("multipart/mixed; boundary=BOUNDARY", "gzip", b"\x1f\x8b\x08\x00garbage"),
        ("multipart/mixed; boundary=BOUNDARY", "deflate", b"\xff\xfe\xfd"),
        ("multipart/mixed; boundary=BOUNDARY", "gzip", gzip.compress(b"x") + b"junk"),
        ("multipart/mixed; boundary*=undefined''%41", None, b"--A\r\n"),
        ("multipart/mixed; boundary*=utf-8''%FF%FE", None, b"--A\r\n"),
        ("multipart/mixed", None, b""),
        ("text/html; charset=utf-8", None, b"<html>"),
        ("application/zip", "br", b""),
    ],
)
def test_bad_headers_and_encodings_are_protocol_errors(
    content_type: str, encoding: str | None, body: bytes
) -> None:
    with pytest.raises(MultirespError):
        drain(BodyDecoder(content_type, limits=Limits(), content_encoding=encoding), body, 3)


def test_the_transfer_ratio_counts_bytes_as_sent() -> None:
    body = gzip.compress(multipart({"zeros": bytes(8 << 20)}))
    decoder = BodyDecoder(
        "multipart/mixed; boundary=BOUNDARY", limits=Limits(), content_encoding="gzip"
    )
    with pytest.raises(LimitExceeded, match="max_total_ratio"):
        drain(decoder, body, 1000)
    assert decoder.produced <= TOTAL_RATIO_FLOOR + 200 * decoder.received + DECODE_STEP
    lenient = Limits(max_total_ratio=None)
    drain(
        BodyDecoder("multipart/mixed; boundary=BOUNDARY", limits=lenient, content_encoding="gzip"),
        body,
        1000,
    )


@pytest.mark.parametrize("lead", [b"", b"\r\n"])
@pytest.mark.parametrize("step", [1, 5, 4096])
def test_multipart_boundary_is_taken_from_the_first_line(lead: bytes, step: int) -> None:
    decoder = BodyDecoder("application/octet-stream", limits=Limits(), format="multipart")
    drain(decoder, lead + multipart(SAMPLE), step)
    assert decoder.produced == sum(map(len, SAMPLE.values()))
    assert decoder.last == "b/c.bin"
