"""Pure incremental multipart decoder (RFC 2046 framing, RFC 6266 and RFC 7578 names).

Nothing here does I/O: the reader turns bytes into events (:mod:`multiresp._events`), and
:class:`~multiresp._decoding.BodyDecoder` drives it for downloads and uploads alike. Its writer
twin is :mod:`multiresp._multipart`.
"""

# How this works
# --------------
# The reader keeps one buffer (the bytes received and not yet handed out) and a position in
# it, and moves through the states PREAMBLE -> BOUNDARY -> HEADERS -> [BODY] -> SCAN or DATA
# -> BOUNDARY ... -> CLOSED -> DONE. It starts with a CRLF already in the buffer, so the first
# delimiter looks like every other one: CRLF "--" BOUNDARY. A part that declared its
# Content-Length is handed over without looking at its bytes (DATA), and the delimiter is then
# required right after them; a part without one is searched for the delimiter with
# ``bytes.find`` (SCAN), and everything that cannot be the start of a delimiter is handed out
# at once, as slices of the read. So the buffer holds at most one read plus a delimiter (in
# HEADERS, at most ``max_header_bytes``). When the buffer was fully consumed, the next read
# becomes the buffer as it is (no copy); only a leftover is ever joined with new bytes.
#
# The cost per part, not the scanning, bounds many small parts: the usual header blocks are
# read in one match, states are module globals, and error messages are built only on error.

from __future__ import annotations

import binascii
import enum
import re
from typing import Protocol

from ._errors import IntegrityError, LimitExceeded, MultirespError, ProtocolError
from ._events import NEED_DATA, Data, End, EntryEnd, EntryStart, Event, _Sentinel
from ._limits import LimitTracker
from ._multipart import _CRLF, _HEADERS_END, _TOKEN, boundary_problem
from ._names import parse_header_params
from ._types import Limits

DEFAULT_MAX_HEADER_BYTES = 16 * 1024  # bytes of header lines in one part, blank line included
DEFAULT_MAX_HEADERS = 32  # header lines in one part
MAX_PREAMBLE_BYTES = 64 * 1024  # bytes ignored before the first delimiter
MAX_EPILOGUE_BYTES = 64 * 1024  # bytes ignored after the closing delimiter
MAX_PADDING_BYTES = 256  # bytes of transport padding (spaces, tabs) after a delimiter
MAX_CONTENT_LENGTH_DIGITS = 20  # digits in a part's Content-Length (2**64 has 20)
# bytes held over that are joined with the next read into a new bytes object; a longer
# leftover (a part's headers arriving in small reads) goes into a bytearray, grown in place
MAX_BYTES_JOIN = 4 * 1024

_DASH = 0x2D  # "-"
_CR = 0x0D
_LF = 0x0A
_PADDING = (0x20, 0x09)  # space, horizontal tab
# name ":" OWS value; the value cannot start with a space, so that a failed match does not
# backtrack through the leading spaces once for each of them.
_HEADER_LINE = re.compile(r"([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*([^ \t\r\n\x00][^\r\n\x00]*)?")
_SINGLE_HEADERS = frozenset(
    {"content-disposition", "content-type", "content-length", "content-transfer-encoding"}
)
# The headers a browser writes for a file input (RFC 7578), and for a text field (no
# Content-Type): read in one match, the same headers and values as line by line.
_USUAL_HEADERS = re.compile(
    "Content-Disposition:[ \t]*([^\r\n\x00]*)(?:\r\nContent-Type:[ \t]*([^\r\n\x00]*))?"
)
# header names as browsers and this writer spell them: tokens, so no need to match _TOKEN
_USUAL_HEADER_NAMES = frozenset(
    {"Content-Disposition", "Content-Type", "Content-Length", "Content-Transfer-Encoding"}
)
_DIGITS = re.compile(rf"[0-9]{{1,{MAX_CONTENT_LENGTH_DIGITS}}}")
_IDENTITY_ENCODINGS = frozenset({"binary", "8bit", "7bit"})
MAX_QP_LINE = 64 << 10  # bytes in one quoted-printable line (RFC 2045 asks for at most 76)
_BASE64_WHITESPACE = b" \t\r\n"
_BASE64_GROUPS = re.compile(rb"[A-Za-z0-9+/]*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")
_QP_BAD_ESCAPE = re.compile(rb"=(?![0-9A-Fa-f]{2}|[ \t]*\r?\n)")
_QP_LINE_END = re.compile(rb"(=?)[ \t]*(\r?\n)")
# shared-mime-info types of files that are neither regular files nor directories
_SPECIAL_FILE_TYPES = frozenset(
    {"inode/symlink", "inode/blockdevice", "inode/chardevice", "inode/fifo", "inode/socket"}
)


