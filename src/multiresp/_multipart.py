"""Pure multipart encoder (RFC 2046 framing, RFC 6266 and RFC 7578 names).

Nothing here does I/O: the writer turns part metadata and data into bytes; the ASGI response
and the uploader drive it. Its reader twin is :mod:`multiresp._multipart_reader`.
"""

# How this works
# --------------
# A body is a series of parts, each introduced by a delimiter line and closed by the next:
#
#     --BOUNDARY CRLF  headers CRLF CRLF  data  CRLF --BOUNDARY CRLF ...  CRLF --BOUNDARY-- CRLF
#
# The writer hands out each piece as it is asked for: ``start_part`` gives the delimiter line
# and headers, ``write`` gives the data back untouched (only counting it against the declared
# size), ``end_part`` the CRLF that belongs to the next delimiter, ``finish`` the closing
# delimiter. ``multipart_size`` runs a writer over sizes alone, so the size it predicts comes
# from the very code that writes the headers.

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable

from ._errors import IntegrityError
from ._names import check_header_value, check_name, content_disposition

BOUNDARY_RANDOM_BYTES = 16  # bytes of randomness in a generated boundary (32 hex digits)
MAX_BOUNDARY_LENGTH = 70  # characters (RFC 2046, section 5.1.1)

_CRLF = b"\r\n"
_HEADERS_END = b"\r\n\r\n"

