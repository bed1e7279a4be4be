"""The client API's security, end to end: TLS, bearer tokens, client certificates, roles,
rate and stream limits, and `coord serve` refusing an open API.

Certificates come from `coordctl certs init` and tokens from `coordctl auth new-token`
(the real CLI). Every refused call must say what to do and change nothing: the revision,
the keys, the groups and the sessions are compared before and after.

What a client sees when the TLS layer refuses it (no status from coord: the handshake
fails): UNAVAILABLE, for a plaintext client against a TLS server, a client that does
not trust the server's CA ("Tls handshake failed ... certificate signature failure"),
and (mutual TLS) a client certificate from another CA or none at all ("Socket closed":
the server drops the connection after the client's certificate; the client library
then says no endpoint answered).
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import ssl
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from coord import errors
from coord.cli.output import EXIT_CONFIG
from coord.client import Client
from coord.client.credentials import Credentials
from coord.testing import LocalCluster, free_ports, wait_until
from coord.v1 import (
    cluster_pb2,
    cluster_pb2_grpc,
    election_pb2,
    election_pb2_grpc,
    groups_pb2,
    kv_pb2,
    kv_pb2_grpc,
    maintenance_pb2,
    maintenance_pb2_grpc,
)

from .support import COORD, COORDCTL, ClusterFactory, describe, parse_metrics, run

ONE_SLOT = groups_pb2.GroupPolicy(slots=1)
U = grpc.StatusCode.UNAUTHENTICATED
P = grpc.StatusCode.PERMISSION_DENIED


@dataclass
class Pki:
    """Our CA and certificates, another CA's, and the tokens file with clear tokens."""

    ours: Path  # ca.pem, n1..n3(.pem|-key.pem), alice, nobody
    foreign: Path  # another CA: ca.pem and a client "alice" (a CN we map!)
    tokens_file: Path
    tokens: dict[str, str]  # name -> clear token

    def creds(self, token: str = "", cert: str = "", ca: Path | None = None) -> Credentials:
        """TLS credentials trusting ``ca`` (default ours), with a token and/or ``cert``
        (``"alice"`` or ``"foreign/alice"``)."""
        cert_file = key_file = ""
        if cert:
            base = self.foreign / cert.split("/")[1] if "/" in cert else self.ours / cert
            cert_file, key_file = f"{base}.pem", f"{base}-key.pem"
        return Credentials(
            token=self.tokens.get(token, token),
            ca_file=str(ca or self.ours / "ca.pem"),
            cert_file=cert_file,
            key_file=key_file,
        )