def boundary_from_content_type(content_type: str) -> str:
    """Read the boundary from a ``multipart/*`` Content-Type value.

    Args:
        content_type: The header value, e.g. ``multipart/mixed; boundary="a b"``.

    Returns:
        The boundary, unquoted.

    Raises:
        ProtocolError: the media type is not ``multipart/<subtype>``, or the boundary is
            missing or breaks RFC 2046.
    """
    kind, params = parse_header_params(content_type)
    maintype, _, subtype = kind.partition("/")
    if maintype != "multipart" or not _TOKEN.fullmatch(subtype):
        raise ProtocolError(f"Content-Type {content_type!r} is not multipart/<subtype>")
    boundary = params.get("boundary")
    if boundary is None:
        raise ProtocolError(f"Content-Type {content_type!r} has no boundary parameter")
    problem = boundary_problem(boundary)
    if problem is not None:
        raise ProtocolError(f"Content-Type {content_type!r}: the boundary {problem}")
    return boundary


# -- Content-Transfer-Encoding (RFC 2045) --------------------------------------------------------
#
# Mail software writes parts in base64 or quoted-printable. A decoder takes the part's bytes in
# pieces of any size and gives back what can be decoded so far, holding back only what the
# next piece may complete: at most 3 bytes of a base64 group, or the end of a quoted-printable
# line that may still turn out to be trailing whitespace or a soft line break (less than
# MAX_QP_LINE bytes). Anything that is not valid in the encoding is a ProtocolError: a mangled
# part is refused, never decoded to something else.


class _Decoder(Protocol):
    def decode(self, data: bytes) -> bytes: ...

    def finish(self) -> bytes: ...


class _Base64Decoder:
    """RFC 2045 section 6.8: whitespace and line breaks are ignored, padding ends the data."""

    __slots__ = ("_held", "_padded", "_where")

    def __init__(self, where: str) -> None:
        self._where = where
        self._held = b""
        self._padded = False

    def decode(self, data: bytes) -> bytes:
        data = data.translate(None, _BASE64_WHITESPACE)
        if not data:
            return b""
        if self._padded:
            raise self._error("data after the base64 padding")
        if self._held:
            data = self._held + data
        cut = len(data) - len(data) % 4
        groups, self._held = data[:cut], data[cut:]
        if not _BASE64_GROUPS.fullmatch(groups):
            raise self._error("a character outside the base64 alphabet, or padding inside")
        self._padded = groups.endswith(b"=")
        return binascii.a2b_base64(groups)

    def finish(self) -> bytes:
        if self._held:
            raise self._error(f"the base64 data ends in an incomplete group {self._held!r}")
        return b""

    def _error(self, what: str) -> ProtocolError:
        return ProtocolError(f"{self._where}: {what} (Content-Transfer-Encoding base64)")


