"""Bad input never changes state and never hurts a node: through the client, through raw
gRPC, and on the command line of `coord serve` and `coordctl`."""

from __future__ import annotations

import contextlib
import os
import random
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from coord import errors
from coord.cli.output import EXIT_CONFIG, EXIT_NOT_FOUND, EXIT_REFUSED, EXIT_UNAVAILABLE
from coord.state import limits
from coord.testing import LocalCluster, free_ports
from coord.v1 import kv_pb2, kv_pb2_grpc

from .support import (
    COORD,
    ClusterFactory,
    coordctl,
    describe,
    local_kvs,
    run,
    status_of,
    wait_all_caught_up,
)

MiB = 1024 * 1024
BIG_CHANNEL = [
    ("grpc.max_send_message_length", 64 * MiB),
    ("grpc.max_receive_message_length", 64 * MiB),
]


@pytest.fixture(scope="module")
def cluster(module_cluster_factory: ClusterFactory) -> LocalCluster:
    c = module_cluster_factory(3)
    c.wait_for_leader()
    with c.client() as client:
        for i in range(5):
            client.put(f"seed/{i}", f"v{i}")
    return c


@pytest.fixture
def channels(cluster: LocalCluster) -> Iterator[list[grpc.Channel]]:
    """A raw channel to every node (leader and followers), with a 64 MiB send limit."""
    chs = [grpc.insecure_channel(ep, options=BIG_CHANNEL) for ep in cluster.endpoints]
    try:
        yield chs
    finally:
        for ch in chs:
            ch.close()


def stored_state(cluster: LocalCluster) -> tuple[list[tuple[bytes, bytes, int, int, int]], int]:
    """Every key (linearizable read) and the revision."""
    with cluster.client() as c:
        resp = c.range("", prefix=True)
    kvs = [(k.key, k.value, k.create_revision, k.mod_revision, k.version) for k in resp.kvs]
    return kvs, resp.header.revision


@contextlib.contextmanager
def state_unchanged(cluster: LocalCluster) -> Iterator[None]:
    """The block must leave the stored state (all keys, revision) as it found it, and every
    node healthy: answering Status, SERVING on the health service, same state locally."""
    before = stored_state(cluster)
    yield
    after = stored_state(cluster)
    assert after == before, "a rejected request changed the stored state"
    for node in cluster.nodes:
        assert node.running, f"{node.node_id} died"
        status_of(cluster, node.index)
        with grpc.insecure_channel(node.api) as ch:
            h = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert h.status == health_pb2.HealthCheckResponse.SERVING, node.node_id
    # Every replica holds exactly that state.
    wait_all_caught_up(cluster)
    for node in cluster.nodes:
        local = local_kvs(cluster, node.index)
        assert (
            sorted(
                (k.key, k.value, k.create_revision, k.mod_revision, k.version)
                for k in local.values()
            )
            == before[0]
        ), node.node_id


def expect_rpc_error(call: object, code: grpc.StatusCode) -> grpc.RpcError:
    """Run the zero-argument ``call``; it must fail with ``code``."""
    with pytest.raises(grpc.RpcError) as info:
        call()  # type: ignore[operator]
    err = info.value
    assert err.code() == code, f"{err.code()}: {err.details()}"  # type: ignore[attr-defined]
    return err


def expect_invalid(call: object) -> None:
    err = expect_rpc_error(call, grpc.StatusCode.INVALID_ARGUMENT)
    details = err.details()  # type: ignore[attr-defined]
    assert details.startswith("coord: "), details
    md = dict(err.trailing_metadata() or ())  # type: ignore[attr-defined]
    assert md.get("coord-error") == "invalid_argument", md


# -- through the client ---------------------------------------------------------

BAD_CLIENT_CALLS = {
    "put empty key": lambda c: c.put(b"", b"v"),
    "put key over 4096 bytes": lambda c: c.put(b"k" * (limits.MAX_KEY_BYTES + 1), b"v"),
    "put value over 1 MiB": lambda c: c.put(b"k", b"v" * (limits.MAX_VALUE_BYTES + 1)),
    "put request id over 128 chars": lambda c: c.put(b"k", b"v", request_id="r" * 129),
    "get empty key": lambda c: c.get(b""),
    "get key over 4096 bytes": lambda c: c.get(b"k" * (limits.MAX_KEY_BYTES + 1)),
    "range negative limit": lambda c: c.range(b"seed/", prefix=True, limit=-1),
    "delete empty key": lambda c: c.delete(b""),
    "delete prefix with expected_mod_revision": lambda c: c.delete(
        b"seed/", prefix=True, expected_mod_revision=2
    ),
    "delete request id over 128 chars": lambda c: c.delete(b"seed/0", request_id="r" * 129),
}


