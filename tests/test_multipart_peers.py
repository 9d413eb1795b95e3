"""The multipart writer's output, read by the readers people use.

stdlib ``email``, requests-toolbelt's ``MultipartDecoder``, aiohttp's ``MultipartReader`` and
python-multipart's ``MultipartParser`` must each see the same parts, names and bytes that
were written. Names are the one place where readers differ: a reader that understands
``filename*`` (RFC 8187) must see the exact name; one that does not sees the ASCII fallback.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass
from email import policy
from email.parser import BytesParser

import aiohttp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from python_multipart.multipart import MultipartParser, parse_options_header
from requests_toolbelt.multipart.decoder import MultipartDecoder

from multiresp import UnsafeNameError
from multiresp._multipart import MultipartWriter
from multiresp._names import (
    check_name,
    content_disposition,
    parse_content_disposition,
    parse_header_params,
)

BOUNDARY = "peer-b0undary"


@dataclass(frozen=True, slots=True)
class Part:
    name: str
    content: bytes = b""
    known: bool = True
    media_type: str = "application/octet-stream"

    @property
    def fallback_name(self) -> str:
        """The plain ``filename=`` the writer sends (the name itself when it is ASCII)."""
        return parse_header_params(content_disposition(self.name))[1]["filename"]


@dataclass(frozen=True, slots=True)
class PeerPart:
    """A part as a peer reader saw it."""

    filename: str | None
    media_type: str | None
    content: bytes
    content_length: str | None


def write(parts: Sequence[Part], boundary: str | None = BOUNDARY) -> tuple[str, bytes]:
    writer = MultipartWriter(boundary=boundary)
    out = bytearray()
    for part in parts:
        size = len(part.content) if part.known else None
        out += writer.start_part(part.name, size=size, media_type=part.media_type)
        out += writer.write(part.content)
        out += writer.end_part()
    out += writer.finish()
    return writer.content_type, bytes(out)


def chunked(body: bytes, size: int) -> list[bytes]:
    return [body[i : i + size] for i in range(0, len(body), size)]


def essence(media_type: str) -> str:
    return media_type.partition(";")[0].strip()


PARTS = [
    Part("a.txt", b"hello\r\n--peer-b0undar", media_type="text/plain; charset=utf-8"),
    Part("dir/\u00e9t\u00e9 \u2603.bin", b"\r\n--peer-b0undar\r\r\n-", known=False),
    Part("bytes.bin", bytes(range(256)) * 40),
    Part("empty", b""),
    Part("empty-unknown", b"", known=False),
    Part("d/", b"", media_type="inode/directory"),
    Part("crlf", b"a\r\n\r\nb\r\n"),
    Part("lone-cr", b"\r", known=False),
    Part('qu"ote.txt', b"q"),
]


# -- the four readers --------------------------------------------------------------------


def read_with_email(content_type: str, body: bytes) -> list[PeerPart]:
    message = BytesParser(policy=policy.default).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    assert message.is_multipart()
    assert not message.defects
    parts = []
    for part in message.iter_parts():
        assert not part.defects
        payload = part.get_payload(decode=True)
        assert isinstance(payload, bytes)
        parts.append(
            PeerPart(part.get_filename(), part.get_content_type(), payload, part["Content-Length"])
        )
    return parts


def read_with_toolbelt(content_type: str, body: bytes) -> list[PeerPart]:
    parts = []
    for part in MultipartDecoder(body, content_type).parts:
        headers = {k.decode(): v.decode() for k, v in part.headers.items()}
        # requests-toolbelt leaves the headers unparsed: read them as a careful user would.
        _, filename = parse_content_disposition(headers["Content-Disposition"])
        parts.append(
            PeerPart(filename, headers["Content-Type"], part.content, headers.get("Content-Length"))
        )
    return parts


class _Protocol:
    """Just enough of aiohttp's protocol for a StreamReader fed by hand."""

    connected = True
    _reading_paused = False

    def pause_reading(self) -> None:
        pass

    def resume_reading(self, resume_parser: bool = True) -> None:
        pass


