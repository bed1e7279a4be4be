"""An etcd election member process, the counterpart of ``coord.member_process``.

Grants a lease of ``--ttl`` seconds, keeps it alive every TTL/3 (as etcd's
clientv3 concurrency package does), campaigns on ``--election`` and prints one
JSON line per change with this process's monotonic clock. SIGTERM: resign, exit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from etcd_client import AsyncEtcdClient


def say(event: str, **fields: object) -> None:
    print(json.dumps({"t": round(time.monotonic(), 4), "event": event, **fields}), flush=True)


async def run(args: argparse.Namespace) -> None:
    client = AsyncEtcdClient(args.endpoint, timeout=30)
    lease = await client.lease_grant(args.ttl)
    keeper = client.start_keepalive(lease, args.ttl / 3)
    say("session", state="connected", id=lease)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    leader = await client.campaign(args.election, lease, args.id, timeout=3600)
    say("elected", token=leader.rev)
    await stop.wait()
    await client.resign(leader)
    say("resigned", cause="stop")
    keeper.cancel()
    await client.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--endpoint", required=True)
    # Not "bench": etcd elections use the prefix NAME/, and the harness writes bench/... keys.
    p.add_argument("--election", default="election-bench")
    p.add_argument("--id", required=True)
    p.add_argument("--ttl", type=int, default=2)
    asyncio.run(run(p.parse_args()))


if __name__ == "__main__":
    main()
