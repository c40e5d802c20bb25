"""Progress bars (rich) that stay quiet when not wanted."""

from __future__ import annotations

import sys
from contextlib import contextmanager


class _Null:
    def advance(self, n: int = 1) -> None:
        pass


@contextmanager
def progress_bar(enabled: bool, description: str, total: int | None):
    """A rich progress bar when ``enabled`` and stderr is a terminal, else a no-op."""
    if not enabled or not sys.stderr.isatty():
        yield _Null()
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
