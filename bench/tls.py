"""What TLS costs: put and linearizable get throughput and latency, coord vs etcd 3.4,
without TLS, with TLS, and with mutual TLS (+ a bearer token for coord).

Configurations (3 nodes each, fsync on, same machine, same certificates from
``coordctl certs init``):

- ``plain``: no TLS; coord without a cluster secret, etcd with http:// peers.
- ``tls``: server certificates on the client API; peer traffic encrypted too (coord:
  ``--cluster-secret``, which coord requires beyond loopback; etcd: peer TLS with client
  certificate auth between members).
- ``mtls``: as ``tls``, and clients must present a certificate of the CA; coord also
  checks a bearer token on every call (``--auth-tokens-file``). etcd has no per-call
  token without enabling its RBAC, so its ``mtls`` is certificates only.
- ``api-tls`` and ``peer-enc`` (not run by default) split ``tls`` in two: TLS on the
  client API only, and encrypted peer traffic only.

Each measurement is one ``_loadgen.py`` process (the same one ``run_all.py`` uses), with
N coroutines sharing one client that starts on the leader; gets are linearizable Range
calls (the load generator's ``put`` is a read for the ``*_get`` factories). The three
clusters of a system run at once and the runs are interleaved (plain, tls, mtls, plain,
...), so that a busy neighbour slows every configuration alike; every (configuration,
operation, clients) cell is measured ``--runs`` times and the table shows medians.

Usage: ``python bench/tls.py [--clients 1,16] [--seconds 3] [--runs 5] [--systems
coord,etcd] [--configs plain,tls,mtls] [--json]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import yaml
from grpc import aio

from _harness import EndpointRotator, add_json_flag, log, median
from coord.client.credentials import Credentials
from coord.testing import LocalCluster
from coord.v1 import kv_pb2, kv_pb2_grpc
from coord_adapter import CoordBenchCluster
from etcd_client import CHANNEL_OPTIONS, EtcdClient, _SyncStubs
from etcd_cluster import DEFAULT, EtcdCluster
from etcdpb import rpc_pb2, rpc_pb2_grpc
from measure import leader_first, measure_put_throughput

CONFIGS = ("plain", "tls", "mtls", "api-tls", "peer-enc")
DEFAULT_CONFIGS = ("plain", "tls", "mtls")


def client_tls(config: str) -> bool:
    """TLS on the client API (``api-tls``: only there, peers in clear)."""
    return config in ("tls", "mtls", "api-tls")


def peer_encrypted(config: str) -> bool:
    """Peer traffic encrypted (``peer-enc``: only there, client API in clear)."""
    return config in ("tls", "mtls", "peer-enc")


ENV = "BENCH_TLS"  # JSON {ca, cert, key, token}: how the load generator connects


# -- certificates and tokens -------------------------------------------------------


class Pki:
    """A CA, node certificates n1..n3 (127.0.0.1, localhost) and a client "bench"
    certificate, from ``coordctl certs init``; a tokens file from ``coordctl auth``."""

    def __init__(self, root: Path) -> None:
        self.dir = root / "pki"
        ctl = str(Path(sys.executable).with_name("coordctl"))
        nodes = [f"--node=n{i}=127.0.0.1,localhost" for i in (1, 2, 3)]
        subprocess.run(
            [ctl, "certs", "init", "--dir", str(self.dir), *nodes, "--client", "bench"],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        self.tokens_file = root / "tokens.yaml"
        out = subprocess.run(
            [ctl, "auth", "new-token", "bench", "--role", "admin", "--append",
             str(self.tokens_file)],
            check=True, capture_output=True, text=True, timeout=60,
        ).stdout  # fmt: skip
        self.token = next(
            line.split(": ", 1)[1] for line in out.splitlines() if line.startswith("token: ")
        )
        doc = yaml.safe_load(self.tokens_file.read_text())
        doc["certs"] = [{"cn": "bench", "role": "admin"}]
        self.tokens_file.write_text(yaml.safe_dump(doc))

    @property
    def ca(self) -> str:
        return str(self.dir / "ca.pem")

    def cert(self, name: str) -> tuple[str, str]:
        return str(self.dir / f"{name}.pem"), str(self.dir / f"{name}-key.pem")

    def client(self, config: str, token: bool) -> dict[str, str]:
        """The load generator's connection settings for ``config``."""
        if not client_tls(config):
            return {}
        out = {"ca": self.ca}
        if config == "mtls":
            out["cert"], out["key"] = self.cert("bench")
            if token:
                out["token"] = self.token
        return out


