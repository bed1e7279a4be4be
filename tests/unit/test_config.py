"""Configuration: defaults, validate(), precedence defaults < YAML < env < flags."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest

from coord import config
from coord.config import NodeConfig, Peer, RaftTimings, format_peer, parse_peer, parse_route
from coord.errors import InvalidArgument

LOOP3 = (
    Peer("n1", "127.0.0.1:7001", "127.0.0.1:8001"),
    Peer("n2", "127.0.0.1:7002", "127.0.0.1:8002"),
    Peer("n3", "127.0.0.1:7003", "127.0.0.1:8003"),
)
PEER_FLAGS = [f"{p.id}={p.raft_address},{p.api_address}" for p in LOOP3]


def node(**kw: Any) -> NodeConfig:
    base: dict[str, Any] = {"node_id": "n1", "data_dir": "/data", "peers": LOOP3}
    base.update(kw)
    return NodeConfig(**base)


def flags(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"node_id": "n1", "data_dir": "/d", "peers": list(LOOP3)}
    base.update(kw)
    return base


# -- defaults and RaftTimings ------------------------------------------------------------------


def test_default_timings_validate() -> None:
    RaftTimings().validate()


def test_a_default_node_config_validates() -> None:
    cfg = node()
    cfg.validate()
    assert cfg.fsync is True
    assert cfg.initial_cluster_state == "new"
    assert cfg.bind_raft == "127.0.0.1:7001"
    assert cfg.bind_api == "127.0.0.1:8001"


def test_config_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        node().node_id = "x"  # type: ignore[misc]


@pytest.mark.parametrize("name", [f.name for f in dataclasses.fields(RaftTimings)])
@pytest.mark.parametrize("bad", [0.0, -1.0])
def test_every_timing_must_be_positive(name: str, bad: float) -> None:
    with pytest.raises(InvalidArgument, match=rf"^coord: raft timings: {name} must be > 0$"):
        dataclasses.replace(RaftTimings(), **{name: bad}).validate()


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"tick_s": 0.05}, "tick_s"),  # == heartbeat
        ({"tick_s": 0.07}, "tick_s"),  # > heartbeat
        ({"heartbeat_s": 0.1}, "election_timeout_min_s"),  # 3 x 0.1 is not < 0.3
        ({"election_timeout_min_s": 0.15}, "election_timeout_min_s"),
        ({"election_timeout_max_s": 0.3}, "election_timeout_min_s"),  # min == max
        ({"election_timeout_max_s": 0.2, "fast_election_s": 0.01}, "election_timeout_min_s"),
        ({"connection_timeout_s": 0.5, "leader_fallback_timeout_s": 0.4}, "connection_timeout_s"),
        ({"leader_fallback_timeout_s": 0.05}, "leader_fallback_timeout_s"),  # == heartbeat
        ({"leader_fallback_timeout_s": 0.01}, "leader_fallback_timeout_s"),
        ({"leader_fallback_timeout_s": 1.5}, "leader_fallback_timeout_s"),  # > connection
        ({"fast_election_s": 0.3}, "fast_election_s"),  # == election min
        ({"fast_election_s": 0.5}, "fast_election_s"),
    ],
)
def test_every_timing_invariant_is_checked(changes: dict[str, float], field: str) -> None:
    with pytest.raises(InvalidArgument, match=rf"^coord: raft timings: .*{field}") as info:
        dataclasses.replace(RaftTimings(), **changes).validate()
    assert info.value.reason == "invalid_argument"


@pytest.mark.parametrize(
    "changes",
    [
        {"leader_fallback_timeout_s": 1.0},  # == connection timeout is allowed
        {"connection_timeout_s": 0.6, "leader_fallback_timeout_s": 0.6},  # == election max
        {"tick_s": 0.049},
        {"heartbeat_s": 0.099},
    ],
)
def test_timing_boundaries_that_are_allowed(changes: dict[str, float]) -> None:
    dataclasses.replace(RaftTimings(), **changes).validate()


def test_node_validate_checks_the_timings() -> None:
    with pytest.raises(InvalidArgument, match="tick_s"):
        node(timings=RaftTimings(tick_s=1.0)).validate()


# -- NodeConfig.validate -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"node_id": ""}, "node id is empty"),
        ({"data_dir": ""}, "data dir is empty"),
        ({"node_id": "n9"}, "is not among the peers"),
        ({"peers": (*LOOP3, LOOP3[0])}, "duplicate peer ids"),
        ({"peers": LOOP3[:2]}, "2 peers"),
        ({"peers": (*LOOP3, Peer("n4", "127.0.0.1:7004", "127.0.0.1:8004"))}, "4 peers"),
        ({"peers": (Peer("n1", "127.0.0.1", "127.0.0.1:8001"), *LOOP3[1:])}, "raft address of n1"),
        ({"peers": (Peer("n1", "127.0.0.1:0", "127.0.0.1:8001"), *LOOP3[1:])}, "not host:port"),
        ({"peers": (Peer("n1", "127.0.0.1:70000", "h:1"), *LOOP3[1:])}, "not host:port"),
        ({"peers": (Peer("n1", "127.0.0.1:7001", ":8001"), *LOOP3[1:])}, "api address of n1"),
        ({"raft_routes": {"n9": "127.0.0.1:9"}}, "raft route for unknown peer 'n9'"),
        ({"raft_routes": {"n2": "nowhere"}}, "raft route of n2"),
        ({"listen_raft": "127.0.0.1:x"}, "listen raft address"),
        ({"listen_api": "8000"}, "listen api address"),
        ({"initial_cluster_state": "old"}, "'new' or 'existing'"),
        ({"request_timeout_s": 0}, "request timeout must be > 0"),
        ({"log_compaction_entries": 99}, "log compaction entries must be >= 100"),
    ],
)
def test_node_validate_refuses(changes: dict[str, Any], words: str) -> None:
    with pytest.raises(InvalidArgument, match=words) as info:
        node(**changes).validate()
    assert str(info.value).startswith("coord: ")


@pytest.mark.parametrize("count", [2, 4, 6])
def test_even_peer_counts_are_refused(count: int) -> None:
    peers = tuple(
        Peer(f"n{i}", f"127.0.0.1:{7000 + i}", f"127.0.0.1:{8000 + i}") for i in range(count)
    )
    with pytest.raises(InvalidArgument, match=rf"{count} peers: .*even count"):
        node(node_id="n0", peers=peers).validate()


@pytest.mark.parametrize("count", [1, 3, 5, 7])
def test_odd_peer_counts_are_accepted(count: int) -> None:
    peers = tuple(
        Peer(f"n{i}", f"127.0.0.1:{7000 + i}", f"127.0.0.1:{8000 + i}") for i in range(count)
    )
    node(node_id="n0", peers=peers).validate()


@pytest.mark.parametrize("bind", ["0.0.0.0:7001", "10.0.0.5:7001", "[::]:7001", "myhost:7001"])
def test_non_loopback_raft_without_a_secret_is_refused(bind: str) -> None:
    with pytest.raises(InvalidArgument, match="beyond loopback, without a cluster secret"):
        node(listen_raft=bind).validate()
    node(listen_raft=bind, cluster_secret="s3cret").validate()


def test_non_loopback_peer_address_needs_a_secret_too() -> None:
    peers = (Peer("n1", "10.0.0.1:7001", "127.0.0.1:8001"), *LOOP3[1:])
    with pytest.raises(InvalidArgument, match="--cluster-secret"):
        node(peers=peers).validate()
    node(peers=peers, cluster_secret="s3cret").validate()


def test_an_empty_secret_is_no_secret() -> None:
    with pytest.raises(InvalidArgument, match="without a cluster secret"):
        node(listen_raft="0.0.0.0:7001", cluster_secret="").validate()


@pytest.mark.parametrize(
    "bind", ["127.0.0.1:7001", "127.9.9.9:7001", "localhost:7001", "[::1]:7001"]
)
def test_loopback_raft_needs_no_secret(bind: str) -> None:
    node(listen_raft=bind).validate()


def test_api_beyond_loopback_needs_no_cluster_secret(tmp_path: Path) -> None:
    # (It needs authentication: see test_an_api_beyond_loopback_needs_authentication.)
    cert, key, ca = _files(tmp_path, "c.pem", "k.pem", "ca.pem")
    node(
        listen_api="0.0.0.0:8001", tls_client_auth="require", tls_cert=cert, tls_key=key, tls_ca=ca
    ).validate()


def test_cluster_id_is_deterministic_and_ignores_peer_order() -> None:
    a = node()
    b = node(node_id="n3", peers=tuple(reversed(LOOP3)))
    assert a.cluster_id == b.cluster_id == node().cluster_id
    assert len(a.cluster_id) == 16
    int(a.cluster_id, 16)


def test_cluster_id_depends_on_token_and_members() -> None:
    base = node().cluster_id
    assert node(cluster_token="other").cluster_id != base
    renamed = (Peer("m1", LOOP3[0].raft_address, LOOP3[0].api_address), *LOOP3[1:])
    assert node(node_id="m1", peers=renamed).cluster_id != base


def test_routes_default_to_peer_addresses_and_can_be_overridden() -> None:
    cfg = node(raft_routes={"n2": "127.0.0.1:17002"})
    assert cfg.routes() == {
        "n1": "127.0.0.1:7001",
        "n2": "127.0.0.1:17002",
        "n3": "127.0.0.1:7003",
    }


# -- parse_peer / parse_route ----------------------------------------------------------------------


def test_parse_peer() -> None:
    assert parse_peer("n1=127.0.0.1:7001,127.0.0.1:8001") == LOOP3[0]
    assert parse_peer(" n1 = 127.0.0.1:7001 , 127.0.0.1:8001 ") == LOOP3[0]


def test_a_peer_flag_marks_a_learner_and_reads_back() -> None:
    learner = parse_peer("n4=127.0.0.1:7004,127.0.0.1:8004,learner")
    assert learner == Peer("n4", "127.0.0.1:7004", "127.0.0.1:8004", learner=True)
    for p in (*LOOP3, learner):
        assert parse_peer(format_peer(p.id, p.raft_address, p.api_address, p.learner)) == p
    with pytest.raises(InvalidArgument, match="as `coordctl node add` prints it"):
        parse_peer("n4=127.0.0.1:7004,127.0.0.1:8004,observer")


def test_learners_beyond_seven_members_may_join_and_never_bootstrap() -> None:
    voters = [Peer(f"n{i}", f"127.0.0.1:{7000 + i}", f"127.0.0.1:{8000 + i}") for i in range(7)]
    learners = [
        Peer(f"l{i}", f"127.0.0.1:{7100 + i}", f"127.0.0.1:{8100 + i}", learner=True)
        for i in range(2)
    ]
    nine = NodeConfig(
        node_id="l1",
        data_dir="/tmp/x",
        peers=(*voters, *learners),
        initial_cluster_state="existing",
        explicit_cluster_id="0123456789abcdef",
    )
    nine.validate()
    with pytest.raises(InvalidArgument, match="at most 7 voting members and 9 members"):
        NodeConfig(
            node_id="n0",
            data_dir="/tmp/x",
            peers=(*voters, Peer("n8", "127.0.0.1:7099", "127.0.0.1:8099")),
            initial_cluster_state="existing",
            explicit_cluster_id="0123456789abcdef",
        ).validate()
    with pytest.raises(InvalidArgument, match="a new cluster's members all vote"):
        NodeConfig(node_id="n1", data_dir="/tmp/x", peers=(*LOOP3[:2], learners[0])).validate()


@pytest.mark.parametrize(
    "spec",
    [
        "",
        "n1",
        "n1=",
        "n1=127.0.0.1:7001",
        "n1=127.0.0.1:7001,",
        "=127.0.0.1:7001,127.0.0.1:8001",
        "n1=,x:1",
    ],
)
def test_parse_peer_refuses(spec: str) -> None:
    with pytest.raises(InvalidArgument, match="is not ID=RAFT_HOST:PORT,API_HOST:PORT"):
        parse_peer(spec)


@pytest.mark.parametrize(
    ("parse", "words"),
    [
        pytest.param(
            lambda: parse_peer(" =127.0.0.1:7001,127.0.0.1:8001"), "is not ID=RAFT", id="peer-id"
        ),
        pytest.param(lambda: parse_peer("n1= ,127.0.0.1:8001"), "is not ID=RAFT", id="peer-raft"),
        pytest.param(lambda: parse_peer("n1=127.0.0.1:7001,\t"), "is not ID=RAFT", id="peer-api"),
        pytest.param(lambda: parse_route(" =127.0.0.1:9"), "is not ID=HOST:PORT", id="route-id"),
        pytest.param(lambda: parse_route("n2=  "), "is not ID=HOST:PORT", id="route-addr"),
    ],
)
def test_whitespace_only_parts_are_refused(parse: Any, words: str) -> None:
    with pytest.raises(InvalidArgument, match=words):
        parse()


def test_parse_route() -> None:
    assert parse_route("n2=127.0.0.1:17002") == ("n2", "127.0.0.1:17002")
    assert parse_route(" n2 = 127.0.0.1:17002 ") == ("n2", "127.0.0.1:17002")


@pytest.mark.parametrize("spec", ["", "n2", "n2=", "=127.0.0.1:1"])
def test_parse_route_refuses(spec: str) -> None:
    with pytest.raises(InvalidArgument, match="is not ID=HOST:PORT"):
        parse_route(spec)


# -- loading: YAML, env, flags ------------------------------------------------------------


YAML = """
node_id: n2
data_dir: /yaml
request_timeout_s: 2
log_level: DEBUG
peers:
  - n1=127.0.0.1:7001,127.0.0.1:8001
  - {id: n2, raft: "127.0.0.1:7002", api: "127.0.0.1:8002"}
  - n3=127.0.0.1:7003,127.0.0.1:8003
