"""Receiving uploads: a ``multipart/form-data`` request streamed to files under a folder.

::

    from multiresp import receive_files
    from multiresp.uploads import EXCEPTION_HANDLERS

    @app.post("/inputs")
    async def inputs(request: Request) -> dict[str, object]:
        saved = await receive_files(request, "/srv/inputs")
        return {"files": [f.name for f in saved], "fields": dict(saved.fields)}

    app = FastAPI(exception_handlers=EXCEPTION_HANDLERS)  # 413 / 400 / 409, no try/except

How this works: the body is read as it arrives (``request.stream()``) and fed to the same path
the client's downloads take: :class:`~multiresp._decoding.BodyDecoder`, with the project's own
multipart reader. This module sorts the parts it gives: one whose ``Content-Disposition`` has a
``filename`` is a file, one without is a text field, kept in memory (bounded by
``MAX_FIELDS_BYTES``) and never written. The files' events go, in batches of about
``BATCH_BYTES``, to the writer thread (:class:`~multiresp._writer.Writer`), which drives a
:class:`~multiresp._sink.FileSink`: each file is written to a temporary file in its folder
under ``dest`` (unnamed where Linux allows it, else a hidden name), hashed (SHA-256) on the
way, and linked into place once complete, a link that never replaces a file. The event loop
never touches the disk, and no file is spooled through memory or copied twice.

An upload is all or nothing: when anything fails (a limit, a malformed body, an unsafe name,
a client that disconnects), the file in progress is removed, then every file this upload had
already saved and every folder it created, and the error is raised. An upload never replaces
a file that was already in ``dest``: such a name is refused (409).
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import types
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping

import anyio
import anyio.to_thread
from starlette.datastructures import ImmutableMultiDict
from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse, Response

from ._decoding import BATCH_BYTES, BodyDecoder
from ._errors import LimitExceeded, MultirespError, ProtocolError, UnsafeNameError
from ._events import NEED_DATA, Data, EntryEnd, EntryStart, Event
from ._names import parse_header_params
from ._sink import FileSink
from ._types import Limits, SavedFile
from ._writer import Writer, aexit_writer, aput, in_thread_shielded

__all__ = ("EXCEPTION_HANDLERS", "NameTaken", "ReceivedFiles", "error_response", "receive_files")

FORM_DATA = "multipart/form-data"
MAX_FIELDS = 1_000  # text fields in one upload
MAX_FIELDS_BYTES = 1 << 20  # bytes of all text fields of one upload together (held in memory)


class NameTaken(UnsafeNameError):
    """An uploaded file's name is already taken in the destination (HTTP 409).

    Uploads never replace a file that was there before them.
    """

    status_code = 409


class _Disconnected(ProtocolError):
    """The client went away before the end of the body."""


class ReceivedFiles(list[SavedFile]):
    """The files of one upload, in the order they came, and the form's text fields.

    It is a ``list`` of :class:`~multiresp.SavedFile`.

    Attributes:
        fields: The text fields (parts without a ``filename``), by field name, in order; as
            Starlette's form data, ``fields["k"]`` is the last value and
            ``fields.getlist("k")`` all of them.
    """

    fields: ImmutableMultiDict[str, str]

    def __init__(self, files: list[SavedFile], fields: list[tuple[str, str]]) -> None:
        super().__init__(files)
        self.fields = ImmutableMultiDict(fields)


# A folder on the way to a file being removed: looked through, never through a link.
_FOLDER_FLAGS = (
    getattr(os, "O_PATH", os.O_RDONLY)
    | getattr(os, "O_DIRECTORY", 0)
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_CLOEXEC", 0)
)


class _UploadSink(FileSink):
    """A :class:`FileSink` that never replaces a file and can undo a whole upload."""

    def __init__(
        self,
        dest: str | os.PathLike[str],
        limits: Limits,
        folder: tuple[int, int] | None = None,
    ) -> None:
        super().__init__(dest, limits=limits, if_exists="error")
        if folder is not None:
            self._check_folder(folder)
        self.made_folders: list[str] = []  # relative to dest, in the order they were made
        # It never replaces a file and gets no End with modes: the inodes of the files it
        # placed name a rare error only, and are looked up then (no fstat per file).
        self._track_inodes = False
        # The whole body is read whatever happens: a taken name is refused by the hard link
        # that names the complete file (where there are links), with no stat per file.
        self._stat_before_error = False

    def start(self, event: EntryStart) -> None:
        try:
            super().start(event)
        finally:
            self.made_folders += self._made

    def _check_folder(self, folder: tuple[int, int]) -> None:
        """Refuse ``dest`` unless it is the folder (device, inode) the caller checked: one
        swapped since for a link, which opening ``dest`` followed, is not written into."""
        if self._root.fd is not None:
            st = os.fstat(self._root.fd)
        else:
            st = os.stat(self.dest, follow_symlinks=False)
        if (st.st_dev, st.st_ino) != folder:
            self.close()
            raise UnsafeNameError(
                f"the destination {str(self.dest)!r} is no longer the folder that was checked "
                "(device/inode check); refusing to write into it"
            )

    def roll_back(self) -> None:
        """Remove every file this upload saved and every folder it made, then close.

        Each is removed beneath ``dest`` with no symbolic link followed on the way, as it
        was written: a folder swapped for a link since cannot lead a removal outside
        ``dest`` (the file is then left where it is).
        """
        try:
            self.abort()
            for saved in reversed(self.saved):
                with contextlib.suppress(OSError):  # gone, or behind a link: leave it
                    self._remove(saved.path.relative_to(self.dest).as_posix(), os.unlink)
            self.saved.clear()
            for relative in reversed(self.made_folders):
                with contextlib.suppress(OSError):  # not empty, or already gone: leave it
                    self._remove(relative, os.rmdir)
        finally:
            self.close()

    def _remove(self, relative: str, remove: Callable[..., None]) -> None:
        """``remove`` (unlink or rmdir) the path ``relative`` beneath ``dest``, reached one
        ``O_NOFOLLOW`` folder at a time from ``dest``'s descriptor."""
        if self._root.fd is None:  # no descriptor-relative calls: by checked path
            remove(self.dest.joinpath(*relative.split("/")))
            return
        *folders, last = relative.split("/")
        fd = self._root.fd
        try:
            for folder in folders:
                inner = os.open(folder, _FOLDER_FLAGS, dir_fd=fd)
                if fd != self._root.fd:
                    os.close(fd)
                fd = inner
            remove(last, dir_fd=fd)
        finally:
            if fd != self._root.fd:
                os.close(fd)