class _QuotedPrintableDecoder:
    """RFC 2045 section 6.7: ``=XX`` escapes, ``=`` soft line breaks, trailing blanks dropped.

    A hard line break stays what it is on the wire (CRLF, the canonical form; a bare LF is
    kept too), as the email package's own reader gives it back.
    """

    __slots__ = ("_held", "_line", "_where")

    def __init__(self, where: str) -> None:
        self._where = where
        self._held = b""
        self._line = 0  # bytes of the line in progress

    def decode(self, data: bytes) -> bytes:
        self._count_lines(data)
        if self._held:
            data = self._held + data
        # Hold back what the next piece may complete: blanks and a CR that a line break may
        # follow, and a "=" (with its first hex digit) that may begin an escape or soft break.
        ready = data.rstrip(b" \t\r")
        if ready.endswith(b"="):
            ready = ready[:-1]
        elif ready[-2:-1] == b"=":
            ready = ready[:-2]
        self._held = data[len(ready) :]
        return self._decode_lines(ready)

    def _count_lines(self, data: bytes) -> None:
        """Refuse a line over MAX_QP_LINE bytes, wherever the pieces were cut."""
        lines = data.split(b"\n")
        longest = self._line + len(lines[0])
        if len(lines) > 1:
            longest = max(longest, *map(len, lines[1:]))
            self._line = len(lines[-1])
        else:
            self._line = longest
        if longest > MAX_QP_LINE:
            raise self._error(f"a line over {MAX_QP_LINE} bytes")

    def finish(self) -> bytes:
        # The part's last line ends where the delimiter's CRLF begins: its trailing blanks go,
        # and a final "=" is a soft line break. (A CR held back in case an LF followed is
        # data, as anywhere else in a line.)
        held, self._held = self._held.rstrip(b" \t"), b""
        if held.endswith(b"="):
            held = held[:-1]
        return self._decode_lines(held)

    def _decode_lines(self, data: bytes) -> bytes:
        if b"=" in data and (bad := _QP_BAD_ESCAPE.search(data)) is not None:
            shown = data[bad.start() : bad.start() + 3]
            raise self._error(f"{shown!r} is neither an =XX escape nor a soft line break")
        if b"\n" in data:
            data = _QP_LINE_END.sub(_qp_line_end, data)
        return binascii.a2b_qp(data) if b"=" in data else data

    def _error(self, what: str) -> ProtocolError:
        return ProtocolError(f"{self._where}: {what} (Content-Transfer-Encoding quoted-printable)")


def _qp_line_end(match: re.Match[bytes]) -> bytes:
    # a soft line break goes; a hard one stays, without the blanks before it
    return b"" if match.group(1) else match.group(2)


_DECODERS: dict[str, type[_Base64Decoder] | type[_QuotedPrintableDecoder]] = {
    "base64": _Base64Decoder,
    "quoted-printable": _QuotedPrintableDecoder,
}


class _State(enum.Enum):
    PREAMBLE = enum.auto()  # looking for the first delimiter
    BOUNDARY = enum.auto()  # at a delimiter; its line decides: another part, or the end
    HEADERS = enum.auto()  # at the CRLF that ends a delimiter line, before a part's headers
    BODY = enum.auto()  # at the blank line's CRLF, in a part without Content-Length
    SCAN = enum.auto()  # in the content of a part without Content-Length: find the delimiter
    DATA = enum.auto()  # in the content of a part with Content-Length: count its bytes
    CLOSED = enum.auto()  # the closing delimiter was read; End is next
    DONE = enum.auto()  # End was given; the epilogue is being dropped


# The states as module globals: looking a member up on its Enum class costs a call each time.
_S_PREAMBLE, _S_BOUNDARY, _S_HEADERS, _S_BODY, _S_SCAN, _S_DATA, _S_CLOSED, _S_DONE = _State


