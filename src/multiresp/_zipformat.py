"""What the zip writer and the zip reader share: the CRC-32 and deflate backend, and the
numbers of the format (APPNOTE.TXT) that both sides must agree on.

The module is pure: no I/O, no event loop, no clock.
"""

from __future__ import annotations

import importlib
import struct
import types
import zlib
from collections.abc import Callable

_isal_zlib: types.ModuleType | None
try:  # isal is the optional `fast` extra: the same deflate, inflate and CRC-32, faster
    _isal_zlib = importlib.import_module("isal.isal_zlib")
except ImportError:  # pragma: no cover - exercised where the extra is not installed
    _isal_zlib = None

crc32: Callable[[bytes, int], int] = _isal_zlib.crc32 if _isal_zlib is not None else zlib.crc32

METHOD_STORE = 0
METHOD_DEFLATE = 8
FLAG_DATA_DESCRIPTOR = 1 << 3
FLAG_UTF8 = 1 << 11

ZIP32_MAX = 0xFFFFFFFF  # largest size or offset a zip32 field holds; the value itself means zip64
ZIP32_MAX_ENTRIES = 0xFFFF  # entry count field; 0xFFFF itself means "see zip64"

EXTRA_ZIP64 = 0x0001
EXTRA_TIMESTAMP = 0x5455  # "UT": extended timestamp, bit 0 of its flags = mtime present

EXTRA_HEADER = struct.Struct("<HH")  # an extra field's tag and data size