def spawn(cmd: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """Start a CLI command (each takes a second or two to start on a busy machine, so
    independent ones run at once)."""
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def finish(proc: subprocess.Popen[str]) -> subprocess.CompletedProcess[str]:
    stdout, stderr = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def run_parallel(*cmds: list[str]) -> list[subprocess.CompletedProcess[str]]:
    """Run commands at once; each must succeed."""
    done = [finish(p) for p in [spawn(c) for c in cmds]]
    for d in done:
        assert d.returncode == 0, describe(d)
    return done


def new_token(name: str, role: str, groups: str, append_to: Path) -> list[str]:
    return [COORDCTL, "auth", "new-token", name, "--role", role, "--groups", groups,
            "--append", str(append_to)]  # fmt: skip


def printed_token(p: subprocess.CompletedProcess[str]) -> str:
    match = re.search(r"^token: (\S+)$", p.stdout, re.M)
    assert match, describe(p)
    return match.group(1)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    base = tmp_path_factory.mktemp("pki")
    ours, foreign = base / "ours", base / "foreign"
    nodes = [f"--node=n{i}=127.0.0.1,localhost" for i in (1, 2, 3)]
    # name -> (identity, role, groups)
    wanted = {
        "admin": ("ops", "admin", "*"),
        "reader": ("dashboard", "read", "*"),
        "member": ("web-agent", "member", "web-*,db"),
        "member2": ("db-agent", "member", "db"),
    }
    done = run_parallel(
        [COORDCTL, "certs", "init", "--dir", str(ours), *nodes, "--client", "alice",
         "--client", "nobody"],
        [COORDCTL, "certs", "init", "--dir", str(foreign), "--client", "alice"],
        *(new_token(*spec, base / f"{key}.yaml") for key, spec in wanted.items()),
    )  # fmt: skip
    tokens = {key: printed_token(p) for key, p in zip(wanted, done[2:], strict=True)}
    assert (ours / "ca-key.pem").stat().st_mode & 0o077 == 0, "the CA key must be private"
    tokens_file = base / "tokens.yaml"
    entries = [
        e for key in wanted for e in yaml.safe_load((base / f"{key}.yaml").read_text())["tokens"]
    ]
    doc = {"tokens": entries, "certs": [{"cn": "alice", "role": "member", "groups": ["web-*"]}]}
    tokens_file.write_text(yaml.safe_dump(doc))
    # --append to a file that exists keeps what it has.
    (p,) = run_parallel(new_token("hasty", "read", "*", tokens_file))
    tokens["hasty"] = printed_token(p)
    text = tokens_file.read_text()
    assert yaml.safe_load(text)["certs"] == doc["certs"]
    for clear in tokens.values():
        assert clear not in text, "the tokens file must hold digests only"
    return Pki(ours, foreign, tokens_file, tokens)


def _start(make: ClusterFactory, pki: Pki, n: int, creds: Credentials, *args: str) -> LocalCluster:
    c = make(
        n,
        fsync=False,
        start=False,
        http=True,
        extra_args=[
            "--tls-ca", str(pki.ours / "ca.pem"),
            "--auth-tokens-file", str(pki.tokens_file),
            "--cluster-secret", "raft-secret-for-tests",
            *args,
        ],
    )  # fmt: skip
    for node in c.nodes:
        cert = pki.ours / node.node_id
        node.extra_args = ["--tls-cert", f"{cert}.pem", "--tls-key", f"{cert}-key.pem"]
    c.credentials = creds
    c.start()
    c.wait_for_leader(timeout=60)
    return c


@pytest.fixture(scope="module")
def tls(module_cluster_factory: ClusterFactory, pki: Pki) -> LocalCluster:
    """3 nodes, TLS, bearer tokens (no client certificates), groups web-1 and other."""
    c = _start(module_cluster_factory, pki, 3, pki.creds("admin"))
    with admin_channel(c) as ch:
        groups = election_pb2_grpc.GroupsStub(ch)
        for name in ("web-1", "other"):
            groups.Create(election_pb2.CreateGroupRequest(name=name, policy=ONE_SLOT), timeout=10)
        kv_pb2_grpc.KVStub(ch).Put(kv_pb2.PutRequest(key=b"seed", value=b"1"), timeout=10)
    return c


@pytest.fixture(scope="module")
def mtls(module_cluster_factory: ClusterFactory, pki: Pki) -> LocalCluster:
    """1 node, mutual TLS + tokens, 20 requests/s per identity, 2 watch streams per
    connection, 3 open sessions per identity, /metrics."""
    c = _start(
        module_cluster_factory,
        pki,
        1,
        pki.creds("admin", cert="alice"),
        "--tls-client-auth", "require",
        "--rate-limit-per-s", "20",
        "--max-watch-streams", "2",
        "--max-sessions-per-identity", "3",
    )  # fmt: skip
    with admin_channel(c) as ch:
        election_pb2_grpc.GroupsStub(ch).Create(
            election_pb2.CreateGroupRequest(name="other", policy=ONE_SLOT), timeout=10
        )
    return c


@contextlib.contextmanager
def channel(c: LocalCluster, creds: Credentials, i: int = 0) -> Iterator[grpc.Channel]:
    ch = creds.channel(c.nodes[i].api)
    try:
        yield ch
    finally:
        ch.close()


def admin_channel(c: LocalCluster) -> contextlib.AbstractContextManager[grpc.Channel]:
    assert c.credentials is not None
    return channel(c, c.credentials)


State = tuple[int, list[tuple[bytes, bytes, int]], list[str], list[str]]


def state(c: LocalCluster) -> State:
    """Revision, keys, groups (with members) and sessions, read linearizably as admin."""

    def read() -> State:
        with admin_channel(c) as ch:
            kv = kv_pb2_grpc.KVStub(ch).Range(kv_pb2.RangeRequest(key=b"", prefix=True), timeout=5)
            groups = election_pb2_grpc.GroupsStub(ch).List(
                election_pb2.ListGroupsRequest(), timeout=5
            )
            sessions = election_pb2_grpc.SessionsStub(ch).List(
                election_pb2.ListSessionsRequest(), timeout=5
            )
        return (
            kv.header.revision,
            [(k.key, k.value, k.mod_revision) for k in kv.kvs],
            sorted(str(g).replace("\n", " ") for g in groups.groups),
            sorted(s.id for s in sessions.sessions),
        )

    # The mTLS node rate-limits the admin too (20/s): a refused read is retried, not a
    # failure, paced so that the bucket refills for all three calls in between (retried
    # every 10 ms, each attempt's first calls took the tokens as they came and the third
    # never found one: 10 s of refusals, seen in CI).
    return wait_until(read, 10, "the state, read as admin", interval=0.25)


@contextlib.contextmanager
def unchanged(c: LocalCluster) -> Iterator[None]:
    before = state(c)
    yield
    assert state(c) == before, "a refused call changed the state"


def refused(call: Callable[[], Any]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        result = call()
        if hasattr(result, "__iter__") and not isinstance(result, bytes):
            list(result)  # a stream fails when read
    return info.value


def code_and_details(e: grpc.RpcError) -> tuple[grpc.StatusCode, str]:
    """The status and its message (coord's own messages start with "coord: ")."""
    details = e.details() or ""
    return e.code(), details.removeprefix("coord: ")


def put(ch: grpc.Channel, key: bytes = b"k") -> Any:
    return kv_pb2_grpc.KVStub(ch).Put(kv_pb2.PutRequest(key=key, value=b"v"), timeout=10)


def status(ch: grpc.Channel, timeout: float = 10) -> cluster_pb2.StatusResponse:
    return cluster_pb2_grpc.ClusterStub(ch).Status(cluster_pb2.StatusRequest(), timeout=timeout)


def open_session(ch: grpc.Channel) -> str:
    resp = election_pb2_grpc.SessionsStub(ch).Open(
        election_pb2.OpenSessionRequest(ttl_ms=600_000, name="test"), timeout=10
    )
    return str(resp.session.id)


def register(ch: grpc.Channel, group: str, session: str, member: str = "m1") -> Any:
    return election_pb2_grpc.GroupsStub(ch).Register(
        election_pb2.RegisterRequest(
            member=groups_pb2.Member(group=group, id=member, session_id=session)
        ),
        timeout=10,
    )


# -- who may call: tokens over TLS ---------------------------------------------------

# name -> (token, the call (given a channel and a member session of the admin's), code,
# what the message must say)
REFUSALS: dict[str, tuple[str, Callable[[grpc.Channel, str], Any], grpc.StatusCode, str]] = {
    "no credentials": ("", lambda ch, s: put(ch), U, "--token"),
    "wrong token": ("not-a-token", lambda ch, s: put(ch), U, "unknown token"),
    "reader writes": ("reader", lambda ch, s: put(ch), P, "needs 'member'"),
    "reader opens a session": ("reader", lambda ch, s: open_session(ch), P, "needs 'member'"),
    "reader keeps a session alive (bidi stream)": (
        "reader",
        lambda ch, s: election_pb2_grpc.SessionsStub(ch).KeepAlive(
            iter([election_pb2.KeepAliveRequest(session_id=s)]), timeout=10
        ),
        P,
        "needs 'member'",
    ),
    "reader takes a snapshot (server stream)": (
        "reader",
        lambda ch, s: maintenance_pb2_grpc.MaintenanceStub(ch).Snapshot(
            maintenance_pb2.SnapshotRequest(), timeout=10
        ),
        P,
        "needs 'admin'",
    ),
    "member registers outside its groups": (
        "member",
        lambda ch, s: register(ch, "other", s),
        P,
        "may not act in group 'other' (allowed: web-*, db)",
    ),
    "member campaigns outside its groups": (
        "member",
        lambda ch, s: election_pb2_grpc.GroupsStub(ch).Campaign(
            election_pb2.CampaignRequest(group="other", member_id="m1"), timeout=10
        ),
        P,
        "may not act in group 'other'",
    ),
    "member creates a group": (
        "member",
        lambda ch, s: election_pb2_grpc.GroupsStub(ch).Create(
            election_pb2.CreateGroupRequest(name="web-2", policy=ONE_SLOT), timeout=10
        ),
        P,
        "needs 'admin'",
    ),
    "member deletes a group": (
        "member",
        lambda ch, s: election_pb2_grpc.GroupsStub(ch).Delete(
            election_pb2.DeleteGroupRequest(name="web-1"), timeout=10
        ),
        P,
        "needs 'admin'",
    ),
    "member removes a node": (
        "member",
        lambda ch, s: cluster_pb2_grpc.ClusterStub(ch).RemoveNode(
            cluster_pb2.RemoveNodeRequest(id="n1"), timeout=10
        ),
        P,
        "needs 'admin'",
    ),
}


@pytest.fixture(scope="module")
def admin_session(tls: LocalCluster) -> str:
    with admin_channel(tls) as ch:
        return open_session(ch)


@pytest.mark.parametrize("case", list(REFUSALS))
def test_refused_with_a_clear_status_and_nothing_changed(
    tls: LocalCluster, pki: Pki, admin_session: str, case: str
) -> None:
    token, call, code, says = REFUSALS[case]
    with unchanged(tls), channel(tls, pki.creds(token), i=1) as ch:  # a follower
        got, details = code_and_details(refused(lambda: call(ch, admin_session)))
    assert got == code, f"{case}: {got} {details}"
    assert says in details, f"{case}: {details!r} does not say {says!r}"


def test_malformed_authorization_header_is_unauthenticated(tls: LocalCluster, pki: Pki) -> None:
    with unchanged(tls), channel(tls, pki.creds()) as ch:
        err = refused(
            lambda: kv_pb2_grpc.KVStub(ch).Put(
                kv_pb2.PutRequest(key=b"k", value=b"v"),
                metadata=(("authorization", "Basic b3BzOnNlY3JldA=="),),
                timeout=10,
            )
        )
    assert code_and_details(err) == (U, "the authorization metadata must be 'Bearer <token>'")


def test_admin_and_scoped_member_succeed(tls: LocalCluster, pki: Pki) -> None:
    with channel(tls, pki.creds("member"), i=2) as ch:
        session = open_session(ch)
        assert register(ch, "web-1", session, "w1").member.id == "w1"
        assert put(ch, b"by-member").succeeded
    with channel(tls, pki.creds("reader")) as ch:
        resp = kv_pb2_grpc.KVStub(ch).Range(kv_pb2.RangeRequest(key=b"by-member"), timeout=10)
        assert [kv.value for kv in resp.kvs] == [b"v"]
        first = next(
            cluster_pb2_grpc.ClusterStub(ch).WatchLeader(
                cluster_pb2.WatchLeaderRequest(), timeout=10
            )
        )
        assert first.leader_id, "a reader may watch"
    with admin_channel(tls) as ch:
        groups = election_pb2_grpc.GroupsStub(ch)
        groups.Create(
            election_pb2.CreateGroupRequest(name="web-admin", policy=ONE_SLOT), timeout=10
        )
        groups.Delete(election_pb2.DeleteGroupRequest(name="web-admin"), timeout=10)
        names = [g.name for g in groups.List(election_pb2.ListGroupsRequest(), timeout=10).groups]
        assert "web-admin" not in names and "web-1" in names


def test_a_session_belongs_to_the_identity_that_opened_it(tls: LocalCluster, pki: Pki) -> None:
    with channel(tls, pki.creds("member")) as ch:
        session = open_session(ch)
    theirs = f"session {session} belongs to 'web-agent', not 'db-agent': use a session of your own"
    sessions = election_pb2_grpc.SessionsStub
    calls: dict[str, Callable[[grpc.Channel], Any]] = {
        "close": lambda ch: sessions(ch).Close(
            election_pb2.CloseSessionRequest(session_id=session), timeout=10
        ),
        "keep alive": lambda ch: sessions(ch).KeepAlive(
            iter([election_pb2.KeepAliveRequest(session_id=session)]), timeout=10
        ),
        "register with it": lambda ch: register(ch, "db", session),
    }
    lead = tls.wait_for_leader()
    before = rejected(tls, pki, lead).get("permission_denied", 0)
    with unchanged(tls), channel(tls, pki.creds("member2"), i=lead) as ch:
        for what, call in calls.items():
            got = code_and_details(refused(lambda call=call: call(ch)))  # type: ignore[misc]
            assert got == (P, theirs), f"{what}: {got}"
    assert rejected(tls, pki, lead).get("permission_denied", 0) == before + len(calls)
    with admin_channel(tls) as ch:  # an operator may
        sessions(ch).Close(election_pb2.CloseSessionRequest(session_id=session), timeout=10)


def test_plaintext_client_against_tls_server_fails_cleanly(tls: LocalCluster, pki: Pki) -> None:
    with unchanged(tls):
        with grpc.insecure_channel(tls.nodes[0].api) as ch:
            got, details = code_and_details(refused(lambda: status(ch, timeout=3)))
        assert got == grpc.StatusCode.UNAVAILABLE, details
        # Nor does a client that does not trust the servers' CA get through.
        with channel(tls, pki.creds("admin", ca=pki.foreign / "ca.pem")) as ch:
            got, details = code_and_details(refused(lambda: status(ch, timeout=3)))
        assert got == grpc.StatusCode.UNAVAILABLE, details
    for i in range(3):
        log = tls.log(i)
        assert "Traceback" not in log, log
        assert "Handshake failed" not in log, "gRPC core's INFO lines stay out of the log"


def test_tls_failures_say_what_to_check(tls: LocalCluster, pki: Pki) -> None:
    """Through the client library and coordctl: a CA that did not sign the servers'
    certificates, a plaintext client (with no token), and a token and no CA towards a
    server beyond loopback (refused before any connection)."""
    eps = [tls.nodes[0].api]
    foreign = pki.creds("admin", ca=pki.foreign / "ca.pem")
    with Client(eps, timeout_s=2, credentials=foreign) as c, pytest.raises(errors.Unavailable) as e:
        c.status()
    assert f"TLS handshake with {eps[0]} failed" in e.value.message, e.value.message
    assert "is --cacert the CA that signed the cluster's certificates" in e.value.message
    assert "majority" not in e.value.message
    with Client(eps, timeout_s=2) as c, pytest.raises(errors.Unavailable) as e:
        c.status()
    assert "closed the connection" in e.value.message, e.value.message
    assert "hangs up on plaintext clients" in e.value.message
    p = run(
        [COORDCTL, "--endpoints", eps[0], "--timeout", "2",
         "--cacert", str(pki.foreign / "ca.pem"), "status"]
    )  # fmt: skip
    assert p.returncode == 4, describe(p)
    assert f"{eps[0]}: coord: TLS handshake with {eps[0]} failed" in p.stderr, describe(p)
    assert "ssl_transport_security" not in p.stderr, "gRPC core's own log lines are off"


def test_coordctl_with_token_and_cacert(tls: LocalCluster, pki: Pki) -> None:
    ca = str(pki.ours / "ca.pem")
    ctl = [COORDCTL, "--endpoints", ",".join(tls.endpoints), "--cacert", ca]
    member = [*ctl, "--token", pki.tokens["member"]]
    # The reader's credentials come from the environment instead of flags.
    env = {
        **os.environ,
        "COORDCTL_ENDPOINTS": ",".join(tls.endpoints),
        "COORDCTL_TOKEN": pki.tokens["reader"],
        "COORDCTL_CACERT": ca,
    }
    st = spawn([*member, "status"])
    put = finish(spawn([*member, "kv", "put", "from-ctl", "yes"]))
    assert put.returncode == 0, describe(put)
    with unchanged(tls):
        get = spawn([COORDCTL, "kv", "get", "from-ctl"], env)
        anonymous = spawn([*ctl, "kv", "put", "from-ctl", "no"])
        reader = spawn([COORDCTL, "kv", "put", "from-ctl", "no"], env)
        st_done, get_done, anon_done, reader_done = map(finish, (st, get, anonymous, reader))
    assert st_done.returncode == 0, describe(st_done)
    assert "n1" in st_done.stdout and "n3" in st_done.stdout, describe(st_done)
    assert get_done.returncode == 0 and "yes" in get_done.stdout, describe(get_done)
    assert anon_done.returncode != 0, describe(anon_done)
    assert "no credentials" in anon_done.stderr, describe(anon_done)
    assert reader_done.returncode != 0, describe(reader_done)
    assert "'dashboard' has role 'read'; Put needs 'member'" in reader_done.stderr, describe(
        reader_done
    )
    for d in (anon_done, reader_done):
        assert "Traceback" not in d.stderr, describe(d)


# -- who may call: client certificates (mutual TLS) ----------------------------------


def test_certificate_from_another_ca_fails_the_handshake(mtls: LocalCluster, pki: Pki) -> None:
    # "alice" is a CN we map to a role: only the CA that signed it differs.
    with unchanged(mtls):
        for creds in (pki.creds("admin", cert="foreign/alice"), pki.creds("admin")):
            with channel(mtls, creds) as ch:
                got, details = code_and_details(refused(lambda: put(ch)))
            assert got == grpc.StatusCode.UNAVAILABLE, f"{creds.cert_file}: {got} {details}"


def test_certificate_of_our_ca_with_unmapped_name_is_unauthenticated(
    mtls: LocalCluster, pki: Pki
) -> None:
    with unchanged(mtls), channel(mtls, pki.creds(cert="nobody")) as ch:
        got, details = code_and_details(refused(lambda: put(ch)))
    assert got == U
    assert details == "client certificate 'nobody' is not mapped to a role in the tokens file"


def test_certificate_identity_has_its_role_and_groups(mtls: LocalCluster, pki: Pki) -> None:
    with channel(mtls, pki.creds(cert="alice")) as ch:
        session = open_session(ch)
        with unchanged(mtls):
            got, details = code_and_details(refused(lambda: register(ch, "other", session)))
            assert (got, details) == (P, "'alice' may not act in group 'other' (allowed: web-*)")
            got, details = code_and_details(
                refused(
                    lambda: election_pb2_grpc.GroupsStub(ch).Create(
                        election_pb2.CreateGroupRequest(name="web-9", policy=ONE_SLOT), timeout=10
                    )
                )
            )
            assert (got, details) == (P, "'alice' has role 'member'; Create needs 'admin'")
        assert put(ch, b"by-alice").succeeded


# -- limits ------------------------------------------------------------------------


def https_get(
    c: LocalCluster, pki: Pki, path: str, i: int = 0, token: str = "reader", cert: str = ""
) -> tuple[int, str, dict[str, str]]:
    """GET ``path`` on node i's HTTP port (HTTPS with the nodes' certificate: the API has
    one) with a token of ``pki.tokens`` and/or a client certificate: status, body, headers."""
    ctx = ssl.create_default_context(cafile=str(pki.ours / "ca.pem"))
    if cert:
        ctx.load_cert_chain(f"{pki.ours / cert}.pem", f"{pki.ours / cert}-key.pem")
    headers = {"Authorization": f"Bearer {pki.tokens.get(token, token)}"} if token else {}
    req = urllib.request.Request(f"https://{c.nodes[i].http}{path}", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=5, context=ctx) as r:
            return r.status, r.read().decode(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(), dict(e.headers)


def rejected(c: LocalCluster, pki: Pki, i: int = 0) -> dict[str, float]:
    """coord_requests_rejected_total by reason, from node i's /metrics."""
    code, text, _ = https_get(c, pki, "/metrics", i)
    assert code == 200, text
    return {
        dict(labels)["reason"]: value
        for (name, labels), value in parse_metrics(text).items()
        if name == "coord_requests_rejected_total"
    }


def test_rate_limit_per_identity(mtls: LocalCluster, pki: Pki) -> None:
    before = rejected(mtls, pki)
    with channel(mtls, pki.creds("hasty", cert="nobody")) as ch:
        stub = cluster_pb2_grpc.ClusterStub(ch)
        # 20/s with bursts of 40: 100 calls at once cannot all pass, however slow the host.
        calls = [stub.Status.future(cluster_pb2.StatusRequest(), timeout=30) for _ in range(100)]
        refusals = set()
        for f in calls:
            try:
                f.result()
            except grpc.RpcError as e:
                refusals.add(code_and_details(e))
        assert refusals == {
            (
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                "'hasty' is over its rate limit (20 requests/s): slow down and retry",
            )
        }
        with channel(mtls, pki.creds("reader", cert="nobody")) as other:
            assert status(other).node_id == "n1", "another identity is not slowed down"
        wait_until(lambda: status(ch), 10, "the bucket to refill for 'hasty'", interval=0.1)
    assert rejected(mtls, pki).get("rate", 0) >= before.get("rate", 0) + 1


def test_watch_streams_per_connection(mtls: LocalCluster, pki: Pki) -> None:
    before = rejected(mtls, pki)
    creds = pki.creds("reader", cert="alice")
    with channel(mtls, creds) as ch, channel(mtls, creds) as other:
        cluster = cluster_pb2_grpc.ClusterStub(ch)
        streams: list[Any] = [cluster.WatchLeader(cluster_pb2.WatchLeaderRequest(), timeout=30)]
        # Another watch-like method counts against the same connection.
        streams.append(
            election_pb2_grpc.GroupsStub(ch).Observe(
                election_pb2.MastersRequest(group="other"), timeout=30
            )
        )
        for s in streams:
            next(s)  # open and registered
        err = refused(lambda: cluster.WatchLeader(cluster_pb2.WatchLeaderRequest(), timeout=10))
        assert code_and_details(err) == (
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "this connection already has 2 watch streams open: close some, or multiplex "
            "filters over fewer streams",
        )
        # Another connection has its own allowance; unary calls are not streams.
        third = cluster_pb2_grpc.ClusterStub(other).WatchLeader(
            cluster_pb2.WatchLeaderRequest(), timeout=30
        )
        assert next(third).leader_id == "n1"
        assert status(ch).node_id == "n1"
        # A closed stream gives its place back.
        streams[0].cancel()

        def reopened() -> bool:
            s = cluster.WatchLeader(cluster_pb2.WatchLeaderRequest(), timeout=10)
            next(s)
            s.cancel()
            return True

        wait_until(reopened, 10, "the cancelled stream's place to be free", interval=0.1)
        third.cancel()
        streams[1].cancel()
    assert rejected(mtls, pki).get("watch_streams", 0) >= before.get("watch_streams", 0) + 1


def test_open_sessions_per_identity(mtls: LocalCluster, pki: Pki) -> None:
    before = rejected(mtls, pki).get("sessions", 0)
    sessions = election_pb2_grpc.SessionsStub
    with channel(mtls, pki.creds("member", cert="alice")) as ch:
        mine = [open_session(ch) for _ in range(3)]
        with unchanged(mtls):
            err = refused(lambda: open_session(ch))
        assert code_and_details(err) == (
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "'web-agent' already has 3 open sessions, the most allowed: close sessions you no "
            "longer use (one per process is enough)",
        )
        with channel(mtls, pki.creds("member2", cert="alice")) as other:
            theirs = open_session(other)  # another identity has its own allowance
            sessions(other).Close(election_pb2.CloseSessionRequest(session_id=theirs), timeout=10)
        # A closed session gives its place back.
        sessions(ch).Close(election_pb2.CloseSessionRequest(session_id=mine.pop()), timeout=10)
        mine.append(open_session(ch))
        for s in mine:
            sessions(ch).Close(election_pb2.CloseSessionRequest(session_id=s), timeout=10)
    assert rejected(mtls, pki).get("sessions", 0) == before + 1


def test_metrics_count_refusals_by_reason(mtls: LocalCluster, pki: Pki) -> None:
    before = rejected(mtls, pki)
    with channel(mtls, pki.creds(cert="nobody")) as ch:
        refused(lambda: put(ch))
        refused(lambda: put(ch))
    with channel(mtls, pki.creds("reader", cert="nobody")) as ch:
        refused(lambda: put(ch))

    def counted() -> dict[str, float] | None:
        after = rejected(mtls, pki)
        ok = (
            after.get("unauthenticated", 0) >= before.get("unauthenticated", 0) + 2
            and after.get("permission_denied", 0) >= before.get("permission_denied", 0) + 1
        )
        return after if ok else None

    wait_until(counted, 5, "coord_requests_rejected_total to count the refusals")


def test_failed_authentications_are_slowed_down_per_host(mtls: LocalCluster, pki: Pki) -> None:
    """Guessing tokens: after a burst of failures from one host, RESOURCE_EXHAUSTED with
    a clear message (counted as auth_failures); valid credentials from that host pass."""
    before = rejected(mtls, pki).get("auth_failures", 0)
    with channel(mtls, pki.creds("guess-1", cert="nobody")) as ch:
        stub = cluster_pb2_grpc.ClusterStub(ch)
        calls = [stub.Status.future(cluster_pb2.StatusRequest(), timeout=30) for _ in range(60)]
        got = set()
        for f in calls:
            with pytest.raises(grpc.RpcError) as e:
                f.result()
            got.add(code_and_details(e.value)[0])
        refusal = code_and_details(refused(lambda: status(ch)))
    assert got == {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.RESOURCE_EXHAUSTED}, got
    assert refusal[0] == grpc.StatusCode.RESOURCE_EXHAUSTED, refusal
    assert re.fullmatch(
        r"too many failed authentications from ipv[46]:\S+: wait a few seconds, then retry "
        r"with valid credentials",
        refusal[1],
    ), refusal
    with channel(mtls, pki.creds("reader", cert="nobody")) as ok:
        assert status(ok).node_id == "n1"
    assert rejected(mtls, pki).get("auth_failures", 0) >= before + 1

    def refilled() -> bool:
        with channel(mtls, pki.creds("guess-2", cert="nobody")) as ch:
            return code_and_details(refused(lambda: status(ch)))[0] == U

    wait_until(refilled, 10, "the failure bucket to refill", interval=0.5)


# -- the HTTP port: as guarded as the API ---------------------------------------------


def test_http_port_serves_https_and_wants_credentials_for_data(tls: LocalCluster, pki: Pki) -> None:
    for path in ("/metrics", "/api/status", "/api/stream"):
        code, body, headers = https_get(tls, pki, path, token="")
        assert code == 401, (path, code, body)
        assert headers.get("WWW-Authenticate") == 'Bearer realm="coord"'
        assert "no credentials" in body and "Authorization: Bearer <token>" in body, body
        code, body, _ = https_get(tls, pki, path, token="not-a-token")
        assert code == 401 and "unknown token" in body, (path, body)
    code, body, _ = https_get(tls, pki, "/metrics", token="reader")
    assert code == 200 and "coord_raft_term" in body
    code, body, _ = https_get(tls, pki, "/api/status", token="member")
    assert code == 200 and '"nodes"' in body
    # Probes and the page's own files carry no data: open.
    for path in ("/healthz", "/readyz", "/", "/status.js"):
        code, body, _ = https_get(tls, pki, path, token="")
        assert code == 200, (path, code, body)
    # Plain HTTP to the HTTPS port gets nothing.
    with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
        urllib.request.urlopen(f"http://{tls.nodes[0].http}/metrics", timeout=5).read()


def test_http_port_takes_a_mapped_client_certificate(mtls: LocalCluster, pki: Pki) -> None:
    code, body, _ = https_get(mtls, pki, "/metrics", token="", cert="alice")
    assert code == 200 and "coord_raft_term" in body
    code, body, _ = https_get(mtls, pki, "/metrics", token="", cert="nobody")
    assert code == 401 and "not mapped to a role" in body, body


# -- `coord serve` refuses an open API ------------------------------------------------


def test_serve_refuses_an_open_api_before_binding(tmp_path: Path, pki: Pki) -> None:
    raft, api, public = free_ports(3)
    base = [
        COORD, "serve", "--node-id", "n1", "--data-dir", str(tmp_path / "data"),
        "--peer", f"n1=127.0.0.1:{raft},127.0.0.1:{api}",
    ]  # fmt: skip
    cert = ["--tls-cert", str(pki.ours / "n1.pem"), "--tls-key", str(pki.ours / "n1-key.pem")]
    tokens = ["--auth-tokens-file", str(pki.tokens_file)]
    listen = ["--listen-api", f"0.0.0.0:{public}"]
    cases = {
        "no authentication": (listen, "beyond loopback, without authentication"),
        "tokens in clear": ([*listen, *tokens], "bearer tokens would cross the network in clear"),
        "anonymous": (
            [*listen, *tokens, *cert, "--allow-unauthenticated", "true"],
            "unauthenticated access is allowed only on loopback",
        ),
        "mtls without a ca": (
            [*cert, "--tls-client-auth", "require", "--tls-ca", ""],
            "--tls-client-auth require needs --tls-cert, --tls-key and --tls-ca",
        ),
        "cert without key": (
            ["--tls-cert", str(pki.ours / "n1.pem")],
            "TLS needs both --tls-cert and --tls-key",
        ),
        "missing tokens file": (
            ["--auth-tokens-file", str(tmp_path / "nope.yaml")],
            "does not exist or is not a file",
        ),
    }
    # Hold the public port: a process that bound it before validating would fail
    # differently (cannot listen) and not with a configuration error.
    holder = socket.socket()
    holder.bind(("0.0.0.0", public))
    try:
        procs = {name: spawn([*base, *args]) for name, (args, _) in cases.items()}
        for name, proc in procs.items():
            done = finish(proc)
            assert done.returncode == EXIT_CONFIG, f"{name}: {describe(done)}"
            assert cases[name][1] in done.stderr, f"{name}: {describe(done)}"
            assert "Traceback" not in done.stdout + done.stderr, f"{name}: {describe(done)}"
    finally:
        holder.close()
    assert not (tmp_path / "data").exists(), "a refused configuration must not create data"


def pipelined(ch: grpc.Channel, *ops: kv_pb2.PipelineOp) -> dict[int, kv_pb2.PipelineResult]:
    """Send ``ops`` in one KV.Pipeline message; their results by tag."""
    out: dict[int, kv_pb2.PipelineResult] = {}
    for response in kv_pb2_grpc.KVStub(ch).Pipeline(
        iter([kv_pb2.PipelineRequest(ops=ops)]), timeout=10
    ):
        out.update((r.tag, r) for r in response.results)
    return out


def test_each_pipelined_request_is_checked_against_its_own_method(
    tls: LocalCluster, pki: Pki
) -> None:
    """A stream any reader may open does not let a reader write: every request on it
    passes the role check of its unary method (and the session-owner check), each
    refusal fails that request alone and is counted like a unary one."""
    with channel(tls, pki.creds("member")) as ch:
        session = open_session(ch)
    lead = tls.wait_for_leader()
    before = rejected(tls, pki, lead).get("permission_denied", 0)
    bound = kv_pb2.PutRequest(key=b"pipe/bound", value=b"v", session_id=session)
    with unchanged(tls):
        with channel(tls, pki.creds("reader"), i=lead) as ch:
            got = pipelined(
                ch,
                kv_pb2.PipelineOp(tag=1, put=kv_pb2.PutRequest(key=b"pipe/k", value=b"v")),
                kv_pb2.PipelineOp(tag=2, range=kv_pb2.RangeRequest(key=b"pipe/", prefix=True)),
                kv_pb2.PipelineOp(tag=3, delete=kv_pb2.DeleteRequest(key=b"k")),
            )
        assert got[1].error.code == "PERMISSION_DENIED", got[1]
        assert "needs 'member'" in got[1].error.message
        assert got[2].WhichOneof("result") == "range", "a reader may read"
        assert got[3].error.code == "PERMISSION_DENIED"
        with channel(tls, pki.creds("member2"), i=lead) as ch:
            theirs = pipelined(ch, kv_pb2.PipelineOp(tag=7, put=bound))[7]
        assert theirs.error.code == "PERMISSION_DENIED"
        assert "belongs to 'web-agent', not 'db-agent'" in theirs.error.message
        with channel(tls, pki.creds(""), i=lead) as ch:
            code, details = code_and_details(refused(lambda: pipelined(ch)))
        assert (code, "--token" in details) == (U, True), details
    assert rejected(tls, pki, lead).get("permission_denied", 0) == before + 3
    with channel(tls, pki.creds("member"), i=lead) as ch:  # the session's owner may
        assert pipelined(ch, kv_pb2.PipelineOp(tag=9, put=bound))[9].put.succeeded
