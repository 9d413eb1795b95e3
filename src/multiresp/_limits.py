"""The one tracker of :class:`~multiresp.Limits` bounds that both readers share.

How it works: a reader makes one :class:`LimitTracker` and tells it, for each entry, that the
entry begins (:meth:`~LimitTracker.admit`, with its name, before its ``EntryStart``), what size
its header declares (:meth:`~LimitTracker.declare`), and each piece of content before it hands
the piece out (:meth:`~LimitTracker.grow`); the zip reader also shows it each step of a
deflated entry (:meth:`~LimitTracker.check_ratio`). The tracker raises
:class:`~multiresp.LimitExceeded` naming the entry and the bound, so the zip and multipart
readers refuse the same entry at the same bound with the same words.

Where each bound is checked:

- ``max_files``, ``max_name_length``, ``max_depth``, ``max_file_size``, ``max_total_size``
  and ``max_compression_ratio``: here, as the readers stream.
- ``max_total_ratio``: in ``BodyDecoder`` (``_decoding.py``), the only place that sees the
  body's bytes as sent, before its Content-Encoding is undone.
- ``max_folders``: in ``FileSink`` (``_sink.py``), which keeps the set of folders a transfer
  uses to refuse names that clash with them.

The module is pure: no I/O, no clock.
"""

from __future__ import annotations

from ._errors import LimitExceeded
from ._names import check_name
from ._types import Limits

RATIO_FLOOR = 1 << 20  # bytes of one entry's content before max_compression_ratio applies
SHOWN_NAME_MAX = 64  # characters of an over-long name quoted in an error message


def _shown(name: str) -> str:
    return repr(name if len(name) <= SHOWN_NAME_MAX else name[:SHOWN_NAME_MAX] + "...")


class LimitTracker:
    """Counts entries and content bytes of one transfer against its :class:`Limits`.

    Args:
        limits: The bounds to hold.

    Attributes:
        limits: The bounds.
        entries: Entries admitted so far.
        total: Content bytes counted so far, all entries.
    """

    __slots__ = ("_sized", "entries", "limits", "total")

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.entries = 0
        self.total = 0
        self._sized = limits.max_file_size is not None or limits.max_total_size is not None

    def admit(self, name: str) -> None:
        """An entry begins: check its name (length, the name rule, depth) and count it.

        Raises:
            LimitExceeded: ``max_name_length``, ``max_files`` or ``max_depth`` is crossed.
            UnsafeNameError: the name could escape its folder (:func:`check_name`).
        """
        limits = self.limits
        if len(name) > limits.max_name_length:
            raise LimitExceeded(
                f"entry {_shown(name)} has a name of {len(name)} characters, over the limit of"
                f" {limits.max_name_length} (max_name_length)",
                entry=name,
            )
        check_name(name)
        self.entries += 1
        if self.entries > limits.max_files:
            raise LimitExceeded(
                f"entry {name!r} is entry number {self.entries}, over the limit of"
                f" {limits.max_files} entries (max_files)",
                entry=name,
            )
        depth = name.rstrip("/").count("/") + 1
        if depth > limits.max_depth:
            raise LimitExceeded(
                f"entry {name!r} is {depth} levels deep, over the limit of {limits.max_depth}"
                " (max_depth)",
                entry=name,
            )

    def declare(self, name: str, size: int) -> None:
        """The entry just admitted declares ``size`` bytes of content: check it in advance.

        Raises:
            LimitExceeded: ``max_file_size`` or ``max_total_size`` would be crossed.
        """
        if self._sized:
            self._check(name, size, self.total + size, "declares")

    def grow(self, name: str, size: int, added: int) -> None:
        """Count ``added`` bytes of content about to be handed out; the entry then has ``size``.

        Raises:
            LimitExceeded: ``max_file_size`` or ``max_total_size`` is crossed.
        """
        self.total += added
        if self._sized:
            self._check(name, size, self.total, "reaches")

    def check_ratio(self, name: str, compressed: int, size: int) -> None:
        """An entry inflated ``compressed`` bytes to ``size``: hold it to the ratio.

        Raises:
            LimitExceeded: past its first :data:`RATIO_FLOOR` bytes, the entry inflates more
                than ``max_compression_ratio`` times.
        """
        ratio = self.limits.max_compression_ratio
        if size > RATIO_FLOOR and size > ratio * compressed:
            raise LimitExceeded(
                f"entry {name!r} inflates {compressed} bytes to more than {size}: over the"
                f" compression ratio limit of {ratio:g} (max_compression_ratio)",
                entry=name,
            )

    def _check(self, name: str, size: int, total: int, verb: str) -> None:
        limits = self.limits
        if limits.max_file_size is not None and size > limits.max_file_size:
            raise LimitExceeded(
                f"entry {name!r} {verb} {size} bytes, over the limit of {limits.max_file_size}"
                " bytes per entry (max_file_size)",
                entry=name,
            )
        if limits.max_total_size is not None and total > limits.max_total_size:
            raise LimitExceeded(
                f"entry {name!r} brings the transfer to {total} bytes, over the limit of"
                f" {limits.max_total_size} bytes in all (max_total_size)",
                entry=name,
            )
