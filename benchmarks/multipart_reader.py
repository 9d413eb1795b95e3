"""Throughput of multiresp's MultipartReader next to python-multipart's MultipartParser.

Run: ``.venv/bin/python benchmarks/multipart_reader.py [--repeat 5] [--shapes browser]``

The bodies are the two upload shapes of the upload benchmarks: 2,000 parts of 32 KiB and 64
parts of 16 MiB (1 GiB). Every reader gets the same body, already cut into reads of the same
size (cutting is not timed): 64 KiB, what a server's receive loop sees, and 1 MiB. Each body is
written three ways: as a browser writes a form upload (no Content-Length, form-data headers:
the shape ``receive_files`` gets), as multiresp writes a download (each part with its
Content-Length), and with no Content-Length and multiresp's headers.

multiresp hands its content out as ``Data`` events holding ``bytes``, having checked each
part's name and counted it against the limits. python-multipart calls back with ``(buffer,
start, end)``; it is measured three ways:

- **bare**: the callback only adds ``end - start``. python-multipart's best case: it parses
  no header and no name, and no byte leaves the buffer.
- **+ bytes**: the callback takes ``buffer[start:end]``, the bytes a consumer writes; the same
  copy multiresp makes for a part that does not fill a whole read.
- **+ names**: also gathers each part's headers and parses its file name, as Starlette's form
  parser drives it.

Times are CPU seconds of this process (so that other load on the machine counts less), and the
runs of one body alternate between the readers. MB/s are 10**6 body bytes per CPU second,
median of ``--repeat`` runs; a ratio is multiresp's speed over python-multipart's, the median
of the ratios of the runs.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import time
from collections.abc import Callable, Sequence

from python_multipart.multipart import MultipartParser, parse_options_header

from multiresp._events import NEED_DATA, Data, End
from multiresp._multipart import MultipartWriter
from multiresp._multipart_reader import MultipartReader

MIB = 1024 * 1024  # bytes
KIB = 1024  # bytes
BOUNDARY = "----WebKitFormBoundary" + "7MA4YWxkTrZu0gW9"  # as Chromium makes them
READ_SIZES = (64 * KIB, 1 * MIB)  # bytes per read
SHAPES = ("browser", "per part", "none")  # the parts' headers: see make_body


def make_body(part_sizes: Sequence[int], *, shape: str) -> tuple[bytes, int]:
    """A body of random parts; returns it and the sum of the part sizes.

    ``shape``: ``"browser"``: the headers a browser writes for a form's file input
    (Content-Disposition with ``form-data``, the field name and the file name, then
    Content-Type) and no Content-Length; ``"per part"``: multiresp's headers, each part with its
    Content-Length; ``"none"``: multiresp's headers without Content-Length.
    """
    known = shape == "per part"
    writer = MultipartWriter(boundary=BOUNDARY)
    pieces = []
    content = os.urandom(max(part_sizes))
    delimiter = b"\r\n--" + BOUNDARY.encode()
    assert delimiter not in content
    for number, size in enumerate(part_sizes):
        head = writer.start_part(
            f"part-{number}.bin", size=size if known else None, media_type="application/x-bench"
        )
        if shape == "browser":
            head = (
                f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="files";'
                f' filename="part-{number}.bin"\r\nContent-Type: application/octet-stream'
                "\r\n\r\n"
            ).encode()
        pieces += [head, writer.write(content[:size]), writer.end_part()]
    pieces.append(writer.finish())
    return b"".join(pieces), sum(part_sizes)


def run_multiresp(chunks: Sequence[bytes]) -> int:
    reader = MultipartReader(BOUNDARY)
    handed_out = 0
    for chunk in [*chunks, b""]:
        reader.receive_data(chunk)
        while (event := reader.next_event()) is not NEED_DATA:
            if type(event) is Data:
                handed_out += len(event.data)
            elif type(event) is End:
                return handed_out
    raise AssertionError("no End")


def run_python_multipart(chunks: Sequence[bytes]) -> int:
    """bare: python-multipart's best case, no header read and no byte taken out."""
    handed_out = 0

    def on_part_data(data: bytes, start: int, end: int) -> None:
        nonlocal handed_out
        handed_out += end - start

    parser = MultipartParser(BOUNDARY, {"on_part_data": on_part_data})
    for chunk in chunks:
        parser.write(chunk)
    parser.finalize()
    return handed_out


def run_python_multipart_bytes(chunks: Sequence[bytes]) -> int:
    """+ bytes: each piece taken out as bytes, as a consumer that writes it must."""
    handed_out = 0

    def on_part_data(data: bytes, start: int, end: int) -> None:
        nonlocal handed_out
        handed_out += len(data[start:end])

    parser = MultipartParser(BOUNDARY, {"on_part_data": on_part_data})
    for chunk in chunks:
        parser.write(chunk)
    parser.finalize()
    return handed_out


