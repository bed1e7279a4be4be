"""Linearizable reads on a real cluster: the leader confirms them by rounds of heartbeats
(coord.raft.read_index), a follower by no-op entries; /metrics says which, and the log
does not grow with the leader's reads. Every read sees the write acknowledged before it.
"""

from __future__ import annotations

import grpc

from coord.client import Client
from coord.testing import wait_until
from coord.v1 import kv_pb2, kv_pb2_grpc

from .support import ClusterFactory, sample, scrape, status_of


def test_a_leaders_reads_are_heartbeat_rounds_and_a_followers_are_no_op_entries(
    cluster_factory: ClusterFactory,
) -> None:
    c = cluster_factory(3, http=True, fsync=False)
    lead = c.wait_for_leader()
    follower = next(i for i in range(3) if i != lead)

    def barriers(i: int, kind: str) -> float:
        return sample(scrape(c, i), "coord_raft_read_barriers_total", kind=kind)

    with (
        Client([c.endpoints[lead]]) as on_leader,
        grpc.insecure_channel(c.endpoints[follower]) as ch,
    ):
        on_other = kv_pb2_grpc.KVStub(ch)  # this node only: the client library moves on
        on_leader.put(b"k", b"0")
        # A leader counts on rounds once its followers answered with numbers.
        wait_until(lambda: on_leader.get(b"k") and barriers(lead, "read_index") > 0, 30,
                   "a read confirmed by a heartbeat round")  # fmt: skip
        commit = status_of(c, lead).commit_index
        rounds = barriers(lead, "read_index")
        for i in range(1, 21):
            on_leader.put(b"k", b"%d" % i)
            assert on_leader.get(b"k").value == b"%d" % i  # type: ignore[union-attr]
            answer = on_other.Range(kv_pb2.RangeRequest(key=b"k"), timeout=10)
            assert answer.kvs[0].value == b"%d" % i
        assert barriers(lead, "read_index") >= rounds + 20
        assert barriers(follower, "noop") >= 20
        # 20 puts, and no entry for the leader's 20 reads (the follower's 20 no-ops are
        # the only others).
        assert status_of(c, lead).commit_index - commit <= 40 + 2
