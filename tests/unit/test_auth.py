"""coord.server.security.auth: the tokens file, identify (token, certificate, anonymous), authorize
(roles and group patterns), RULES covering every RPC, and the rate limiter; plus the
guard that puts them in front of every call (coord.server.security.guard)."""

from __future__ import annotations

import importlib
import pkgutil
import re
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from hypothesis import given
from hypothesis import strategies as st

import coord.v1
from coord import errors
from coord.server.security import auth, guard
from coord.server.security.auth import (
    ADMIN,
    ANONYMOUS,
    MEMBER,
    RANK,
    READ,
    RULES,
    Authenticator,
    Identity,
    RateLimiter,
    hash_token,
    load_tokens_file,
)
from coord.server.security.guard import WATCH_STREAMS, Guard, caller

PROTO_DIR = Path(__file__).resolve().parents[2] / "proto" / "coord" / "v1"


def served_methods() -> Iterator[MethodDescriptor]:
    """Every method of every service in the generated coord.v1 modules."""
    for info in pkgutil.iter_modules(coord.v1.__path__):
        if info.name.endswith("_pb2"):
            module = importlib.import_module(f"coord.v1.{info.name}")
            for service in module.DESCRIPTOR.services_by_name.values():
                yield from service.methods


def full_name(m: MethodDescriptor) -> str:
    return f"/{m.containing_service.full_name}/{m.name}"


# -- RULES cover the API -----------------------------------------------------------


def test_every_rpc_has_a_rule_and_every_rule_an_rpc() -> None:
    served = {full_name(m) for m in served_methods()}
    assert len(served) >= 30, "the coord.v1 services were not found"
    missing = sorted(served - set(RULES))
    assert not missing, f"RPCs without an authorization rule in auth.RULES: {missing}"
    stale = sorted(set(RULES) - served)
    assert not stale, f"rules for RPCs that do not exist: {stale}"


def test_every_rpc_in_the_protos_has_a_rule() -> None:
    # The .proto sources too: a new rpc fails here even before the code is regenerated.
    found = set()
    for path in PROTO_DIR.glob("*.proto"):
        text = path.read_text()
        for service, body in re.findall(r"^service (\w+) \{(.*?)^\}", text, re.M | re.S):
            for rpc in re.findall(r"^\s*rpc (\w+)\(", body, re.M):
                found.add(f"/coord.v1.{service}/{rpc}")
    assert found, f"no services found under {PROTO_DIR}"
    assert sorted(found - set(RULES)) == []


def test_rule_roles_are_known_and_writes_are_not_open_to_readers() -> None:
    for method, rule in RULES.items():
        assert rule.role in RANK, method
    for method in (
        "/coord.v1.KV/Put",
        "/coord.v1.KV/Delete",
        "/coord.v1.Sessions/Open",
        "/coord.v1.Groups/Register",
        "/coord.v1.Groups/Campaign",
    ):
        assert RULES[method].role == MEMBER, method
    for method in (
        "/coord.v1.Groups/Create",
        "/coord.v1.Groups/Delete",
        "/coord.v1.Groups/Switchover",
        "/coord.v1.Groups/RunCheck",
        "/coord.v1.Cluster/AddNode",
        "/coord.v1.Cluster/RemoveNode",
        "/coord.v1.Cluster/TransferLeader",
        "/coord.v1.Maintenance/Snapshot",
        "/coord.v1.Maintenance/Diff",
    ):
        assert RULES[method].role == ADMIN, method


def _with_group(desc: Descriptor, group: str, depth: int = 0) -> Message:
    """A message of type ``desc`` whose ``group`` fields (at any depth) hold ``group``."""
    msg = message_factory.GetMessageClass(desc)()
    for field in desc.fields:
        if field.is_repeated or depth > 3:
            continue
        if field.name == "group" and field.type == FieldDescriptor.TYPE_STRING:
            setattr(msg, field.name, group)
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            sub = field.message_type
            assert sub is not None
            getattr(msg, field.name).CopyFrom(_with_group(sub, group, depth + 1))
    return msg


def test_group_rules_read_the_group_the_request_acts_on() -> None:
    by_name = {full_name(m): m for m in served_methods()}
    scoped = {name: rule for name, rule in RULES.items() if rule.group is not None}
    assert {"/coord.v1.Groups/Register", "/coord.v1.Groups/Campaign"} <= set(scoped)
    for name, rule in scoped.items():
        assert rule.group is not None
        req = _with_group(by_name[name].input_type, "web-7")
        assert rule.group(req) == "web-7", name
        empty = message_factory.GetMessageClass(by_name[name].input_type)()
        assert rule.group(empty) == "", name


