"""Session-bound keys, transactions and key-prefix watches on a real cluster (issue 17,
items 3 and 4).

- A key bound to a session vanishes in the apply that ends the session: on close, and
  on expiry decided by a new coordinator leader after the old one was killed; the watch
  shows the kv_delete of the session's keys and the session's end at consecutive
  revisions of the same command (same term, same time), with nothing between.
- Transactions are all or nothing under concurrent writers: compare-and-swap increments
  of a counter and its mirror from four threads end with counter == mirror == the
  number of successful transactions.
- Bad input (oversized, malformed, a put twice, a dead session) is refused with a clear
  INVALID_ARGUMENT / NOT_FOUND and changes nothing; a compare on a missing key is
  well defined.
- ``client.watch(prefix=...)`` and ``coordctl kv txn`` (file or stdin, table and JSON,
  exit codes).

One module-scoped 3-node cluster without fsync; the leader-kill test runs last and puts
the killed node back.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from coord import errors
from coord.cli.output import EXIT_CONFIG, EXIT_REFUSED
from coord.client import Client
from coord.client import txn as t
from coord.state import limits
from coord.testing import LocalCluster, wait_until
from coord.v1 import election_pb2, election_pb2_grpc, groups_pb2, kv_pb2

from .support import ClusterFactory, ctl


@pytest.fixture(scope="module")
def cluster(module_cluster_factory: ClusterFactory) -> LocalCluster:
    return module_cluster_factory(3, fsync=False)


def revision(c: Client) -> int:
    """The cluster's revision now (a linearizable read: Status answers from whichever
    node answers first, possibly behind)."""
    return int(c.range("", prefix=True, keys_only=True, limit=1).header.revision)


def events_from(c: Client, start: int, until: int) -> list[groups_pb2.Event]:
    """Every event with revision in [start, until] (the watch is gap-free, unfiltered)."""
    out: list[groups_pb2.Event] = []
    for e in c.watch(from_revision=start):
        out.append(e)
        if e.revision >= until:
            break
    return out


def check_one_apply(
    events: list[groups_pb2.Event], session_id: str, keys: list[bytes], cause: str
) -> groups_pb2.Event:
    """The session's end at revision R, and at R - 1 the kv_delete of exactly its keys,
    from the same command; no other event deletes them. Returns the end event."""
    (end,) = [e for e in events if e.type == cause and e.session_id == session_id]
    by_rev = {e.revision: e for e in events}
    gone = by_rev[end.revision - 1]
    assert (gone.type, gone.session_id, gone.cause) == ("kv_delete", session_id, cause), gone
    assert sorted(gone.deleted_keys) == sorted(keys)
    assert (gone.term, gone.time_ms) == (end.term, end.time_ms), (gone, end)
    others = [e for e in events if e is not gone and set(e.deleted_keys) & set(keys)]
    assert not others, others
    return end


def test_session_keys_vanish_with_the_session_and_a_plain_put_unbinds(
    cluster: LocalCluster,
) -> None:
    with cluster.client() as c:
        start = revision(c) + 1
        with c.session(ttl_s=5) as s:
            sid = s.id
            c.put("eph/a", "1", session=s)
            c.txn(success=[t.put("eph/b", "2", session=s), t.put("eph/kept", "3", session=s)])
            c.put("eph/kept", "plain")  # the latest put decides: unbound now
            assert c.get("eph/a").session_id == sid  # type: ignore[union-attr]
        # Closed: gone in the apply that closed it.
        assert [kv.key for kv in c.range("eph/", prefix=True).kvs] == [b"eph/kept"]
        end = revision(c)
        check_one_apply(events_from(c, start, end), sid, [b"eph/a", b"eph/b"], "session_closed")
        with pytest.raises(errors.NotFound, match="open a new session"):
            c.put("eph/late", "x", session=sid)
        assert c.get("eph/late") is None and revision(c) == end


def test_bad_txns_are_refused_clearly_and_apply_nothing(cluster: LocalCluster) -> None:
    with cluster.client() as c:
        c.put("bad/x", "keep")
        rev = revision(c)
        cases: list[tuple[type[errors.CoordError], str, dict[str, object]]] = [
            (errors.InvalidArgument, f"the limit is {limits.MAX_TXN_OPS}",
             {"success": [t.put(f"bad/{i}", "v") for i in range(limits.MAX_TXN_OPS + 1)]}),
            (errors.InvalidArgument, f"the limit is {limits.MAX_TXN_BYTES}",
             {"success": [t.put("bad/big1", b"x" * 900_000), t.put("bad/big2", b"x" * 900_000)]}),
            (errors.InvalidArgument, "success[1]: an operation is a put or a delete",
             {"success": [t.put("bad/x", "lost"), kv_pb2.TxnOp()]}),
            (errors.InvalidArgument, "compares[0]: a compare needs a target",
             {"compares": [kv_pb2.Compare(key=b"bad/x")], "success": [t.put("bad/x", "lost")]}),
            (errors.InvalidArgument, "at most once",
             {"success": [t.put("bad/x", "lost"), t.delete("bad/", prefix=True)]}),
            (errors.NotFound, "success[0]: session 's0' does not exist",
             {"success": [t.put("bad/x", "lost", session="s0")]}),
        ]  # fmt: skip
        for kind, says, parts in cases:
            with pytest.raises(kind) as info:
                c.txn(**parts)  # type: ignore[arg-type]
            assert says in info.value.message, info.value.message
        assert revision(c) == rev
        assert [(kv.key, kv.value) for kv in c.range("bad/", prefix=True).kvs] == [
            (b"bad/x", b"keep")
        ]
        # A compare on a missing key: a value compare is false (!= too), existence is not.
        r = c.txn(compares=[t.value("bad/none") != "x"], failure=[t.put("bad/f", "1")])
        assert not r.succeeded and c.get("bad/f") is not None
        r = c.txn(compares=[t.absent("bad/none"), t.mod_revision("bad/none") == 0],
                  success=[t.put("bad/s", "1")])  # fmt: skip
        assert r.succeeded and c.get("bad/s") is not None


def test_concurrent_compare_and_swap_increments_are_all_or_nothing(
    cluster: LocalCluster,
) -> None:
    writers, attempts = 4, 12
    wins = [0] * writers
    failures: list[BaseException] = []
    first_reads = threading.Barrier(writers, timeout=30)  # round 1: all read the same

    def writer(i: int) -> None:
        try:
            with cluster.client() as c:
                for attempt in range(attempts):
                    kv = c.get("cas/n")
                    n, mod = (int(kv.value), kv.mod_revision) if kv else (0, 0)
                    if attempt == 0:
                        first_reads.wait()
                    new = str(n + 1)
                    r = c.txn(compares=[t.mod_revision("cas/n") == mod],
                              success=[t.put("cas/n", new), t.put("cas/mirror", new)])  # fmt: skip
                    wins[i] += r.succeeded
        except BaseException as e:  # reported below
            failures.append(e)

    with cluster.client() as c:
        start = revision(c) + 1
    threads = [threading.Thread(target=writer, args=(i,)) for i in range(writers)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert not failures, failures
    with cluster.client() as c:
        n, mirror = c.get("cas/n"), c.get("cas/mirror")
        assert n is not None and mirror is not None
        assert int(n.value) == int(mirror.value) == sum(wins) > 0
        assert n.mod_revision == mirror.mod_revision  # one revision per transaction
        assert sum(wins) <= writers * attempts - (writers - 1)  # round 1: one winner
        txns = [
            e for e in events_from(c, start, n.mod_revision)
            if e.type == "kv_txn" and b"cas/n" in [kv.key for kv in e.kvs]
        ]  # fmt: skip
        assert len(txns) == sum(wins)
        # A retry with the same request id applies once.
        req = {"compares": [t.mod_revision("cas/n") == n.mod_revision],
               "success": [t.put("cas/n", "x"), t.put("cas/mirror", "x")]}  # fmt: skip
        first = c.txn(**req, request_id="cas-retry")  # type: ignore[arg-type]
        again = c.txn(**req, request_id="cas-retry")  # type: ignore[arg-type]
        assert first.succeeded and again.succeeded
        assert first.header.revision == again.header.revision == revision(c)


def test_watch_by_prefix_sees_only_its_keys(cluster: LocalCluster) -> None:
    with cluster.client() as c:
        start = revision(c) + 1
        c.put("wp/a", "1")
        c.put("elsewhere", "1")
        c.txn(success=[t.put("wp/b", "2"), t.put("elsewhere", "2")])
        c.delete("wp/", prefix=True)
        got = []
        for e in c.watch(from_revision=start, prefix="wp/"):
            got.append((e.type, [kv.key for kv in e.kvs], sorted(e.deleted_keys)))
            if e.type == "kv_delete":
                break
    assert got == [
        ("kv_put", [b"wp/a"], []),
        ("kv_txn", [b"wp/b"], []),
        ("kv_delete", [], [b"wp/a", b"wp/b"]),
    ]


def test_coordctl_kv_txn_from_a_file_or_stdin(cluster: LocalCluster, tmp_path: Path) -> None:
    spec = tmp_path / "txn.yaml"
    spec.write_text(
        "compares:\n  - {key: ctl-txn/owner, exists: false}\n"
        "success:\n  - {put: ctl-txn/owner, value: node-1}\n  - {put: ctl-txn/map, value: m1}\n"
        "failure:\n  - {put: ctl-txn/lost, value: 'yes'}\n"
    )
    r = ctl(cluster, "kv", "txn", str(spec), "-o", "json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["succeeded"] is True
    assert [x["put"]["kv"]["key"] for x in out["responses"]] == ["ctl-txn/owner", "ctl-txn/map"]
    # Again, from stdin as JSON: the compare fails now, the failure branch runs, exit 6.
    r = ctl(cluster, "kv", "txn", stdin=json.dumps({
        "compares": [{"key": "ctl-txn/owner", "exists": False}],
        "failure": [{"put": "ctl-txn/lost", "value": "yes"}, {"delete": "ctl-txn/map"}],
    }))  # fmt: skip
    assert r.exit_code == EXIT_REFUSED, r.output
    rows = [line.split() for line in r.stdout.splitlines()]
    assert rows[0] == ["RESULT", "OP", "KEY", "REVISION", "DELETED"]
    assert [x[:3] for x in rows[1:]] == [["FAILURE", "put", "ctl-txn/lost"],
                                         ["FAILURE", "delete", "ctl-txn/map"]]  # fmt: skip
    assert "compares did not hold" in r.stderr
    # A spec the CLI refuses, and one the cluster refuses: exit 3, nothing applied.
    with cluster.client() as c:
        rev = revision(c)
    bad = ctl(cluster, "kv", "txn", "-o", "json", stdin="success: [{put: k}]")
    assert bad.exit_code == EXIT_CONFIG and "success[0]: a put needs a value" in bad.stderr
    twice = '{"success": [{"put": "ctl-txn/a", "value": 1}, {"put": "ctl-txn/a", "value": 2}]}'
    bad = ctl(cluster, "kv", "txn", stdin=twice)
    assert bad.exit_code == EXIT_CONFIG and "put twice" in bad.stderr, bad.output
    missing = ctl(cluster, "kv", "txn", str(tmp_path / "nope.json"))
    assert missing.exit_code == 2 and "nope.json" in missing.stderr
    with cluster.client() as c:
        assert revision(c) == rev


def test_session_keys_go_when_a_new_leader_expires_the_session(cluster: LocalCluster) -> None:
    """Last in the module: kills the coordinator's leader (and starts it again after)."""
    old = cluster.wait_for_leader()
    with cluster.client() as c:
        start = revision(c) + 1
        opened = c.call(  # no keepalives: it expires
            lambda ch, tm: election_pb2_grpc.SessionsStub(ch).Open(
                election_pb2.OpenSessionRequest(ttl_ms=3000, name="txn-test"), timeout=tm
            )
        )
        sid = opened.session.id
        c.put("lease/a", "1", session=sid)
        put = c.txn(success=[t.put("lease/b", "2", session=sid)])
        term = put.header.term
    cluster.kill(old)
    try:
        cluster.wait_for_leader(exclude=old, timeout=20)
        with cluster.client() as c:
            wait_until(lambda: not c.range("lease/", prefix=True).kvs, 20, "lease/ keys to go")
            end = check_one_apply(
                events_from(c, start, revision(c)), sid, [b"lease/a", b"lease/b"],
                "session_expired",
            )  # fmt: skip
            assert end.term > term, "the new leader (a later term) expired the session"
            with pytest.raises(errors.NotFound):
                c.put("lease/c", "x", session=sid)
    finally:
        cluster.start(old)
        cluster.wait_ready()