class _Form:
    """Sorts the reader's events: file parts go on to the sink, text fields are kept here."""

    def __init__(self) -> None:
        self.fields: list[tuple[str, str]] = []
        self.batch: list[Event] = []  # file events for the writer thread
        self.batch_bytes = 0  # bytes of content in them
        self._bytes = 0
        self._part: str | None = None  # "file", "field" or "empty": the part in progress
        self._field = ""
        self._value = bytearray()

    def pull(self, decoder: BodyDecoder) -> None:
        """Take the decoder's events until it needs data or ends: file events go to :attr:`batch`.

        Raises:
            ProtocolError: a part that is not form-data, a text field that is not UTF-8, or
                content in a file input left empty.
            UnsafeNameError: a file name with a backslash in it.
            LimitExceeded: more than ``MAX_FIELDS`` text fields or ``MAX_FIELDS_BYTES`` in all.
            MultirespError: what the decoder raises.
        """
        batch, next_event = self.batch, decoder.next_event
        while (event := next_event()) is not NEED_DATA:
            if type(event) is Data:  # the most frequent event (the event classes are final)
                if self._part == "file":
                    batch.append(event)
                    self.batch_bytes += len(event.data)
                else:
                    self._data(event.data)
            elif type(event) is EntryStart:
                self._part = self._start(event)
                if self._part == "file":
                    batch.append(event)
            elif type(event) is EntryEnd:
                if self._part == "file":
                    batch.append(event)
                elif self._part == "field":
                    self._end_field()
                self._part = None
            else:  # End: the reader gives it again at each call
                return

    def take_batch(self) -> list[Event]:
        """The file events gathered so far."""
        batch, self.batch, self.batch_bytes = self.batch, [], 0
        return batch

    def _start(self, event: EntryStart) -> str:
        # The reader parsed the Content-Disposition: its type and filename come with the event.
        filename = event.filename
        self._field = event.name  # the field's name; a file's name for file parts
        if event.disposition != "form-data":
            raise ProtocolError(
                f"part {event.name!r}: Content-Disposition {_disposition(event)[:64]!r} is not"
                " form-data (RFC 7578)",
                entry=event.name,
            )
        if filename is None:
            if len(self.fields) >= MAX_FIELDS:
                raise LimitExceeded(
                    f"text field {event.name!r}: more than {MAX_FIELDS} text fields",
                    entry=event.name,
                )
            self._value = bytearray()
            return "field"
        disposition = _disposition(event)
        if "\\" in disposition:
            # Browsers send a backslash as it is, RFC 7578 readers take it as an escape: the
            # name would be read differently by different servers, so it is refused.
            raise UnsafeNameError(
                f"file part {event.name!r}: a backslash in its Content-Disposition"
                f" {disposition[:128]!r}; backslashes are not allowed in names",
                entry=event.name,
            )
        if not filename:
            return "empty"  # a file input with nothing picked: filename="" and no content
        return "file"

    def _data(self, data: bytes) -> None:
        if self._part == "empty":
            if data:
                raise ProtocolError(
                    f"file part of field {self._field!r} has content but an empty filename",
                    entry=self._field,
                )
            return
        self._bytes += len(data)
        if self._bytes > MAX_FIELDS_BYTES:
            raise LimitExceeded(
                f"text field {self._field!r}: the text fields add up to over"
                f" {MAX_FIELDS_BYTES} bytes",
                entry=self._field,
            )
        self._value += data

    def _end_field(self) -> None:
        try:
            value = self._value.decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError(
                f"text field {self._field!r} is not UTF-8", entry=self._field
            ) from None
        self.fields.append((self._field, value))


