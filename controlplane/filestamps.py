"""Whether files changed since they were last looked at, without reading them: their stat (modification time,
size, inode). A Kubernetes Secret volume replaces its files by renaming new ones in (a new inode)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

Stamp = tuple[tuple[int, int, int], ...]


def file_stamps(paths: Iterable[Path]) -> Stamp:
    """The stamp of `paths` now; OSError (FileNotFoundError...) when one cannot be looked at."""
    stamps = []
    for path in paths:
        found = os.stat(path)
        stamps.append((found.st_mtime_ns, found.st_size, found.st_ino))
    return tuple(stamps)
