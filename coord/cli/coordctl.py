"""The ``coordctl`` entry point: every command group registered on one ``main``."""

from __future__ import annotations

from coord.cli import ctl_groups
from coord.cli.ctl import main

__all__ = ["ctl_groups", "main"]

if __name__ == "__main__":
    main()