def _disposition(event: EntryStart) -> str:
    """The part's Content-Disposition header value (the reader refuses a part without one)."""
    for key, value in event.headers:
        if key == "content-disposition":
            return value
    return ""


async def receive_files(
    request: Request, dest: str | os.PathLike[str], *, limits: Limits | None = None
) -> ReceivedFiles:
    """Stream a ``multipart/form-data`` request body to files under ``dest``.

    Each file part is written while the body arrives, off the event loop, to a temporary file
    in its folder, hashed on the way, and given its name once complete. Its name is the
    part's ``filename``, a relative path (browser folder uploads send ``photos/2026/a.jpg``):
    folders are created under ``dest`` as needed. Names are checked as everywhere in
    multiresp (no absolute path, ``..``, backslash, control character; nothing outside
    ``dest``), and must not repeat within the upload or name a file already in ``dest``.
    Parts without a ``filename`` are text fields: never written, returned in ``.fields``.

    All or nothing: on any failure, including a client that disconnects mid-file, no file
    of this upload stays in ``dest`` (nor any folder it created), and the error is raised.
    Register :data:`EXCEPTION_HANDLERS` to turn the errors into HTTP statuses.

    Args:
        request: The Starlette (or FastAPI) request; its body must not have been read.
        dest: The folder to write into; created when missing.
        limits: Bounds checked while the body streams (file count, per-file and total size,
            name length and depth); ``Limits()`` when None. Text fields count towards
            ``max_files`` and the sizes too, and are bounded by ``MAX_FIELDS`` and
            ``MAX_FIELDS_BYTES`` besides.

    Returns:
        The saved files in the order they came (a ``list[SavedFile]``), with the text fields
        as ``.fields``.

    Raises:
        LimitExceeded: a bound was crossed (HTTP 413).
        ProtocolError: not ``multipart/form-data``, no boundary, a malformed or truncated
            body, a part without a name, or the client disconnected (HTTP 400).
        UnsafeNameError: an unsafe or repeated name (HTTP 400); :class:`NameTaken`, a file
            of that name is already in ``dest`` (HTTP 409).
        IntegrityError: a part's bytes disagree with its ``Content-Length`` (HTTP 400).
    """
    return await _receive_into(request, dest, limits=limits)


