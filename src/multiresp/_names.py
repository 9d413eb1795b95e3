"""Entry names and Content-Disposition: the one place both sides check them.

An entry name is a relative POSIX path. The server checks it when an :class:`Entry` is built,
the client before anything is written, the upload receiver before a part is saved: all three
call :func:`check_name`. The client also calls :func:`check_portable`, which adds the rules of
the file system it writes to. Content-Disposition is built by :func:`content_disposition` (zip
download names, multipart parts) and read by :func:`parse_content_disposition`.
"""

from __future__ import annotations

import os
import re
import unicodedata
from urllib.parse import quote, unquote_to_bytes

from ._errors import ProtocolError, UnsafeNameError

MAX_SEGMENT_BYTES = 255  # bytes of UTF-8 in one path segment: the limit of ext4, APFS, NTFS
MAX_NAME_BYTES = 0xFFFF  # bytes of UTF-8 in a whole name: a zip header's name length field
UTF8_MAX_CHAR_BYTES = 4  # bytes: the longest UTF-8 encoding of one character
_DRIVE = re.compile(r"^[A-Za-z]:")
# C0 and C1 controls and DEL: a terminal acts on them when a name is printed.
_CONTROLS = "\x00-\x1f\x7f-\x9f"
_CONTROL = re.compile(f"[{_CONTROLS}]")
# Bidirectional embeddings, overrides (U+202A-U+202E) and isolates (U+2066-U+2069): they
# make a printed name read as another one ("exe.txt" shown for "txt.exe").
_BIDI = "\u202a-\u202e\u2066-\u2069"
_BIDI_CONTROL = re.compile(f"[{_BIDI}]")
_SUPERSCRIPT_DIGITS = "\u00b9\u00b2\u00b3"  # ¹ ² ³: Windows reads COM¹ as a device too
_WINDOWS_RESERVED = frozenset(
    ["CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"]
    + [f"{port}{digit}" for port in ("COM", "LPT") for digit in "0123456789" + _SUPERSCRIPT_DIGITS]
)
_WINDOWS_FORBIDDEN = re.compile(r'[<>:"|?*]')
# Non-empty segments of printable characters, no backslash, no leading "/", no drive letter;
# at most one trailing "/". Names that match and have no "." or ".." segment are safe.
_SURROGATES = "\ud800-\udfff"  # lone surrogates: not Unicode text, no UTF-8 encoding
_SEGMENT = f"[^/\\\\{_CONTROLS}{_BIDI}{_SURROGATES}]+"
_PLAIN = re.compile(f"(?![A-Za-z]:){_SEGMENT}(?:/{_SEGMENT})*/?")
_DOT_SEGMENT = re.compile(r"(?:^|/)\.{1,2}(?:/|$)")
# RFC 8187 charsets: a recipient must know UTF-8 and ISO-8859-1, and nothing else is safe to
# look up (Python's codec registry also holds "idna", "punycode", "undefined" and binary codecs).
_EXT_CHARSETS = {"utf-8": "utf-8", "iso-8859-1": "latin-1"}


def check_name(name: str) -> str:
    """Check that ``name`` is a safe relative POSIX path and return it.

    A single trailing ``/`` marks a directory entry and is allowed.

    Args:
        name: The entry name.

    Returns:
        ``name`` unchanged.

    Raises:
        UnsafeNameError: the name is empty, absolute, starts with a drive letter, holds a
            backslash, NUL or another control character (C0, DEL, C1), a bidirectional
            override or isolate (U+202A-U+202E, U+2066-U+2069) or a lone surrogate, is over
            65,535 bytes in UTF-8, or has an empty, ``.`` or ``..`` segment.
    """
    if not isinstance(name, str):
        raise TypeError(f"entry name must be str, not {type(name).__name__}")

    short = len(name) <= MAX_NAME_BYTES // UTF8_MAX_CHAR_BYTES
    if _PLAIN.fullmatch(name) and not _DOT_SEGMENT.search(name):
        if short or len(name.encode("utf-8")) <= MAX_NAME_BYTES:
            return name  # the common case, decided by two C-level scans

    def refuse(rule: str) -> UnsafeNameError:
        return UnsafeNameError(f"unsafe entry name {name!r}: {rule}", entry=name)

    if not name:
        raise refuse("the name is empty")
    if name.startswith("/"):
        raise refuse("absolute paths are not allowed")
    if _DRIVE.match(name):
        raise refuse("drive letters are not allowed")
    if "\\" in name:
        raise refuse("backslashes are not allowed")
    if "\x00" in name:
        raise refuse("NUL is not allowed")
    if _CONTROL.search(name):
        raise refuse("control characters (C0, DEL, C1) are not allowed")
    if _BIDI_CONTROL.search(name):
        raise refuse("bidirectional override and isolate characters are not allowed")
    if re.search(f"[{_SURROGATES}]", name):
        raise refuse("lone surrogates are not allowed (the name is not valid Unicode)")
    if not short and len(name.encode("utf-8")) > MAX_NAME_BYTES:
        raise UnsafeNameError(
            f"unsafe entry name {name[:64]!r}...: {len(name.encode('utf-8'))} bytes of UTF-8,"
            f" over the {MAX_NAME_BYTES} a zip header can hold",
            entry=name,
        )
    body = name[:-1] if name.endswith("/") else name
    for segment in body.split("/"):
        if segment in ("", ".", ".."):
            raise refuse(f"empty, '.' and '..' segments are not allowed (segment {segment!r})")
    return name


