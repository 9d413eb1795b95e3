"""multiresp: many files in one HTTP response, sent and received safely while they stream."""

from __future__ import annotations

from ._entries import Entry as Entry
from ._entries import walk as walk
from ._errors import IntegrityError as IntegrityError
from ._errors import LimitExceeded as LimitExceeded
from ._errors import MultirespError as MultirespError
from ._errors import ProtocolError as ProtocolError
from ._errors import UnsafeNameError as UnsafeNameError
from ._types import Limits as Limits
from ._types import SavedFile as SavedFile
from .responses import MultipartResponse as MultipartResponse
from .responses import ZipResponse as ZipResponse
from .responses import ZipStreamResponse as ZipStreamResponse
from .responses import negotiate as negotiate

__version__ = "0.1.0.dev0"

__all__ = (
    "Entry",
    "IntegrityError",
    "LimitExceeded",
    "Limits",
    "MultipartResponse",
    "MultirespError",
    "ProtocolError",
    "SavedFile",
    "UnsafeNameError",
    "ZipResponse",
    "ZipStreamResponse",
    "negotiate",
    "walk",
)