async def _receive_into(
    request: Request,
    dest: str | os.PathLike[str],
    *,
    limits: Limits | None = None,
    folder: tuple[int, int] | None = None,
) -> ReceivedFiles:
    """:func:`receive_files`, refused (:class:`UnsafeNameError`) unless ``dest`` is still the
    folder whose ``(device, inode)`` is ``folder``, when given: for a caller that checked
    ``dest`` (the gateway) and must not write through a link put in its place since."""
    content_type = request.headers.get("content-type", "")
    limits = limits if limits is not None else Limits()
    stream = request.stream()
    sink: _UploadSink | None = None
    form = _Form()
    try:
        if parse_header_params(content_type)[0] != FORM_DATA:
            raise ProtocolError(f"an upload must be {FORM_DATA}, not {content_type[:64]!r}")
        decoder = BodyDecoder(
            content_type, limits=limits, content_encoding=request.headers.get("content-encoding")
        )
        sink = await anyio.to_thread.run_sync(_UploadSink, dest, limits, folder)
        await _receive(stream, decoder, form, Writer(sink))
    except BaseException as exc:
        if sink is not None:
            await in_thread_shielded(sink.roll_back)
        error = _upload_error(exc, sink)
        if error is exc:
            raise
        raise error from None
    await in_thread_shielded(sink.close)
    return ReceivedFiles(list(sink.saved), form.fields)


async def _receive(
    stream: AsyncGenerator[bytes, None], decoder: BodyDecoder, form: _Form, writer: Writer
) -> None:
    """Pump the body through the decoder and the form into the writer thread, then finish.

    The file events go to the writer in batches of ``BATCH_BYTES``, whatever the files' sizes:
    as an upload is all or nothing, no file needs to be saved before the next one arrives, and
    small files then cost few thread hops.
    """
    try:
        try:
            async for chunk in stream:
                if chunk:
                    decoder.receive(chunk)
                    form.pull(decoder)
                    if form.batch_bytes >= BATCH_BYTES:
                        await aput(writer, form.take_batch())
            decoder.receive(b"")
            form.pull(decoder)
            await aput(writer, form.take_batch())
        except ClientDisconnect:
            raise _Disconnected(
                f"the client disconnected: the upload ended {decoder.where()}",
                entry=decoder.current,
            ) from None
    except BaseException as exc:
        await aexit_writer(writer, type(exc), exc, exc.__traceback__)  # may raise the sink's
        raise
    await aexit_writer(writer, None, None, None)


def _upload_error(exc: BaseException, sink: FileSink | None) -> BaseException:
    """The error to raise for ``exc``: a name taken in ``dest`` is a :class:`NameTaken`."""
    if isinstance(exc, FileExistsError) and sink is not None and exc.filename:
        name = pathlib.Path(exc.filename).relative_to(sink.dest).as_posix()
        return NameTaken(
            f"entry {name!r} is already in the destination: an upload never replaces a file",
            entry=name,
        )
    return exc


async def error_response(request: Request, exc: Exception) -> Response:
    """A Starlette exception handler: a :class:`MultirespError` as a plain-text response.

    The status is the error's ``status_code``: 413 for :class:`LimitExceeded`, 409 for
    :class:`NameTaken`, 400 for the others (a malformed body, an unsafe name).
    """
    status = exc.status_code if isinstance(exc, MultirespError) else 500
    return PlainTextResponse(f"{exc}\n", status_code=status)


_Handler = Callable[[Request, Exception], Awaitable[Response]]
EXCEPTION_HANDLERS: Mapping[type[Exception], _Handler] = types.MappingProxyType(
    {MultirespError: error_response}
)
"""``exception_handlers=`` for Starlette or FastAPI: upload errors become 413, 409 or 400."""