raft_routes:
  n3: 127.0.0.1:17003
timings:
  heartbeat_s: 0.04
"""


@pytest.fixture
def yaml_file(tmp_path: Path) -> str:
    path = tmp_path / "coord.yaml"
    path.write_text(YAML)
    return str(path)


def test_load_defaults_from_flags_only() -> None:
    cfg = config.load(None, flags(), env={})
    assert cfg.request_timeout_s == 5.0
    assert cfg.timings == RaftTimings()
    assert cfg.peers == LOOP3


def test_yaml_overrides_defaults(yaml_file: str) -> None:
    cfg = config.load(yaml_file, {}, env={})
    assert (cfg.node_id, cfg.data_dir, cfg.log_level) == ("n2", "/yaml", "DEBUG")
    assert cfg.request_timeout_s == 2.0
    assert cfg.peers == LOOP3
    assert cfg.raft_routes == {"n3": "127.0.0.1:17003"}
    assert cfg.timings.heartbeat_s == 0.04
    assert cfg.timings.tick_s == RaftTimings().tick_s


def test_env_overrides_yaml(yaml_file: str) -> None:
    env = {
        "COORD_REQUEST_TIMEOUT_S": "3",
        "COORD_HEARTBEAT_S": "0.03",
        "COORD_DATA_DIR": "/env",
        "COORD_FSYNC": "false",
        "COORD_RAFT_ROUTES": "n1=127.0.0.1:17001",
        "COORD_LOG_LEVEL": "",  # empty: not set
    }
    cfg = config.load(yaml_file, {}, env=env)
    assert cfg.request_timeout_s == 3.0
    assert cfg.timings.heartbeat_s == 0.03
    assert cfg.data_dir == "/env"
    assert cfg.fsync is False
    assert cfg.raft_routes == {"n1": "127.0.0.1:17001"}  # replaces, does not merge
    assert cfg.log_level == "DEBUG"
    assert cfg.node_id == "n2"


def test_flags_override_env(yaml_file: str) -> None:
    env = {"COORD_REQUEST_TIMEOUT_S": "3", "COORD_HEARTBEAT_S": "0.03", "COORD_NODE_ID": "n3"}
    cfg = config.load(
        yaml_file,
        {"request_timeout_s": 4.0, "heartbeat_s": 0.02, "node_id": None, "fsync": False},
        env=env,
    )
    assert cfg.request_timeout_s == 4.0
    assert cfg.timings.heartbeat_s == 0.02
    assert cfg.node_id == "n3"  # a None flag is "not given"
    assert cfg.fsync is False


def test_env_peers_and_secret() -> None:
    env = {
        "COORD_NODE_ID": "n1",
        "COORD_DATA_DIR": "/e",
        "COORD_PEERS": ";".join(PEER_FLAGS) + ";",
        "COORD_CLUSTER_SECRET": "s",
        "COORD_LISTEN_RAFT": "0.0.0.0:7001",
    }
    cfg = config.load(None, {}, env=env)
    assert cfg.peers == LOOP3
    assert cfg.cluster_secret == "s"
    assert cfg.bind_raft == "0.0.0.0:7001"


def test_load_validates() -> None:
    with pytest.raises(InvalidArgument, match="beyond loopback"):
        config.load(None, flags(listen_raft="0.0.0.0:7001"), env={})


def test_load_without_peers_says_how_to_give_them() -> None:
    with pytest.raises(InvalidArgument, match="no peers: list every member with --peer"):
        config.load(None, {"node_id": "n1", "data_dir": "/d"}, env={})


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("COORD_FSYNC", "maybe", "fsync: 'maybe' is not a boolean"),
        ("COORD_REQUEST_TIMEOUT_S", "soon", "request_timeout_s: 'soon' is not a float"),
        ("COORD_LOG_COMPACTION_ENTRIES", "many", "is not an integer"),
        ("COORD_TICK_S", "fast", "tick_s: 'fast' is not a float"),
        ("COORD_PEERS", "n1", "is not ID=RAFT_HOST:PORT,API_HOST:PORT"),
        ("COORD_RAFT_ROUTES", "n1", "is not ID=HOST:PORT"),
    ],
)
def test_bad_env_values_are_refused(key: str, value: str, words: str) -> None:
    with pytest.raises(InvalidArgument, match=words):
        config.load(None, flags(), env={key: value})


@pytest.mark.parametrize("text", ["1", "true", "YES", "on", " True "])
def test_truthy_booleans(text: str) -> None:
    assert config.load(None, flags(), env={"COORD_FSYNC": text}).fsync is True


@pytest.mark.parametrize("text", ["0", "false", "No", "off"])
def test_falsy_booleans(text: str) -> None:
    assert config.load(None, flags(), env={"COORD_FSYNC": text}).fsync is False


def test_unknown_yaml_key_is_refused_with_the_known_ones(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("node_id: n1\nelection_timeout: 3\n")
    with pytest.raises(
        InvalidArgument, match=r"unknown key 'election_timeout'; known keys: .*timings"
    ):
        config.load(str(path), flags(), env={})


def test_unknown_timing_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("timings:\n  heartbeat: 0.1\n")
    with pytest.raises(InvalidArgument, match="unknown timing 'heartbeat'"):
        config.load(str(path), flags(), env={})


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("- a\n- b\n", "must hold a mapping at the top level"),
        ("node_id: [unclosed\n", "is not valid YAML"),
        ("timings: 3\n", "timings must be a mapping"),
        ("peers:\n  - {id: n1}\n", re.escape("a peer is {id, raft, api}")),
    ],
)
def test_bad_yaml_is_refused(tmp_path: Path, text: str, words: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(InvalidArgument, match=words):
        config.load(str(path), flags(), env={})


def test_an_empty_yaml_file_is_no_settings(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("")
    assert config.load(str(path), flags(), env={}) == config.load(None, flags(), env={})


def test_a_missing_yaml_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="cannot read config file"):
        config.load(str(tmp_path / "nope.yaml"), flags(), env={})


def test_load_reads_os_environ_when_no_env_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COORD_REQUEST_TIMEOUT_S", "7")
    assert config.load(None, flags()).request_timeout_s == 7.0
    assert config.load(None, flags(), env={}).request_timeout_s == 5.0


def test_an_empty_peer_id_is_refused() -> None:
    peers = (Peer("", "127.0.0.1:7001", "127.0.0.1:8001"), *LOOP3[1:])
    with pytest.raises(InvalidArgument, match="peer id '' is invalid"):
        node(node_id="n2", peers=peers).validate()


# -- peer ids and addresses ----------------------------------------------------------------------


def with_peer(index: int, **changes: str) -> tuple[Peer, ...]:
    peers = list(LOOP3)
    peers[index] = dataclasses.replace(peers[index], **changes)
    return tuple(peers)


@pytest.mark.parametrize(
    "pid",
    [
        " n2",
        "n2 ",
        "n 2",
        "n2\n",
        "n/2",
        "n:2",
        "n=2",
        "n,2",
        "n;2",
        "n2*",
        "nœud",
        "n\x002",
        "x" * 65,
    ],
)
def test_a_peer_id_outside_the_charset_is_refused(pid: str) -> None:
    with pytest.raises(InvalidArgument, match=r"peer id .* is invalid: use 1-64 letters") as info:
        node(peers=with_peer(1, id=pid)).validate()
    assert str(info.value).startswith("coord: ")


@pytest.mark.parametrize("pid", ["N2", "node-2", "node_2", "node.2", "2", "-._", "x" * 64])
def test_peer_ids_in_the_charset_are_accepted(pid: str) -> None:
    node(peers=with_peer(1, id=pid)).validate()


def test_the_charset_applies_to_this_node_too() -> None:
    with pytest.raises(InvalidArgument, match="peer id 'n 1' is invalid"):
        node(node_id="n 1", peers=with_peer(0, id="n 1")).validate()


@pytest.mark.parametrize("kind", ["raft", "api"])
def test_two_peers_sharing_an_address_are_refused(kind: str) -> None:
    field = f"{kind}_address"
    shared = getattr(LOOP3[0], field)
    with pytest.raises(InvalidArgument, match="is used twice"):
        node(peers=with_peer(2, **{field: shared})).validate()


def test_duplicate_raft_addresses_are_refused_whatever_the_order() -> None:
    peers = (
        Peer("a", "127.0.0.1:7001", "127.0.0.1:8001"),
        Peer("b", "127.0.0.1:7002", "127.0.0.1:8002"),
        Peer("c", "127.0.0.1:7002", "127.0.0.1:8003"),
    )
    for order in (peers, peers[::-1]):
        with pytest.raises(InvalidArgument, match="is used twice"):
            node(node_id="a", peers=order).validate()


def test_duplicate_raft_addresses_are_refused_on_load() -> None:
    specs = [*PEER_FLAGS[:2], "n3=127.0.0.1:7002,127.0.0.1:8003"]
    with pytest.raises(InvalidArgument, match="is used twice"):
        config.load(
            None,
            {},
            env={"COORD_NODE_ID": "n1", "COORD_DATA_DIR": "/d", "COORD_PEERS": ";".join(specs)},
        )


def test_one_peer_may_reuse_a_port_number_on_another_host() -> None:
    peers = (
        Peer("n1", "127.0.0.1:7000", "127.0.0.1:8000"),
        Peer("n2", "127.0.0.2:7000", "127.0.0.2:8000"),
        Peer("n3", "127.0.0.3:7000", "127.0.0.3:8000"),
    )
    node(peers=peers).validate()


@pytest.mark.parametrize(
    "peers",
    [
        pytest.param(with_peer(0, api_address="127.0.0.1:7001"), id="same-peer"),
        pytest.param(with_peer(1, api_address="127.0.0.1:7001"), id="across-peers"),
    ],
)
def test_a_raft_address_reused_as_an_api_address_is_refused(peers: tuple[Peer, ...]) -> None:
    with pytest.raises(InvalidArgument, match="address"):
        node(peers=peers).validate()


# -- strict numbers ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["heartbeat_s", "tick_s", "reconnect_s", "request_timeout_s"])
@pytest.mark.parametrize("value", [True, False])
def test_a_bool_is_not_a_float(name: str, value: bool) -> None:
    with pytest.raises(InvalidArgument, match=rf"^coord: {name}: {value} is not a float$"):
        config.load(None, flags(**{name: value}), env={})


def test_a_yaml_bool_is_not_a_timing(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("timings:\n  heartbeat_s: yes\n")
    with pytest.raises(InvalidArgument, match="heartbeat_s: True is not a float"):
        config.load(str(path), flags(), env={})


@pytest.mark.parametrize("value", [True, False])
def test_a_bool_is_not_an_int(value: bool) -> None:
    with pytest.raises(InvalidArgument, match=rf"log_compaction_entries: {value} is not a"):
        config.load(None, flags(log_compaction_entries=value), env={})


@pytest.mark.parametrize("value", [150.5, 100.000001, float("inf"), float("nan")])
def test_a_fraction_is_not_an_int(value: float) -> None:
    with pytest.raises(
        InvalidArgument, match=re.escape(f"log_compaction_entries: {value!r} is not a whole number")
    ):
        config.load(None, flags(log_compaction_entries=value), env={})


def test_a_yaml_fraction_is_not_an_int(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("log_compaction_entries: 150.5\n")
    with pytest.raises(InvalidArgument, match=r"150\.5 is not a whole number"):
        config.load(str(path), flags(), env={})


@pytest.mark.parametrize("value", ["150.5", "1e3"])
def test_an_env_fraction_is_not_an_int(value: str) -> None:
    with pytest.raises(InvalidArgument, match="is not an integer"):
        config.load(None, flags(), env={"COORD_LOG_COMPACTION_ENTRIES": value})


@pytest.mark.parametrize("value", [150, 150.0, "150", " 150 "])
def test_whole_numbers_are_ints(value: object) -> None:
    cfg = config.load(None, flags(log_compaction_entries=value), env={})
    assert cfg.log_compaction_entries == 150
    assert type(cfg.log_compaction_entries) is int


@pytest.mark.parametrize("value", [1, "0.04", 0.04])
def test_numbers_and_numeric_text_are_floats(value: object) -> None:
    cfg = config.load(None, flags(request_timeout_s=value), env={})
    assert type(cfg.request_timeout_s) is float


@pytest.mark.parametrize("value", ["nan", float("nan")])
def test_a_nan_timing_is_refused(value: object) -> None:
    with pytest.raises(InvalidArgument, match="heartbeat_s"):
        config.load(None, flags(heartbeat_s=value), env={})


@pytest.mark.parametrize("value", ["nan", float("nan")])
def test_a_nan_request_timeout_is_refused(value: object) -> None:
    with pytest.raises(InvalidArgument, match=r"request_timeout_s|request timeout"):
        config.load(None, flags(request_timeout_s=value), env={})


def test_strings_stay_strings_and_bools_are_not_strings() -> None:
    with pytest.raises(InvalidArgument, match="node_id: True is not a str"):
        config.load(None, flags(node_id=True), env={})


# -- YAML peers --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "peers: n1=127.0.0.1:7001,127.0.0.1:8001\n",
        "peers: {id: n1, raft: '127.0.0.1:7001', api: '127.0.0.1:8001'}\n",
        "peers: 3\n",
        "peers:\n",
    ],
    ids=["a-string", "a-mapping", "a-number", "null"],
)
def test_yaml_peers_must_be_a_list(tmp_path: Path, text: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(InvalidArgument, match="peers must be a list"):
        config.load(str(path), flags(), env={})


def test_an_empty_yaml_peer_list_defers_to_other_layers(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("peers: []\n")
    assert config.load(str(path), flags(), env={}).peers == LOOP3
    with pytest.raises(InvalidArgument, match="no peers"):
        config.load(str(path), {"node_id": "n1", "data_dir": "/d"}, env={})


# -- security --------------------------------------------------------------------


def _files(tmp_path: Path, *names: str) -> list[str]:
    out = []
    for n in names:
        f = tmp_path / n
        f.write_text("x")
        out.append(str(f))
    return out


def test_an_api_beyond_loopback_needs_authentication(tmp_path: Path) -> None:
    cert, key, ca, tokens = _files(tmp_path, "c.pem", "k.pem", "ca.pem", "tokens.yaml")
    public = {"listen_api": "0.0.0.0:8001", "listen_raft": "127.0.0.1:7001"}
    with pytest.raises(InvalidArgument, match="beyond loopback, without authentication"):
        node(**public).validate()
    with pytest.raises(InvalidArgument, match="in clear"):
        node(**public, auth_tokens_file=tokens).validate()
    node(**public, auth_tokens_file=tokens, tls_cert=cert, tls_key=key, tls_ca=ca).validate()
    node(**public, tls_client_auth="require", tls_cert=cert, tls_key=key, tls_ca=ca).validate()
    with pytest.raises(InvalidArgument, match="only on loopback"):
        node(**public, allow_unauthenticated="true", tls_client_auth="require",
             tls_cert=cert, tls_key=key, tls_ca=ca).validate()  # fmt: skip


def test_an_http_port_beyond_loopback_is_as_guarded_as_the_api(tmp_path: Path) -> None:
    cert, key, ca, tokens = _files(tmp_path, "c.pem", "k.pem", "ca.pem", "tokens.yaml")
    public = {"listen_http": "0.0.0.0:9479"}
    with pytest.raises(InvalidArgument, match="open to anyone; set --auth-tokens-file"):
        node(**public).validate()  # the API on loopback takes calls without credentials
    with pytest.raises(InvalidArgument, match=r"in clear \(0.0.0.0:9479 is beyond loopback"):
        node(**public, auth_tokens_file=tokens).validate()
    node(**public, auth_tokens_file=tokens, tls_cert=cert, tls_key=key, tls_ca=ca).validate()
    node(**public, tls_client_auth="require", tls_cert=cert, tls_key=key, tls_ca=ca).validate()
    node(listen_http="127.0.0.1:9479").validate()  # loopback: development, as the API


def test_anonymous_access_defaults(tmp_path: Path) -> None:
    (tokens,) = _files(tmp_path, "tokens.yaml")
    assert node().anonymous_allowed  # loopback, nothing configured: development
    assert not node(auth_tokens_file=tokens).anonymous_allowed
    assert node(auth_tokens_file=tokens, allow_unauthenticated="true").anonymous_allowed
    assert not node(allow_unauthenticated="false").anonymous_allowed


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"tls_cert": "c"}, "both --tls-cert and --tls-key"),
        ({"tls_client_auth": "require"}, "needs --tls-cert"),
        ({"tls_client_auth": "optional"}, "'none' or 'require'"),
        ({"allow_unauthenticated": "maybe"}, "auto, true or false"),
        ({"rate_limit_per_s": -1.0}, "rate limit"),
        ({"max_watch_streams": -1}, "watch streams"),
        ({"max_sessions_per_identity": -1}, "sessions per identity"),
        ({"auth_tokens_file": "/nonexistent/tokens.yaml"}, "does not exist"),
        ({"notify_webhook": "http://h:99999/x"}, "valid port"),
    ],
)
def test_bad_security_settings_say_what_to_fix(kw: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidArgument, match=match):
        node(**kw).validate()


def _readme_reference_keys() -> set[str]:
    """The keys in the README's configuration reference table (``a`` / ``b`` rows give two;
    ``x_min_s`` / ``_max_s`` abbreviates ``x_max_s``)."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## Configuration reference", 1)[1].split("\n## ", 1)[0]
    keys: set[str] = set()
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue
        prev = ""
        for written in re.findall(r"`([^`]+)`", line.split("|")[1]):
            name = written
            if written.startswith("_") and prev:
                name = "_".join(prev.split("_")[: -written.count("_")]) + written
            keys.add(name)
            prev = name
    return keys


def test_the_readme_documents_every_configuration_key() -> None:
    fields = {f.name for f in dataclasses.fields(config.NodeConfig) if f.name != "timings"}
    fields |= {f.name for f in dataclasses.fields(config.RaftTimings)}
    documented = _readme_reference_keys()
    assert fields - documented == set(), "add them to the README's configuration reference"
    assert documented - fields == set(), "the README documents keys coord does not have"
