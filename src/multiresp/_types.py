"""Value objects shared by the server and the client: limits and saved files."""

from __future__ import annotations

import pathlib
from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """Bounds enforced while receiving files (client downloads and server uploads).

    The defaults protect a caller who passes nothing: at most 10,000 files and 10,000 folders,
    names of at most 1,024 characters and 64 levels, no entry that inflates more than 200 times
    its compressed size, and no transfer whose content is more than 200 times the bytes that
    came over the wire (past its first MiB), whatever Content-Encoding stands between them.

    Attributes:
        max_files: Most entries (files and directories) accepted.
        max_file_size: Largest size of one entry in bytes, or None for no bound.
        max_total_size: Largest sum of entry sizes in bytes, or None for no bound.
        max_compression_ratio: Largest ratio of inflated to compressed bytes for one entry.
        max_name_length: Longest entry name, in characters.
        max_total_ratio: Largest ratio of content bytes (after every decoding layer:
            Content-Encoding, then the entries' own compression) to body bytes received as
            sent, over the whole transfer; enforced once the content passes 1 MiB. None for no
            bound.
        max_folders: Most folders one transfer may create or use under the destination
            (directory entries and the parents of every entry).
        max_depth: Most ``/``-separated segments in an entry name (``a/b/c.txt`` has 3).
    """

    max_files: int = 10_000
    max_file_size: int | None = None
    max_total_size: int | None = None
    max_compression_ratio: float = 200
    max_name_length: int = 1024
    max_total_ratio: float | None = 200
    max_folders: int = 10_000
    max_depth: int = 64


@dataclass(frozen=True, slots=True)
class SavedFile:
    """A file written to disk after its size and checksum were verified.

    Attributes:
        name: The entry's name, a relative POSIX path.
        path: Where it was written.
        size: Its size in bytes.
        sha256: Hex SHA-256 of its content, computed while it was written.
    """

    name: str
    path: pathlib.Path
    size: int
    sha256: str