def run_python_multipart_with_names(chunks: Sequence[bytes]) -> int:
    """+ names: python-multipart as Starlette drives it, headers gathered, file name parsed."""
    handed_out = 0
    field, value = bytearray(), bytearray()
    headers: dict[bytes, bytes] = {}
    names: list[bytes] = []

    def on_header_field(data: bytes, start: int, end: int) -> None:
        field.extend(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        value.extend(data[start:end])

    def on_header_end() -> None:
        headers[bytes(field).lower()] = bytes(value)
        field.clear()
        value.clear()

    def on_headers_finished() -> None:
        _, params = parse_options_header(headers[b"content-disposition"])
        names.append(params[b"filename"])
        headers.clear()

    def on_part_data(data: bytes, start: int, end: int) -> None:
        nonlocal handed_out
        handed_out += len(data[start:end])

    parser = MultipartParser(
        BOUNDARY,
        {
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
        },
    )
    for chunk in chunks:
        parser.write(chunk)
    parser.finalize()
    return handed_out


RUNS: tuple[tuple[str, Callable[[Sequence[bytes]], int]], ...] = (
    ("multiresp", run_multiresp),
    ("p-m bare", run_python_multipart),
    ("p-m + bytes", run_python_multipart_bytes),
    ("p-m + names", run_python_multipart_with_names),
)


def measure(chunks: Sequence[bytes], expected: int, repeat: int) -> list[list[float]]:
    """CPU seconds of each run, ``repeat`` rounds; in each round every reader runs once."""
    seconds: list[list[float]] = [[] for _ in RUNS]
    for _ in range(repeat):
        for times, (label, run) in zip(seconds, RUNS, strict=True):
            gc.collect()
            start = time.process_time()
            handed_out = run(chunks)
            times.append(time.process_time() - start)
            assert handed_out == expected, (label, handed_out, expected)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--parts", type=int, default=2000, help="number of small parts (0: none)")
    parser.add_argument("--part-kib", type=int, default=32, help="size of each small part")
    parser.add_argument(
        "--large-parts", type=int, default=64, help="number of large parts (0: none)"
    )
    parser.add_argument("--large-mib", type=int, default=16, help="size of each large part")
    parser.add_argument("--repeat", type=int, default=5, help="runs per measure; median kept")
    parser.add_argument(
        "--shapes", default=",".join(SHAPES), help=f"comma-separated, of {', '.join(SHAPES)}"
    )
    args = parser.parse_args()

    cases = [
        (f"{args.parts} x {args.part_kib} KiB", [args.part_kib * KIB] * args.parts),
        (f"{args.large_parts} x {args.large_mib} MiB", [args.large_mib * MIB] * args.large_parts),
    ]
    header = (
        f"{'body':<15} {'headers':<9} {'read':>5}"
        + "".join(f" {label:>11}" for label, _ in RUNS)
        + "   multiresp / p-m: bare, + bytes, + names"
    )
    print(header)
    print("-" * len(header))
    for label, sizes in cases:
        if not sizes:
            continue
        for shape in args.shapes.split(","):
            body, expected = make_body(sizes, shape=shape)
            for read_size in READ_SIZES:
                chunks = [body[i : i + read_size] for i in range(0, len(body), read_size)]
                seconds = measure(chunks, expected, args.repeat)
                speeds = [len(body) / 1e6 / statistics.median(times) for times in seconds]
                ratios = [
                    statistics.median(
                        theirs / ours for ours, theirs in zip(seconds[0], times, strict=True)
                    )
                    for times in seconds[1:]
                ]
                read_label = f"{read_size // KIB}K" if read_size < MIB else f"{read_size // MIB}M"
                print(
                    f"{label:<15} {shape:<9} {read_label:>5}"
                    + "".join(f" {speed:>6,.0f} MB/s" for speed in speeds)
                    + "   "
                    + ", ".join(f"{ratio:.2f}" for ratio in ratios)
                )
                del chunks
            del body
    print(
        "MB/s: 10**6 body bytes per CPU second, median of runs. p-m: python-multipart's"
        " MultipartParser;\n'bare' only counts part bytes, '+ bytes' takes them out as bytes,"
        " '+ names' also gathers\nheaders and parses each file name (as Starlette does)."
        " Ratios: median over the runs of\nmultiresp's speed / python-multipart's; above 1,"
        " multiresp is faster."
    )


if __name__ == "__main__":
    main()
