"""File stamps: the one way zbifrost tells that a file it loaded has changed on disk.

A stamp is (modification time in ns, size, inode): an edit within the clock's resolution still
changes the size, and a file replaced by a rename (the `tokens` tool, editors, deploys) gets a
new inode. Used for the tokens file, zUI files and plugin modules; nothing here reads a file.
"""

import os

Stamp = tuple[int, int, int]  # (st_mtime_ns, st_size, st_ino)


def stamp_of(status: os.stat_result) -> Stamp:
    """The stamp of an `os.stat_result` (of a path, or `os.fstat` of an open file)."""
    return status.st_mtime_ns, status.st_size, status.st_ino


def stamp(path: str) -> Stamp:
    """The stamp of the file at `path`. Raises OSError."""
    return stamp_of(os.stat(path))


def stamp_or_none(path: str) -> Stamp | None:
    """The stamp of the file at `path`, or None when it cannot be read."""
    try:
        return stamp(path)
    except OSError:
        return None