def _settings() -> dict[str, str]:
    return dict(json.loads(os.environ.get(ENV) or "{}"))


@contextlib.contextmanager
def client_settings(settings: dict[str, str]) -> Iterator[None]:
    old = os.environ.get(ENV)
    os.environ[ENV] = json.dumps(settings)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = old


# -- load generator clients (factories named in measure_put_throughput) -------------


class CoordKV:
    """Like ``coord_adapter.CoordKV``, over ``Credentials`` channels (TLS, token) from
    ``$BENCH_TLS``; with ``read=True`` its ``put`` is a linearizable get."""

    def __init__(self, endpoints: Sequence[str], call_timeout: float, read: bool) -> None:
        s = _settings()
        creds = Credentials(
            token=s.get("token", ""),
            ca_file=s.get("ca", ""),
            cert_file=s.get("cert", ""),
            key_file=s.get("key", ""),
        )
        self._channels = [creds.aio_channel(ep) for ep in endpoints]
        self._stubs = [kv_pb2_grpc.KVStub(ch) for ch in self._channels]
        self.rotator = EndpointRotator(len(endpoints), 0, call_timeout, 30.0)
        self.read = read

    async def put(self, key: str, value: bytes) -> None:
        req: Any = (
            kv_pb2.RangeRequest(key=key.encode())
            if self.read
            else kv_pb2.PutRequest(key=key.encode(), value=value, request_id=uuid.uuid4().hex)
        )
        method = "Range" if self.read else "Put"

        async def attempt(i: int, timeout: float) -> Any:
            return await getattr(self._stubs[i], method)(req, timeout=timeout)

        await self.rotator.call(attempt, retry_on=(aio.AioRpcError, asyncio.TimeoutError))

    async def close(self) -> None:
        await asyncio.gather(*(ch.close() for ch in self._channels), return_exceptions=True)


def _etcd_credentials(s: dict[str, str]) -> grpc.ChannelCredentials | None:
    if not s.get("ca"):
        return None

    def read(path: str) -> bytes | None:
        return Path(path).read_bytes() if path else None

    return grpc.ssl_channel_credentials(
        root_certificates=read(s["ca"]),
        private_key=read(s.get("key", "")),
        certificate_chain=read(s.get("cert", "")),
    )


class EtcdKV:
    """Like ``etcd_client.EtcdKV``, over TLS channels from ``$BENCH_TLS``; with
    ``read=True`` its ``put`` is a linearizable get."""

    def __init__(self, endpoints: Sequence[str], call_timeout: float, read: bool) -> None:
        creds = _etcd_credentials(_settings())
        self._channels = [
            aio.secure_channel(ep, creds, options=CHANNEL_OPTIONS)
            if creds is not None
            else aio.insecure_channel(ep, options=CHANNEL_OPTIONS)
            for ep in endpoints
        ]
        self._stubs = [rpc_pb2_grpc.KVStub(ch) for ch in self._channels]
        self.rotator = EndpointRotator(len(endpoints), 0, call_timeout, 30.0)
        self.read = read

    async def put(self, key: str, value: bytes) -> None:
        if self.read:
            req: Any = rpc_pb2.RangeRequest(key=key.encode())
        else:
            req = rpc_pb2.PutRequest(key=key.encode(), value=value)
        method = "Range" if self.read else "Put"

        async def attempt(i: int, timeout: float) -> Any:
            return await getattr(self._stubs[i], method)(req, timeout=timeout)

        await self.rotator.call(attempt, retry_on=(aio.AioRpcError, asyncio.TimeoutError))

    async def close(self) -> None:
        await asyncio.gather(*(ch.close() for ch in self._channels), return_exceptions=True)


def coord_put(endpoints: Sequence[str], call_timeout: float = 1.0) -> CoordKV:
    return CoordKV(endpoints, call_timeout, read=False)


def coord_get(endpoints: Sequence[str], call_timeout: float = 1.0) -> CoordKV:
    return CoordKV(endpoints, call_timeout, read=True)


