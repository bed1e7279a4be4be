"""The agent's configuration: one YAML file per host (and/or flags), checked at load.

Keys (YAML, every one optional but ``endpoints``, ``group`` and ``member``)::

    endpoints: [10.0.0.1:2379, 10.0.0.2:2379, 10.0.0.3:2379]   # or "a:1,b:2"
    group: db                    # the group to join (it must exist)
    member: db-1                 # this member's id in the group
    address: 10.0.0.1:5432       # where clients reach the service
    priority: 10                 # higher is preferred for mastership
    weight: 1                    # for client-side weighted balancing
    tags: {zone: eu-1a}          # what a group's spread rule counts masters by
    nofailover: false            # register, never campaign
    ttl: 10s                     # the session's TTL (0.5s .. 1h)
    listen: 0.0.0.0:8008         # the role endpoints (/master, /standby, /health, /role)
    check: {http: "http://10.0.0.1:8080/healthz", interval: 1s, fall: 3}   # or tcp:, grpc:
    hooks: {pre_promote: CMD, on_elected: CMD, on_demoted: CMD, on_lost: CMD}
    hook_timeout: 30s            # a hook still running then is killed (and has failed)
    run: [CMD, ARG, ...]         # a command run only while master
    stop_grace: 2s               # SIGTERM, then SIGKILL this long after (default and
                                 # at most ttl/4; 10s at most by default)
    retry_delay: 2s              # after a failed pre_promote or an exited command
    position: CMD                # prints this member's position (a WAL LSN, an offset):
                                 # one integer >= 0 on stdout (coord.agent.position)
    position_file: FILE          # ... or a file holding it (one of the two at most)
    position_interval: 1s        # read and report it this often (when it moved)
    position_timeout: 5s         # a position command still running then is killed
    tls: {cacert: FILE, cert: FILE, key: FILE, server_name: NAME}

A command (a hook, ``run``, ``position``) is a string split as a shell would split words
(no shell runs it: write ``sh -c '...'`` for pipes or redirection) or a list of words.
Durations are ``500ms``, ``10s``, ``2m``, ``1h`` or a number of seconds. Anything else —
an unknown key, a TTL out of bounds, a command that cannot be split — is an
InvalidArgument naming the key (``coord agent`` exits 2). The bearer token of a secured
cluster comes from the environment (``COORD_MEMBER_TOKEN``), never from this file.
"""

from __future__ import annotations

import math
import re
import shlex
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import yaml
from google.protobuf import json_format

from coord import errors
from coord.client import grpc_check, http_check, parse_endpoints, tcp_check
from coord.v1 import groups_pb2

HOOKS = ("pre_promote", "on_elected", "on_demoted", "on_lost")
# The cluster's bounds on a session's TTL (coord/state/limits.py).
TTL_MIN_S, TTL_MAX_S = 0.5, 3600.0
DEFAULT_LISTEN = "127.0.0.1:8008"

_KEYS = (
    "endpoints", "group", "member", "address", "priority", "weight", "nofailover", "ttl",
    "listen", "check", "hooks", "hook_timeout", "run", "stop_grace", "retry_delay", "tls",
    "position", "position_file", "position_interval", "position_timeout", "tags",
)  # fmt: skip
_CHECK_KINDS = ("tcp", "http", "grpc")
_CHECK_KEYS = (*_CHECK_KINDS, "interval", "timeout", "rise", "fall", "expect_status",
               "body_contains", "service", "tls_skip_verify")  # fmt: skip