def read_with_aiohttp(content_type: str, body: bytes, read_size: int) -> list[PeerPart]:
    async def main() -> list[PeerPart]:
        stream = aiohttp.StreamReader(_Protocol(), 2**16, loop=asyncio.get_running_loop())  # type: ignore[arg-type]

        async def feed() -> None:
            for chunk in chunked(body, read_size):
                stream.feed_data(chunk)
                await asyncio.sleep(0)
            stream.feed_eof()

        feeder = asyncio.create_task(feed())
        reader = aiohttp.MultipartReader({"Content-Type": content_type}, stream)
        parts = []
        while (part := await reader.next()) is not None:
            assert isinstance(part, aiohttp.BodyPartReader)
            content = bytes(await part.read())
            parts.append(
                PeerPart(
                    part.filename,
                    part.headers.get("Content-Type"),
                    content,
                    part.headers.get("Content-Length"),
                )
            )
        await feeder
        return parts

    return asyncio.run(main())


def read_with_python_multipart(boundary: str, body: bytes, read_size: int) -> list[PeerPart]:
    parts: list[PeerPart] = []
    headers: dict[bytes, bytes] = {}
    field, value, data = bytearray(), bytearray(), bytearray()

    def on_part_begin() -> None:
        headers.clear()
        data.clear()

    def on_header_field(chunk: bytes, start: int, end: int) -> None:
        field.extend(chunk[start:end])

    def on_header_value(chunk: bytes, start: int, end: int) -> None:
        value.extend(chunk[start:end])

    def on_header_end() -> None:
        headers[bytes(field).lower()] = bytes(value)
        field.clear()
        value.clear()

    def on_part_data(chunk: bytes, start: int, end: int) -> None:
        data.extend(chunk[start:end])

    def on_part_end() -> None:
        _, params = parse_options_header(headers[b"content-disposition"])
        length = headers.get(b"content-length")
        parts.append(
            PeerPart(
                params[b"filename"].decode("latin-1"),
                headers[b"content-type"].decode(),
                bytes(data),
                length.decode() if length is not None else None,
            )
        )

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        },
    )
    for chunk in chunked(body, read_size):
        assert parser.write(chunk) == len(chunk)
    parser.finalize()
    return parts


def check(parts: Sequence[Part], got: Sequence[PeerPart], *, names: str) -> None:
    """Compare what a peer saw with what was written.

    ``names`` says what the peer makes of Content-Disposition: ``"exact"`` (it reads
    ``filename*``), ``"fallback"`` (it ignores ``filename*``), or ``"first"`` (it keeps the
    first file name parameter it meets, whichever form that is).
    """
    assert len(got) == len(parts)
    for part, peer in zip(parts, got, strict=True):
        assert peer.content == part.content, part.name
        accepted = {
            "exact": {part.name},
            "fallback": {part.fallback_name},
            "first": {part.name, part.fallback_name},
        }[names]
        assert peer.filename in accepted
        assert peer.media_type is not None
        assert essence(peer.media_type) == essence(part.media_type)
        assert peer.content_length == (str(len(part.content)) if part.known else None)


# -- fixed parts, several read sizes -----------------------------------------------------


def test_email_reads_the_writer_output() -> None:
    content_type, body = write(PARTS)
    # email keeps the first of filename / filename*; the next test shows it decodes filename*.
    check(PARTS, read_with_email(content_type, body), names="first")


def test_email_decodes_filename_star_to_the_exact_name() -> None:
    for part in PARTS:
        value = content_disposition(part.name)
        if "filename*" not in value:
            continue
        star_only = re.sub(r';\s*filename="(?:[^"\\]|\\.)*"', "", value)
        assert "filename=" not in star_only
        message = BytesParser(policy=policy.default).parsebytes(
            f"Content-Disposition: {star_only}\r\n\r\n".encode()
        )
        assert message.get_filename() == part.name


