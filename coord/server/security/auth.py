"""Who is calling, and may they: bearer tokens and mTLS identities mapped to roles.

Roles, each including the ones before it:

- ``read``: status, leader, nodes, KV reads, watch, group and session listings,
  availability reports;
- ``member``: sessions (open, keepalive, close), KV writes, and in the groups it
  is allowed (``groups`` patterns): register, unregister, campaign, resign,
  update its members;
- ``admin``: everything: group configuration, switchover, health-check runs,
  node add/remove, leader transfer, snapshots and backups.

Credentials: ``authorization: Bearer <token>`` metadata, checked against a
tokens file that stores only SHA-256 digests (tokens are random, 32 bytes from
``coordctl auth new-token``: a plain digest is enough, no password stretching
needed), or the Common Name of a client certificate verified by the server's
client CA (mutual TLS), mapped to a role in the same file.

Without any credential source, calls are anonymous with the admin role, which
the configuration allows only when the API listens on loopback (development).

Sessions belong to whoever opened them: another identity (not admin) may not
keep them alive, close them, or register members with them.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import string
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import yaml

from coord import errors

READ, MEMBER, ADMIN = "read", "member", "admin"
RANK = {READ: 1, MEMBER: 2, ADMIN: 3}
TOKEN_PREFIX = "sha256:"


@dataclass(frozen=True)
class Identity:
    name: str
    role: str
    groups: tuple[str, ...] = ("*",)  # fnmatch patterns (member role)

    def may(self, role: str) -> bool:
        return RANK[self.role] >= RANK[role]

    def may_use_group(self, group: str) -> bool:
        return self.role == ADMIN or any(fnmatch.fnmatchcase(group, p) for p in self.groups)


ANONYMOUS = Identity("anonymous", ADMIN)


def hash_token(token: str) -> str:
    return TOKEN_PREFIX + hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Rule:
    role: str
    # The group the request acts on (member role: must be allowed), if any.
    group: Callable[[Any], str] | None = None


def _field(*path: str) -> Callable[[Any], str]:
    def get(req: Any) -> str:
        for name in path:
            req = getattr(req, name)
        return str(req)

    return get


_GROUP = _field("group")
# Full method name -> rule. A method missing here is refused (fail closed).
RULES: dict[str, Rule] = {
    "/coord.v1.KV/Put": Rule(MEMBER),
    "/coord.v1.KV/Range": Rule(READ),
    "/coord.v1.KV/Delete": Rule(MEMBER),
    "/coord.v1.KV/Txn": Rule(MEMBER),
    # Each request on the stream is checked against its own method's rule.
    "/coord.v1.KV/Pipeline": Rule(READ),
    "/coord.v1.Cluster/Status": Rule(READ),
    "/coord.v1.Cluster/GetLeader": Rule(READ),
    "/coord.v1.Cluster/WatchLeader": Rule(READ),
    "/coord.v1.Cluster/ListNodes": Rule(READ),
    "/coord.v1.Cluster/AddNode": Rule(ADMIN),
    "/coord.v1.Cluster/RemoveNode": Rule(ADMIN),
    "/coord.v1.Cluster/TransferLeader": Rule(ADMIN),
    "/coord.v1.Sessions/Open": Rule(MEMBER),
    "/coord.v1.Sessions/KeepAlive": Rule(MEMBER),
    "/coord.v1.Sessions/Close": Rule(MEMBER),
    "/coord.v1.Sessions/List": Rule(READ),
    "/coord.v1.Groups/Create": Rule(ADMIN),
    "/coord.v1.Groups/Delete": Rule(ADMIN),
    "/coord.v1.Groups/Get": Rule(READ),
    "/coord.v1.Groups/List": Rule(READ),
    "/coord.v1.Groups/Register": Rule(MEMBER, _field("member", "group")),
    "/coord.v1.Groups/Unregister": Rule(MEMBER, _GROUP),
    "/coord.v1.Groups/Campaign": Rule(MEMBER, _GROUP),
    "/coord.v1.Groups/Resign": Rule(MEMBER, _GROUP),
    "/coord.v1.Groups/Masters": Rule(READ),
    "/coord.v1.Groups/Observe": Rule(READ),
    "/coord.v1.Groups/Switchover": Rule(ADMIN),
    "/coord.v1.Groups/CancelSwitchover": Rule(ADMIN),
    "/coord.v1.Groups/UpdateMember": Rule(MEMBER, _field("update", "group")),
    "/coord.v1.Groups/HealthStatus": Rule(READ),
    "/coord.v1.Groups/RunCheck": Rule(ADMIN),
    "/coord.v1.Groups/Pause": Rule(ADMIN),
    "/coord.v1.Groups/Resume": Rule(ADMIN),
    "/coord.v1.Groups/Edit": Rule(ADMIN),
    "/coord.v1.Groups/EditMember": Rule(ADMIN),
    "/coord.v1.Groups/Explain": Rule(READ),
    "/coord.v1.Watch/Watch": Rule(READ),
    "/coord.v1.Maintenance/Snapshot": Rule(ADMIN),
    "/coord.v1.Maintenance/Diff": Rule(ADMIN),
    "/coord.v1.Maintenance/CheckConsistency": Rule(ADMIN),
    # Called node to node (the internal identity has READ); reveals only a hash.
    "/coord.v1.Maintenance/StateHash": Rule(READ),
    "/coord.v1.Availability/Report": Rule(READ),
}


class Authenticator:
    """Maps a call's credentials to an Identity, and checks it against RULES."""

    def __init__(
        self,
        tokens: dict[str, Identity] | None = None,
        certs: dict[str, Identity] | None = None,
        anonymous: Identity | None = None,
    ) -> None:
        self.tokens = dict(tokens or {})  # "sha256:<hex>" -> identity
        self.certs = dict(certs or {})  # certificate CN -> identity
        self.anonymous = anonymous

    @classmethod
    def from_file(cls, path: str, anonymous: Identity | None = None) -> Authenticator:
        tokens, certs = load_tokens_file(path)
        return cls(tokens, certs, anonymous)

    def identify(self, metadata: Any, auth_context: dict[str, list[bytes]] | None) -> Identity:
        bearer = ""
        for key, value in metadata or ():
            if key == "authorization":
                bearer = value if isinstance(value, str) else value.decode(errors="replace")
                break
        if bearer:
            scheme, _, token = bearer.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise errors.Unauthenticated("the authorization metadata must be 'Bearer <token>'")
            digest = hash_token(token.strip())
            for known, who in self.tokens.items():
                if hmac.compare_digest(known, digest):
                    return who
            raise errors.Unauthenticated("unknown token: check the token, or ask for a new one")
        cn = _common_name(auth_context)
        if cn is not None:
            mapped = self.certs.get(cn)
            if mapped is None:
                raise errors.Unauthenticated(
                    f"client certificate {cn!r} is not mapped to a role in the tokens file"
                )
            return mapped
        if self.anonymous is not None:
            return self.anonymous
        raise errors.Unauthenticated(
            "no credentials: pass a bearer token (--token / COORDCTL_TOKEN) or a client certificate"
        )

    def authorize(self, method: str, who: Identity, request: Any) -> None:
        rule = RULES.get(method)
        if rule is None:
            raise errors.PermissionDenied(f"{method} is not open to clients")
        if not who.may(rule.role):
            raise errors.PermissionDenied(
                f"{who.name!r} has role {who.role!r}; {method.rsplit('/', 1)[-1]} needs "
                f"{rule.role!r}"
            )
        if rule.group is not None and who.role == MEMBER and request is not None:
            group = rule.group(request)
            if not who.may_use_group(group):
                raise errors.PermissionDenied(
                    f"{who.name!r} may not act in group {group!r} (allowed: "
                    f"{', '.join(who.groups)})"
                )


