"""The errors multiresp raises.

Every error multiresp raises on purpose derives from one base::

    MultirespError
    ├── UnsafeNameError     a name that could escape its directory or is not portable
    ├── LimitExceeded       a Limits bound was crossed                 (HTTP 413)
    ├── IntegrityError      a CRC, size or digest did not match
    ├── ProtocolError       malformed or truncated zip / multipart / HTTP (HTTP 400)
    └── TransferTimeout     too slow: read timeout, deadline or minimum rate (also a TimeoutError)

These are *peer* mistakes: the bytes, names or sizes that came from the other side (or from a
source) were wrong. Programmer mistakes, such as reading an entry's data twice or passing an
unknown compression name, raise the ordinary ``RuntimeError`` / ``ValueError`` / ``TypeError``
instead, so that one ``except MultirespError`` never hides a bug.

Each message names the entry and the rule or bound that failed.
"""

from __future__ import annotations


class MultirespError(Exception):
    """Base class of every error multiresp raises about the data it handles.

    Attributes:
        entry: The name of the entry concerned, when there is one.
    """

    status_code: int = 400

    def __init__(self, message: str, *, entry: str | None = None) -> None:
        super().__init__(message)
        self.entry = entry


class UnsafeNameError(MultirespError, ValueError):
    """A name that could escape its directory or that the platform cannot hold."""


class LimitExceeded(MultirespError):
    """A bound of :class:`multiresp.Limits` was crossed."""

    status_code = 413


class IntegrityError(MultirespError):
    """A CRC-32, size or digest did not match the bytes."""


class ProtocolError(MultirespError):
    """Malformed or truncated zip, multipart or HTTP exchange."""


class TransferTimeout(MultirespError, TimeoutError):
    """A transfer took too long: no byte within the read timeout, past its deadline, or too slow.

    It is also a :class:`TimeoutError`, so that ``except TimeoutError`` tells it apart from a
    malformed response.
    """