def etcd_put(endpoints: Sequence[str], call_timeout: float = 1.0) -> EtcdKV:
    return EtcdKV(endpoints, call_timeout, read=False)


def etcd_get(endpoints: Sequence[str], call_timeout: float = 1.0) -> EtcdKV:
    return EtcdKV(endpoints, call_timeout, read=True)


# -- clusters ------------------------------------------------------------------------


def coord_cluster(pki: Pki, config: str) -> CoordBenchCluster:
    args: list[str] = []
    if peer_encrypted(config):
        args += ["--cluster-secret", "bench-cluster-secret"]
    if client_tls(config):
        args += ["--tls-ca", pki.ca]
    if config == "mtls":
        args += ["--tls-client-auth", "require", "--auth-tokens-file", str(pki.tokens_file)]
    c = CoordBenchCluster(3, extra_args=args)
    c.name = f"coord-{config}"
    lc: LocalCluster = c.cluster
    if client_tls(config):
        for node in lc.nodes:
            cert, key = pki.cert(node.node_id)
            node.extra_args = ["--tls-cert", cert, "--tls-key", key]
        s = pki.client(config, token=True)
        lc.credentials = Credentials(
            token=s.get("token", ""),
            ca_file=s["ca"],
            cert_file=s.get("cert", ""),
            key_file=s.get("key", ""),
        )
    return c


class TlsEtcdClient(EtcdClient):
    """The blocking etcd client (status, health) over TLS."""

    def __init__(self, endpoint: str, creds: grpc.ChannelCredentials, timeout: float = 5.0):
        self.endpoint = endpoint
        self.timeout = timeout
        self._channel = grpc.secure_channel(endpoint, creds, options=CHANNEL_OPTIONS)
        self._s = _SyncStubs(self._channel)


class TlsEtcdCluster(EtcdCluster):
    """``EtcdCluster`` with https client and peer URLs, the same node certificates as
    coord's, and (``mutual``) client certificate authentication."""

    def __init__(self, pki: Pki, config: str) -> None:
        self.pki = pki
        self.config = config
        super().__init__(3, DEFAULT)
        self.name = f"etcd-{config}"

    def _argv(self, i: int, state: str) -> list[str]:
        argv = super()._argv(i, state)
        cert, key = self.pki.cert(f"n{i + 1}")
        https = {
            "--listen-client-urls": client_tls(self.config),
            "--advertise-client-urls": client_tls(self.config),
            "--listen-peer-urls": peer_encrypted(self.config),
            "--initial-advertise-peer-urls": peer_encrypted(self.config),
            "--initial-cluster": peer_encrypted(self.config),
        }
        for k in range(len(argv) - 1):
            if https.get(argv[k]):
                argv[k + 1] = argv[k + 1].replace("http://", "https://")
        if client_tls(self.config):
            argv += ["--cert-file", cert, "--key-file", key]
        if peer_encrypted(self.config):
            argv += [
                "--peer-cert-file", cert, "--peer-key-file", key,
                "--peer-trusted-ca-file", self.pki.ca, "--peer-client-cert-auth",
            ]  # fmt: skip
        if self.config == "mtls":
            # etcd requires client certificates as soon as it has a client CA file.
            argv += ["--trusted-ca-file", self.pki.ca, "--client-cert-auth"]
        return argv

    def client(self, i: int) -> EtcdClient:
        if not client_tls(self.config):
            return super().client(i)
        c = self._clients[i]
        if c is None:
            creds = _etcd_credentials(self.pki.client(self.config, token=False))
            assert creds is not None
            c = self._clients[i] = TlsEtcdClient(self.endpoints()[i], creds)
        return c


# -- measuring ----------------------------------------------------------------------

Cell = dict[str, float | None]


