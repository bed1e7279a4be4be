"""A member process with tags, for tests/integration/test_spread.py (coord.member_process
takes no tags): ``python tests/integration/tagged_member.py --endpoints A,B,C --group g
--id g-1 --priority 3 --ttl-s 1 --tag host=h1``.

Opens a session, registers with the tags, campaigns, holds mastership while it is
master (the client library resigns it when asked to step down), and campaigns again.
One JSON line per change on stdout (``registered``, ``elected``, ``not_master``), like
coord.member_process. Meant to be killed (kill -9: a host dies).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from coord.client import Client


def say(event: str, **fields: Any) -> None:
    print(json.dumps({"t": round(time.monotonic(), 4), "event": event, **fields}), flush=True)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--endpoints", required=True)
    p.add_argument("--group", required=True)
    p.add_argument("--id", required=True)
    p.add_argument("--priority", type=int, default=0)
    p.add_argument("--ttl-s", type=float, default=1.0)
    p.add_argument("--tag", action="append", default=[], help="KEY=VALUE, repeated")
    args = p.parse_args()
    tags = dict(t.split("=", 1) for t in args.tag)
    client = Client(args.endpoints, timeout_s=30)
    with client.session(ttl_s=args.ttl_s, name=args.id) as session:
        group = client.group(args.group)
        member = group.member(args.id, session, priority=args.priority, tags=tags).start()
        say("registered", session=session.id)
        while session.is_valid():
            lead = member.campaign()
            say("elected", token=lead.token, slot=lead.slot)
            while lead.is_master():
                time.sleep(0.01)
            say("not_master")
    return 0


if __name__ == "__main__":
    sys.exit(main())
