"""CONTRIBUTING.md's "Where things are" map matches the tree.

Every path the map lists exists, and every package under ``coord/`` (a directory with an
``__init__.py``) has a line of its own: a new package comes with a line saying what it is
for. Reads files only.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SECTION = "## Where things are"
# A map line: "- `path` — what it holds".
_ENTRY = re.compile(r"^- `([^`]+)`")


def map_entries() -> list[str]:
    """The paths the map lists, in order, without trailing slashes."""
    text = (ROOT / "CONTRIBUTING.md").read_text(encoding="utf-8")
    assert SECTION in text, f"CONTRIBUTING.md has no {SECTION!r} section"
    body = text.split(SECTION, 1)[1]
    body = re.split(r"^## ", body, maxsplit=1, flags=re.MULTILINE)[0]
    entries = [m.group(1).rstrip("/") for m in map(_ENTRY.match, body.splitlines()) if m]
    assert entries, f"the {SECTION!r} section lists no paths"
    return entries


def coord_packages() -> list[str]:
    """Every package directory under coord/, coord itself included (``__pycache__`` never
    holds an ``__init__.py``)."""
    return sorted(
        init.parent.relative_to(ROOT).as_posix()
        for init in (ROOT / "coord").rglob("__init__.py")
        if "__pycache__" not in init.parts
    )


def test_every_listed_path_exists() -> None:
    missing = [p for p in map_entries() if not (ROOT / p).exists()]
    assert not missing, f"CONTRIBUTING.md's map lists paths that do not exist: {missing}"


def test_every_coord_package_is_listed() -> None:
    listed = set(map_entries())
    absent = [p for p in coord_packages() if p not in listed]
    assert not absent, (
        f"packages missing from CONTRIBUTING.md's map ({SECTION!r}): {absent}; add a line for each"
    )


def test_the_map_names_the_test_layers_and_top_level_folders() -> None:
    listed = set(map_entries())
    wanted = {
        "proto",
        "tests/unit",
        "tests/inproc",
        "tests/integration",
        "tests/chaos_short",
        "tests/deploy",
        "tests/prometheus",
        "chaos",
        "bench",
        "scripts",
        "docs",
    }
    assert wanted <= listed, f"missing from CONTRIBUTING.md's map: {sorted(wanted - listed)}"