def measure_once(
    system: str, config: str, endpoints: list[str], settings: dict[str, str], run: int,
    args: argparse.Namespace, out: dict[str, list[Cell]],
) -> None:  # fmt: skip
    """One run of every (operation, clients) cell for one configuration, into ``out``."""
    with client_settings(settings):
        for op in ("put", "get"):
            for n in args.clients:
                r = measure_put_throughput(
                    endpoints, n, args.seconds, factory=f"tls:{system}_{op}", warmup=0.5
                )
                if r.errors:
                    log(f"{system}-{config} {op} {n}: {r.errors} errors {r.raw['first_errors']}")
                out.setdefault(f"{op}/{n}", []).append(
                    {"ops_per_s": r.ops_per_s, "p50_ms": r.p50_ms, "p99_ms": r.p99_ms}
                )
                log(
                    f"{system}-{config} run {run + 1}: {op} x{n}: {r.ops_per_s:.0f} ops/s, "
                    f"p50 {r.p50_ms or 0:.2f} ms, p99 {r.p99_ms or 0:.2f} ms"
                )


def medians(runs: list[Cell]) -> dict[str, float | None]:
    keys = ("ops_per_s", "p50_ms", "p99_ms")
    return {
        k: median([v for r in runs if (v := r[k]) is not None]) if any(r[k] for r in runs) else None
        for k in keys
    }


def run_system(system: str, pki: Pki, args: argparse.Namespace) -> dict[str, Any]:
    """Every configuration of ``system`` at once (so that each sees the same idle
    neighbours), runs interleaved: run 1 of each configuration, then run 2, ..."""
    t0 = time.monotonic()
    cells: dict[str, dict[str, list[Cell]]] = {c: {} for c in args.configs}
    with contextlib.ExitStack() as stack:
        targets: dict[str, tuple[list[str], dict[str, str]]] = {}
        for config in args.configs:
            if system == "coord":
                c = stack.enter_context(coord_cluster(pki, config))
                c.wait_healthy(60)
                eps = leader_first(c.endpoints(), c.leader_index())
                targets[config] = (eps, pki.client(config, token=True))
            else:
                e = stack.enter_context(TlsEtcdCluster(pki, config))
                e.wait_healthy(60)
                eps = leader_first(e.endpoints(), e.leader_index())
                targets[config] = (eps, pki.client(config, token=False))
        for run in range(args.runs):
            for config, (eps, settings) in targets.items():
                measure_once(system, config, eps, settings, run, args, cells[config])
    log(f"{system}: done in {time.monotonic() - t0:.0f} s")
    return {
        f"{system}-{config}": {k: {"median": medians(v), "runs": v} for k, v in per.items()}
        for config, per in cells.items()
    }


def table(results: dict[str, dict[str, Any]], args: argparse.Namespace) -> str:
    columns = [f"{s}-{c}" for s in args.systems for c in args.configs]
    lines = ["| measure | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for op in ("put", "get"):
        for n in args.clients:
            for metric, unit in (
                ("ops_per_s", "ops/s"),
                ("p50_ms", "p50 ms"),
                ("p99_ms", "p99 ms"),
            ):
                cells = []
                for col in columns:
                    v = results.get(col, {}).get(f"{op}/{n}", {}).get("median", {}).get(metric)
                    if v is None:
                        cells.append("-")
                    else:
                        cells.append(
                            f"{v:,.0f}" if metric == "ops_per_s" or v >= 100 else f"{v:.1f}"
                        )
                lines.append(f"| {op} x{n} {unit} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _csv(s: str) -> list[str]:
    return [x for x in s.split(",") if x]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--clients", type=lambda s: [int(x) for x in _csv(s)], default=[1, 16])
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--systems", type=_csv, default=["coord", "etcd"])
    p.add_argument("--configs", type=_csv, default=list(DEFAULT_CONFIGS))
    add_json_flag(p)
    args = p.parse_args(argv)
    for c in args.configs:
        if c not in CONFIGS:
            p.error(f"unknown config {c!r}: use {', '.join(CONFIGS)}")
    return args


def main() -> None:
    args = parse_args()
    results: dict[str, dict[str, Any]] = {}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-tls-") as tmp:
        pki = Pki(Path(tmp))
        for system in args.systems:
            results.update(run_system(system, pki, args))
    meta = {
        "clients": args.clients,
        "seconds": args.seconds,
        "runs": args.runs,
        "elapsed_s": round(time.monotonic() - started),
        "load_average": os.getloadavg(),
    }
    if args.json:
        print(json.dumps({"meta": meta, "results": results}, indent=2))
    else:
        print(f"# TLS cost, 3 nodes, fsync on; medians of {args.runs} runs of {args.seconds:g} s")
        print(table(results, args))


if __name__ == "__main__":
    main()
