"""Atomic file writing: a reader never sees a partial output file."""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path``; move it into place only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_csv(frame, path, **kwargs) -> None:
    """Write a DataFrame to CSV (TSV for .tsv) atomically."""
    sep = "\t" if str(path).lower().endswith((".tsv", ".txt")) else ","
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, sep=sep, **kwargs)