def check_portable(name: str, *, max_length: int = 1024, windows: bool | None = None) -> str:
    """Check that ``name`` is safe (:func:`check_name`) and that this platform can hold it.

    Args:
        name: The entry name.
        max_length: Longest name accepted, in characters.
        windows: Apply the rules of Windows file systems; defaults to ``os.name == "nt"``.

    Returns:
        ``name`` unchanged.

    Raises:
        UnsafeNameError: the name is unsafe, too long, has a segment longer than 255 bytes, or
            (on Windows) uses a reserved device name (``CON``, ``PRN``, ``AUX``, ``NUL``,
            ``CONIN$``, ``CONOUT$``, ``COM0``-``COM9``, ``LPT0``-``LPT9`` and their ``¹²³``
            forms, in any case, with any extension) or a character Windows forbids.
    """
    check_name(name)
    if len(name) > max_length:
        raise UnsafeNameError(
            f"entry name {name[:64]!r}... is {len(name)} characters,"
            f" over the limit of {max_length}",
            entry=name,
        )
    if windows is None:
        windows = os.name == "nt"
    for segment in name.rstrip("/").split("/"):
        if len(segment.encode("utf-8")) > MAX_SEGMENT_BYTES:
            raise UnsafeNameError(
                f"entry name {name!r}: segment over {MAX_SEGMENT_BYTES} bytes", entry=name
            )
        if windows:
            stem = segment.split(".")[0].upper().rstrip(" ")
            if stem in _WINDOWS_RESERVED:
                raise UnsafeNameError(
                    f"entry name {name!r}: {segment!r} is a reserved device name", entry=name
                )
            if _WINDOWS_FORBIDDEN.search(segment) or segment.endswith((" ", ".")):
                raise UnsafeNameError(
                    f"entry name {name!r}: {segment!r} cannot be a Windows file name", entry=name
                )
    return name


def check_header_value(value: str, what: str) -> str:
    """Refuse CR, LF and NUL, which would let a value break out of its HTTP header."""
    if any(c in value for c in "\r\n\x00"):
        raise UnsafeNameError(f"{what} {value!r}: CR, LF and NUL are not allowed in a header")
    return value


def _ascii_fallback(filename: str) -> str:
    decomposed = unicodedata.normalize("NFKD", filename)
    ascii_only = "".join(
        c if " " <= c < "\x7f" else "_" for c in decomposed if not unicodedata.combining(c)
    )
    # Readers strip blanks around a quoted name (the email package does): never rely on them.
    return ascii_only.replace("\\", "_").replace('"', "_").strip() or "_"


def content_disposition(
    filename: str, disposition: str = "attachment", *, field: str | None = None
) -> str:
    """Build a ``Content-Disposition`` value for ``filename``.

    For ``attachment`` and ``inline``, ASCII names go in a quoted ``filename=``; other names
    get an ASCII fallback in ``filename=`` followed by the exact name in
    ``filename*=UTF-8''...`` (RFC 6266, 8187). For ``form-data`` (RFC 7578) it is
    ``form-data; name="field"; filename="..."``: quoted UTF-8 with ``"`` and ``\\`` escaped as
    quoted-pairs, and no ``filename*``, which RFC 7578 forbids (python-multipart, so Starlette
    and FastAPI, the ``email`` package and multiresp read the escapes back; browsers write
    ``%22`` instead, which these readers hand on as the three characters ``%22``).

    Args:
        filename: The name to announce.
        disposition: ``attachment``, ``inline`` or ``form-data``.
        field: The form field's name; required for ``form-data``.

    Returns:
        The header value.

    Raises:
        UnsafeNameError: the name holds CR, LF or NUL.
        ValueError: ``form-data`` without a ``field``.
    """
    check_header_value(filename, "file name")
    if disposition == "form-data":
        if field is None:
            raise ValueError("a form-data disposition needs the field's name")
        return f"form-data; name={_quoted(field)}; filename={_quoted(filename)}"
    fallback = _ascii_fallback(filename)
    value = f'{disposition}; filename="{fallback}"'
    if fallback != filename:
        # After the fallback, as RFC 6266 appendix D advises: agents that do not know
        # filename* ignore it there. (Python's email package keeps only the first parameter
        # and so reports the fallback; read filename* yourself with it.)
        value += f"; filename*=UTF-8''{quote(filename, safe='')}"
    return value


