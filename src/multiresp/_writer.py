"""The file-writing thread: batches of reader events applied to a :class:`FileSink`.

The loop that receives a body (the client's download, or a receiver of uploads) hands each
batch of events over and goes on receiving while the batch is hashed and written, so that disk
work overlaps with the network in sync and async code alike, and an event loop never blocks
on the disk.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable
from types import TracebackType

import anyio
import anyio.to_thread

from ._events import Event
from ._sink import FileSink

WRITER_QUEUE = 4  # batches waiting for the file writer; bounds memory to about 5 x BATCH_BYTES,
# plus up to _sink.HASH_BACKLOG + 1 batches in the sink, waiting to be hashed


class Writer:
    """Applies batches of events to a :class:`FileSink` on a thread of its own.

    The loop that receives hands over each batch with :meth:`put` (or :meth:`offer`, which
    never blocks) and goes on receiving while the batch is hashed and written. At most
    ``WRITER_QUEUE`` batches wait, so memory stays bounded when the disk is slower than the
    network. The first error the sink raises is kept; it is raised to the receiving loop at
    its next :meth:`put`, and the batches after it are dropped. Leaving the ``with`` block
    writes what was queued (entries complete before a failure are still saved) and stops the
    thread.
    """

    def __init__(self, sink: FileSink) -> None:
        self.sink = sink
        self._queue: queue.Queue[list[Event] | None] = queue.Queue(maxsize=WRITER_QUEUE)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="multiresp-writer", daemon=True)
        self._thread.start()

    @property
    def files_done(self) -> int:
        """Files saved so far."""
        return len(self.sink.saved)

    def _run(self) -> None:
        while (batch := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self.sink.handle(batch)
                except BaseException as exc:  # handed to the receiving loop
                    self._error = exc

    def _check(self) -> None:
        if self._error is not None:
            raise self._error

    def offer(self, batch: list[Event]) -> bool:
        """Queue ``batch`` if there is room; False when :meth:`put` must wait for it."""
        self._check()
        try:
            self._queue.put_nowait(batch)
        except queue.Full:
            return False
        return True

    def put(self, batch: list[Event]) -> None:
        """Queue ``batch``, waiting for room (blocks: from async code, use :func:`aput`)."""
        self._check()
        if batch:
            self._queue.put(batch)

    def finish(self) -> None:
        """Write everything queued and stop the thread (blocks).

        Raises:
            BaseException: the first error the sink raised.
        """
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        self._check()

    def __enter__(self) -> Writer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None and (exc is self._error or not isinstance(exc, Exception)):
            with contextlib.suppress(BaseException):  # nothing to add to that
                self.finish()
        else:
            # The sink's error (if any) came from earlier in the body than whatever the
            # receiving loop met since, as that loop runs ahead: it is the one to report.
            self.finish()


async def aput(writer: Writer, batch: list[Event]) -> None:
    """:meth:`Writer.put` for async code: waits for room in a worker thread only when needed."""
    if batch and not writer.offer(batch):
        await anyio.to_thread.run_sync(writer.put, batch)


async def in_thread_shielded(function: Callable[[], object]) -> None:
    """Run ``function`` in a worker thread, safe from cancellation."""
    with anyio.CancelScope(shield=True):
        await anyio.to_thread.run_sync(function)


async def aexit_writer(
    writer: Writer,
    exc_type: type[BaseException] | None,
    exc: BaseException | None,
    tb: TracebackType | None,
) -> None:
    """:meth:`Writer.__exit__` in a worker thread, safe from cancellation."""
    with anyio.CancelScope(shield=True):
        await anyio.to_thread.run_sync(writer.__exit__, exc_type, exc, tb)
