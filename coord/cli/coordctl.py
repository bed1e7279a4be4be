"""The ``coordctl`` entry point: every command group registered on one ``main``."""

from __future__ import annotations

from coord.cli import ctl_groups, ctl_nodes
from coord.cli.ctl import main

__all__ = ["ctl_groups", "ctl_nodes", "main"]

if __name__ == "__main__":
    main()