class MultipartReader:
    """Decode a multipart body incrementally, h11 style.

    Feed bytes with :meth:`receive_data` and take events with :meth:`next_event` until it
    returns ``NEED_DATA`` (feed more) or :class:`End` (which it then keeps returning). For
    each part the events are one :class:`EntryStart`, any number of :class:`Data`, one
    :class:`EntryEnd`. It follows the readers' contract (:mod:`multiresp._events`), as
    ``ZipReader`` does.

    Example::

        reader = MultipartReader(boundary_from_content_type(content_type))
        for chunk in [*chunks, b""]:  # b"": the body ended
            reader.receive_data(chunk)
            while (event := reader.next_event()) is not NEED_DATA:
                if isinstance(event, End):
                    return
                ...  # EntryStart, Data, EntryEnd
    """

    __slots__ = (
        "_buf",
        "_declared",
        "_decoded",
        "_decoder",
        "_delimiter",
        "_delimiter_crlf",
        "_eof",
        "_error",
        "_header_scanned",
        "_is_dir",
        "_max_header_bytes",
        "_max_headers",
        "_name",
        "_parts",
        "_pos",
        "_received",
        "_skipped",
        "_state",
        "_tracker",
    )

    def __init__(
        self,
        boundary: str,
        *,
        limits: Limits | None = None,
        max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
        max_headers: int = DEFAULT_MAX_HEADERS,
    ) -> None:
        """Prepare to read a body.

        Args:
            boundary: The boundary, from :func:`boundary_from_content_type`.
            limits: Bounds on part count (``max_files``), part size (``max_file_size``), the
                sum of part sizes (``max_total_size``), name length (``max_name_length``) and
                depth (``max_depth``), held by one :class:`~multiresp._limits.LimitTracker`;
                the defaults of :class:`Limits` when None.
            max_header_bytes: Most bytes of header lines in one part, blank line included.
            max_headers: Most header lines in one part.

        Raises:
            ValueError: the boundary breaks RFC 2046, or a bound is not positive.
        """
        problem = boundary_problem(boundary)
        if problem is not None:
            raise ValueError(f"multipart boundary {boundary!r} {problem}")
        if max_header_bytes < 1 or max_headers < 1:
            raise ValueError("max_header_bytes and max_headers must be positive")
        self._delimiter = b"\r\n--" + boundary.encode("ascii")
        self._delimiter_crlf = self._delimiter + _CRLF  # the usual line before another part
        self._tracker = LimitTracker(limits if limits is not None else Limits())
        self._max_header_bytes = max_header_bytes
        self._max_headers = max_headers
        self._buf: bytes | bytearray = _CRLF
        self._pos = 0
        self._eof = False
        self._error: MultirespError | None = None
        self._state = _S_PREAMBLE
        self._skipped = -len(_CRLF)  # preamble or epilogue bytes dropped (not the CRLF above)
        self._header_scanned = 0  # bytes of the current header block searched already
        self._parts = 0
        self._name: str | None = None  # the open part
        self._declared: int | None = None
        self._received = 0  # bytes of the open part's body read (encoded, if it is)
        self._decoder: _Decoder | None = None  # the open part's Content-Transfer-Encoding
        self._decoded = 0  # content bytes of the open part handed out (after decoding)
        self._is_dir = False

    def receive_data(self, data: bytes) -> None:
        """Add bytes received; ``b""`` marks the end of the body.

        Raises:
            RuntimeError: bytes after the end of the body was marked.
            MultirespError: the error an earlier call raised (the reader stopped there).
        """
        if self._error is not None:
            raise self._error
        if not data:
            self._eof = True
            return
        if self._eof:
            raise RuntimeError("receive_data() called with bytes after the end of input")
        if not isinstance(data, bytes):
            data = bytes(data)
        if self._state is _S_DONE:
            self._skipped += len(data)
            return
        buf, pos = self._buf, self._pos
        if pos >= len(buf):
            self._buf = data
        elif isinstance(buf, bytearray):
            del buf[:pos]
            buf += data
        elif len(buf) - pos <= MAX_BYTES_JOIN:
            self._buf = buf[pos:] + data
        else:
            joined = bytearray(memoryview(buf)[pos:])
            joined += data
            self._buf = joined
        self._pos = 0

    def next_event(self) -> Event | _Sentinel:
        """Return the next event, or ``NEED_DATA`` when more bytes are needed.

        Follows the readers' contract (:mod:`multiresp._events`): never ``NEED_DATA`` once the
        end of input was marked; after :class:`End`, :class:`End` again (an epilogue of up to
        64 KiB is dropped); after an error, that error again.

        Raises:
            ProtocolError: a malformed or truncated body, a part without a name, a symlink or
                device part, a header that cannot be read.
            IntegrityError: a part whose bytes disagree with its Content-Length.
            LimitExceeded: a bound of ``limits``, ``max_header_bytes`` or ``max_headers``.
            UnsafeNameError: a part's name could escape its directory.
        """
        if self._error is not None:
            raise self._error
        event: Event | _Sentinel | None
        try:
            while True:  # the states in the order of how often they are met
                state = self._state
                if state is _S_SCAN:
                    event = self._scan_event()
                elif state is _S_BOUNDARY:
                    event = self._boundary_event()
                elif state is _S_HEADERS:
                    return self._headers_event()
                elif state is _S_DATA:
                    event = self._sized_event()
                elif state is _S_BODY:
                    event = self._body_start()
                elif state is _S_PREAMBLE:
                    event = self._skip_preamble()
                else:
                    return self._end()
                if event is not None:
                    return event
        except MultirespError as exc:
            self._error = exc
            raise

    # -- the states ----------------------------------------------------------------------

    def _end(self) -> End:
        """After the closing delimiter: End, and then drop the epilogue, up to its bound."""
        if self._state is _S_CLOSED:
            self._skipped = len(self._buf) - self._pos
            self._buf, self._pos = b"", 0
            self._state = _S_DONE
            return End()
        self._buf, self._pos = b"", 0
        if self._skipped > MAX_EPILOGUE_BYTES:
            raise ProtocolError(
                f"multipart epilogue over {MAX_EPILOGUE_BYTES} bytes after the closing boundary"
            )
        return End()

    def _skip_preamble(self) -> _Sentinel | None:
        """Drop bytes up to the first delimiter; None when it was reached."""
        end = self._buf.find(self._delimiter, self._pos)
        found = end != -1
        if not found:
            end = self._safe_end()
        self._skipped += end - self._pos
        self._pos = end
        if self._skipped > MAX_PREAMBLE_BYTES:
            raise ProtocolError(
                f"multipart preamble over {MAX_PREAMBLE_BYTES} bytes: no boundary"
                f" {self._delimiter[2:].decode('ascii')!r} line found"
            )
        if found:
            self._state = _S_BOUNDARY
            self._skipped = 0
            return None
        if self._eof:
            raise ProtocolError(
                f"multipart body has no boundary {self._delimiter[2:].decode('ascii')!r} line"
            )
        return NEED_DATA

    def _boundary_event(self) -> EntryEnd | _Sentinel | None:
        """Read a delimiter line; close the open part, if any (None when there was none)."""
        if self._buf.startswith(self._delimiter_crlf, self._pos):  # the usual line
            self._pos += len(self._delimiter)
            self._state = _S_HEADERS
        else:
            line = self._delimiter_line()
            if line is None:
                if self._eof:
                    raise ProtocolError(
                        f"multipart body truncated in the boundary line {self._at()}",
                        entry=self._name,
                    )
                return NEED_DATA
            closing, self._pos = line
            self._state = _S_CLOSED if closing else _S_HEADERS
        if self._name is None:
            return None
        event = EntryEnd(name=self._name, size=self._decoded)
        self._name = None
        return event

    def _headers_event(self) -> EntryStart | _Sentinel:
        buf, pos = self._buf, self._pos
        # The block runs from the CRLF that ends the delimiter line to the blank line.
        window_end = pos + len(_CRLF) + self._max_header_bytes
        scanned = self._header_scanned  # not searched again, but for a blank line cut in two
        start = pos + scanned - len(_HEADERS_END) + 1 if scanned >= len(_HEADERS_END) else pos
        end = buf.find(_HEADERS_END, start, window_end)
        if end == -1:
            available = len(buf) - pos
            if available >= window_end - pos:
                raise LimitExceeded(
                    f"multipart part #{self._parts + 1}: headers over {self._max_header_bytes}"
                    " bytes (max_header_bytes)"
                )
            if self._eof:
                raise ProtocolError(
                    f"multipart body truncated in the headers of part #{self._parts + 1}"
                )
            self._header_scanned = available
            return NEED_DATA
        self._header_scanned = 0
        block = buf[pos + len(_CRLF) : end]
        event = self._start_part(block if type(block) is bytes else bytes(block))
        if self._declared is None:
            # Stop at the blank line's CRLF: followed by "--" BOUNDARY, it is a delimiter.
            self._pos = end + len(_CRLF)
            self._state = _S_BODY
            if len(buf) - self._pos >= len(self._delimiter):  # enough bytes to tell now
                self._body_start()
        else:
            self._pos = end + len(_HEADERS_END)
            self._state = _S_DATA
        return event

    def _body_start(self) -> _Sentinel | None:
        """Enter the content of a part without Content-Length; None once decided.

        RFC 2046 lets the CRLF that ends a part's headers be the CRLF of the next delimiter:
        the part is then empty. Every scanning reader sees it so; so does this one.
        """
        buf, pos, delimiter = self._buf, self._pos, self._delimiter
        if len(buf) - pos < len(delimiter) and delimiter.startswith(buf[pos:]):
            if self._eof:
                raise self._truncated()
            return NEED_DATA
        if buf.startswith(delimiter, pos):
            self._state = _S_BOUNDARY
        else:
            self._pos = pos + len(_CRLF)
            self._state = _S_SCAN
        return None

    def _sized_event(self) -> Data | _Sentinel | None:
        """Hand out the next bytes of a part with Content-Length; None once they all were."""
        declared = self._declared
        assert declared is not None
        remaining = declared - self._received
        if remaining == 0:
            return self._part_done()
        if self._pos == len(self._buf):
            if self._eof:
                raise ProtocolError(
                    f"multipart body truncated in part {self._name!r} after"
                    f" {self._received} of the {self._declared} bytes its Content-Length"
                    " declares",
                    entry=self._name,
                )
            return NEED_DATA
        return self._hand_out(min(self._pos + remaining, len(self._buf)))

    def _scan_event(self) -> Data | _Sentinel | None:
        """Hand out the next bytes of a part without Content-Length; None at its delimiter."""
        buf, pos = self._buf, self._pos
        if pos < len(buf):
            end = buf.find(self._delimiter, pos)
            if end != -1:
                if end == pos:
                    return self._part_done()
                if self._decoder is None:  # no decoder to flush: the delimiter line is next
                    self._state = _S_BOUNDARY
                return self._hand_out(end)
            end = self._safe_end()
            if end > pos:
                return self._hand_out(end)
        if self._eof:
            raise self._truncated()
        return NEED_DATA

    # -- helpers -------------------------------------------------------------------------

    def _safe_end(self) -> int:
        """Where the bytes that might begin a delimiter start (the buffer's end if none)."""
        buf, delimiter = self._buf, self._delimiter
        end = len(buf)
        # The boundary holds no CR: only the last CR of the tail can begin a delimiter.
        cr = buf.rfind(b"\r", max(self._pos, end - len(delimiter) + 1))
        if cr != -1 and delimiter.startswith(buf[cr:]):
            return cr
        return end

    def _part_done(self) -> Data | None:
        """The open part's body ended: the decoder's last bytes, or None (go read the boundary)."""
        self._state = _S_BOUNDARY
        decoder, self._decoder = self._decoder, None
        if decoder is not None and (tail := decoder.finish()):
            return self._decoded_data(tail)
        return None

    def _hand_out(self, end: int) -> Data | None:
        buf, pos = self._buf, self._pos
        length = end - pos
        decoder = self._decoder
        if decoder is None:
            self._check_growth(length)
        if isinstance(buf, bytes):
            chunk = buf[pos:end]  # the whole buffer is not copied: bytes slicing returns it
        else:
            with memoryview(buf) as view:
                chunk = view[pos:end].tobytes()
        self._pos = end
        self._received += length
        if decoder is not None:
            decoded = decoder.decode(chunk)
            return self._decoded_data(decoded) if decoded else None
        self._decoded += length
        return Data(chunk)

    def _decoded_data(self, data: bytes) -> Data:
        """Hand out bytes a Content-Transfer-Encoding gave, after checking the limits."""
        self._check_growth(len(data))
        self._decoded += len(data)
        return Data(data)

    def _check_growth(self, length: int) -> None:
        """Count content bytes of the open part against the limits before they are handed out."""
        name = self._name
        assert name is not None
        if self._is_dir:
            raise ProtocolError(f"multipart directory part {name!r} has content", entry=name)
        self._tracker.grow(name, self._decoded + length, length)

    def _delimiter_line(self) -> tuple[bool, int] | None:
        """Match CRLF "--" BOUNDARY, then "--" or padding and CRLF, at the position.

        Returns:
            None when more bytes are needed; else whether it is the closing delimiter, and
            where the line ends (for another part: at its CRLF, which the headers start with).
        """
        buf, pos, delimiter = self._buf, self._pos, self._delimiter
        end = len(buf)
        after = pos + len(delimiter)
        if after > end:
            if not delimiter.startswith(buf[pos:end]):
                raise self._missing_delimiter()
            return None
        if not buf.startswith(delimiter, pos):
            raise self._missing_delimiter()
        if after == end:
            return None
        if buf[after] == _DASH:
            if after + 1 == end:
                return None
            if buf[after + 1] == _DASH:
                return True, after + 2
            raise self._bad_delimiter_line()
        padding_end = after
        stop = min(end, after + MAX_PADDING_BYTES + 1)
        while padding_end < stop and buf[padding_end] in _PADDING:
            padding_end += 1
        if padding_end - after > MAX_PADDING_BYTES:
            raise self._bad_delimiter_line()
        if padding_end == end:
            return None
        if buf[padding_end] != _CR:
            raise self._bad_delimiter_line()
        if padding_end + 1 == end:
            return None
        if buf[padding_end + 1] != _LF:
            raise self._bad_delimiter_line()
        return False, padding_end

    def _at(self) -> str:
        if self._name is not None:
            return f"after part {self._name!r}"
        return "that opens the body" if self._parts == 0 else f"after part #{self._parts}"

    def _truncated(self) -> ProtocolError:
        return ProtocolError(
            f"multipart body truncated in part {self._name!r} after {self._received}"
            " bytes: the closing boundary never came",
            entry=self._name,
        )

    def _missing_delimiter(self) -> MultirespError:
        # Only a part with a Content-Length can get here: the other paths found the delimiter.
        return IntegrityError(
            f"multipart part {self._name!r}: no boundary right after the {self._declared} bytes its"
            " Content-Length declares",
            entry=self._name,
        )

    def _bad_delimiter_line(self) -> ProtocolError:
        return ProtocolError(
            f"multipart boundary line {self._at()} is followed by neither CRLF nor '--'",
            entry=self._name,
        )

    def _start_part(self, block: bytes) -> EntryStart:
        number = self._parts + 1
        headers, known = _parse_headers(block, number, self._max_headers)
        disposition = known.get("content-disposition")
        if disposition is None:
            raise ProtocolError(
                f"multipart part #{number}: no Content-Disposition header, so no name"
            )
        try:
            kind, params = parse_header_params(disposition, strict=True)
        except ProtocolError as error:
            raise ProtocolError(f"multipart part #{number}: Content-Disposition {error}") from None
        # read once, here: as parse_content_disposition does, filename* before filename
        filename = params.get("filename*", params.get("filename"))
        # form-data: a text field has no filename, a file input left empty sends filename=""
        name = filename or params.get("name")
        if name is None:
            raise ProtocolError(
                f"multipart part #{number}: Content-Disposition has neither filename nor name"
            )
        self._tracker.admit(name)
        decoder: _Decoder | None = None
        media_type = framing = None
        if len(known) > 1:  # more than the disposition
            media_type = known.get("content-type")
            if media_type is not None and "inode/" in media_type.lower():
                essence = media_type.partition(";")[0].strip().lower()
                if essence in _SPECIAL_FILE_TYPES:
                    raise ProtocolError(
                        f"multipart part {name!r}: media type {essence!r}; only files and"
                        " directories are accepted",
                        entry=name,
                    )
            encoding = known.get("content-transfer-encoding")
            if encoding is not None:
                decoder = _decoder(encoding, name)
            # With a Content-Transfer-Encoding, Content-Length counts the encoded bytes: it
            # frames the part, and the content's size is known only once it is decoded.
            length = known.get("content-length")
            if length is not None:
                framing = _declared_size(length, name)
        size = framing if decoder is None else None
        is_dir = name.endswith("/")
        if is_dir and framing:
            raise ProtocolError(
                f"multipart part {name!r}: a directory part declares {framing} bytes", entry=name
            )
        if size is not None:
            self._tracker.declare(name, size)
        self._parts = number
        self._name, self._declared, self._received, self._is_dir = name, framing, 0, is_dir
        self._decoder, self._decoded = decoder, 0
        return EntryStart(
            name=name,
            size=size,
            media_type=media_type,
            is_dir=is_dir,
            headers=headers,
            disposition=kind,
            filename=filename,
        )


