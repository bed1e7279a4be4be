"""``coordctl snapshot save`` / ``backup diff`` write the file as it arrives, then verify
it: only a verified file ever appears under the name given, and nothing is left behind
when the download or the verification fails."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import pytest

from coord.cli.ctl_backup import _save
from coord.cli.output import CLIError
from coord.state import backupfile
from coord.state.backupfile import BackupError
from coord.state.machine import StateMachine
from coord.v1 import raft_pb2


def backup_bytes() -> bytes:
    sm = StateMachine()
    boot = raft_pb2.Bootstrap(cluster_id="c1", node_ids=["n1"])
    sm.apply(raft_pb2.Command(time_ms=1, term=1, bootstrap=boot).SerializeToString())
    head = backupfile.header(
        backupfile.FULL, cluster_id="c1", revision=sm.revision, raft_term=1, node_id="n1"
    )
    return backupfile.encode(head, sm.snapshot())


def arriving(data: bytes, chunk: int = 7) -> Callable[[BinaryIO], bytes]:
    def download(f: BinaryIO) -> bytes:
        for i in range(0, len(data), chunk):
            f.write(data[i : i + chunk])
        return data

    return download


def test_a_verified_download_is_the_file(tmp_path: Path) -> None:
    data = backup_bytes()
    out = tmp_path / "snap.coordbak"
    info = _save(str(out), arriving(data), "the snapshot received")
    assert out.read_bytes() == data
    assert info["revision"] >= 1 and info["path"] == str(out)
    assert os.listdir(tmp_path) == ["snap.coordbak"]


def test_a_corrupt_download_leaves_nothing_and_keeps_the_old_file(tmp_path: Path) -> None:
    out = tmp_path / "snap.coordbak"
    out.write_bytes(b"the previous backup")
    corrupt = bytearray(backup_bytes())
    corrupt[-40] ^= 1
    with pytest.raises(BackupError, match="checksum"):
        _save(str(out), arriving(bytes(corrupt)), "the snapshot received")
    assert out.read_bytes() == b"the previous backup"
    assert os.listdir(tmp_path) == ["snap.coordbak"]


def test_a_failed_download_leaves_nothing(tmp_path: Path) -> None:
    def broken(f: BinaryIO) -> bytes:
        f.write(b"COORDBAK half")
        raise RuntimeError("stream broke")

    with pytest.raises(RuntimeError):
        _save(str(tmp_path / "snap.coordbak"), broken, "the snapshot received")
    assert os.listdir(tmp_path) == []


def test_an_unwritable_place_says_so(tmp_path: Path) -> None:
    with pytest.raises(CLIError, match="cannot write"):
        _save(str(tmp_path / "missing" / "snap.coordbak"), arriving(backup_bytes()), "x")


def test_two_saves_to_one_path_do_not_share_a_temporary_file(tmp_path: Path) -> None:
    # Overlapping runs (two cron jobs): each writes its own temporary file, so the one
    # that renames last leaves a whole, verified file, never one mixed from both.
    out = tmp_path / "snap.coordbak"
    data = backup_bytes()
    inner: list[dict[str, object]] = []

    def slow(f: BinaryIO) -> bytes:
        f.write(data[:10])
        inner.append(_save(str(out), arriving(data), "the other save"))
        f.write(data[10:])
        return data

    _save(str(out), slow, "the snapshot received")
    assert inner and out.read_bytes() == data
    assert backupfile.read(str(out)).header.cluster_id == "c1"
    assert os.listdir(tmp_path) == ["snap.coordbak"]
    assert os.stat(out).st_mode & 0o777 == 0o600