def _common_name(auth_context: dict[str, list[bytes]] | None) -> str | None:
    if not auth_context:
        return None
    names = auth_context.get("x509_common_name") or []
    return names[0].decode(errors="replace") if names else None


def load_tokens_file(path: str) -> tuple[dict[str, Identity], dict[str, Identity]]:
    """Read the tokens file (YAML): ``tokens: [{name, role, groups?, sha256}]`` and
    ``certs: [{cn, role, groups?}]``. Raises InvalidArgument saying what is wrong."""
    try:
        with open(path, encoding="utf-8") as f:
            raw = yaml.safe_load(f) or {}
    except OSError as e:
        raise errors.InvalidArgument(f"cannot read tokens file {path}: {e.strerror}") from e
    except yaml.YAMLError as e:
        raise errors.InvalidArgument(f"tokens file {path} is not valid YAML: {e}") from e
    if not isinstance(raw, dict) or set(raw) - {"tokens", "certs"}:
        raise errors.InvalidArgument(f"{path}: expected only 'tokens:' and 'certs:' lists")
    tokens: dict[str, Identity] = {}
    certs: dict[str, Identity] = {}
    for i, entry in enumerate(raw.get("tokens") or []):
        who = _identity(entry, path, f"tokens[{i}]", "name")
        digest = str(entry.get("sha256", ""))
        hex_part = digest.removeprefix(TOKEN_PREFIX)
        if hex_part == digest or len(hex_part) != 64 or hex_part.strip(string.hexdigits):
            raise errors.InvalidArgument(
                f"{path}: tokens[{i}].sha256 must be 'sha256:<64 hex digits>' (make one with "
                "`coordctl auth new-token`): tokens are never stored in clear"
            )
        tokens[digest.lower()] = who
    for i, entry in enumerate(raw.get("certs") or []):
        who = _identity(entry, path, f"certs[{i}]", "cn")
        certs[who.name] = who
    return tokens, certs


def _identity(entry: Any, path: str, where: str, key: str) -> Identity:
    if not isinstance(entry, dict) or not entry.get(key):
        raise errors.InvalidArgument(f"{path}: {where} needs a {key!r}")
    role = str(entry.get("role", ""))
    if role not in RANK:
        raise errors.InvalidArgument(
            f"{path}: {where}.role {role!r} is not one of read, member, admin"
        )
    groups = entry.get("groups", ["*"])
    if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
        raise errors.InvalidArgument(f"{path}: {where}.groups must be a list of patterns")
    return Identity(str(entry[key]), role, tuple(groups))


class RateLimiter:
    """A token bucket per name (an identity, a client host): ``rate`` requests per
    second, bursts of ``burst``. Buckets that have refilled are forgotten once more than
    ``max_buckets`` exist (a full bucket is what a new name gets anyway)."""

    def __init__(self, rate: float, burst: float, max_buckets: int = 10_000) -> None:
        self.rate = rate
        self.burst = burst
        self.max_buckets = max_buckets
        self._buckets: dict[str, tuple[float, float]] = {}  # name -> (tokens, last time)

    def allow(self, name: str) -> bool:
        if self.rate <= 0:
            return True
        now = time.monotonic()
        if name not in self._buckets and len(self._buckets) >= self.max_buckets:
            self._forget_full(now)
        tokens, last = self._buckets.get(name, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens < 1.0:
            self._buckets[name] = (tokens, now)
            return False
        self._buckets[name] = (tokens - 1.0, now)
        return True

    def _forget_full(self, now: float) -> None:
        self._buckets = {
            name: (tokens, last)
            for name, (tokens, last) in self._buckets.items()
            if tokens + (now - last) * self.rate < self.burst
        }