def _decoder(encoding: str, name: str) -> _Decoder | None:
    """The decoder of a part's Content-Transfer-Encoding; None for the identity encodings."""
    if encoding.lower() in _IDENTITY_ENCODINGS:
        return None
    decoder_type = _DECODERS.get(encoding.lower())
    if decoder_type is None:
        raise ProtocolError(
            f"multipart part {name!r}: Content-Transfer-Encoding {encoding!r} is not supported"
            " (only base64, quoted-printable, 7bit, 8bit and binary)",
            entry=name,
        )
    return decoder_type(f"multipart part {name!r}")


def _declared_size(value: str, name: str) -> int:
    """A part's Content-Length as a number."""
    if not _DIGITS.fullmatch(value):
        raise ProtocolError(
            f"multipart part {name!r}: Content-Length {value!r} is not a size", entry=name
        )
    return int(value)


def _parse_headers(
    block: bytes, number: int, max_headers: int
) -> tuple[tuple[tuple[str, str], ...], dict[str, str]]:
    """Read the header block of part number ``number`` (lines joined by CRLF, no blank line).

    Returns:
        Every header as (lower-cased name, value), and the headers this reader acts on by
        name, each of which may appear only once.
    """
    try:
        text = block.decode("utf-8")
    except UnicodeDecodeError as error:
        _check_header_count(block.count(_CRLF) + 1, number, max_headers)
        broken = block[: error.start].rpartition(_CRLF)[2].partition(b":")[0]
        raise ProtocolError(
            f"multipart part #{number}: header {broken.decode('ascii', 'replace')!r} is not UTF-8"
        ) from None
    if not text:
        return (), {}
    usual = _USUAL_HEADERS.fullmatch(text)
    if usual is not None and (usual[2] is None or max_headers > 1):
        disposition = usual[1].rstrip(" \t")
        if usual[2] is None:
            return (("content-disposition", disposition),), {"content-disposition": disposition}
        media_type = usual[2].rstrip(" \t")
        return (
            ("content-disposition", disposition),
            ("content-type", media_type),
        ), {"content-disposition": disposition, "content-type": media_type}
    lines = text.split("\r\n")
    _check_header_count(len(lines), number, max_headers)
    headers: list[tuple[str, str]] = []
    known: dict[str, str] = {}
    for line in lines:
        # A printable line (so no CR, LF, NUL, nor tab) whose name is a token is read with
        # string methods, a few times faster than _HEADER_LINE, which reads the others: it
        # accepts the same lines, and names the fault of the others.
        name, colon, value = line.partition(":")
        if colon and line.isprintable() and (name in _USUAL_HEADER_NAMES or _TOKEN.fullmatch(name)):
            value = value.strip(" ")
        else:
            match = _HEADER_LINE.fullmatch(line)
            if match is None:
                raise _bad_header_line(line, number)
            name, value = match[1], (match[2] or "").rstrip(" \t")
        name = name.lower()
        headers.append((name, value))
        if name in _SINGLE_HEADERS:
            if name in known:
                raise ProtocolError(f"multipart part #{number}: more than one {name} header")
            known[name] = value
    return tuple(headers), known


def _check_header_count(lines: int, number: int, max_headers: int) -> None:
    if lines > max_headers:
        raise LimitExceeded(
            f"multipart part #{number}: {lines} header lines, over {max_headers} (max_headers)"
        )


def _bad_header_line(line: str, number: int) -> ProtocolError:
    label = f"multipart part #{number}"
    if line[:1] in (" ", "\t"):
        return ProtocolError(f"{label}: folded header line {line[:64]!r}")
    if any(c in line for c in "\r\n\x00"):
        return ProtocolError(f"{label}: CR, LF or NUL in header line {line[:64]!r}")
    return ProtocolError(f"{label}: malformed header line {line[:64]!r}")