def test_requests_toolbelt_reads_the_writer_output() -> None:
    content_type, body = write(PARTS)
    check(PARTS, read_with_toolbelt(content_type, body), names="exact")


@pytest.mark.parametrize("read_size", [1, 7, 4096, 1 << 20])
def test_aiohttp_reads_the_writer_output(read_size: int) -> None:
    content_type, body = write(PARTS)
    check(PARTS, read_with_aiohttp(content_type, body, read_size), names="exact")


@pytest.mark.parametrize("read_size", [1, 7, 4096, 1 << 20])
def test_python_multipart_reads_the_writer_output(read_size: int) -> None:
    _, body = write(PARTS)
    # python-multipart ignores filename* (RFC 7578 forbids it in form-data).
    check(PARTS, read_with_python_multipart(BOUNDARY, body, read_size), names="fallback")


def test_every_reader_reads_a_random_boundary() -> None:
    writer_parts = PARTS[:3]
    content_type, body = write(writer_parts, boundary=None)
    boundary = parse_header_params(content_type)[1]["boundary"]
    check(writer_parts, read_with_email(content_type, body), names="first")
    check(writer_parts, read_with_toolbelt(content_type, body), names="exact")
    check(writer_parts, read_with_aiohttp(content_type, body, 1000), names="exact")
    check(writer_parts, read_with_python_multipart(boundary, body, 1000), names="fallback")


# -- arbitrary parts ---------------------------------------------------------------------


def _is_valid_name(name: str) -> bool:
    try:
        check_name(name)
    except UnsafeNameError:
        return False
    return True


# bidirectional overrides and isolates: check_name refuses them
BIDI_CONTROLS = "".join(map(chr, [*range(0x202A, 0x202F), *range(0x2066, 0x206A)]))
_segments = st.text(
    st.characters(exclude_categories=("Cs", "Cc"), exclude_characters="/\\" + BIDI_CONTROLS),
    min_size=1,
    max_size=10,
)
# Two quirks of the peers, not of the writer, are kept out: email strips the spaces around a
# quoted file name, and aiohttp cannot parse two ";" inside one (BadContentDispositionHeader).
_names = (
    st.lists(_segments, min_size=1, max_size=3)
    .map("/".join)
    .filter(_is_valid_name)
    .filter(lambda name: name == name.strip() and name.count(";") < 2)
)
_tricky = [b"\r", b"\n", b"\r\n", b"--", b"\r\n--", b"\r\n--peer-b0undar", b"peer-b0undary"]
_contents = (
    st.lists(st.one_of(st.binary(max_size=64), st.sampled_from(_tricky)), max_size=12)
    .map(b"".join)
    # Scanning readers ignore Content-Length: no part may hold a line starting with the
    # boundary, not even its first line.
    .filter(lambda content: b"\r\n--" + BOUNDARY.encode() not in b"\r\n" + content)
)
_parts = st.lists(
    st.builds(
        Part,
        name=_names,
        content=_contents,
        known=st.booleans(),
        media_type=st.sampled_from(["application/octet-stream", "text/plain; charset=utf-8"]),
    ),
    min_size=1,
    max_size=4,
)


@settings(max_examples=100, deadline=None)
@given(parts=_parts, read_size=st.integers(1, 300))
def test_all_readers_agree_on_arbitrary_parts(parts: list[Part], read_size: int) -> None:
    content_type, body = write(parts)
    dash_boundary = b"--" + BOUNDARY.encode()
    # email also takes a lone CR or LF for a line break, so "\r--BOUNDARY" ends a part there.
    if not any(
        b"\r" + dash_boundary in p.content or b"\n" + dash_boundary in p.content for p in parts
    ):
        check(parts, read_with_email(content_type, body), names="first")
    check(parts, read_with_toolbelt(content_type, body), names="exact")
    check(parts, read_with_aiohttp(content_type, body, read_size), names="exact")
    check(parts, read_with_python_multipart(BOUNDARY, body, read_size), names="fallback")
