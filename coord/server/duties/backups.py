"""Scheduled backups: a leader duty (``coord serve --backup-dir D --backup-every T``).

Every ``backup_every_s`` the leader writes one backup file into its backup dir:
a full snapshot every ``backup_full_every``-th time, and in between a diff since
the newest file there (a chain: ``coord restore --snapshot FULL --diff D1 --diff
D2 ...`` in name order). A diff that cannot be made (its events were compacted,
or the chain's tip is unreadable) is replaced by a full snapshot; nothing is
written while nothing changed. It keeps the newest ``backup_keep`` full
snapshots and the diffs after the oldest of them, and deletes older files of
this cluster (only files whose names it wrote; anything else is left alone).

Files appear atomically: written to ``NAME.tmp``, fsynced, renamed, directory
fsynced. Only the leader writes; a node that becomes leader continues the chain
in its own backup dir when that dir's newest file is of this cluster.

Names sort by revision: ``<cluster>-<revision>-full.coordbak`` and
``<cluster>-<revision>-diff-<base revision>.coordbak`` (revisions zero-padded).

Runs on the node's asyncio loop; files are built and written in a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
from dataclasses import dataclass

from coord import errors
from coord.config import NodeConfig
from coord.raft.backup_capture import diff_backup, full_backup
from coord.raft.fsutil import write_file_durably
from coord.raft.node import ROLE_LEADER, RaftNode
from coord.server.runtime import tasks
from coord.state import backupfile

logger = logging.getLogger(__name__)

SUFFIX = ".coordbak"
_NAME = re.compile(
    r"(?P<cluster>[0-9a-f]+)-(?P<rev>\d{16})-(?:full|diff-(?P<base>\d{16}))\.coordbak"
)


@dataclass(frozen=True)
class BackupName:
    """A file this scheduler wrote, parsed from its name."""

    revision: int
    base_revision: int | None  # None: a full snapshot
    cluster_id: str
    name: str

    @property
    def full(self) -> bool:
        return self.base_revision is None

    def sort_key(self) -> tuple[int, int, str]:
        return self.revision, 0 if self.full else 1, self.name


def file_name(cluster_id: str, revision: int, base_revision: int | None = None) -> str:
    kind = "full" if base_revision is None else f"diff-{base_revision:016d}"
    return f"{cluster_id}-{revision:016d}-{kind}{SUFFIX}"


def parse_name(name: str) -> BackupName | None:
    m = _NAME.fullmatch(name)
    if m is None:
        return None
    base = m.group("base")
    return BackupName(int(m.group("rev")), int(base) if base else None, m.group("cluster"), name)


def chain(directory: str, cluster_id: str) -> list[BackupName]:
    """This cluster's backup files in ``directory``, oldest first."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    parsed = (parse_name(n) for n in names)
    mine = [b for b in parsed if b is not None and b.cluster_id == cluster_id]
    return sorted(mine, key=BackupName.sort_key)


class BackupScheduler:
    def __init__(self, raft: RaftNode, cfg: NodeConfig) -> None:
        self.raft = raft
        self.cfg = cfg
        self.dir = cfg.backup_dir
        self._task: asyncio.Task[None] | None = None
        self._tip_checked_term: int | None = None  # the term in which the chain tip was read

    def start(self) -> None:
        try:
            os.makedirs(self.dir, mode=0o700, exist_ok=True)
        except OSError as e:
            raise errors.FailedPrecondition(
                f"cannot use backup dir {self.dir}: {e.strerror}: point --backup-dir at a "
                "writable directory"
            ) from e
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        await tasks.cancel(self._task)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.backup_every_s)  # a periodic duty
            if self.raft.view.role != ROLE_LEADER:
                self._tip_checked_term = None
                continue
            try:
                await self.backup_once()
            except errors.CoordError as e:
                logger.warning("scheduled backup skipped: %s", e.message)
            except OSError as e:
                logger.error("scheduled backup failed: cannot write into %s: %s", self.dir, e)

    async def backup_once(self) -> str | None:
        """Write the next backup file (after a read barrier); returns its path, or None
        when nothing changed since the newest file."""
        timeout = self.cfg.request_timeout_s
        try:
            await asyncio.wait_for(asyncio.wrap_future(self.raft.barrier()), timeout)
        except TimeoutError:
            raise errors.Unavailable("read barrier timed out (no quorum?)") from None
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, self._write_next)

    def _write_next(self) -> str | None:
        cluster_id, revision = self.raft.read(lambda s: (s.cluster_id, s.revision))
        if not cluster_id:
            raise errors.Unavailable("the cluster has not bootstrapped yet")
        files = chain(self.dir, cluster_id)
        tip = self._usable_tip(files)
        if tip is not None and tip.revision == revision:
            return None  # nothing changed since the newest file
        fulls = [i for i, f in enumerate(files) if f.full]
        diff_due = tip is not None and len(files) - 1 - fulls[-1] < self.cfg.backup_full_every - 1
        made: tuple[list[bytes], int, int | None] | None = None
        if tip is not None and diff_due:
            try:
                data, rev = diff_backup(self.raft, self.cfg.node_id, tip.revision, cluster_id)
                made = data, rev, tip.revision
            except (errors.OutOfRange, errors.FailedPrecondition) as e:
                logger.info("scheduled backup: a full snapshot instead of a diff (%s)", e.message)
        if made is None:
            data, rev = full_backup(self.raft, self.cfg.node_id)
            made = data, rev, None
        data, rev, base = made
        name = file_name(cluster_id, rev, base)
        path = os.path.join(self.dir, name)
        write_file_durably(path + ".tmp", data, path, fsync=self.cfg.fsync)
        logger.info("backup written: %s (%d bytes)", name, sum(map(len, data)))
        self._rotate(cluster_id)
        return path

    def _usable_tip(self, files: list[BackupName]) -> BackupName | None:
        """The newest file, if a diff may follow it: read and verified once per term (a
        node that just became leader does not trust a file it may have half-written)."""
        if not any(f.full for f in files):
            return None  # diffs without their full snapshot: start a new chain
        tip = files[-1]
        term = self.raft.view.term
        if self._tip_checked_term != term:
            try:
                backupfile.read(os.path.join(self.dir, tip.name))
            except backupfile.BackupError as e:
                logger.warning("backup %s is unusable (%s): next is a full snapshot", tip.name, e)
                return None
            self._tip_checked_term = term
        return tip

    def _rotate(self, cluster_id: str) -> None:
        """Keep the newest ``backup_keep`` full snapshots and every file after the oldest
        of them; delete this cluster's older files and leftover temporary files."""
        files = chain(self.dir, cluster_id)
        fulls = [f for f in files if f.full]
        if len(fulls) > self.cfg.backup_keep:
            oldest_kept = fulls[-self.cfg.backup_keep]
            for f in files:
                if f.revision < oldest_kept.revision:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(os.path.join(self.dir, f.name))
                    logger.info("backup rotated out: %s", f.name)
        for name in os.listdir(self.dir):
            if name.endswith(SUFFIX + ".tmp") and parse_name(name[: -len(".tmp")]) is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(self.dir, name))