@pytest.mark.parametrize("case", list(BAD_CLIENT_CALLS))
def test_client_bad_input_is_invalid_argument(cluster: LocalCluster, case: str) -> None:
    with state_unchanged(cluster), cluster.client() as c:
        with pytest.raises(errors.InvalidArgument) as info:
            BAD_CLIENT_CALLS[case](c)
        assert info.value.message.startswith("coord: ")
        assert not info.value.retryable


def test_client_message_over_4_mib_is_resource_exhausted(cluster: LocalCluster) -> None:
    with (
        state_unchanged(cluster),
        cluster.client() as c,
        pytest.raises(errors.ResourceExhausted),
    ):
        c.put(b"k", b"v" * (5 * MiB))


def test_limits_are_inclusive(cluster: LocalCluster) -> None:
    """A key of exactly 4096 bytes, a value of exactly 1 MiB and a 128-char request id are fine."""
    key = b"K" * limits.MAX_KEY_BYTES
    value = bytes(random.Random(1).randbytes(limits.MAX_VALUE_BYTES))
    with cluster.client() as c:
        resp = c.put(key, value, request_id="q" * limits.MAX_REQUEST_ID_CHARS)
        assert resp.succeeded
        got = c.get(key)
        assert got is not None and got.value == value
        assert c.delete(key).deleted == 1


# -- through raw gRPC -----------------------------------------------------------

BAD_RAW_REQUESTS = {
    "put empty key": ("Put", kv_pb2.PutRequest(key=b"", value=b"v")),
    "put key over 4096 bytes": ("Put", kv_pb2.PutRequest(key=b"k" * 4097, value=b"v")),
    "put value over 1 MiB": ("Put", kv_pb2.PutRequest(key=b"k", value=b"v" * (MiB + 1))),
    "put request id over 128 chars": (
        "Put",
        kv_pb2.PutRequest(key=b"k", value=b"v", request_id="r" * 129),
    ),
    "range empty key": ("Range", kv_pb2.RangeRequest(key=b"")),
    "range negative limit": ("Range", kv_pb2.RangeRequest(key=b"seed/", prefix=True, limit=-1)),
    "range serializable negative limit": (
        "Range",
        kv_pb2.RangeRequest(key=b"seed/", prefix=True, limit=-5, serializable=True),
    ),
    "delete empty key": ("Delete", kv_pb2.DeleteRequest(key=b"")),
    "delete prefix with expected_mod_revision": (
        "Delete",
        kv_pb2.DeleteRequest(key=b"seed/", prefix=True, expected_mod_revision=2),
    ),
    "delete request id over 128 chars": (
        "Delete",
        kv_pb2.DeleteRequest(key=b"seed/0", request_id="r" * 129),
    ),
}


@pytest.mark.parametrize("case", list(BAD_RAW_REQUESTS))
def test_raw_bad_request_is_invalid_argument_on_every_node(
    cluster: LocalCluster, channels: list[grpc.Channel], case: str
) -> None:
    method, req = BAD_RAW_REQUESTS[case]
    with state_unchanged(cluster):
        for ch in channels:
            fn = getattr(kv_pb2_grpc.KVStub(ch), method)
            expect_invalid(lambda: fn(req, timeout=10))  # noqa: B023


def test_raw_message_over_4_mib_is_resource_exhausted(
    cluster: LocalCluster, channels: list[grpc.Channel]
) -> None:
    req = kv_pb2.PutRequest(key=b"big", value=b"v" * (5 * MiB))
    with state_unchanged(cluster):
        for ch in channels:
            expect_rpc_error(
                lambda: kv_pb2_grpc.KVStub(ch).Put(req, timeout=10),  # noqa: B023
                grpc.StatusCode.RESOURCE_EXHAUSTED,
            )


