"""The backup file format: round trips, and every damage is refused with a clear error.

A file is ``magic | version | header length | header | body length | body | sha256``.
Properties: decode(encode(x)) gives x back; any flipped byte, any truncation, any
trailing bytes, another format version, or a header that disagrees with its body is
a BackupError naming the problem (never a crash, never a silently wrong state).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import hashlib
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coord.server.api import maintenance
from coord.server.api.maintenance import MaintenanceService, chunked
from coord.state import backupfile, replay
from coord.state.backupfile import BackupError
from coord.state.machine import StateMachine
from coord.v1 import common_pb2, groups_pb2, kv_pb2, maintenance_pb2, raft_pb2

T0 = 1_700_000_000_000


def machine(puts: int = 5) -> StateMachine:
    sm = StateMachine()
    boot = raft_pb2.Bootstrap(cluster_id="c1", node_ids=["n1", "n2", "n3"])
    sm.apply(raft_pb2.Command(time_ms=T0, term=3, bootstrap=boot).SerializeToString())
    cmds = [
        raft_pb2.Command(time_ms=T0, create_group=groups_pb2.CreateGroup(
            name="db", policy=groups_pb2.GroupPolicy(slots=1))),
        raft_pb2.Command(time_ms=T0, open_session=groups_pb2.OpenSession(ttl_ms=5000)),
    ]  # fmt: skip
    for c in cmds:
        sm.apply(c.SerializeToString())
    sid = next(iter(sm.groups.sessions))
    member = groups_pb2.Member(group="db", id="m1", session_id=sid, candidate=True)
    reg = raft_pb2.Command(time_ms=T0, register=groups_pb2.Register(member=member))
    sm.apply(reg.SerializeToString())
    for i in range(puts):
        put = kv_pb2.PutRequest(key=b"k%d" % i, value=b"v" * i)
        sm.apply(raft_pb2.Command(time_ms=T0 + i, put=put).SerializeToString())
    return sm


def full_bytes(sm: StateMachine) -> bytes:
    head = backupfile.header(
        backupfile.FULL, cluster_id=sm.cluster_id, revision=sm.revision, raft_term=7,
        node_id="n2", created_unix_ms=T0,
    )  # fmt: skip
    return backupfile.encode(head, sm.snapshot())


def diff_bytes(sm: StateMachine, since: int) -> bytes:
    head = backupfile.header(
        backupfile.DIFF, cluster_id=sm.cluster_id, revision=sm.revision, raft_term=7,
        node_id="n2", base_revision=since,
    )  # fmt: skip
    return backupfile.encode(head, replay.capture_diff(sm, since).SerializeToString())


FULL = full_bytes(machine())


def test_a_full_backup_round_trips_and_summarises() -> None:
    sm = machine()
    b = backupfile.decode(FULL)
    assert b.kind == "full" and b.state is not None and b.diff is None
    assert b.body == sm.snapshot()
    assert b.sha256 == hashlib.sha256(FULL[:-32]).hexdigest() and b.size == len(FULL)
    info = backupfile.summary(b)
    assert info["revision"] == sm.revision and info["cluster_id"] == "c1"
    assert info["raft_term"] == 7 and info["node_id"] == "n2"
    assert (info["keys"], info["sessions"], info["groups"], info["members"]) == (5, 1, 1, 1)
    assert info["masters"] == 1 and info["events"] == sm.revision
    assert info["created"] == "2023-11-14T22:13:20.000+00:00"
    assert info["base_revision"] is None and info["size_bytes"] == len(FULL)


def test_a_diff_round_trips() -> None:
    sm = machine()
    since = sm.revision
    sm.apply(raft_pb2.Command(time_ms=T0 + 99, put=kv_pb2.PutRequest(key=b"x")).SerializeToString())
    b = backupfile.decode(diff_bytes(sm, since))
    assert b.kind == "diff" and b.diff is not None and b.state is None
    assert [e.revision for e in b.diff.events] == [since + 1]
    info = backupfile.summary(b)
    assert (info["base_revision"], info["revision"], info["events"]) == (since, since + 1, 1)
    assert info["keys"] is None


@settings(max_examples=300, deadline=None)
@given(st.integers(0, len(FULL) - 1), st.integers(1, 255))
def test_any_flipped_byte_is_refused(at: int, flip: int) -> None:
    data = bytearray(FULL)
    data[at] ^= flip
    with pytest.raises(BackupError) as e:
        backupfile.decode(bytes(data), "f.coordbak")
    assert e.value.message.startswith("coord: f.coordbak")


@settings(max_examples=200, deadline=None)
@given(st.integers(0, len(FULL) - 1))
def test_any_truncation_is_refused(length: int) -> None:
    with pytest.raises(BackupError, match=r"truncated|not a coord backup"):
        backupfile.decode(FULL[:length])


def test_trailing_bytes_are_refused() -> None:
    with pytest.raises(BackupError, match="bytes after its end"):
        backupfile.decode(FULL + b"\0")


@pytest.mark.parametrize("version", [0, 2, 999])
def test_another_format_version_is_named(version: int) -> None:
    data = FULL[:8] + struct.pack("<I", version) + FULL[12:]
    newer = "a newer" if version > backupfile.FORMAT_VERSION else "an older"
    with pytest.raises(BackupError, match=f"format version {version} \\(written by {newer}"):
        backupfile.decode(data)


def test_not_a_backup() -> None:
    for data in (b"", b"COORD", b"\x00" * 100, b"COORDSM\x00" + FULL[8:]):
        with pytest.raises(BackupError, match=r"truncated|not a coord backup file"):
            backupfile.decode(data)


def test_a_header_that_disagrees_with_its_body_is_refused() -> None:
    sm = machine()
    head = backupfile.header(
        backupfile.FULL, cluster_id="c1", revision=sm.revision + 1, raft_term=1, node_id="n1"
    )
    with pytest.raises(BackupError, match="inconsistent"):
        backupfile.decode(backupfile.encode(head, sm.snapshot()))
    head = backupfile.header(
        backupfile.DIFF, cluster_id="c1", revision=sm.revision + 5, raft_term=1, node_id="n1",
        base_revision=sm.revision,
    )  # fmt: skip
    with pytest.raises(BackupError, match="inconsistent"):
        backupfile.decode(backupfile.encode(head, maintenance_pb2.BackupDiff().SerializeToString()))
    head.kind = maintenance_pb2.BACKUP_KIND_UNSPECIFIED
    with pytest.raises(BackupError, match="unknown backup kind"):
        backupfile.decode(backupfile.encode(head, b""))


def test_a_body_that_does_not_decode_is_refused() -> None:
    head = backupfile.header(backupfile.FULL, cluster_id="c1", revision=1, raft_term=1, node_id="")
    with pytest.raises(BackupError, match="the state does not decode"):
        backupfile.decode(backupfile.encode(head, b"not a snapshot"))


def test_kinds_are_checked() -> None:
    full = backupfile.decode(FULL)
    assert backupfile.expect_kind(full, backupfile.FULL, "f") is full
    with pytest.raises(BackupError, match=r"f is a full snapshot .* not a diff"):
        backupfile.expect_kind(full, backupfile.DIFF, "f")


def test_read_names_the_file() -> None:
    with pytest.raises(BackupError, match="cannot read backup file /nonexistent"):
        backupfile.read("/nonexistent/x.coordbak")


@settings(max_examples=300, deadline=None)
@given(
    parts=st.lists(st.binary(max_size=40), max_size=12),
    size=st.integers(min_value=1, max_value=50),
)
def test_streamed_chunks_are_the_file_cut_at_the_chunk_size(parts: list[bytes], size: int) -> None:
    # The Snapshot RPC cuts a file given as pieces into messages: together they are the
    # file, each full but the last, and an empty file is still one (empty) message.
    chunks = list(chunked(parts, size))
    assert b"".join(chunks) == b"".join(parts)
    assert chunks and all(len(c) == size for c in chunks[:-1])
    assert 0 < len(chunks[-1]) <= size or chunks == [b""]


def test_the_file_in_pieces_is_the_file() -> None:
    sm = machine(50)
    head = backupfile.header(backupfile.FULL, cluster_id="c1", revision=sm.revision,
                             raft_term=3, node_id="n1", created_unix_ms=T0)  # fmt: skip
    pieces = backupfile.encode_parts(head, sm.capture().encode_parts())
    assert len(pieces) > 4
    assert b"".join(pieces) == backupfile.encode(head, sm.snapshot())


def test_the_unsigned_pieces_and_their_checksum_are_the_file() -> None:
    # The Snapshot and Diff RPCs send the pieces while a worker thread computes the
    # closing checksum, and append it to the last message.
    sm = machine(50)
    head = backupfile.header(backupfile.FULL, cluster_id="c1", revision=sm.revision,
                             raft_term=3, node_id="n1", created_unix_ms=T0)  # fmt: skip
    unsigned = backupfile.encode_parts(head, sm.capture().encode_parts(), signed=False)
    whole = b"".join([*unsigned, backupfile.checksum(unsigned)])
    assert whole == backupfile.encode(head, sm.snapshot())
    assert backupfile.decode(whole).header == head


class _Ctx:
    """What MaintenanceService._stream needs of a node: a response header."""

    def header(self, revision: int = 0, serializable: bool = False) -> common_pb2.ResponseHeader:
        return common_pb2.ResponseHeader(revision=revision)


def _streamed(parts: list[bytes]) -> list[maintenance_pb2.BackupChunk]:
    """The messages MaintenanceService._stream sends for ``parts``."""

    async def main() -> list[maintenance_pb2.BackupChunk]:
        stream = MaintenanceService(_Ctx(), None)._stream(parts, 7, False)  # type: ignore[arg-type]
        return [chunk async for chunk in stream]

    return asyncio.run(main())


@pytest.mark.parametrize("sizes", [[5], [8, 8], [3, 13, 1], [16, 16, 16, 2]])
def test_a_streamed_backup_is_the_file_with_its_checksum_last(
    sizes: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Whole messages of CHUNK_BYTES (here 8), a file that fills its last one exactly, a
    # tiny one: the messages are the file, its checksum at the end of the last.
    monkeypatch.setattr(maintenance, "CHUNK_BYTES", 8)
    parts = [bytes([i]) * n for i, n in enumerate(sizes)]
    chunks = _streamed(parts)
    data = b"".join(c.data for c in chunks)
    assert data == b"".join(parts) + hashlib.sha256(b"".join(parts)).digest()
    assert all(len(c.data) == 8 for c in chunks[:-1]) and len(chunks[-1].data) <= 8 + 32
    assert {c.total_bytes for c in chunks} == {len(data)}
    assert {c.header.revision for c in chunks} == {7}


def test_a_caller_leaving_after_the_checksum_failed_leaves_no_unread_exception(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The checksum fails (here at once, on an executor that runs it when submitted)
    # while the caller is still reading; the caller then leaves: the stream must mark
    # the failure seen, or asyncio reports "exception was never retrieved" for it.
    class AtOnce(concurrent.futures.ThreadPoolExecutor):
        def submit(self, fn, /, *args, **kwargs):  # type: ignore[no-untyped-def]
            f: concurrent.futures.Future[object] = concurrent.futures.Future()
            try:
                f.set_result(fn(*args, **kwargs))
            except Exception as e:
                f.set_exception(e)
            return f

    def failing(parts: object) -> bytes:
        raise OSError("no checksum")

    monkeypatch.setattr(maintenance, "CHUNK_BYTES", 8)
    monkeypatch.setattr(backupfile, "checksum", failing)

    unread: list[str] = []

    async def main() -> int:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(AtOnce())
        loop.set_exception_handler(lambda _, context: unread.append(context["message"]))
        stream = MaintenanceService(_Ctx(), None)._stream([b"x" * 64], 7, False)  # type: ignore[arg-type]
        got = [await anext(stream), await anext(stream)]
        await asyncio.sleep(0)  # one loop pass: the failed checksum's future is set
        await stream.aclose()  # the caller went away mid-stream
        return len(got)

    assert asyncio.run(main()) == 2
    gc.collect()  # an unread exception is reported when its future is collected
    assert unread == []