# RFC 2046: 1 to 70 bchars, the last one not a space.
_BOUNDARY = re.compile(r"[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 token


def boundary_problem(boundary: str) -> str | None:
    """Say what is wrong with ``boundary`` under RFC 2046, or None when it is valid."""
    if not 1 <= len(boundary) <= MAX_BOUNDARY_LENGTH:
        return f"must be 1 to {MAX_BOUNDARY_LENGTH} characters long, not {len(boundary)}"
    if not _BOUNDARY.fullmatch(boundary):
        return (
            "may only hold letters, digits, space and '()+_,-./:=? (RFC 2046),"
            " and may not end with a space"
        )
    return None


_FORM = "form-data"


class MultipartWriter:
    """Encode a multipart body part by part; every call returns the bytes to send next.

    For each part call :meth:`start_part`, then :meth:`write` for each piece of its data,
    then :meth:`end_part`; after the last part call :meth:`finish`.

    Attributes:
        boundary: The boundary, random unless one was given.
        content_type: The ``Content-Type`` value of the body,
            e.g. ``multipart/mixed; boundary=...``.
    """

    __slots__ = (
        "_dash_boundary",
        "_finished",
        "_limit",
        "_part",
        "_written",
        "boundary",
        "content_type",
        "field",
    )

    def __init__(
        self, *, subtype: str = "mixed", boundary: str | None = None, field: str = "files"
    ) -> None:
        """Start a body.

        Args:
            subtype: The multipart subtype (``mixed``, ``related``, ``form-data``...).
            boundary: The boundary to use. Leave it out: a random boundary cannot be forged
                by the content of the parts.
            field: For ``form-data`` only: the form field every part belongs to.

        Raises:
            ValueError: the subtype is not a token, or the boundary breaks RFC 2046.
            UnsafeNameError: the field name holds CR, LF or NUL.
        """
        if not _TOKEN.fullmatch(subtype):
            raise ValueError(f"multipart subtype {subtype!r} is not a token")
        self.field = check_header_value(field, "form field name") if subtype == _FORM else None
        if boundary is None:
            boundary = secrets.token_hex(BOUNDARY_RANDOM_BYTES)
        problem = boundary_problem(boundary)
        if problem is not None:
            raise ValueError(f"multipart boundary {boundary!r} {problem}")
        self.boundary = boundary
        quoted = boundary if _TOKEN.fullmatch(boundary) else f'"{boundary}"'
        self.content_type = f"multipart/{subtype}; boundary={quoted}"
        self._dash_boundary = b"--" + boundary.encode("ascii")
        self._part: str | None = None
        self._limit: int | None = None  # bytes the open part may hold, None when unknown
        self._written = 0
        self._finished = False

    def start_part(self, name: str, *, size: int | None, media_type: str) -> bytes:
        """Open a part.

        Args:
            name: The entry name, sent as the part's filename. A trailing ``/`` marks a
                directory entry, sent as a part without content.
            size: The number of bytes the part will hold, sent as ``Content-Length`` (not in
                ``form-data``, whose parts carry no other header, RFC 7578 section 4.8); or
                None when unknown.
            media_type: Its ``Content-Type``; ``inode/directory`` for a directory.

        Returns:
            The delimiter line and the part's headers, up to and including the blank line.

        Raises:
            UnsafeNameError: the name is unsafe, or the name or media type holds CR, LF or NUL.
            ValueError: a negative size, a directory with content, or an empty or non-ASCII
                media type.
            RuntimeError: a part is already open, or the body is finished.
        """
        if self._finished:
            raise RuntimeError("the multipart body is finished")
        if self._part is not None:
            raise RuntimeError(f"part {self._part!r} is still open; call end_part() first")
        check_name(name)
        check_header_value(media_type, f"media type of part {name!r}")
        if not media_type or not media_type.isascii():
            raise ValueError(f"part {name!r}: media type {media_type!r} is empty or not ASCII")
        if size is not None and size < 0:
            raise ValueError(f"part {name!r}: size must be >= 0, not {size}")
        is_dir = name.endswith("/")
        if is_dir and size:
            raise ValueError(f"directory part {name!r} cannot hold {size} bytes")
        if self.field is not None:  # as browsers write it: the disposition first
            lines = [
                self._dash_boundary,
                b"Content-Disposition: "
                + content_disposition(name, "form-data", field=self.field).encode("utf-8"),
                b"Content-Type: " + media_type.encode("ascii"),
            ]
        else:
            lines = [
                self._dash_boundary,
                b"Content-Type: " + media_type.encode("ascii"),
                b"Content-Disposition: " + content_disposition(name).encode("ascii"),
            ]
        if size is not None and self.field is None:
            lines.append(b"Content-Length: %d" % size)
        self._part = name
        self._limit = 0 if is_dir else size
        self._written = 0
        return _CRLF.join(lines) + _HEADERS_END

    def write(self, data: bytes) -> bytes:
        """Count a piece of the open part's data against its declared size.

        Args:
            data: The bytes.

        Returns:
            ``data`` itself, not a copy.

        Raises:
            IntegrityError: the part now holds more bytes than it declared.
            RuntimeError: no part is open.
        """
        self._count(len(data))
        return data

    def skip(self, size: int) -> None:
        """Count ``size`` bytes of the open part's data without them (to measure a body).

        Raises:
            IntegrityError: the part now holds more bytes than it declared.
            RuntimeError: no part is open.
        """
        self._count(size)

    def _count(self, length: int) -> None:
        if self._part is None:
            raise RuntimeError("no part is open; call start_part() first")
        self._written += length
        if self._limit is not None and self._written > self._limit:
            raise IntegrityError(
                f"part {self._part!r}: {self._written} bytes, more than the {self._limit}"
                " it declared",
                entry=self._part,
            )

    def end_part(self) -> bytes:
        """Close the open part.

        Returns:
            The framing that ends it.

        Raises:
            IntegrityError: the part holds fewer bytes than it declared.
            RuntimeError: no part is open.
        """
        if self._part is None:
            raise RuntimeError("no part is open; call start_part() first")
        if self._limit is not None and self._written < self._limit:
            raise IntegrityError(
                f"part {self._part!r}: {self._written} bytes, fewer than the {self._limit}"
                " it declared",
                entry=self._part,
            )
        self._part = None
        return _CRLF

    def finish(self) -> bytes:
        """End the body.

        Returns:
            The closing delimiter.

        Raises:
            RuntimeError: a part is still open, or the body is already finished.
        """
        if self._part is not None:
            raise RuntimeError(f"part {self._part!r} is still open; call end_part() first")
        if self._finished:
            raise RuntimeError("the multipart body is already finished")
        self._finished = True
        return self._dash_boundary + b"--" + _CRLF


def multipart_size(
    parts: Iterable[tuple[str, int, str]],
    *,
    boundary: str,
    subtype: str = "mixed",
    field: str = "files",
) -> int:
    """The exact length of the body :class:`MultipartWriter` writes for these parts.

    Args:
        parts: ``(name, size, media_type)`` for each part, in order.
        boundary: The boundary the writer will use.
        subtype: The multipart subtype.
        field: The form field of a ``form-data`` body.

    Returns:
        The body's length in bytes.

    Raises:
        UnsafeNameError, ValueError: as :meth:`MultipartWriter.start_part` would.
    """
    writer = MultipartWriter(subtype=subtype, boundary=boundary, field=field)
    total = 0
    for name, size, media_type in parts:
        total += len(writer.start_part(name, size=size, media_type=media_type))
        writer.skip(size)
        total += size + len(writer.end_part())
    return total + len(writer.finish())