def malformed_bodies() -> list[bytes]:
    """Bytes that are not a valid protobuf message (of any type)."""
    rng = random.Random(20261126)
    return [
        b"\x0a\xff\xff\xff\x7f",  # field 1, length-delimited, 268 MB long: truncated
        b"\x0f",  # wire type 7 does not exist
        b"\x08\x80\x80",  # varint cut short
        b"\x0a\xff\xff\xff\x7f" + rng.randbytes(512),  # random tail after a lying length
        b"\x0a\x05ab",  # length 5, 2 bytes follow
    ]


def send_raw(ch: grpc.Channel, method: str, body: bytes) -> grpc.RpcError:
    fn = ch.unary_unary(
        f"/coord.v1.KV/{method}", request_serializer=None, response_deserializer=None
    )
    with pytest.raises(grpc.RpcError) as info:
        fn(body, timeout=10)
    return info.value


@pytest.mark.parametrize("method", ["Put", "Range", "Delete"])
def test_malformed_protobuf_leaves_nodes_healthy(
    cluster: LocalCluster, channels: list[grpc.Channel], method: str
) -> None:
    with state_unchanged(cluster):
        for ch in channels:
            for body in malformed_bodies():
                err = send_raw(ch, method, body)
                assert err.code() != grpc.StatusCode.OK  # type: ignore[attr-defined]


def test_malformed_protobuf_is_invalid_argument(
    cluster: LocalCluster, channels: list[grpc.Channel]
) -> None:
    err = send_raw(channels[0], "Put", malformed_bodies()[0])
    code = err.code()  # type: ignore[attr-defined]
    assert code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.INTERNAL), (
        f"{code}: {err.details()}"  # type: ignore[attr-defined]
    )


# -- `coord serve` with a bad configuration ----------------------------------------


@pytest.fixture
def serve_args(tmp_path: Path) -> tuple[list[str], Path]:
    """A valid one-node `coord serve` command line (nothing is started) and its data dir."""
    raft, api = free_ports(2)
    data = tmp_path / "data"
    args = [
        COORD, "serve",
        "--node-id", "n1",
        "--data-dir", str(data),
        "--peer", f"n1=127.0.0.1:{raft},127.0.0.1:{api}",
    ]  # fmt: skip
    return args, data


def _drop(args: list[str], flag: str) -> list[str]:
    i = args.index(flag)
    return args[:i] + args[i + 2 :]


def _replace(args: list[str], flag: str, value: str) -> list[str]:
    out = list(args)
    out[out.index(flag) + 1] = value
    return out


def _peer(args: list[str]) -> str:
    return args[args.index("--peer") + 1]


def _raft_port(args: list[str]) -> str:
    return _peer(args).split(",")[0].rsplit(":", 1)[1]


def _with_yaml(args: list[str], tmp: Path, text: str) -> list[str]:
    path = tmp / "coord.yaml"
    path.write_text(text)
    return [*args, "--config", str(path)]


OTHER_PEER = "n2=127.0.0.1:1,127.0.0.1:2"

# name -> (build the command line from a valid one and a tmp dir, text the error must hold)
BAD_SERVE: dict[str, tuple[Callable[[list[str], Path], list[str]], str]] = {
    "missing --peer": (lambda a, t: _drop(a, "--peer"), "no peers"),
    "node id not among peers": (
        lambda a, t: _replace(a, "--node-id", "n9"),
        "'n9' is not among the peers",
    ),
    "duplicate peer ids": (
        lambda a, t: [*a, "--peer", _peer(a).replace(_raft_port(a), "1"), "--peer", OTHER_PEER],
        "duplicate peer ids",
    ),
    "peer without comma": (
        lambda a, t: _replace(a, "--peer", _peer(a).split(",")[0]),
        "is not ID=RAFT_HOST:PORT,API_HOST:PORT",
    ),
    "peer address without port": (
        lambda a, t: _replace(a, "--peer", "n1=localhost,127.0.0.1:1"),
        "is not host:port",
    ),
    "two peers": (lambda a, t: [*a, "--peer", OTHER_PEER], "a cluster has 1, 3, 5 or 7 members"),
    "unknown yaml key": (
        lambda a, t: _with_yaml(a, t, "node_id: n1\nbogus_setting: 3\n"),
        "unknown key 'bogus_setting'",
    ),
    "invalid yaml": (
        lambda a, t: _with_yaml(a, t, "peers: [unclosed\n  - n1\n"),
        "is not valid YAML",
    ),
    "missing config file": (
        lambda a, t: [*a, "--config", str(t / "nope.yaml")],
        "cannot read config file",
    ),
    "heartbeat too slow for the election timeout": (
        lambda a, t: [*a, "--heartbeat-s", "0.5"],
        "election_timeout_min_s must exceed 3 x heartbeat_s",
    ),
    "election timeouts reversed": (
        lambda a, t: [*a, "--election-timeout-min-s", "0.5", "--election-timeout-max-s", "0.4"],
        "election_timeout_min_s must be < election_timeout_max_s",
    ),
    "non-loopback raft bind without secret": (
        lambda a, t: [*a, "--listen-raft", f"0.0.0.0:{_raft_port(a)}"],
        "without a cluster secret",
    ),
    "non-loopback raft peer without secret": (
        lambda a, t: _replace(a, "--peer", _peer(a).replace("127.0.0.1", "10.11.12.13", 1)),
        "without a cluster secret",
    ),
    "log compaction too small": (
        lambda a, t: [*a, "--log-compaction-entries", "10"],
        "log compaction entries must be >= 100",
    ),
}


