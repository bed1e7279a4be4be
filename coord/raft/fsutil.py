"""Small durable-file helpers (write, fsync, rename, fsync the directory)."""

from __future__ import annotations

import os
from collections.abc import Sequence


def fsync_dir(path: str) -> None:
    """fsync a directory so renames and creations in it survive a power loss."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file_durably(
    tmp: str, data: bytes | Sequence[bytes], final: str, fsync: bool = True
) -> None:
    """Write ``data`` (bytes, or pieces to concatenate) to ``tmp``, fsync it, rename it
    over ``final``, fsync the directory."""
    with open(tmp, "wb") as f:
        if isinstance(data, bytes):
            f.write(data)
        else:
            f.writelines(data)
        f.flush()
        if fsync:
            os.fsync(f.fileno())
    commit_file(tmp, final, fsync)


def commit_file(tmp: str, final: str, fsync: bool = True) -> None:
    """Rename the written (and fsynced) ``tmp`` over ``final``, fsync the directory."""
    os.replace(tmp, final)
    if fsync:
        fsync_dir(os.path.dirname(final) or ".")