def test_every_rpc_that_names_a_group_and_is_open_to_members_is_scoped() -> None:
    # A member-level RPC whose request names a group must check the group patterns.
    for m in served_methods():
        rule = RULES[full_name(m)]
        if rule.role != MEMBER:
            continue
        names_group = "web-7" in str(_with_group(m.input_type, "web-7"))
        assert names_group == (rule.group is not None), full_name(m)


def test_watch_streams_are_server_streams() -> None:
    by_name = {full_name(m): m for m in served_methods()}
    for name in WATCH_STREAMS:
        assert by_name[name].server_streaming, name


# -- the tokens file -----------------------------------------------------------------

DIGEST = hash_token("t0k3n")


def write(tmp_path: Path, doc: Any) -> str:
    path = tmp_path / "tokens.yaml"
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc))
    return str(path)


def test_tokens_file_loads_tokens_and_certificates(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        {
            "tokens": [
                {"name": "ops", "role": "admin", "sha256": "sha256:" + DIGEST[7:].upper()},
                {"name": "agent", "role": "member", "groups": ["web-*", "db"],
                 "sha256": hash_token("a")},
            ],
            "certs": [{"cn": "alice", "role": "read"}],
        },
    )  # fmt: skip
    tokens, certs = load_tokens_file(path)
    assert tokens == {
        DIGEST: Identity("ops", ADMIN, ("*",)),
        hash_token("a"): Identity("agent", MEMBER, ("web-*", "db")),
    }
    assert certs == {"alice": Identity("alice", READ, ("*",))}
    assert load_tokens_file(write(tmp_path, "")) == ({}, {}), "an empty file: nobody"


@pytest.mark.parametrize(
    ("doc", "says"),
    [
        ("tokens: [unclosed", "is not valid YAML"),
        ("- just\n- a list\n", "expected only 'tokens:' and 'certs:' lists"),
        ({"tokens": [], "users": []}, "expected only 'tokens:' and 'certs:' lists"),
        ({"tokens": [{"role": "admin", "sha256": DIGEST}]}, "tokens[0] needs a 'name'"),
        ({"tokens": ["ops"]}, "tokens[0] needs a 'name'"),
        ({"certs": [{"role": "read"}]}, "certs[0] needs a 'cn'"),
        (
            {"tokens": [{"name": "ops", "role": "root", "sha256": DIGEST}]},
            "tokens[0].role 'root' is not one of read, member, admin",
        ),
        (
            {"tokens": [{"name": "ops", "sha256": DIGEST}]},
            "tokens[0].role '' is not one of read, member, admin",
        ),
        (
            {"tokens": [{"name": "ops", "role": "member", "groups": "web-*", "sha256": DIGEST}]},
            "tokens[0].groups must be a list of patterns",
        ),
        (
            {"tokens": [{"name": "ops", "role": "admin", "sha256": "t0k3n"}]},
            "tokens[0].sha256 must be 'sha256:<64 hex digits>' (make one with `coordctl auth "
            "new-token`): tokens are never stored in clear",
        ),
        (
            {"tokens": [{"name": "ops", "role": "admin", "sha256": DIGEST + "0"}]},
            "must be 'sha256:<64 hex digits>'",
        ),
        (
            {"tokens": [{"name": "ops", "role": "admin", "sha256": "sha256:" + "z" * 64}]},
            "must be 'sha256:<64 hex digits>'",
        ),
        (
            {
                "tokens": [
                    {"name": "ops", "role": "admin", "sha256": "sha256:" + "t0k3n" * 12 + "abcd"}
                ]
            },
            "must be 'sha256:<64 hex digits>'",
        ),
        ({"tokens": [{"name": "ops", "role": "admin"}]}, "must be 'sha256:<64 hex digits>'"),
    ],
)
def test_tokens_file_errors_say_what_is_wrong(tmp_path: Path, doc: Any, says: str) -> None:
    path = write(tmp_path, doc)
    with pytest.raises(errors.InvalidArgument) as info:
        load_tokens_file(path)
    assert says in info.value.message
    assert path in info.value.message, "the message names the file"


