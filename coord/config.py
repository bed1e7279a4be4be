"""Node configuration: frozen dataclasses, defaults, YAML/env/flag loading, validate().

Precedence: defaults < YAML file < ``COORD_*`` environment < command-line flags.
There is no global config object: ``load()`` returns a ``NodeConfig`` that is
passed down explicitly.

Timing invariants (checked by :meth:`RaftTimings.validate`):
- ``tick_s < heartbeat_s``: the tick thread must run between heartbeats;
- ``3 * heartbeat_s < election_timeout_min_s``: a follower sees several
  heartbeats before it suspects the leader;
- ``election_timeout_min_s < election_timeout_max_s``: randomised elections;
- ``connection_timeout_s >= election_timeout_max_s``: a silent peer's link is
  not declared dead before an election could have replaced it;
- ``heartbeat_s < leader_fallback_timeout_s <= connection_timeout_s``: a leader
  cut off from its majority steps down quickly (pysyncobj's 30 s default would
  let a partitioned leader believe it leads for half a minute).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import ipaddress
import math
import os
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from coord.errors import InvalidArgument

# The most voting members, and members with learners, a cluster has (the same bounds
# coord.raft.membership enforces on membership changes).
MAX_VOTERS = 7
MAX_MEMBERS = 9


@dataclass(frozen=True)
class RaftTimings:
    """Raft timing knobs, tuned for fast failover on a LAN."""

    # How often the Raft thread wakes when idle; bounds timer resolution.
    tick_s: float = 0.01
    # Leader -> follower append-entries / heartbeat period.
    heartbeat_s: float = 0.05
    # A follower that heard nothing for a random time in [min, max] campaigns.
    election_timeout_min_s: float = 0.3
    election_timeout_max_s: float = 0.6
    # A peer link with no traffic for this long is considered dead.
    connection_timeout_s: float = 1.0
    # A leader without responses from a majority for this long steps down.
    leader_fallback_timeout_s: float = 0.8
    # Redial a dead peer this often.
    reconnect_s: float = 0.1
    # When the link to the leader drops (its process died: the kernel closed the
    # socket), campaign after at most this long instead of a full election timeout.
    fast_election_s: float = 0.06

    def validate(self) -> None:
        def need(ok: bool, what: str) -> None:
            if not ok:
                raise InvalidArgument(f"raft timings: {what}")

        for f in dataclasses.fields(self):
            need(getattr(self, f.name) > 0, f"{f.name} must be > 0")
        need(self.tick_s < self.heartbeat_s, "tick_s must be < heartbeat_s")
        need(
            3 * self.heartbeat_s < self.election_timeout_min_s,
            "election_timeout_min_s must exceed 3 x heartbeat_s",
        )
        need(
            self.election_timeout_min_s < self.election_timeout_max_s,
            "election_timeout_min_s must be < election_timeout_max_s",
        )
        need(
            self.connection_timeout_s >= self.election_timeout_max_s,
            "connection_timeout_s must be >= election_timeout_max_s",
        )
        need(
            self.heartbeat_s < self.leader_fallback_timeout_s <= self.connection_timeout_s,
            "leader_fallback_timeout_s must be in (heartbeat_s, connection_timeout_s]",
        )
        need(
            self.fast_election_s < self.election_timeout_min_s,
            "fast_election_s must be < election_timeout_min_s",
        )


@dataclass(frozen=True)
class Peer:
    """One cluster member: its stable id, Raft address and client API address, and
    whether it is a learner (``coordctl node add`` prints it: a blank joiner must know
    which members vote, coord.raft.gate)."""

    id: str
    raft_address: str
    api_address: str
    learner: bool = False


@dataclass(frozen=True)
class NodeConfig:
    """Everything one ``coord serve`` process needs."""

    node_id: str
    data_dir: str
    peers: tuple[Peer, ...]
    # Mixed into the cluster id: give every cluster its own token.
    cluster_token: str = "coord"
    # "new": bootstrap a cluster from empty data dirs; "existing": join one.
    initial_cluster_state: str = "new"
    # The id of the cluster to join (``--cluster-id``, printed by ``coordctl node
    # add``). Empty: derived from the token and the bootstrap members.
    explicit_cluster_id: str = ""
    # Shared secret for Raft traffic (encryption + authentication). Required
    # whenever Raft binds beyond loopback.
    cluster_secret: str | None = None
    # Bind addresses; default to this node's addresses in ``peers``.
    listen_raft: str = ""
    listen_api: str = ""
    # Dial overrides: peer id -> host:port (chaos tests route links through proxies).
    raft_routes: Mapping[str, str] = field(default_factory=dict)
    # fsync the journal before acknowledging writes. Turn off only for tests.
    fsync: bool = True
    timings: RaftTimings = field(default_factory=RaftTimings)
    # Deadline for a write or linearizable read inside the server.
    request_timeout_s: float = 5.0
    # Health checks the leader runs at once, at most.
    health_check_concurrency: int = 64
    # HTTP port for /metrics, /healthz, /readyz and the status page ("": none).
    listen_http: str = ""
    # POST failover and budget events here as JSON ("": none).
    notify_webhook: str = ""
    # -- security (coord.server.security.auth) --
    # TLS on the client API: this node's certificate and key (PEM).
    tls_cert: str = ""
    tls_key: str = ""
    # The CA that signed the nodes' certificates (verifies peers' APIs) and, with
    # tls_client_auth "require", the clients' certificates (mutual TLS).
    tls_ca: str = ""
    tls_client_auth: str = "none"
    # Bearer tokens (hashed) and certificate identities mapped to roles.
    auth_tokens_file: str = ""
    # Calls without credentials, as admin: "auto" = only when the API listens on
    # loopback and no credentials are configured; "true" (loopback only) or "false".
    allow_unauthenticated: str = "auto"
    # Limits: requests per second per identity (0: none), watch streams per connection.
    # Above what one node serves (KV.Pipeline: ~4,000-4,600 puts/s on 2 cores): a guard
    # against a runaway client, not the throughput ceiling of the anonymous identity.
    rate_limit_per_s: float = 20000.0
    max_watch_streams: int = 256
    # Open sessions per identity (0: no limit).
    max_sessions_per_identity: int = 10_000
    # Compact the Raft log after this many entries. Each compaction encodes the whole
    # state on the dump thread, which takes the GIL from the tick thread for tens of ms
    # (the put p99 under load); a restart re-applies up to this many entries (~65 us
    # each). etcd and ZooKeeper compact every 100,000 (bench/README.md, stop 22).
    log_compaction_entries: int = 20000
    log_level: str = "INFO"
    # Scheduled backups, written by the leader (coord.server.duties.backups): into this
    # directory, every backup_every_s seconds (0: none), a full snapshot every
    # backup_full_every-th time and diffs in between, keeping the last backup_keep
    # full snapshots and the diffs after them.
    backup_dir: str = ""
    backup_every_s: float = 0.0
    backup_keep: int = 3
    backup_full_every: int = 4
    # The leader compares every member's hash of its state this often (0: never);
    # see coord.server.api.maintenance.
    consistency_check_every_s: float = 300.0

    @property
    def self_peer(self) -> Peer:
        return next(p for p in self.peers if p.id == self.node_id)

    @property
    def bind_raft(self) -> str:
        return self.listen_raft or self.self_peer.raft_address

    @property
    def bind_api(self) -> str:
        return self.listen_api or self.self_peer.api_address

    @property
    def auth_configured(self) -> bool:
        return bool(self.auth_tokens_file) or self.tls_client_auth == "require"

    @property
    def anonymous_allowed(self) -> bool:
        if self.allow_unauthenticated == "auto":
            return is_loopback(self.bind_api) and not self.auth_configured
        return self.allow_unauthenticated == "true"

    def _validate_security(self) -> None:
        if bool(self.tls_cert) != bool(self.tls_key):
            raise InvalidArgument("TLS needs both --tls-cert and --tls-key")
        if self.tls_client_auth not in ("none", "require"):
            raise InvalidArgument("tls client auth must be 'none' or 'require'")
        if self.tls_client_auth == "require" and not (self.tls_cert and self.tls_ca):
            raise InvalidArgument(
                "--tls-client-auth require needs --tls-cert, --tls-key and --tls-ca (the CA "
                "that signs client certificates)"
            )
        if self.allow_unauthenticated not in ("auto", "true", "false"):
            raise InvalidArgument("allow unauthenticated must be auto, true or false")
        self._validate_exposure()
        self._validate_files_and_limits()

    def _validate_exposure(self) -> None:
        """Nothing beyond loopback without credentials, and no token in clear."""
        loopback = is_loopback(self.bind_api)
        if self.allow_unauthenticated == "true" and not loopback:
            raise InvalidArgument(
                f"unauthenticated access is allowed only on loopback, and the API listens on "
                f"{self.bind_api}: remove --allow-unauthenticated"
            )
        if not loopback and not self.auth_configured:
            raise InvalidArgument(
                f"the API listens on {self.bind_api}, beyond loopback, without authentication: "
                "set --auth-tokens-file (bearer tokens) or --tls-client-auth require (client "
                "certificates); see `coordctl certs init`"
            )
        if not loopback and self.auth_tokens_file and not self.tls_cert:
            raise InvalidArgument(
                f"bearer tokens would cross the network in clear ({self.bind_api} is beyond "
                "loopback): set --tls-cert and --tls-key"
            )
        if self.listen_http and not is_loopback(self.listen_http):
            if self.anonymous_allowed:
                raise InvalidArgument(
                    f"the HTTP port listens on {self.listen_http}, beyond loopback, and this "
                    "node takes calls without credentials: its metrics and status page would "
                    "be open to anyone; set --auth-tokens-file (its tokens then guard the HTTP "
                    "port too), or listen on loopback"
                )
            if self.auth_tokens_file and not self.tls_cert:
                raise InvalidArgument(
                    f"bearer tokens would cross the network in clear ({self.listen_http} is "
                    "beyond loopback): set --tls-cert and --tls-key (the HTTP port serves "
                    "HTTPS with them)"
                )

    def _validate_files_and_limits(self) -> None:
        if self.tls_cert and not self.tls_ca:
            raise InvalidArgument(
                "--tls-cert needs --tls-ca too: nodes verify each other's API certificates "
                "with it (without it they would call each other in plaintext)"
            )
        for what, path in (
            ("tls cert", self.tls_cert),
            ("tls key", self.tls_key),
            ("tls ca", self.tls_ca),
            ("auth tokens file", self.auth_tokens_file),
        ):
            if path and not os.path.isfile(path):
                raise InvalidArgument(f"{what} {path!r} does not exist or is not a file")
        if self.rate_limit_per_s < 0:
            raise InvalidArgument("rate limit must be >= 0 (0: no limit)")
        if not 0 <= self.max_sessions_per_identity <= 10_000_000:
            raise InvalidArgument("max sessions per identity must be 0..10000000 (0: no limit)")
        if not 0 <= self.max_watch_streams <= 100_000:
            raise InvalidArgument("max watch streams must be 0..100000 (0: no limit)")

    @functools.cached_property
    def cluster_id(self) -> str:
        """Derived from the token and member ids, so every node computes the same one;
        a node that joins later is told it (``--cluster-id``)."""
        if self.explicit_cluster_id:
            return self.explicit_cluster_id
        ids = ",".join(sorted(p.id for p in self.peers))
        return hashlib.sha256(f"{self.cluster_token}|{ids}".encode()).hexdigest()[:16]

    def routes(self) -> dict[str, str]:
        out = {p.id: p.raft_address for p in self.peers}
        out.update(self.raft_routes)
        return out

    def validate(self) -> None:
        """Check every field and cross-field invariant; raise InvalidArgument saying what to fix."""
        if not self.node_id:
            raise InvalidArgument("node id is empty: set --node-id")
        if not self.data_dir:
            raise InvalidArgument("data dir is empty: set --data-dir")
        self._validate_peers()
        self._validate_addresses()
        self._validate_security()
        if self.initial_cluster_state not in ("new", "existing"):
            raise InvalidArgument("initial cluster state must be 'new' or 'existing'")
        if not self.cluster_secret and not is_loopback(self.bind_raft):
            raise InvalidArgument(
                f"raft binds to {self.bind_raft}, beyond loopback, without a cluster secret: "
                "set --cluster-secret (or COORD_CLUSTER_SECRET); unauthenticated Raft traffic "
                "lets anyone who reaches the port run code"
            )
        if not 0 < self.request_timeout_s < 3600:
            raise InvalidArgument("request timeout must be > 0 and < 3600 s")
        if not 1 <= self.health_check_concurrency <= 10_000:
            raise InvalidArgument("health check concurrency must be 1..10000")
        if self.log_compaction_entries < 100:
            raise InvalidArgument("log compaction entries must be >= 100")
        self._validate_backups()
        if self.consistency_check_every_s and not (
            1.0 <= self.consistency_check_every_s <= 366 * 86400
        ):
            raise InvalidArgument("consistency check period must be 0 (never) or 1 s to a year")
        self.timings.validate()

    def _validate_peers(self) -> None:
        """Ids, distinct addresses, this node among them, a sensible member count."""
        ids = [p.id for p in self.peers]
        for pid in ids:
            if not _NODE_ID.fullmatch(pid):
                raise InvalidArgument(
                    f"peer id {pid!r} is invalid: use 1-64 letters, digits, '.', '_' or '-'"
                )
        if len(set(ids)) != len(ids):
            raise InvalidArgument(f"duplicate peer ids in {ids}")
        addrs = [a for p in self.peers for a in (p.raft_address, p.api_address)]
        if len(set(addrs)) != len(addrs):
            dup = sorted({a for a in addrs if addrs.count(a) > 1})
            raise InvalidArgument(
                f"address {dup} is used twice: every raft and api address must be distinct"
            )
        if self.node_id not in ids:
            raise InvalidArgument(
                f"node id {self.node_id!r} is not among the peers {ids}: list every member, "
                "this one included, with --peer ID=RAFT_ADDR,API_ADDR"
            )
        if self.initial_cluster_state == "new" and len(ids) not in (1, 3, 5, 7):
            raise InvalidArgument(
                f"{len(ids)} peers: a cluster has 1, 3, 5 or 7 members (an even count adds no "
                "fault tolerance)"
            )
        voting = [p.id for p in self.peers if not p.learner]
        if len(voting) > MAX_VOTERS or len(ids) > MAX_MEMBERS:
            raise InvalidArgument(
                f"{len(ids)} peers, {len(voting)} of them voting: a cluster has at most "
                f"{MAX_VOTERS} voting members and {MAX_MEMBERS} members with its learners"
            )
        if self.initial_cluster_state == "new" and len(voting) != len(ids):
            raise InvalidArgument(
                "a new cluster's members all vote: drop ',learner' from --peer (add "
                "learners later with `coordctl node add`)"
            )
        if self.explicit_cluster_id and not _CLUSTER_ID.fullmatch(self.explicit_cluster_id):
            raise InvalidArgument(
                f"cluster id {self.explicit_cluster_id!r} is not 16 hex digits: copy it from "
                "`coordctl status` or the output of `coordctl node add`"
            )

    def _validate_addresses(self) -> None:
        ids = [p.id for p in self.peers]
        for p in self.peers:
            _check_address(p.raft_address, f"raft address of {p.id}")
            _check_address(p.api_address, f"api address of {p.id}")
        for pid, addr in self.raft_routes.items():
            if pid not in ids:
                raise InvalidArgument(f"raft route for unknown peer {pid!r}")
            _check_address(addr, f"raft route of {pid}")
        _check_address(self.bind_raft, "listen raft address")
        _check_address(self.bind_api, "listen api address")
        if self.listen_http:
            _check_address(self.listen_http, "listen http address")
        if self.notify_webhook:
            _check_url(self.notify_webhook)

    def _validate_backups(self) -> None:
        if bool(self.backup_dir) != (self.backup_every_s != 0):
            raise InvalidArgument(
                "scheduled backups need both --backup-dir and --backup-every (or neither)"
            )
        if self.backup_every_s and not 0.1 <= self.backup_every_s <= 366 * 86400:
            raise InvalidArgument("backup period must be between 100 ms and a year")
        if not 1 <= self.backup_keep <= 10_000:
            raise InvalidArgument("backup keep (full snapshots kept) must be 1..10000")
        if not 1 <= self.backup_full_every <= 10_000:
            raise InvalidArgument(
                "backup full every (a full snapshot every N backups) must be 1..10000"
            )


_NODE_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_CLUSTER_ID = re.compile(r"[0-9a-f]{16}")


def check_node_id(node_id: str) -> None:
    if not _NODE_ID.fullmatch(node_id):
        raise InvalidArgument(
            f"node id {node_id!r} is invalid: use 1-64 letters, digits, '.', '_' or '-'"
        )


def check_address(addr: str, what: str) -> None:
    _check_address(addr, what)


def _check_address(addr: str, what: str) -> None:
    host, sep, port = addr.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidArgument(f"{what} {addr!r} is not host:port")


def _check_url(url: str) -> None:
    bad = InvalidArgument(
        f"notify webhook {url!r} is not an http:// or https:// URL with a host (and a valid "
        "port, if any)"
    )
    try:
        parts = urllib.parse.urlsplit(url)
        _ = parts.port  # raises ValueError for a bad or out-of-range port
    except ValueError:
        raise bad from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise bad


def is_loopback(addr: str) -> bool:
    """Whether ``host:port`` names this machine (localhost or a loopback IP)."""
    host = addr.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# -- loading -------------------------------------------------------------------

_FLOAT_TIMINGS = {f.name for f in dataclasses.fields(RaftTimings)}
_SCALARS: dict[str, type] = {
    "node_id": str,
    "data_dir": str,
    "cluster_token": str,
    "initial_cluster_state": str,
    "explicit_cluster_id": str,
    "cluster_secret": str,
    "listen_raft": str,
    "listen_api": str,
    "fsync": bool,
    "request_timeout_s": float,
    "health_check_concurrency": int,
    "listen_http": str,
    "notify_webhook": str,
    "tls_cert": str,
    "tls_key": str,
    "tls_ca": str,
    "tls_client_auth": str,
    "auth_tokens_file": str,
    "allow_unauthenticated": str,
    "rate_limit_per_s": float,
    "max_watch_streams": int,
    "max_sessions_per_identity": int,
    "log_compaction_entries": int,
    "log_level": str,
    "backup_dir": str,
    "backup_every_s": float,
    "backup_keep": int,
    "backup_full_every": int,
    "consistency_check_every_s": float,
}


def parse_peer(spec: str) -> Peer:
    """Parse ``ID=RAFT_HOST:PORT,API_HOST:PORT[,learner]``."""
    pid, sep, rest = spec.partition("=")
    raft, sep2, api = rest.partition(",")
    api, _, role = api.partition(",")
    pid, raft, api, role = pid.strip(), raft.strip(), api.strip(), role.strip()
    if not sep or not sep2 or not pid or not raft or not api or role not in ("", "learner"):
        raise InvalidArgument(
            f"peer {spec!r} is not ID=RAFT_HOST:PORT,API_HOST:PORT (or ...,learner for a "
            "learner, as `coordctl node add` prints it)"
        )
    return Peer(pid, raft, api, learner=role == "learner")


def format_peer(pid: str, raft: str, api: str, learner: bool = False) -> str:
    """The ``--peer`` value :func:`parse_peer` reads back."""
    return f"{pid}={raft},{api}" + (",learner" if learner else "")


def parse_route(spec: str) -> tuple[str, str]:
    """Parse ``ID=HOST:PORT`` (dial this peer's Raft port here instead)."""
    pid, sep, addr = spec.partition("=")
    pid, addr = pid.strip(), addr.strip()
    if not sep or not pid or not addr:
        raise InvalidArgument(f"raft route {spec!r} is not ID=HOST:PORT")
    return pid, addr


def _coerce(name: str, value: Any, kind: type) -> Any:
    if kind is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise InvalidArgument(f"{name}: {value!r} is not a boolean (true/false)")
    noun = "an integer" if kind is int else f"a {kind.__name__}"
    if isinstance(value, bool):
        raise InvalidArgument(f"{name}: {value!r} is not {noun}")
    if kind is int and isinstance(value, float) and not value.is_integer():
        raise InvalidArgument(f"{name}: {value!r} is not a whole number")
    try:
        out = kind(value)
    except (TypeError, ValueError, OverflowError) as e:
        raise InvalidArgument(f"{name}: {value!r} is not {noun}") from e
    if kind is float and not math.isfinite(out):
        raise InvalidArgument(f"{name}: {value!r} is not a finite number")
    return out


def load_yaml(path: str) -> dict[str, Any]:
    """Read a YAML config file into a flat dict of known keys (unknown keys are an error)."""
    import yaml  # here: ~10 ms that coordctl's commands importing this module skip

    try:
        with open(path, encoding="utf-8") as f:
            raw = yaml.safe_load(f) or {}
    except OSError as e:
        raise InvalidArgument(f"cannot read config file {path}: {e.strerror}") from e
    except yaml.YAMLError as e:
        raise InvalidArgument(f"config file {path} is not valid YAML: {e}") from e
    if not isinstance(raw, dict):
        raise InvalidArgument(f"config file {path} must hold a mapping at the top level")
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key == "peers":
            if not isinstance(value, list):
                raise InvalidArgument(f"{path}: peers must be a list of {{id, raft, api}}")
            out["peers"] = [_peer_from_yaml(p, path) for p in value]
        elif key == "raft_routes":
            out["raft_routes"] = {str(k): str(v) for k, v in (value or {}).items()}
        elif key == "timings":
            if not isinstance(value, dict):
                raise InvalidArgument(f"{path}: timings must be a mapping")
            for tk, tv in value.items():
                if tk not in _FLOAT_TIMINGS:
                    raise InvalidArgument(f"{path}: unknown timing {tk!r}")
                out[tk] = tv
        elif key in _SCALARS:
            out[key] = value
        else:
            raise InvalidArgument(
                f"{path}: unknown key {key!r}; known keys: "
                + ", ".join(sorted([*_SCALARS, "peers", "raft_routes", "timings"]))
            )
    return out


def _peer_from_yaml(p: Any, path: str) -> Peer:
    if isinstance(p, str):
        return parse_peer(p)
    if isinstance(p, dict) and {"id", "raft", "api"} <= set(p) <= {"id", "raft", "api", "learner"}:
        return Peer(str(p["id"]), str(p["raft"]), str(p["api"]), learner=p.get("learner") is True)
    raise InvalidArgument(
        f"{path}: a peer is {{id, raft, api}} (learner: true for a learner) or 'ID=RAFT,API', "
        f"got {p!r}"
    )


def from_env(env: Mapping[str, str]) -> dict[str, Any]:
    """Collect ``COORD_*`` variables (``COORD_PEERS`` is ``ID=RAFT,API;ID=RAFT,API``)."""
    out: dict[str, Any] = {}
    for key in [*_SCALARS, *_FLOAT_TIMINGS]:
        value = env.get("COORD_" + key.upper())
        if value is not None and value != "":
            out[key] = value
    if env.get("COORD_CLUSTER_ID"):
        out["explicit_cluster_id"] = env["COORD_CLUSTER_ID"]
    if env.get("COORD_PEERS"):
        out["peers"] = [parse_peer(s) for s in env["COORD_PEERS"].split(";") if s.strip()]
    if env.get("COORD_RAFT_ROUTES"):
        out["raft_routes"] = dict(
            parse_route(s) for s in env["COORD_RAFT_ROUTES"].split(";") if s.strip()
        )
    return out


def build(layers: list[dict[str, Any]]) -> NodeConfig:
    """Merge layers (later wins), coerce types, construct and validate a NodeConfig."""
    merged: dict[str, Any] = {}
    for layer in layers:
        merged.update({k: v for k, v in layer.items() if v is not None})
    timings = RaftTimings(
        **{k: _coerce(k, merged.pop(k), float) for k in list(merged) if k in _FLOAT_TIMINGS}
    )
    kwargs: dict[str, Any] = {}
    for key, kind in _SCALARS.items():
        if key in merged:
            kwargs[key] = _coerce(key, merged[key], kind)
    peers = tuple(merged.get("peers") or ())
    if not peers:
        raise InvalidArgument("no peers: list every member with --peer ID=RAFT_ADDR,API_ADDR")
    cfg = NodeConfig(
        peers=peers,
        raft_routes=dict(merged.get("raft_routes") or {}),
        timings=timings,
        **{"node_id": "", "data_dir": "", **kwargs},
    )
    cfg.validate()
    return cfg


def load(
    config_file: str | None, flags: dict[str, Any], env: Mapping[str, str] | None = None
) -> NodeConfig:
    """defaults < YAML < COORD_* env < flags."""
    layers = [load_yaml(config_file)] if config_file else []
    layers.append(from_env(os.environ if env is None else env))
    layers.append(flags)
    return build(layers)
