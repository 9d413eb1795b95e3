"""The receive path without HTTP: body bytes and a content type in, verified files out."""

from __future__ import annotations

import io
import pathlib
import subprocess
import sys
import zipfile

from multiresp import Limits
from multiresp._decoding import Batcher, BodyDecoder
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
