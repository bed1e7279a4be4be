"""The chaos suite's LD_PRELOAD shims (built by scripts/bootstrap into .venv): where
each library is, and how a process's LD_PRELOAD takes one more."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class ShimMissing(RuntimeError):
    """A shim library was not built (scripts/bootstrap builds it)."""


def library(name: str) -> str:
    """The built shim ``name`` (``clockshim``, ``diskshim``); ``$COORD_<NAME>`` (e.g.
    ``$COORD_CLOCKSHIM``) overrides where it is looked for."""
    path = Path(os.environ.get(f"COORD_{name.upper()}") or ROOT / ".venv" / f"{name}.so")
    if not path.is_file():
        raise ShimMissing(
            f"no {name} at {path}: run scripts/bootstrap (it builds chaos/{name}/{name}.c with cc)"
        )
    return str(path)


def preload(library: str, base: dict[str, str] | None) -> str:
    """``library`` first in LD_PRELOAD, before whatever ``base`` already preloads (once:
    a library already there is not added again). ld.so splits the list on spaces and
    colons."""
    already = (base or {}).get("LD_PRELOAD", "")
    rest = [p for p in already.replace(":", " ").split() if p != library]
    return " ".join([library, *rest])