def test_missing_tokens_file(tmp_path: Path) -> None:
    with pytest.raises(errors.InvalidArgument, match=r"cannot read tokens file .*nope\.yaml"):
        Authenticator.from_file(str(tmp_path / "nope.yaml"))


@given(st.text(min_size=1).filter(lambda t: t.strip() == t and " " not in t))
def test_a_token_is_recognised_by_its_digest_only(token: str) -> None:
    a = Authenticator({hash_token(token): Identity("x", READ)})
    assert a.identify([("authorization", f"Bearer {token}")], None).name == "x"
    with pytest.raises(errors.Unauthenticated):
        a.identify([("authorization", f"Bearer {token}x")], None)
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", hash_token(token))


# -- identify ------------------------------------------------------------------------

OPS = Identity("ops", ADMIN)
AGENT = Identity("agent", MEMBER, ("web-*", "db"))
DASH = Identity("dash", READ)
ALICE = Identity("alice", MEMBER, ("web-*",))


def authenticator(anonymous: Identity | None = None) -> Authenticator:
    return Authenticator(
        {hash_token("ops-token"): OPS, hash_token("agent-token"): AGENT, hash_token("dash"): DASH},
        {"alice": ALICE},
        anonymous,
    )


def cn(name: str) -> dict[str, list[bytes]]:
    return {"x509_common_name": [name.encode()], "transport_security_type": [b"ssl"]}


def bearer(token: str | bytes) -> list[tuple[str, str | bytes]]:
    return [("user-agent", "test"), ("authorization", token)]


def test_identify_by_token() -> None:
    a = authenticator()
    assert a.identify(bearer("Bearer ops-token"), None) is OPS
    assert a.identify(bearer("bearer   agent-token "), None) is AGENT, "scheme case, spaces"
    assert a.identify(bearer(b"Bearer dash"), None) is DASH, "binary metadata value"


def test_identify_by_certificate() -> None:
    a = authenticator()
    assert a.identify([], cn("alice")) is ALICE
    assert a.identify(bearer("Bearer ops-token"), cn("alice")) is OPS, "a token wins"


@pytest.mark.parametrize(
    ("metadata", "context", "says"),
    [
        ([], None, "no credentials: pass a bearer token (--token / COORDCTL_TOKEN) or a client"),
        ([], {"transport_security_type": [b"ssl"]}, "no credentials"),
        (bearer("Bearer nope"), None, "unknown token: check the token, or ask for a new one"),
        (bearer("Bearer nope"), cn("alice"), "unknown token"),  # a bad token is not ignored
        (bearer("Basic b3BzOnB3"), None, "must be 'Bearer <token>'"),
        (bearer("Bearer "), None, "must be 'Bearer <token>'"),
        (bearer("ops-token"), None, "must be 'Bearer <token>'"),
        ([], cn("mallory"), "client certificate 'mallory' is not mapped to a role"),
    ],
)
def test_identify_refuses(metadata: Any, context: Any, says: str) -> None:
    with pytest.raises(errors.Unauthenticated) as info:
        authenticator().identify(metadata, context)
    assert says in info.value.message


def test_anonymous_only_when_allowed_and_never_over_bad_credentials() -> None:
    a = authenticator(ANONYMOUS)
    assert a.identify([], None) is ANONYMOUS
    assert a.identify(None, None) is ANONYMOUS
    with pytest.raises(errors.Unauthenticated):
        a.identify(bearer("Bearer nope"), None)
    with pytest.raises(errors.Unauthenticated):
        a.identify([], cn("mallory"))


# -- authorize -------------------------------------------------------------------------


@pytest.mark.parametrize("who", [DASH, AGENT, OPS], ids=lambda w: w.role)
def test_each_role_reaches_exactly_the_rpcs_at_or_below_it(who: Identity) -> None:
    a = authenticator()
    for method, rule in RULES.items():
        if RANK[who.role] >= RANK[rule.role]:
            a.authorize(method, who, None)
        else:
            with pytest.raises(errors.PermissionDenied) as info:
                a.authorize(method, who, None)
            short = method.rsplit("/", 1)[1]
            assert text(info.value) == (
                f"{who.name!r} has role {who.role!r}; {short} needs {rule.role!r}"
            )


def test_an_unknown_method_is_refused_to_everyone() -> None:
    for who in (DASH, AGENT, OPS, ANONYMOUS):
        with pytest.raises(errors.PermissionDenied, match="is not open to clients"):
            authenticator().authorize("/grpc.reflection.v1.X/Y", who, None)


