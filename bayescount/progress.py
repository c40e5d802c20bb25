"""Progress (rich bars on a terminal, or log lines for pipelines) that stays quiet when not wanted."""

from __future__ import annotations

import logging
import sys
import time
from contextlib import contextmanager

log = logging.getLogger("bayescount.progress")

#: Seconds between progress log lines in ``"log"`` mode.
LOG_EVERY = 10.0


class _Null:
    def advance(self, n: int = 1) -> None:
        pass


class _LogBar:
    """Progress as INFO log lines (done/total, elapsed, ETA), at most one per ``every`` seconds."""

    def __init__(self, description: str, total: int | None, every: float):
        self.description, self.total, self.every = description, total, every
        self.done = 0
        self.start = self.last = time.monotonic()

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        finished = self.total is not None and self.done >= self.total
        if not finished and now - self.last < self.every:
            return
        self.last = now
        elapsed = now - self.start
        if self.total:
            eta = elapsed / self.done * (self.total - self.done) if self.done else float("nan")
            log.info("%s: %d/%d (%.0f%%), elapsed %.0f s, ETA %.0f s", self.description, self.done, self.total,
                     100.0 * self.done / self.total, elapsed, eta)
        else:
            log.info("%s: %d done, elapsed %.0f s", self.description, self.done, elapsed)


@contextmanager
def progress_bar(enabled: bool | str, description: str, total: int | None):
    """Progress for a long step.

    ``enabled``: ``False`` (nothing), ``True`` (a rich bar when stderr is a
    terminal, else nothing, so pipeline logs stay clean), or ``"log"`` (a
    rich bar on a terminal, else INFO log lines every ``LOG_EVERY`` seconds
    with done/total and ETA, for pipelines that ask for it).

    Examples
    --------
    >>> with progress_bar(False, "genes", total=3) as bar:
    ...     bar.advance()
    """
    if not enabled:
        yield _Null()
        return
    if not sys.stderr.isatty():
        yield _LogBar(description, total, LOG_EVERY) if enabled == "log" else _Null()
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    with Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(), TimeRemainingColumn(), transient=True,
    ) as prog:
        task = prog.add_task(description, total=total)

        class _Bar:
            def advance(self, n: int = 1) -> None:
                prog.advance(task, n)

        yield _Bar()
