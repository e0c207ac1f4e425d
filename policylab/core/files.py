"""Atomic file writes: readers see the old content or the new, never a torn file, even after a kill."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is fsynced and renamed over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        yield Path(temporary)
        with open(temporary, "rb+") as written:
            os.fsync(written.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # make the rename itself durable
    finally:
        os.close(directory)


def cache_dir(kind: str) -> Path:
    """Where the library keeps made files of one `kind` (datasets, neighbours, diffusion):
    $POLICYLAB_DATA/<kind>, else ~/.cache/policylab/<kind>."""
    return Path(os.environ.get("POLICYLAB_DATA", "~/.cache/policylab")).expanduser() / kind


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> None:
    """Write a file atomically through `write(file)`."""
    with atomic_path(path) as temporary, open(temporary, "wb") as file:
        write(file)
