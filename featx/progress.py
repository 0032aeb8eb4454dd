"""Progress for people and for logs: a tqdm bar on a terminal, at most one plain line every few seconds elsewhere.

A bar redrawn with carriage returns is unreadable in a file or pipe (a cluster job's log, `featx run ... > log`):
there every redraw lands on one ever-growing line. So when stderr is not a terminal, progress is a short line
(`extract efficientnet_lite0: 340/1000 img (34%), 25.1 img/s`) at most every LOG_INTERVAL_S seconds, and
nothing for work that ends sooner.
"""

from __future__ import annotations

import os
import sys
import time

LOG_INTERVAL_S = 10.0  # default seconds between progress lines in a log; $FEATX_PROGRESS_INTERVAL overrides it


def progress_bar(
    *, total: int, desc: str, unit: str, enabled: bool = True, initial: int = 0, leave: bool = True, stream=None
):
    """An object with update(n) and close(): tqdm on a TTY (leave : keep the finished bar), LineProgress on
    anything else, a no-op when not enabled."""
    stream = stream or sys.stderr
    if enabled and _is_tty(stream):
        from tqdm.auto import tqdm

        return tqdm(total=total, initial=initial, unit=unit, desc=desc, leave=leave, file=stream)
    return LineProgress(total=total, desc=desc, unit=unit, initial=initial, stream=stream if enabled else None)


def log_interval() -> float:
    """Seconds between progress lines in a log: $FEATX_PROGRESS_INTERVAL (a cluster job's log may want more or
    fewer), else LOG_INTERVAL_S; a value that is not a positive number is ignored."""
    try:
        value = float(os.environ.get("FEATX_PROGRESS_INTERVAL", LOG_INTERVAL_S))
    except ValueError:
        return LOG_INTERVAL_S
    return value if value > 0 else LOG_INTERVAL_S


def _is_tty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class LineProgress:
    """Progress as plain lines, at most one per `interval` seconds (none for work shorter than that)."""

    def __init__(
        self, *, total: int, desc: str, unit: str, initial: int = 0, stream=None, interval: float | None = None
    ):
        self.total, self.desc, self.unit, self.n, self.start_n = total, desc, unit, initial, initial
        self.stream, self.interval = stream, log_interval() if interval is None else interval
        self.began = self.last = time.monotonic()
        self.shown = None  # the count of the last line printed

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if self.stream is not None and now - self.last >= self.interval:
            self.last = now
            self._line(now)

    def _line(self, now: float) -> None:
        rate = (self.n - self.start_n) / max(now - self.began, 1e-9)
        share = f" ({self.n / self.total:.0%})" if self.total else ""
        print(
            f"{self.desc}: {self.n}/{self.total} {self.unit}{share}, {rate:.1f} {self.unit}/s",
            file=self.stream,
            flush=True,
        )
        self.shown = self.n

    def close(self) -> None:
        """Nothing to erase (no line was left half-drawn); finished work that printed a line ends with its 100% line,
        so a log shows it completed (work shorter than the interval stays silent; stopped work prints nothing)."""
        if self.stream is not None and self.shown is not None and self.shown != self.n and self.n >= self.total:
            self._line(time.monotonic())

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def silent(*_) -> None:
    """A `log` that says nothing (what log=None means to every verb)."""