def _quoted(value: str) -> str:
    """A quoted string with ``"`` and ``\\`` escaped as quoted-pairs (RFC 9110)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


_PARAM = re.compile(
    r';\s*([!#$%&\'*+.^_`|~0-9A-Za-z-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)', re.DOTALL
)
# The shape nearly every form upload and multipart part has: a kind, then ``name="..."`` and
# optionally ``filename="..."``, quoted, with no backslash to unescape. Read in one match;
# anything else goes through _PARAM (both give the same result where this one matches).
_SIMPLE_PARAMS = re.compile(r'([^;]*);[ \t]*name="([^"\\]*)"(?:;[ \t]*filename="([^"\\]*)")?')


def decode_ext_value(value: str) -> str:
    """Decode an RFC 8187 extended value, ``charset'language'percent-encoded``.

    Only the charsets RFC 8187 names, UTF-8 and ISO-8859-1 (any case), are accepted; an
    empty charset is read as UTF-8.

    Raises:
        ProtocolError: the value is not an extended value, names another charset, or its
            bytes are not valid in its charset.
    """
    charset, quote1, tail = value.partition("'")
    _, quote2, encoded = tail.partition("'")
    if not (quote1 and quote2):
        raise ProtocolError(f"{value[:64]!r} is not an RFC 8187 value (charset'lang'value)")
    codec = _EXT_CHARSETS.get(charset.lower() or "utf-8")
    if codec is None:
        raise ProtocolError(
            f"charset {charset[:32]!r} in {value[:64]!r}: only UTF-8 and ISO-8859-1 are"
            " accepted (RFC 8187)"
        )
    try:
        return unquote_to_bytes(encoded).decode(codec)
    except UnicodeDecodeError:
        raise ProtocolError(f"{value[:64]!r} is not valid {charset}") from None


def parse_header_params(value: str, *, strict: bool = False) -> tuple[str, dict[str, str]]:
    """Split a header value such as ``attachment; filename="a.txt"`` into kind and params.

    Parameter names are lower-cased; quoted strings are unquoted; ``name*`` values
    (RFC 8187, ``charset'lang'percent-encoded``) are decoded with :func:`decode_ext_value`
    and stored under ``name*``.

    Args:
        value: The header value.
        strict: Raise on an extended value that cannot be decoded. When False it is left
            out, as RFC 6266 asks of a recipient that cannot read it.

    Raises:
        ProtocolError: (``strict`` only) an extended value that cannot be decoded.
    """
    simple = _SIMPLE_PARAMS.fullmatch(value)
    if simple is not None:
        kind, name, filename = simple.groups()
        params = {"name": name} if filename is None else {"name": name, "filename": filename}
        return kind.strip().lower(), params
    return _parse_params(value, strict=strict)


def _parse_params(value: str, *, strict: bool) -> tuple[str, dict[str, str]]:
    """:func:`parse_header_params` for any value, without the fast path."""
    kind, _, rest = value.partition(";")
    params: dict[str, str] = {}
    for match in _PARAM.finditer(";" + rest):
        key, raw = match.group(1).lower(), match.group(2).strip()
        if raw.startswith('"') and raw.endswith('"') and len(raw) >= 2:
            raw = raw[1:-1]
            if "\\" in raw:  # a quoted-pair; most values have none
                raw = re.sub(r"\\(.)", r"\1", raw)
        if key.endswith("*"):
            try:
                raw = decode_ext_value(raw)
            except ProtocolError as error:
                if strict:
                    raise ProtocolError(f"parameter {key}: {error}") from None
                continue
        params.setdefault(key, raw)
    return kind.strip().lower(), params


def parse_content_disposition(value: str) -> tuple[str, str | None]:
    """Read the disposition and file name from a ``Content-Disposition`` value.

    ``filename*`` is preferred over ``filename``. The name is returned as sent; callers check
    it with :func:`check_name` before using it.

    Returns:
        ``(disposition, filename or None)``.

    Raises:
        ProtocolError: an extended parameter (``filename*``) names a charset other than UTF-8
            or ISO-8859-1, or its bytes are not valid in its charset.
    """
    kind, params = parse_header_params(value, strict=True)
    return kind, params.get("filename*", params.get("filename"))
