"""Cold restore writes a data dir ``coord serve`` accepts, for a new cluster only; the
backup flags and the scheduler's file names. No sockets: files only."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click
import pytest

from coord.cli.restore import Duration
from coord.config import NodeConfig, Peer, build
from coord.errors import FailedPrecondition, InvalidArgument
from coord.raft import datadir
from coord.raft.node import DUMP_FILE
from coord.raft.restore import LAST_ENTRY, PREV_ENTRY, restore
from coord.raft.snapshotfile import read_dump
from coord.server.duties.backups import chain, file_name, parse_name
from coord.state import backupfile, replay
from coord.state.backupfile import BackupError
from coord.state.machine import StateMachine
from coord.v1 import groups_pb2, kv_pb2, raft_pb2

T0 = 1_700_000_000_000
PEERS = tuple(Peer(f"n{i}", f"127.0.0.1:{7000 + i}", f"127.0.0.1:{8000 + i}") for i in (1, 2, 3))


def config(data_dir: Path, token: str = "new-token", node: str = "n2") -> NodeConfig:
    return NodeConfig(node_id=node, data_dir=str(data_dir), peers=PEERS, cluster_token=token,
                      fsync=False)  # fmt: skip


def old_cluster() -> StateMachine:
    """A state of the cluster the backups come from (token "old", same member ids)."""
    sm = StateMachine()
    old_id = config(Path("/x"), token="old").cluster_id
    boot = raft_pb2.Bootstrap(cluster_id=old_id, node_ids=["n1", "n2", "n3"])
    sm.apply(raft_pb2.Command(time_ms=T0, term=9, bootstrap=boot).SerializeToString())
    open_s = raft_pb2.Command(time_ms=T0, term=9, open_session=groups_pb2.OpenSession(ttl_ms=900))
    sm.apply(open_s.SerializeToString())
    for i in range(3):
        put = kv_pb2.PutRequest(key=b"k%d" % i, value=b"v")
        sm.apply(raft_pb2.Command(time_ms=T0 + i, term=9, put=put).SerializeToString())
    return sm


def write_full(sm: StateMachine, path: Path) -> str:
    head = backupfile.header(
        backupfile.FULL, cluster_id=sm.cluster_id, revision=sm.revision, raft_term=9, node_id="n1"
    )
    path.write_bytes(backupfile.encode(head, sm.snapshot()))
    return str(path)


def write_diff(sm: StateMachine, since: int, path: Path) -> str:
    head = backupfile.header(
        backupfile.DIFF, cluster_id=sm.cluster_id, revision=sm.revision, raft_term=9,
        node_id="n1", base_revision=since,
    )  # fmt: skip
    path.write_bytes(backupfile.encode(head, replay.capture_diff(sm, since).SerializeToString()))
    return str(path)


def test_restore_builds_a_data_dir_of_the_new_cluster(tmp_path: Path) -> None:
    sm = old_cluster()
    snap = write_full(sm, tmp_path / "full.coordbak")
    base = sm.revision
    put = kv_pb2.PutRequest(key=b"later", value=b"x")
    sm.apply(raft_pb2.Command(time_ms=T0 + 50, put=put).SerializeToString())
    diff = write_diff(sm, base, tmp_path / "diff.coordbak")
    cfg = config(tmp_path / "data")
    done = restore(cfg, snap, [diff])
    assert (done.revision, done.keys, done.sessions) == (sm.revision, 4, 1)
    assert done.backup_cluster_id == sm.cluster_id != cfg.cluster_id == done.cluster_id

    dump = read_dump(os.path.join(cfg.data_dir, DUMP_FILE))
    assert (dump.last, dump.prev) == (LAST_ENTRY, PREV_ENTRY)
    assert dump.last[1] == 3 and dump.prev[1] == 2 and dump.last[2] == dump.prev[2] == 0
    assert dump.node_ids == ("n1", "n2", "n3")
    assert dump.members is not None and dump.members["n3"]["api"] == "127.0.0.1:8003"
    got = StateMachine()
    got.restore(dump.state)
    assert got.cluster_id == cfg.cluster_id and got.node_ids == ["n1", "n2", "n3"]
    assert got.last_term == 0, "the new cluster's terms start afresh"
    sm.cluster_id, sm.node_ids, sm.last_term = cfg.cluster_id, got.node_ids, 0
    assert got.snapshot() == sm.snapshot(), "everything else is the backup's state"
    assert sorted(os.listdir(cfg.data_dir)) == [datadir.IDENTITY_FILE, DUMP_FILE]
    ident = json.loads(Path(cfg.data_dir, datadir.IDENTITY_FILE).read_text())
    assert ident["restored_from_cluster"] == done.backup_cluster_id
    # `coord serve` with the same flags accepts it, as a data dir with Raft history.
    assert datadir.prepare(cfg) is False


def test_every_node_restored_from_the_same_files_gets_the_same_dump(tmp_path: Path) -> None:
    snap = write_full(old_cluster(), tmp_path / "full.coordbak")
    dumps = []
    for node in ("n1", "n2", "n3"):
        cfg = config(tmp_path / node, node=node)
        restore(cfg, snap)
        dumps.append(Path(cfg.data_dir, DUMP_FILE).read_bytes())
    assert dumps[0] == dumps[1] == dumps[2]


def test_the_backups_cluster_id_is_refused(tmp_path: Path) -> None:
    snap = write_full(old_cluster(), tmp_path / "full.coordbak")
    cfg = config(tmp_path / "data", token="old")
    with pytest.raises(FailedPrecondition, match="choose a new --cluster-token"):
        restore(cfg, snap)
    assert not os.path.exists(cfg.data_dir)


def test_a_data_dir_that_is_not_empty_is_refused(tmp_path: Path) -> None:
    snap = write_full(old_cluster(), tmp_path / "full.coordbak")
    cfg = config(tmp_path / "data")
    os.makedirs(cfg.data_dir)
    Path(cfg.data_dir, "raft.journal").write_bytes(b"x")
    with pytest.raises(datadir.DataDirError, match="is not empty"):
        restore(cfg, snap)
    assert os.listdir(cfg.data_dir) == ["raft.journal"]
    os.makedirs(tmp_path / "empty" / "lost+found")
    restore(config(tmp_path / "empty"), snap)  # an empty file system is fine


def test_a_bad_file_anywhere_writes_nothing(tmp_path: Path) -> None:
    sm = old_cluster()
    snap = write_full(sm, tmp_path / "full.coordbak")
    bad = tmp_path / "bad.coordbak"
    bad.write_bytes(Path(snap).read_bytes()[:-1])
    cfg = config(tmp_path / "data")
    for args in ((str(bad), []), (snap, [str(bad)]), (snap, [snap])):
        with pytest.raises(BackupError):
            restore(cfg, *args)
        assert not os.path.exists(cfg.data_dir)


# -- flags and names -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30.0), ("1h30m", 5400.0), ("500ms", 0.5), ("2", 2.0), ("1d", 86400.0), ("1.5m", 90)],
)
def test_durations(text: str, seconds: float) -> None:
    assert Duration().convert(text, None, None) == seconds


@pytest.mark.parametrize("text", ["", "5x", "m", "1h 30m", "-5s"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(click.BadParameter):
        Duration().convert(text, None, None)


def test_backup_config_is_validated(tmp_path: Path) -> None:
    base = {"node_id": "n1", "data_dir": str(tmp_path), "peers": [PEERS[0]]}
    cfg = build([base, {"backup_dir": "/b", "backup_every_s": "60", "backup_keep": "5"}])
    assert (cfg.backup_dir, cfg.backup_every_s, cfg.backup_keep) == ("/b", 60.0, 5)
    assert cfg.backup_full_every == 4
    for bad, words in [
        ({"backup_dir": "/b"}, "both --backup-dir and --backup-every"),
        ({"backup_every_s": 60}, "both --backup-dir and --backup-every"),
        ({"backup_dir": "/b", "backup_every_s": 0.01}, "between 100 ms and a year"),
        ({"backup_dir": "/b", "backup_every_s": 1, "backup_keep": 0}, "keep"),
        ({"backup_dir": "/b", "backup_every_s": 1, "backup_full_every": 0}, "full every"),
    ]:
        with pytest.raises(InvalidArgument, match=words):
            build([base, bad])


def test_scheduler_file_names_sort_by_revision(tmp_path: Path) -> None:
    names = [file_name("abc", 120), file_name("abc", 9, None), file_name("abc", 130, 120)]
    assert names[0] == "abc-0000000000000120-full.coordbak"
    assert names[2] == "abc-0000000000000130-diff-0000000000000120.coordbak"
    parsed = parse_name(names[2])
    assert parsed is not None and (parsed.revision, parsed.base_revision) == (130, 120)
    assert parse_name("abc-12-full.coordbak") is None and parse_name("notes.txt") is None
    for n in [*names, file_name("other", 5), "notes.txt", names[0] + ".tmp"]:
        (tmp_path / n).write_bytes(b"")
    assert [b.name for b in chain(str(tmp_path), "abc")] == [names[1], names[0], names[2]]
