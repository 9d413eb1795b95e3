"""Throughput of multiresp's MultipartReader next to python-multipart's MultipartParser.

Run: ``.venv/bin/python benchmarks/multipart_reader.py [--large-mib 256] [--parts 2000]``

Both readers get the same body, already cut into reads of the same size (cutting is not
timed), and count the content bytes they hand out. multiresp gets its content as ``Data``
events holding ``bytes``; python-multipart calls back with ``(buffer, start, end)`` and the
callback only adds ``end - start``: that is python-multipart's best case, since a real
consumer would at least slice (copy) the buffer. python-multipart does not use a part's
Content-Length, so each body is measured with and without per-part Content-Length, and as a
browser writes a form upload (no Content-Length, form-data headers).

MB/s are 10**6 bytes of body per second, best of ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import gc
import os
import time
from collections.abc import Callable, Sequence

from python_multipart.multipart import MultipartParser, parse_options_header

from multiresp._events import NEED_DATA, Data, End
from multiresp._multipart import MultipartReader, MultipartWriter

MIB = 1024 * 1024  # bytes
KIB = 1024  # bytes
BOUNDARY = "bench-" + "0123456789abcdef" * 2
READ_SIZES = (64 * KIB, 1 * MIB)  # bytes per read
SHAPES = ("per part", "none", "browser")  # the parts' headers: see make_body


def make_body(part_sizes: Sequence[int], *, shape: str) -> tuple[bytes, int]:
    """A body of random parts; returns it and the sum of the part sizes.

    ``shape``: ``"per part"`` (each part with its Content-Length, as multiresp writes them),
    ``"none"`` (no Content-Length), or ``"browser"``: no Content-Length and the headers a
    browser writes for a form's file input (Content-Disposition with ``form-data``, the field
    name and the file name, then Content-Type).
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
    handed_out = 0

    def on_part_data(data: bytes, start: int, end: int) -> None:
        nonlocal handed_out
        handed_out += end - start

    parser = MultipartParser(BOUNDARY, {"on_part_data": on_part_data})
    for chunk in chunks:
        parser.write(chunk)
    parser.finalize()
    return handed_out


def run_python_multipart_with_names(chunks: Sequence[bytes]) -> int:
    """python-multipart as Starlette drives it: headers gathered, file name parsed per part."""
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
        handed_out += end - start

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


def best_seconds(
    run: Callable[[Sequence[bytes]], int], chunks: Sequence[bytes], expected: int, repeat: int
) -> float:
    best = float("inf")
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        handed_out = run(chunks)
        best = min(best, time.perf_counter() - start)
        assert handed_out == expected, (run.__name__, handed_out, expected)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--large-mib", type=int, default=256, help="size of the one large part")
    parser.add_argument("--parts", type=int, default=2000, help="number of small parts")
    parser.add_argument("--part-kib", type=int, default=32, help="size of each small part")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measure; best is kept")
    args = parser.parse_args()

    cases = [
        (f"1 x {args.large_mib} MiB", [args.large_mib * MIB]),
        (f"{args.parts} x {args.part_kib} KiB", [args.part_kib * KIB] * args.parts),
    ]
    header = (
        f"{'body':<14} {'Content-Length':<14} {'read':>6} {'multiresp':>11}"
        f" {'p-m bare':>11} {'p-m + names':>11} {'ratio':>11}"
    )
    print(header)
    print("-" * len(header))
    for label, sizes in cases:
        for shape in SHAPES:
            body, expected = make_body(sizes, shape=shape)
            for read_size in READ_SIZES:
                chunks = [body[i : i + read_size] for i in range(0, len(body), read_size)]
                speeds = [
                    len(body) / 1e6 / best_seconds(run, chunks, expected, args.repeat)
                    for run in (
                        run_multiresp,
                        run_python_multipart,
                        run_python_multipart_with_names,
                    )
                ]
                read_label = f"{read_size // KIB}K" if read_size < MIB else f"{read_size // MIB}M"
                ratios = f"{speeds[0] / speeds[1]:.1f}/{speeds[0] / speeds[2]:.1f}x"
                print(
                    f"{label:<14} {shape:<14} {read_label:>6}"
                    + "".join(f" {speed:>6,.0f} MB/s" for speed in speeds)
                    + f" {ratios:>11}"
                )
                del chunks
            del body
    print(
        "MB/s: 10**6 body bytes per second, best of runs. p-m: python-multipart's"
        " MultipartParser;\n'bare' only counts part bytes, '+ names' also gathers headers and"
        " parses each file name\n(as Starlette does). ratio: multiresp / bare, multiresp / +"
        " names."
    )


if __name__ == "__main__":
    main()
