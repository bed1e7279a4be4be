"""An etcd election member process, the counterpart of ``coord.member_process``.

Grants a lease of ``--ttl`` seconds, keeps it alive every TTL/3 (as etcd's
clientv3 concurrency package does), campaigns on ``--election`` and prints one
JSON line per change with this process's monotonic clock. SIGTERM: resign, exit.

Each acknowledged keepalive also prints its validity end, the analogue of coord's
``Session._valid_until`` (``coord.member_process --report-validity``): the send time
of the newest keepalive whose response came back + the lease TTL (no drift margin:
etcd's clients compute none)::

    {"t": 13.012, "event": "validity", "valid_until": 15.008, "sent": 13.008}
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

from etcd_client import AsyncEtcdClient, rpc_pb2


def say(event: str, **fields: object) -> None:
    print(json.dumps({"t": round(time.monotonic(), 4), "event": event, **fields}), flush=True)


async def run(args: argparse.Namespace) -> None:
    client = AsyncEtcdClient(args.endpoint, timeout=30)
    lease = await client.lease_grant(args.ttl)
    keeper = asyncio.get_running_loop().create_task(keep_alive(client, lease, args.ttl))
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


async def keep_alive(client: AsyncEtcdClient, lease: int, ttl: int) -> None:
    """Keep ``lease`` alive every TTL/3 over one stream; say each new validity end."""
    call = client.lease_stub().LeaseKeepAlive()
    try:
        while True:
            sent = time.monotonic()
            await call.write(rpc_pb2.LeaseKeepAliveRequest(ID=lease))
            resp = await call.read()
            if not isinstance(resp, rpc_pb2.LeaseKeepAliveResponse) or resp.TTL <= 0:
                say("session", state="lost")
                return
            say("validity", valid_until=round(sent + ttl, 6), sent=round(sent, 6))
            await asyncio.sleep(max(0.0, sent + ttl / 3 - time.monotonic()))
    finally:
        call.cancel()


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