@pytest.mark.parametrize("case", list(BAD_SERVE))
def test_coord_serve_rejects_bad_configuration(
    serve_args: tuple[list[str], Path], tmp_path: Path, case: str
) -> None:
    args, data = serve_args
    build, expect = BAD_SERVE[case]
    p = run(build(args, tmp_path), timeout=30)
    assert p.returncode == EXIT_CONFIG, describe(p)
    assert expect in p.stderr, describe(p)
    assert "Traceback" not in p.stderr + p.stdout, describe(p)
    assert not data.exists(), "a rejected configuration must not create the data dir"


def test_coord_serve_rejects_bad_environment(serve_args: tuple[list[str], Path]) -> None:
    args, data = serve_args
    env = {**os.environ, "COORD_REQUEST_TIMEOUT_S": "soon"}
    p = subprocess.run(args, capture_output=True, text=True, timeout=30, check=False, env=env)
    assert p.returncode == EXIT_CONFIG, describe(p)
    assert "request_timeout_s" in p.stderr and "'soon'" in p.stderr, describe(p)
    assert not data.exists()


# -- coordctl errors ------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [["leader"], ["status"], ["nodes"], ["kv", "get", "k"], ["kv", "put", "k", "v"], ["kv", "ls"]],
)
def test_coordctl_unreachable_endpoint_exits_4(command: list[str]) -> None:
    (port,) = free_ports(1)
    ep = f"127.0.0.1:{port}"
    p = coordctl([ep], "--timeout", "0.5", *command)
    assert p.returncode == EXIT_UNAVAILABLE, describe(p)
    assert "Error: coord: " in p.stderr or "Error: no endpoint answered" in p.stderr, describe(p)
    if command != ["status"]:
        assert ep in p.stderr and "connection refused" in p.stderr, describe(p)
    assert "Traceback" not in p.stderr, describe(p)


def test_coordctl_missing_key_exits_5(cluster: LocalCluster) -> None:
    with state_unchanged(cluster):
        for extra in ([], ["--serializable"]):
            p = coordctl(cluster.endpoints, "kv", "get", "missing-key", *extra)
            assert p.returncode == EXIT_NOT_FOUND, describe(p)
            assert "'missing-key' not found" in p.stderr, describe(p)
            assert p.stdout == "", describe(p)


def test_coordctl_reads_and_compare_and_set(cluster: LocalCluster) -> None:
    p = coordctl(cluster.endpoints, "-o", "json", "kv", "get", "seed/1")
    assert p.returncode == 0, describe(p)
    assert '"value": "v1"' in p.stdout
    with state_unchanged(cluster):
        p = coordctl(cluster.endpoints, "kv", "put", "seed/1", "x", "--expect-rev", "1")
        assert p.returncode == EXIT_REFUSED, describe(p)
        assert "compare-and-set failed" in p.stderr, describe(p)


def test_coordctl_usage_errors(cluster: LocalCluster) -> None:
    p = coordctl(cluster.endpoints, "--timeout", "0", "leader")
    assert p.returncode == 2, describe(p)
    assert "--timeout" in p.stderr, describe(p)
    p = coordctl(" , ", "leader")
    assert p.returncode == EXIT_CONFIG, describe(p)
    assert "no endpoints" in p.stderr, describe(p)
    p = coordctl(cluster.endpoints, "kv", "ls", "--limit", "-1")
    assert p.returncode == 2, describe(p)