_TLS_KEYS = ("cacert", "cert", "key", "server_name")
_DURATION = re.compile(r"(\d+(?:\.\d*)?)(ms|s|m|h)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}

Command = tuple[str, ...]


@dataclass(frozen=True)
class AgentConfig:
    endpoints: tuple[str, ...]
    group: str
    member: str
    address: str = ""
    priority: int = 0
    weight: int = 1
    nofailover: bool = False
    ttl_s: float = 10.0
    listen: str = DEFAULT_LISTEN
    check: groups_pb2.HealthCheck | None = None
    hooks: dict[str, Command] = field(default_factory=dict)
    hook_timeout_s: float = 30.0
    run: Command = ()
    stop_grace_s: float = 2.5
    retry_delay_s: float = 2.0
    tls: dict[str, str] = field(default_factory=dict)
    position: Command = ()
    position_file: str = ""
    position_interval_s: float = 1.0
    position_timeout_s: float = 5.0
    # The member's tags (a zone, a host): what a group's spread rule counts by.
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def stepdown_grace_s(self) -> float:
        """Asked to step down, how long the library waits for the agent to stop its
        command and resign before it resigns anyway: the command's stop grace, and room."""
        return self.stop_grace_s + 2.0

    def listen_address(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)

    def commands(self) -> dict[str, Command]:
        """Every command this config runs, by its key (``hooks.NAME``, ``run``)."""
        out = {f"hooks.{name}": argv for name, argv in self.hooks.items()}
        if self.run:
            out["run"] = self.run
        if self.position:
            out["position"] = self.position
        return out

    @property
    def reports_position(self) -> bool:
        return bool(self.position or self.position_file)


def load(
    path: str | None,
    overrides: Mapping[str, Any] | None = None,
    defaults: Mapping[str, Any] | None = None,
) -> AgentConfig:
    """The file's keys (if a path is given) over ``defaults`` (such as endpoints from the
    environment), with ``overrides`` (flags, same key names; ``hooks`` merged by name)
    over them, checked. Raises InvalidArgument."""
    raw: dict[str, Any] = {**(defaults or {}), **(read_yaml(path) if path else {})}
    for key, value in (overrides or {}).items():
        if key == "hooks" and isinstance(raw.get("hooks"), dict):
            raw["hooks"] = {**raw["hooks"], **value}
        else:
            raw[key] = value
    return build(raw, path or "flags")


def read_yaml(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            raw = yaml.safe_load(f)
    except OSError as e:
        raise errors.InvalidArgument(f"cannot read agent config {path}: {e.strerror}") from e
    except yaml.YAMLError as e:
        raise errors.InvalidArgument(f"agent config {path} is not valid YAML: {e}") from e
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise errors.InvalidArgument(f"agent config {path} must hold a mapping at the top level")
    return raw


def build(raw: Mapping[str, Any], where: str = "config") -> AgentConfig:
    """An AgentConfig from a mapping of the file's keys (InvalidArgument naming the key)."""
    unknown = sorted(str(k) for k in raw if k not in _KEYS)
    if unknown:
        raise errors.InvalidArgument(
            f"{where}: unknown key {unknown[0]!r}; known keys: {', '.join(sorted(_KEYS))}"
        )
    for key in ("endpoints", "group", "member"):
        if raw.get(key) in (None, "", []):
            raise errors.InvalidArgument(f"{where}: {key!r} is required")
    endpoints = raw["endpoints"]
    if not isinstance(endpoints, str | list):
        raise errors.InvalidArgument(f"{where}: endpoints must be a list of HOST:PORT")
    try:
        eps = tuple(parse_endpoints([str(e) for e in endpoints] if isinstance(endpoints, list)
                                    else endpoints))  # fmt: skip
    except errors.InvalidArgument as e:
        raise errors.InvalidArgument(f"{where}: endpoints: {e.message}") from None
    ttl = duration(raw.get("ttl", 10.0), "ttl", where)
    if not TTL_MIN_S <= ttl <= TTL_MAX_S:
        raise errors.InvalidArgument(
            f"{where}: ttl {raw.get('ttl')!r} is out of bounds: the cluster takes a TTL "
            f"from {TTL_MIN_S:g}s to {TTL_MAX_S:g}s"
        )
    grace_max = ttl / 4
    stop_grace = duration(raw.get("stop_grace", min(grace_max, 10.0)), "stop_grace", where)
    if stop_grace > grace_max:
        raise errors.InvalidArgument(
            f"{where}: stop_grace {raw.get('stop_grace')!r} is more than ttl/4 "
            f"({grace_max:g}s): the command run while master must be stopped well before "
            "the session's validity can run out"
        )
    hook_timeout = duration(raw.get("hook_timeout", 30.0), "hook_timeout", where)
    if hook_timeout <= 0:
        raise errors.InvalidArgument(f"{where}: hook_timeout must be more than 0")
    position, position_file, position_interval, position_timeout = _position(raw, where)
    return AgentConfig(
        endpoints=eps,
        group=_text(raw["group"], "group", where),
        member=_text(raw["member"], "member", where),
        address=_text(raw.get("address", ""), "address", where),
        priority=_int(raw.get("priority", 0), "priority", where),
        weight=_int(raw.get("weight", 1), "weight", where),
        nofailover=_bool(raw.get("nofailover", False), "nofailover", where),
        ttl_s=ttl,
        listen=_listen(raw.get("listen", DEFAULT_LISTEN), where),
        check=_check(raw.get("check"), where),
        hooks=_hooks(raw.get("hooks"), where),
        hook_timeout_s=hook_timeout,
        run=command(raw["run"], "run", where) if raw.get("run") not in (None, "", []) else (),
        stop_grace_s=stop_grace,
        retry_delay_s=duration(raw.get("retry_delay", 2.0), "retry_delay", where),
        tls=_tls(raw.get("tls"), where),
        position=position,
        position_file=position_file,
        position_interval_s=position_interval,
        position_timeout_s=position_timeout,
        tags=_tags(raw.get("tags"), where),
    )


def describe(cfg: AgentConfig) -> dict[str, Any]:
    """The settings as plain data (``coord agent --check-config`` prints them)."""
    out = {f.name: getattr(cfg, f.name) for f in fields(cfg)}
    out["check"] = json_format.MessageToDict(cfg.check) if cfg.check is not None else None
    return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}


def runnable(cfg: AgentConfig, where: str = "config") -> None:
    """Every command's program exists (on PATH, or as a path): checked when the agent
    starts, not at load (a config is checked on hosts other than its own too)."""
    for key, argv in cfg.commands().items():
        if shutil.which(argv[0]) is None:
            raise errors.InvalidArgument(
                f"{where}: {key}: program {argv[0]!r} not found (not on PATH, or not executable)"
            )


# -- values ---------------------------------------------------------------------------


def duration(value: Any, key: str, where: str) -> float:
    """``500ms``, ``10s``, ``2m``, ``1h``, ``1m30s`` or a number of seconds, >= 0."""
    if isinstance(value, bool):
        raise errors.InvalidArgument(f"{where}: {key}: {value!r} is not a duration")
    if isinstance(value, int | float):
        out = float(value)
    else:
        text = str(value).strip()
        parts = _DURATION.findall(text)
        try:
            out = float(text)
        except ValueError:
            if not parts or "".join(n + u for n, u in parts) != text:
                raise errors.InvalidArgument(
                    f"{where}: {key}: {value!r} is not a duration like 10s, 500ms or 2m"
                ) from None
            out = sum(float(n) * _UNIT_S[u] for n, u in parts)
    if not math.isfinite(out) or out < 0:
        raise errors.InvalidArgument(f"{where}: {key}: {value!r} is not a duration >= 0")
    return out


def command(value: Any, key: str, where: str) -> Command:
    """A string split into words as a shell would (without running one), or a list."""
    if isinstance(value, str):
        try:
            argv = shlex.split(value)
        except ValueError as e:
            raise errors.InvalidArgument(
                f"{where}: {key}: cannot split the command {value!r} into words ({e})"
            ) from None
    elif isinstance(value, list) and all(isinstance(w, str | int | float) for w in value):
        argv = [str(w) for w in value]
    else:
        raise errors.InvalidArgument(
            f"{where}: {key}: a command is a string or a list of words, not {value!r}"
        )
    if not argv or not argv[0]:
        raise errors.InvalidArgument(f"{where}: {key}: the command is empty")
    return tuple(argv)


def _hooks(value: Any, where: str) -> dict[str, Command]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise errors.InvalidArgument(f"{where}: hooks must be a mapping of {', '.join(HOOKS)}")
    out = {}
    for name, cmd in value.items():
        if name not in HOOKS:
            raise errors.InvalidArgument(
                f"{where}: unknown hook {name!r}; hooks are {', '.join(HOOKS)}"
            )
        if cmd not in (None, "", []):
            out[name] = command(cmd, f"hooks.{name}", where)
    return out


def _position(raw: Mapping[str, Any], where: str) -> tuple[Command, str, float, float]:
    """``position`` (a command) or ``position_file``, and how often and how long."""
    unset: tuple[Any, ...] = (None, "", [])
    cmd = command(raw["position"], "position", where) if raw.get("position") not in unset else ()
    path = raw.get("position_file")
    path = _text(path, "position_file", where).strip() if path not in unset else ""
    if cmd and path:
        raise errors.InvalidArgument(
            f"{where}: position and position_file are both set: give one (a command that "
            "prints the position, or a file that holds it)"
        )
    interval = duration(raw.get("position_interval", 1.0), "position_interval", where)
    timeout = duration(raw.get("position_timeout", 5.0), "position_timeout", where)
    for key, value in (("position_interval", interval), ("position_timeout", timeout)):
        if value <= 0:
            raise errors.InvalidArgument(f"{where}: {key} must be more than 0")
        if key in raw and raw[key] not in unset and not (cmd or path):
            raise errors.InvalidArgument(
                f"{where}: {key} is set, but neither position nor position_file is: "
                "nothing would be reported"
            )
    return cmd, path, interval, timeout


def _check(value: Any, where: str) -> groups_pb2.HealthCheck | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise errors.InvalidArgument(f"{where}: check must be a mapping (tcp:, http: or grpc:)")
    unknown = sorted(str(k) for k in value if k not in _CHECK_KEYS)
    if unknown:
        raise errors.InvalidArgument(
            f"{where}: check: unknown key {unknown[0]!r}; known: {', '.join(_CHECK_KEYS)}"
        )
    kinds = [k for k in _CHECK_KINDS if k in value]
    if len(kinds) != 1:
        raise errors.InvalidArgument(f"{where}: check needs exactly one of tcp:, http:, grpc:")
    interval = duration(value.get("interval", 1.0), "check.interval", where)
    timeout = duration(value.get("timeout", 0.0), "check.timeout", where)
    rise = _int(value.get("rise", 2), "check.rise", where)
    fall = _int(value.get("fall", 3), "check.fall", where)
    target = _text(value[kinds[0]] or "", f"check.{kinds[0]}", where)
    if kinds[0] == "tcp":
        return tcp_check(target, interval, timeout, rise, fall)
    if kinds[0] == "grpc":
        service = _text(value.get("service", ""), "check.service", where)
        return grpc_check(target, service, False, interval, timeout, rise, fall)
    statuses = value.get("expect_status", [])
    if not isinstance(statuses, list):
        statuses = [statuses]
    return http_check(
        target,
        expect_status=[_int(s, "check.expect_status", where) for s in statuses],
        body_contains=_text(value.get("body_contains", ""), "check.body_contains", where),
        interval_s=interval, timeout_s=timeout, rise=rise, fall=fall,
        tls_skip_verify=_bool(value.get("tls_skip_verify", False), "check.tls_skip_verify", where),
    )  # fmt: skip


def _tls(value: Any, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or any(k not in _TLS_KEYS for k in value):
        raise errors.InvalidArgument(f"{where}: tls takes {', '.join(_TLS_KEYS)}")
    return {k: _text(v, f"tls.{k}", where) for k, v in value.items()}


def _tags(value: Any, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise errors.InvalidArgument(f"{where}: tags is a map of names to values (zone: eu-1a)")
    return {_text(k, "tags", where): _text(v, f"tags.{k}", where) for k, v in value.items()}


def _listen(value: Any, where: str) -> str:
    text = _text(value, "listen", where)
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise errors.InvalidArgument(f"{where}: listen {text!r} is not HOST:PORT")
    return text


def _text(value: Any, key: str, where: str) -> str:
    if isinstance(value, dict | list | bool) or value is None:
        raise errors.InvalidArgument(f"{where}: {key}: {value!r} is not a string")
    return str(value)


def _int(value: Any, key: str, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise errors.InvalidArgument(f"{where}: {key}: {value!r} is not an integer")
    try:
        return int(value)
    except ValueError:
        raise errors.InvalidArgument(f"{where}: {key}: {value!r} is not an integer") from None


def _bool(value: Any, key: str, where: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "yes", "on", "1"):
        return True
    if text in ("false", "no", "off", "0"):
        return False
    raise errors.InvalidArgument(f"{where}: {key}: {value!r} is not true or false")
