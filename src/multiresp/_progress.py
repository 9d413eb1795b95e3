"""Progress reports: what a ``progress`` callable receives, how often, and the terminal bar.

:class:`Progress` is what a callable passed as ``progress=`` receives; :class:`Reporter` calls
it at most every ``PROGRESS_INTERVAL`` seconds, and once at the end. ``progress=True`` draws a
:class:`TerminalBar`: tqdm when installed, else one plain line. Either way the line shows the
bytes received (of the total when the response sent its length, with a percentage), the rate,
the time left when it can be known, the files saved and the entry being received, and is
rewritten in place on the terminal. ``close`` ends it with a newline.
"""

from __future__ import annotations

import math
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TextIO

PROGRESS_INTERVAL = 0.1  # seconds between two progress reports (the last one always comes)
MIN_WIDTH = 20  # characters: the plain line is never cut shorter than this
NAME_WIDTH = 32  # characters of the current entry's name shown (its end, where names differ)


@dataclass(frozen=True, slots=True, kw_only=True)
class Progress:
    """How far a :func:`~multiresp.client.download` got; what a ``progress`` callable receives.

    Attributes:
        bytes_done: Body bytes received so far, as sent (before any Content-Encoding is
            undone); counts from the start of the body across resumed requests.
        bytes_total: The body's length from ``Content-Length``, or None when not sent.
        files_done: Files verified and saved so far.
        current: The name of the entry being received, or None between entries.
    """

    bytes_done: int
    bytes_total: int | None
    files_done: int
    current: str | None


ProgressCallback = Callable[[Progress], object]


class Reporter:
    """Calls the ``progress`` callback at most every ``PROGRESS_INTERVAL``, and at the end.

    Args:
        progress: None or False (no reports), True (a :class:`TerminalBar`), or a callable.

    Raises:
        TypeError: ``progress`` is none of these.
    """

    def __init__(self, progress: ProgressCallback | bool | None) -> None:
        self._bar: TerminalBar | None = None
        self._callback: ProgressCallback | None
        if progress is True:
            self._bar = TerminalBar()
            self._callback = self._bar
        elif progress is None or progress is False:
            self._callback = None
        elif callable(progress):
            self._callback = progress
        else:
            raise TypeError(f"progress must be None, True or a callable, not {progress!r}")
        self._last = -PROGRESS_INTERVAL

    def report(self, make: Callable[[], Progress], *, final: bool = False) -> None:
        """Call back with ``make()`` if the last report is old enough (always when ``final``)."""
        if self._callback is None:
            return
        now = time.monotonic()
        if final or now - self._last >= PROGRESS_INTERVAL:
            self._last = now
            self._callback(make())

    def close(self) -> None:
        """End the terminal bar, if one was drawn."""
        if self._bar is not None:
            self._bar.close()


class _Report(Protocol):
    """What the bar reads from a report (``multiresp.client.Progress``)."""

    @property
    def bytes_done(self) -> int: ...

    @property
    def bytes_total(self) -> int | None: ...

    @property
    def files_done(self) -> int: ...

    @property
    def current(self) -> str | None: ...


class TerminalBar:
    """A progress callable that draws on ``stream`` (stderr by default)."""

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        use_tqdm: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stream = stream if stream is not None else sys.stderr
        self._clock = clock
        self._tqdm: Any = None
        if use_tqdm:
            try:
                from tqdm import tqdm
            except ImportError:
                pass
            else:
                self._tqdm = tqdm
        self._bar: Any = None
        self._started: float | None = None
        self._width = 0

    def __call__(self, progress: _Report) -> None:
        files = _files(progress)
        if self._tqdm is not None:
            if self._bar is None:
                self._bar = self._tqdm(
                    total=progress.bytes_total,
                    unit="B",
                    unit_scale=True,
                    unit_divisor=1024,
                    file=self._stream,
                    dynamic_ncols=True,
                    leave=True,
                )
            self._bar.set_postfix_str(files, refresh=False)
            self._bar.update(progress.bytes_done - self._bar.n)
            return
        now = self._clock()
        if self._started is None:
            self._started = now
        line = plain_line(progress, now - self._started)
        columns = max(MIN_WIDTH, shutil.get_terminal_size().columns - 1)
        line = line[:columns]
        self._stream.write("\r" + line.ljust(self._width))
        self._stream.flush()
        self._width = len(line)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self._width:
            self._stream.write("\n")
            self._stream.flush()


def plain_line(progress: _Report, elapsed: float) -> str:
    """``12.0 MiB of 48.0 MiB (25%) · 8.0 MiB/s · 0:04 left · 3 files · images/mask-3.png``."""
    done = human_bytes(progress.bytes_done)
    total = progress.bytes_total
    if total:
        done = f"{done} of {human_bytes(total)} ({100 * progress.bytes_done // total}%)"
    parts = [done]
    if elapsed > 0 and progress.bytes_done:
        rate = progress.bytes_done / elapsed
        parts.append(f"{human_bytes(int(rate))}/s")
        if total and total > progress.bytes_done:
            parts.append(f"{_clock_time((total - progress.bytes_done) / rate)} left")
    parts.append(_files(progress))
    return " · ".join(parts)


def _files(progress: _Report) -> str:
    files = "1 file" if progress.files_done == 1 else f"{progress.files_done} files"
    name = progress.current
    if name is None:
        return files
    if len(name) > NAME_WIDTH:
        name = "…" + name[-(NAME_WIDTH - 1) :]
    return f"{files} · {name}"


def _clock_time(seconds: float) -> str:
    minutes, second = divmod(math.ceil(seconds), 60)
    hours, minute = divmod(minutes, 60)
    return f"{hours}:{minute:02}:{second:02}" if hours else f"{minute}:{second:02}"


def human_bytes(count: int) -> str:
    """``999 B``, ``1.5 KiB``, ``12.0 MiB``, ``3.2 GiB`` (binary units, as tqdm shows them)."""
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")  # pragma: no cover
