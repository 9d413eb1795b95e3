"""File modes on the client: give back the exec bit a zip recorded, as ``unzip`` does.

A streamed zip records each file's Unix mode in its central directory, which comes after
every entry's data; the zip reader hands the modes over on its ``End`` event, and the file
sink calls :func:`restore_exec_bits` then, on the files it has already renamed into place.
Only the exec bits are given back, and only within the process umask: files keep the
read/write bits they were created with (``0o666`` less the umask), so setuid, setgid, sticky
and any write bit the umask withholds are never set.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Collection, Iterable, Mapping

from ._events import End
from ._types import SavedFile

EXEC_BITS = 0o111
READ_BITS = 0o444
READ_TO_EXEC_SHIFT = 2  # 0o444 >> 2 == 0o111: the exec bit of each class of user
PROC_STATUS = "/proc/self/status"  # Linux: holds "Umask:\t0022" since 4.7
_OPEN_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_CLOEXEC", 0)
)


def process_umask() -> int | None:
    """The process umask, or None where it cannot be read without changing it.

    ``os.umask`` can only be read by setting it, which would race with other threads
    creating files; Linux shows it in ``/proc/self/status``.
    """
    try:
        with open(PROC_STATUS, encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return None


def exec_bits(recorded: int, current: int, umask: int | None) -> int:
    """The exec bits to add to a file of mode ``current`` that an archive recorded as ``recorded``.

    Args:
        recorded: The mode the archive gives the entry.
        current: The permission bits the file has now.
        umask: The process umask; None when unknown, and then a class of user gets the exec
            bit only where it may read the file, which the umask decided when it was created.

    Returns:
        Bits within ``0o111``.
    """
    allowed = ~umask if umask is not None else (current & READ_BITS) >> READ_TO_EXEC_SHIFT
    return recorded & EXEC_BITS & allowed


def restore_exec_bits(
    saved: Iterable[SavedFile], event: object, placed: Collection[tuple[int, int]]
) -> None:
    """Add the exec bits an :class:`End` event records to the files of ``saved``.

    Each file is opened without following a link and without blocking, and changed only if
    it is the very file the transfer wrote (``placed`` holds their device and inode).

    Args:
        saved: The files a transfer wrote.
        event: The reader's last event; nothing is done unless it is an ``End`` with modes.
        placed: ``(st_dev, st_ino)`` of the files the transfer renamed into place.
    """
    if type(event) is not End or not event.modes or not hasattr(os, "fchmod"):
        return  # nothing recorded; or Windows, which has no exec bit
    modes: Mapping[str, int] = dict(event.modes)
    umask = process_umask()
    for file in saved:
        recorded = modes.get(file.name, 0)
        if not recorded & EXEC_BITS:
            continue
        try:
            fd = os.open(file.path, _OPEN_FLAGS)
        except OSError:  # removed, replaced by a link, or unreadable since: leave it
            continue
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) not in placed:
                continue
            current = stat.S_IMODE(st.st_mode)
            added = exec_bits(recorded, current, umask)
            if added & ~current:
                # A file system without Unix modes (FAT, some mounts) refuses: the file stays
                # as it was written, complete and verified, as unzip leaves it.
                try:
                    os.fchmod(fd, current | added)
                except OSError:
                    pass
        finally:
            os.close(fd)