def request(method: str, group: str) -> Message:
    """A request for ``method`` acting on ``group``."""
    (m,) = [m for m in served_methods() if full_name(m) == method]
    return _with_group(m.input_type, group)


def _register(group: str) -> Message:
    return request("/coord.v1.Groups/Register", group)


def text(e: errors.CoordError) -> str:
    return e.message.removeprefix("coord: ")


@pytest.mark.parametrize(
    ("group", "allowed"),
    [("web-1", True), ("web-", True), ("db", True), ("db-2", False), ("web", False),
     ("WEB-1", False), ("other", False), ("", False)],
)  # fmt: skip
def test_member_group_patterns(group: str, allowed: bool) -> None:
    a = authenticator()
    if allowed:
        a.authorize("/coord.v1.Groups/Register", AGENT, _register(group))
    else:
        with pytest.raises(errors.PermissionDenied) as info:
            a.authorize("/coord.v1.Groups/Register", AGENT, _register(group))
        assert text(info.value) == (f"'agent' may not act in group {group!r} (allowed: web-*, db)")
    # Admins are not scoped; readers never get that far.
    a.authorize("/coord.v1.Groups/Register", OPS, _register(group))
    with pytest.raises(errors.PermissionDenied, match="needs 'member'"):
        a.authorize("/coord.v1.Groups/Register", DASH, _register(group))


def test_member_with_no_patterns_acts_in_no_group() -> None:
    nobody = Identity("n", MEMBER, ())
    with pytest.raises(errors.PermissionDenied, match=r"allowed: \)"):
        authenticator().authorize(
            "/coord.v1.Groups/Campaign", nobody, request("/coord.v1.Groups/Campaign", "web-1")
        )
    authenticator().authorize("/coord.v1.KV/Put", nobody, None)  # unscoped member rights


def test_bracket_patterns_are_fnmatch_classes() -> None:
    who = Identity("x", MEMBER, ("shard-[0-3]",))
    assert who.may_use_group("shard-2") and not who.may_use_group("shard-4")


# -- rate limiter ---------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1024.0  # binary fractions below add up exactly

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    c = FakeClock()
    monkeypatch.setattr(auth, "time", types.SimpleNamespace(monotonic=c.monotonic))
    return c


def test_rate_limiter_bursts_then_refills(clock: FakeClock) -> None:
    r = RateLimiter(rate=8, burst=5)
    assert [r.allow("a") for _ in range(6)] == [True] * 5 + [False]
    assert r.allow("b"), "buckets are per identity"
    clock.now += 0.0625  # half a token
    assert not r.allow("a")
    clock.now += 0.0625
    assert r.allow("a") and not r.allow("a")
    clock.now += 3600
    assert sum(r.allow("a") for _ in range(100)) == 5, "never more than the burst"


def test_rate_limiter_off(clock: FakeClock) -> None:
    r = RateLimiter(rate=0, burst=0)
    assert all(r.allow("a") for _ in range(10_000))


@given(st.lists(st.floats(min_value=0, max_value=2), min_size=1, max_size=200))
def test_rate_limiter_never_exceeds_rate_times_time_plus_burst(gaps: list[float]) -> None:
    c = FakeClock()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(auth, "time", types.SimpleNamespace(monotonic=c.monotonic))
        r = RateLimiter(rate=4, burst=3)
        allowed = 0
        for gap in gaps:
            c.now += gap
            allowed += r.allow("a")
        assert allowed <= 3 + 4 * sum(gaps) + 1e-6


def test_rate_limiter_forgets_refilled_buckets_beyond_its_bound(clock: FakeClock) -> None:
    r = RateLimiter(rate=1, burst=2, max_buckets=3)
    for name in ("a", "b", "c"):
        assert r.allow(name)
    clock.now += 0.5  # a, b, c: 1.5 tokens, not yet full
    assert r.allow("d") and r.allow("d")
    assert len(r._buckets) == 4  # nothing had refilled: nothing forgotten
    clock.now += 1.0  # a, b, c full again; d (emptied at +0.5) is not
    assert r.allow("e")
    assert set(r._buckets) == {"d", "e"}
    assert [r.allow("a") for _ in range(3)] == [True, True, False], "a new bucket is full"


# -- the guard --------------------------------------------------------------------------


