"""The ``coordctl`` entry point: every command group registered on one ``main``.

The commands of ``ctl.py`` are there at once; the others are registered by importing
their module, which happens when one of them is used (LazyGroup: ``coordctl --help``,
``--version`` and ``kv get`` import none of these modules). A command added to one of
these modules goes in ``LAZY`` too: tests/unit/test_cli_lazy.py fails otherwise.
"""

from __future__ import annotations

import click

from coord.cli.ctl import LazyGroup, kv, leader, main

# (group, command name, module that registers it, first sentence of its help)
LAZY: list[tuple[click.Group, str, str, str]] = [
    (main, "auth", "coord.cli.ctl_security",
     "Bearer tokens for the tokens file (--auth-tokens-file)."),
    (main, "backup", "coord.cli.ctl_backup",
     "Differential backups: the changes since a snapshot (or since the last diff)."),
    (main, "campaign", "coord.cli.ctl_groups",
     "Open a session, register MEMBER in GROUP and wait until it is elected."),
    (main, "certs", "coord.cli.ctl_security", "Development certificates for TLS and mutual TLS."),
    (main, "check", "coord.cli.ctl_groups",
     "Run MEMBER's health check once, now, and print the result (for debugging)."),
    (main, "consistency", "coord.cli.ctl_nodes",
     "Compare every member's state: each hashes its state at one committed point."),
    (main, "group", "coord.cli.ctl_groups", "Groups: services that need masters."),
    (main, "member", "coord.cli.ctl_groups", "Members of groups."),
    (main, "node", "coord.cli.ctl_nodes",
     "Cluster members: list, add, remove (one change at a time)."),
    (main, "nodes", "coord.cli.ctl_nodes",
     "The members; MATCH and LAG (from the leader) show how far each one's log has caught "
     "up: LAG is how many entries it is behind the leader's."),
    (main, "rebalance", "coord.cli.ctl_rebalance",
     "Restore the spread of masters across zones or hosts, by switchovers."),
    (main, "report", "coord.cli.ctl_report",
     "Availability per group: downtime, FTSD, outages, MTTR, MTBF and the downtime budget "
     "(MAD) with what remains of it, then each group's outage timeline."),
    (main, "resign", "coord.cli.ctl_groups", "Ask MEMBER, a master of GROUP, to step down."),
    (main, "schedule", "coord.cli.ctl_groups",
     "Scheduled switchovers (`coordctl switchover GROUP --to M --at TIME` makes them)."),
    (main, "session", "coord.cli.ctl_groups",
     "Client sessions (TTL leases kept alive by keepalives)."),
    (main, "snapshot", "coord.cli.ctl_backup",
     "Full backups: a consistent snapshot of a live cluster, and checking a file."),
    (main, "switchover", "coord.cli.ctl_groups",
     "Ask GROUP's master to step down in favour of --to (or the best candidate)."),
    (main, "watch", "coord.cli.ctl_groups",
     "Stream events (resumes after node failures); Ctrl-C to stop."),
    (kv, "txn", "coord.cli.ctl_txn",
     "A transaction from SPEC (a JSON or YAML file; - or none: stdin): if every compare "
     "holds, apply `success`, else `failure`, atomically."),
    (leader, "transfer", "coord.cli.ctl_nodes",
     "Move leadership to another member (graceful: no election timeout)."),
]  # fmt: skip

for _group, _name, _module, _help in LAZY:
    assert isinstance(_group, LazyGroup)
    _group.add_lazy(_name, _module, _help)

__all__ = ["LAZY", "main"]

if __name__ == "__main__":
    main()
