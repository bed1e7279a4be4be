"""The README's main job: ``coord dev --nodes 3 --demo`` (what scripts/demo runs), end to
end, as a user runs it: every step of the scripted failover must report OK and the
command must exit 0 only then."""

from __future__ import annotations

import re
from pathlib import Path

from .support import COORD, describe, run


def test_the_demo_fails_over_recovers_and_says_ok(tmp_path: Path) -> None:
    p = run([COORD, "dev", "--nodes", "3", "--demo", "--exit-after-demo",
             "--data-dir", str(tmp_path / "dev")], timeout=240)  # fmt: skip
    out = p.stdout
    assert p.returncode == 0, describe(p)
    took = re.search(r"demo: new leader n\d; first write after the kill succeeded in (\d+) ms", out)
    assert took is not None, describe(p)
    assert int(took.group(1)) < 10_000, out
    assert re.search(r"restarted from its data dir and caught up: 51/51 keys present -> OK", out)
    assert re.search(
        r"demo: consistency check: 3 members hash their whole state at revision \d+ to "
        r"[0-9a-f]{12} -> OK",
        out,
    ), describe(p)
    failover = re.search(
        r"demo: group db: (db-\d) is master after ([\d.]+) s \(session TTL 2 s\), "
        r"token (\d+) -> (\d+) -> OK",
        out,
    )
    assert failover is not None, describe(p)
    assert int(failover.group(4)) > int(failover.group(3))
    assert "DIVERGED" not in out and "MISSING" not in out and "BAD TOKEN" not in out
    assert "stopping the member processes and the nodes" in out
