"""multiresp: many files in one HTTP response, sent and received safely while they stream.

The server's responses and ``receive_files`` are loaded on first use
(``multiresp.ZipStreamResponse``), so that a client-only program (``import multiresp.client``)
never imports Starlette or the read-ahead pump.
"""

import importlib
import typing

from ._crccache import use_crc_cache as use_crc_cache
from ._entries import Entry as Entry
from ._entries import walk as walk
from ._errors import IntegrityError as IntegrityError
from ._errors import LimitExceeded as LimitExceeded
from ._errors import MultirespError as MultirespError
from ._errors import ProtocolError as ProtocolError
from ._errors import TransferTimeout as TransferTimeout
from ._errors import UnsafeNameError as UnsafeNameError
from ._types import Limits as Limits
from ._types import SavedFile as SavedFile
from ._zipwriter import Compression as Compression

if typing.TYPE_CHECKING:  # what type checkers and IDEs see; at run time, __getattr__ below
    from ._objects import walk_store as walk_store
    from .responses import NEGOTIATED_RESPONSES as NEGOTIATED_RESPONSES
    from .responses import MultipartResponse as MultipartResponse
    from .responses import ZipResponse as ZipResponse
    from .responses import ZipStreamResponse as ZipStreamResponse
    from .responses import negotiate as negotiate
    from .uploads import receive_files as receive_files

__version__ = "0.1.0.dev0"

__all__ = (
    "NEGOTIATED_RESPONSES",
    "Compression",
    "Entry",
    "IntegrityError",
    "LimitExceeded",
    "Limits",
    "MultipartResponse",
    "MultirespError",
    "ProtocolError",
    "SavedFile",
    "TransferTimeout",
    "UnsafeNameError",
    "ZipResponse",
    "ZipStreamResponse",
    "negotiate",
    "receive_files",
    "use_crc_cache",
    "walk",
    "walk_store",
)

# Public names whose module needs the server's dependencies or an extra: name -> submodule.
_LAZY = {
    "NEGOTIATED_RESPONSES": "responses",
    "MultipartResponse": "responses",
    "ZipResponse": "responses",
    "ZipStreamResponse": "responses",
    "negotiate": "responses",
    "receive_files": "uploads",
    "walk_store": "_objects",  # obstore (the s3 extra) is imported when it is called
}


def __getattr__(name: str) -> object:
    submodule = _LAZY.get(name)
    if submodule is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{submodule}"), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*__all__, *(name for name in globals() if name.startswith("__"))})
