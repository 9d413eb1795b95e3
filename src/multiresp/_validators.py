"""What a body knows before its first byte: its exact size, its plan and its validators.

How it works: when every size is known, the archive's exact length is computed from the
entries' facts alone (:func:`predict_zip_size`); when every source can also be read again, the
body has a plan (:mod:`multiresp._plan`) and is sent byte for byte alike each time, so it gets
a strong ETag (a hash of the manifest from :func:`_facts`: names, sizes, mtimes, modes, media
types and each source's identity, never an inode or absolute path) and a Last-Modified
(:func:`_newest`), held with the plan in a :class:`_Ranged`. A multipart body's fixed boundary
is derived with :func:`boundary_key`, shared by replicas through ``MULTIRESP_BOUNDARY_KEY``. No
I/O beyond reading that variable.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass

from ._encoders import _ZipEncoder
from ._entries import Entry
from ._plan import MultipartPlan, ZipPlan, plan_zip
from ._zipwriter import Compression, zip_size

BOUNDARY_KEY_VARIABLE = "MULTIRESP_BOUNDARY_KEY"
BOUNDARY_KEY_BYTES = 32  # a random per-process key when the variable is unset
_PROCESS_KEY = secrets.token_bytes(BOUNDARY_KEY_BYTES)


def predict_zip_size(entries: list[Entry], compression: Compression = "store") -> int | None:
    """The exact archive size, or None when it is not known before the bytes are read (a
    size unknown, or an entry compressed or sampled by "auto")."""
    if any(entry.size is None for entry in entries):
        return None
    plan = _zip_plan(entries, compression)
    if plan is not None:
        return plan.total
    if compression != "store":
        return None
    # One-shot sources: framed as deflate stored blocks (layout 2), still of known length.
    return zip_size(_ZipEncoder.info(e, 0 if e.rereadable else None) for e in entries)


def _zip_plan(entries: list[Entry], compression: Compression) -> ZipPlan | None:
    """The plan of an archive of re-readable sources, or None (see :func:`plan_zip`)."""
    if not all(entry.rereadable for entry in entries):
        return None
    return plan_zip(compression, (_ZipEncoder.info(e, None) for e in entries))


def _newest(entries: list[Entry]) -> dt.datetime | None:
    times = [entry.mtime for entry in entries if entry.mtime is not None]
    return max(times) if times else None


def _facts(entries: list[Entry]) -> Iterator[tuple[object, ...]]:
    """What decides each entry's bytes, for the ETag: never an inode or absolute path; a
    source's identity beside them (bytes: their CRC-32; an object: its store ETag)."""
    for entry in entries:
        source = entry.source
        identity = None if source is None else source.identity
        yield (entry.name, entry.size, entry.mtime_ns, entry.mode, entry.media_type, identity)


def boundary_key() -> bytes:
    """The key that derives multipart boundaries: ``MULTIRESP_BOUNDARY_KEY`` (shared by the
    replicas), else a random key of this process."""
    shared = os.environ.get(BOUNDARY_KEY_VARIABLE)
    return shared.encode("utf-8") if shared else _PROCESS_KEY


@dataclass(frozen=True, slots=True)
class _Ranged:
    """What a body that serves ranges knows before its first byte."""

    plan: ZipPlan | MultipartPlan
    etag: str
    last_modified: dt.datetime | None