class Context:
    def __init__(self, metadata: Any = (), auth_context: Any = None, peer: str = "p1") -> None:
        self._md, self._auth, self._peer = metadata, auth_context or {}, peer

    def invocation_metadata(self) -> Any:
        return self._md

    def auth_context(self) -> Any:
        return self._auth

    def peer(self) -> str:
        return self._peer


def test_guard_counts_refusals_by_reason_and_sets_the_caller() -> None:
    seen: list[str] = []
    g = Guard(authenticator(), rate_per_s=1, burst=1, on_reject=seen.append)
    with pytest.raises(errors.Unauthenticated):
        g.check("/coord.v1.KV/Put", None, Context())
    with pytest.raises(errors.PermissionDenied):
        g.check("/coord.v1.KV/Put", None, Context(bearer("Bearer dash")))
    assert g.check("/coord.v1.KV/Put", None, Context(bearer("Bearer agent-token"))) is AGENT
    assert caller() is AGENT
    with pytest.raises(errors.ResourceExhausted, match="'agent' is over its rate limit"):
        g.check("/coord.v1.KV/Put", None, Context(bearer("Bearer agent-token")))
    assert seen == ["unauthenticated", "permission_denied", "rate"]


def test_guard_admits_each_request_of_an_identified_stream_by_its_own_rule() -> None:
    # A KV.Pipeline stream is identified once when it opens; each request on it is then
    # authorized against its own method and counted against the caller's rate.
    seen: list[str] = []
    g = Guard(authenticator(), rate_per_s=1, burst=1, on_reject=seen.append)
    dash = g.check("/coord.v1.KV/Pipeline", None, Context(bearer("Bearer dash")))
    with pytest.raises(errors.PermissionDenied, match="needs 'member'"):
        g.admit("/coord.v1.KV/Put", dash, None)
    assert g.admit("/coord.v1.KV/Range", AGENT, None) is AGENT
    assert caller() is AGENT
    with pytest.raises(errors.ResourceExhausted, match="'agent' is over its rate limit"):
        g.admit("/coord.v1.KV/Range", AGENT, None)
    assert seen == ["permission_denied", "rate"]


def test_guard_slows_down_failed_authentications_per_host() -> None:
    seen: list[str] = []
    g = Guard(authenticator(), on_reject=seen.append)
    wrong = bearer("Bearer not-a-token")
    for _ in range(int(guard.AUTH_FAILURES_BURST)):
        with pytest.raises(errors.Unauthenticated):
            g.check("/coord.v1.KV/Put", None, Context(wrong, peer="ipv4:10.0.0.5:41234"))
    says = re.escape("too many failed authentications from ipv4:10.0.0.5: wait a few seconds")
    with pytest.raises(errors.ResourceExhausted, match=says):
        g.check("/coord.v1.KV/Put", None, Context(wrong, peer="ipv4:10.0.0.5:50000"))
    # Another host is not slowed down; valid credentials from the same host pass.
    with pytest.raises(errors.Unauthenticated):
        g.check("/coord.v1.KV/Put", None, Context(wrong, peer="ipv6:[::1]:41234"))
    ok = Context(bearer("Bearer agent-token"), peer="ipv4:10.0.0.5:41234")
    assert g.check("/coord.v1.KV/Put", None, ok) is AGENT
    assert seen.count("unauthenticated") == guard.AUTH_FAILURES_BURST + 1
    assert seen.count("auth_failures") == 1


def test_guard_limits_watch_streams_per_connection() -> None:
    seen: list[str] = []
    g = Guard(authenticator(), max_watch_streams=2, on_reject=seen.append)
    watch = "/coord.v1.Watch/Watch"
    close_1 = g.open_stream(watch, Context(peer="a"))
    close_2 = g.open_stream("/coord.v1.Groups/Observe", Context(peer="a"))
    with pytest.raises(errors.ResourceExhausted, match="already has 2 watch streams"):
        g.open_stream(watch, Context(peer="a"))
    g.open_stream(watch, Context(peer="b"))()  # another connection
    g.open_stream("/coord.v1.Groups/Campaign", Context(peer="a"))()  # not a watch
    close_1()
    close_2()
    for close in [g.open_stream(watch, Context(peer="a")) for _ in range(2)]:
        close()  # both places were given back
    assert seen == ["watch_streams"]
    assert not g._streams, "no connection left counted"
