"""The ``coordctl`` entry point: every command group registered on one ``main``."""

from __future__ import annotations

from coord.cli import ctl_backup, ctl_groups, ctl_nodes, ctl_report, ctl_security, ctl_txn
from coord.cli.ctl import main

__all__ = [
    "ctl_backup", "ctl_groups", "ctl_nodes", "ctl_report", "ctl_security", "ctl_txn", "main",
]  # fmt: skip

if __name__ == "__main__":
    main()
