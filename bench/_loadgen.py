"""Put load generator, run as ONE separate process by ``measure.measure_put_throughput``.

Both systems are driven by this same process and code, so they pay the same
client-side overhead. ``--factory module:callable`` names the client: it is
imported from ``bench/`` and called as ``factory(endpoints, call_timeout=...)``
inside the event loop, returning a ``_harness.KVClient``.

N coroutines share that one client; each loops put -> await -> record latency
until the deadline. Ops completing during ``--warmup`` are not counted.
Prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import KVClient, pct

MAX_OPS_PER_WORKER = 10_000_000  # hard bound on each worker loop


def load_factory(spec: str) -> Callable[..., KVClient]:
    """Resolve ``module:attr`` to a client factory."""
    module, _, attr = spec.partition(":")
    if not attr:
        raise ValueError(f"factory must be module:callable, got {spec!r}")
    factory: Callable[..., KVClient] = getattr(importlib.import_module(module), attr)
    return factory


async def _worker(
    client: KVClient,
    wid: int,
    value: bytes,
    t_start: float,
    t_end: float,
    lat: list[float],
    errs: list[str],
) -> None:
    key = f"bench/load/{wid:04d}"
    for _ in range(MAX_OPS_PER_WORKER):
        t0 = time.perf_counter()
        if t0 >= t_end:
            return
        try:
            await client.put(key, value)
        except Exception as exc:  # counted and reported, never fatal
            errs.append(repr(exc)[:200])
            continue
        if t0 >= t_start:
            lat.append(time.perf_counter() - t0)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the load and return the result document."""
    factory = load_factory(args.factory)
    client = factory(args.endpoints.split(","), call_timeout=args.call_timeout)
    lat: list[float] = []
    errs: list[str] = []
    value = b"x" * args.value_size
    try:
        await client.put("bench/load/ping", value)  # connect before the clock starts
        t_start = time.perf_counter() + args.warmup
        t_end = t_start + args.seconds
        await asyncio.gather(
            *(_worker(client, w, value, t_start, t_end, lat, errs) for w in range(args.clients))
        )
    finally:
        await client.close()
    return {
        "clients": args.clients,
        "seconds": args.seconds,
        "ops": len(lat),
        "ops_per_s": len(lat) / args.seconds,
        "p50_ms": pct(lat, 50) * 1e3 if lat else None,
        "p99_ms": pct(lat, 99) * 1e3 if lat else None,
        "errors": len(errs),
        "first_errors": errs[:3],
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command line of the load generator."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--factory", required=True)
    p.add_argument("--endpoints", required=True, help="comma-separated host:port")
    p.add_argument("--clients", type=int, required=True)
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--value-size", type=int, default=64)
    p.add_argument("--call-timeout", type=float, default=1.0)
    return p.parse_args(argv)


def main() -> None:
    """Entry point: print the result as one JSON line."""
    print(json.dumps(asyncio.run(run(parse_args()))))


if __name__ == "__main__":
    main()
