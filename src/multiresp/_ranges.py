"""Byte ranges, validators and conditional requests (RFC 9110 §13, §14), pure.

The responses ask three questions here, in RFC 9110's order (§13.2.2):

1. :func:`not_modified`: do ``If-None-Match`` / ``If-Modified-Since`` make this a 304?
2. :func:`if_range_holds`: does ``If-Range`` still name the representation?
3. :func:`parse_range`: which bytes does ``Range`` ask for (a list of ranges, None for the
   whole body, or :data:`UNSATISFIABLE` for a 416)?

Validators come from a manifest of the body (:func:`manifest_etag`): never from an inode,
a device or an absolute path, so replicas serving the same files give the same ``ETag``.
Several ranges are sent as ``multipart/byteranges`` (:func:`byteranges`).

The module is pure: no I/O.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import hashlib
import hmac
import itertools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

MANIFEST_VERSION = 1  # bump when the bytes the same manifest gives may change
ETAG_DIGEST_CHARS = 32  # hex characters of the manifest's SHA-256 in the ETag (128 bits)
BOUNDARY_DIGEST_CHARS = 40  # hex characters of the keyed digest in a derived boundary
MAX_RANGES = 8  # more ranges in one request than this: the whole body with 200
BYTERANGES_BOUNDARY_PREFIX = "mr-ranges-"

STRONG_DATE_AGE = dt.timedelta(seconds=1)  # a Last-Modified this old is a strong validator

UNSATISFIABLE: Final = "unsatisfiable"

_RANGE_SPEC = re.compile(r"\s*([0-9]*)\s*-\s*([0-9]*)\s*")
# Digits past which a range number exceeds any body: read as this bound, as int() refuses a
# string of more than 4,300 digits (and converting one costs time the client chose).
_MAX_DIGITS = 30
_BEYOND_ANY_BODY = 10**_MAX_DIGITS
_ETAG = re.compile(r'\s*(W/)?"([\x21\x23-\x7e\x80-\xff]*)"\s*')


@dataclass(frozen=True, slots=True)
class ByteRange:
    """Bytes ``[start, stop)`` of a body."""

    start: int
    stop: int

    def content_range(self, total: int) -> str:
        """The ``Content-Range`` value for this range of a ``total``-byte body."""
        return f"bytes {self.start}-{self.stop - 1}/{total}"


def parse_range(header: str | None, total: int) -> list[ByteRange] | str | None:
    """The ranges a ``Range`` header asks of a ``total``-byte body (RFC 9110 §14.1.2).

    Returns:
        The satisfiable ranges in the order asked, clamped to the body; None when the whole
        body is to be sent (no header, another unit, a header that cannot be parsed, more
        than ``MAX_RANGES`` ranges, or ranges that overlap: a server may ignore ``Range``,
        and a client asking overlapping ranges gains nothing from them); or
        :data:`UNSATISFIABLE` when no range is satisfiable (a 416).
    """
    if header is None:
        return None
    unit, _, specs = header.partition("=")
    if unit.strip().lower() != "bytes" or not specs.strip():
        return None
    items = specs.split(",")
    if len(items) > MAX_RANGES:
        return None
    ranges: list[ByteRange] = []
    for item in items:
        if not item.strip():
            continue  # RFC 9110 §5.6.1: empty list elements are ignored
        match = _RANGE_SPEC.fullmatch(item)
        if match is None:
            return None
        first, last = match.group(1), match.group(2)
        if not first:
            if not last:
                return None
            suffix = _number(last)
            if suffix and total:
                ranges.append(ByteRange(max(total - suffix, 0), total))
            continue
        start = _number(first)
        if last and _number(last) < start:
            return None  # invalid range-spec: the whole header is ignored
        if start < total:
            stop = total if not last else min(_number(last) + 1, total)
            ranges.append(ByteRange(start, stop))
    if not ranges:
        return UNSATISFIABLE
    ordered = sorted(ranges, key=lambda r: r.start)
    if any(b.start < a.stop for a, b in itertools.pairwise(ordered)):
        return None
    return ranges


def _number(digits: str) -> int:
    """A range number; one of more than ``_MAX_DIGITS`` digits as ``_BEYOND_ANY_BODY``."""
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= _MAX_DIGITS else _BEYOND_ANY_BODY


def _etags(header: str) -> list[tuple[bool, str]] | None:
    """``(weak, opaque)`` for each entity tag of a list; None for ``*``; [] when unreadable."""
    if header.strip() == "*":
        return None
    tags = []
    for item in header.split(","):
        match = _ETAG.fullmatch(item)
        if match is None:
            if item.strip():
                return []
            continue
        tags.append((bool(match.group(1)), match.group(2)))
    return tags


def _opaque(etag: str) -> str:
    return etag.strip().removeprefix("W/").strip('"')


def parse_http_date(value: str) -> dt.datetime | None:
    """An HTTP date (IMF-fixdate, or the obsolete formats) as an aware datetime; None when
    it cannot be read."""
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if parsed is None:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=dt.timezone.utc)


def http_date(when: dt.datetime) -> str:
    """``when`` as an IMF-fixdate, in whole seconds."""
    return email.utils.format_datetime(when.astimezone(dt.timezone.utc), usegmt=True)


def not_modified(
    method: str,
    if_none_match: str | None,
    if_modified_since: str | None,
    etag: str,
    last_modified: dt.datetime | None,
) -> bool:
    """True when the conditions make a ``GET`` or ``HEAD`` a 304 (RFC 9110 §13.1.2, §13.1.3).

    ``If-None-Match`` compares weakly and, when present, makes ``If-Modified-Since`` ignored.
    """
    if method not in ("GET", "HEAD"):
        return False
    if if_none_match is not None:
        tags = _etags(if_none_match)
        if tags is None:
            return True
        return any(opaque == _opaque(etag) for _, opaque in tags)
    if if_modified_since is not None and last_modified is not None:
        since = parse_http_date(if_modified_since)
        if since is not None:
            return last_modified.replace(microsecond=0) <= since
    return False


def if_range_holds(
    if_range: str | None,
    etag: str,
    last_modified: dt.datetime | None,
    now: dt.datetime | None = None,
) -> bool:
    """True when ``Range`` is to be honoured: no ``If-Range``, or one that names the current
    representation (RFC 9110 §13.1.5): an entity tag compared strongly (a weak tag never
    matches), or exactly the ``Last-Modified`` date, when that date is a strong validator:
    at least a second before ``now`` (a file changed twice within one second keeps its date).
    """
    if if_range is None:
        return True
    value = if_range.strip()
    if value.startswith(('"', "W/")):
        match = _ETAG.fullmatch(value)
        return match is not None and not match.group(1) and match.group(2) == _opaque(etag)
    when = parse_http_date(value)
    if when is None or last_modified is None:
        return False
    if now is not None and now - last_modified < STRONG_DATE_AGE:
        return False
    return http_date(last_modified) == http_date(when)


def manifest_etag(kind: str, facts: Iterable[tuple[object, ...]]) -> str:
    """A strong ``ETag`` for a body, from its format and its entries' facts.

    Args:
        kind: The format and its options (``"zip store"``, ``"multipart mixed <boundary>"``).
        facts: Per entry, what decides its bytes: name, size, mtime in nanoseconds, mode,
            media type, and the CRC-32 or digest where known ahead. Nothing local to one
            machine (no inode, device or absolute path).
    """
    digest = hashlib.sha256(f"multiresp {MANIFEST_VERSION} {kind}\n".encode())
    for fact in facts:
        digest.update(repr(fact).encode("utf-8", "surrogatepass") + b"\n")
    return f'"{digest.hexdigest()[:ETAG_DIGEST_CHARS]}"'


def derived_boundary(key: bytes, etag: str) -> str:
    """A multipart boundary fixed by the validator and a key only the servers hold.

    Replicas sharing the key send the same body (so a resumed range fits); anyone without
    the key cannot predict it, so cannot plant it in a file's content.
    """
    mac = hmac.new(key, etag.encode("ascii"), hashlib.sha256).hexdigest()
    return "mr-" + mac[:BOUNDARY_DIGEST_CHARS]


@dataclass(frozen=True, slots=True)
class ByterangesPart:
    """One part of a ``multipart/byteranges`` body: its headers, then the body's bytes."""

    head: bytes
    range: ByteRange


@dataclass(frozen=True, slots=True)
class Byteranges:
    """A ``multipart/byteranges`` body (RFC 9110 §14.6): its parts, closing line and length."""

    content_type: str
    parts: tuple[ByterangesPart, ...]
    close: bytes
    length: int


def byteranges(
    ranges: Iterable[ByteRange], total: int, media_type: str, boundary: str
) -> Byteranges:
    """Frame ``ranges`` of a ``total``-byte body of ``media_type`` as ``multipart/byteranges``.

    ``boundary`` must not occur in the body: take a random one per response.
    """
    parts = []
    length = 0
    for number, byte_range in enumerate(ranges):
        head = (
            ("\r\n" if number else "")
            + f"--{boundary}\r\nContent-Type: {media_type}\r\n"
            + f"Content-Range: {byte_range.content_range(total)}\r\n\r\n"
        ).encode("latin-1")
        parts.append(ByterangesPart(head, byte_range))
        length += len(head) + byte_range.stop - byte_range.start
    close = f"\r\n--{boundary}--\r\n".encode("ascii")
    return Byteranges(
        f"multipart/byteranges; boundary={boundary}", tuple(parts), close, length + len(close)
    )
