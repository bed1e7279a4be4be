"""Small durable-file helpers (write, fsync, rename, fsync the directory)."""

from __future__ import annotations

import os


def fsync_dir(path: str) -> None:
    """fsync a directory so renames and creations in it survive a power loss."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file_durably(tmp: str, data: bytes, final: str, fsync: bool = True) -> None:
    """Write ``data`` to ``tmp``, fsync it, rename it over ``final``, fsync the directory."""
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        if fsync:
            os.fsync(f.fileno())
    os.replace(tmp, final)
    if fsync:
        fsync_dir(os.path.dirname(final) or ".")
