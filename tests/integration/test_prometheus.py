"""A real Prometheus (Debian's package) scrapes a running 3-node cluster, and the figures
it stores match what the test caused.

A group (slots 1, default policy) has two member processes with sessions of TTL 2 s: a
master and a standby. The test kills the master with SIGKILL three times; each time the
standby takes over when the dead master's session expires, and the killed member is
started again as the next standby. Each outage is measured on this process's clock, from
the kill to the new master printing ``elected``. Then the test asks Prometheus, which
scraped every node every second, for the availability figures.

The bound between the ledger's downtime and the measured gaps: the ledger dates an outage
caused by a session expiry from the session's last renewal (``lost_since_ms`` on the
``master_lost`` event: the expiry command's time minus the TTL) to the ``master_elected``
event, with the leader's timestamps. A master renews every TTL/3, so it died between 0
and TTL/3 after its last renewal: per outage, the ledger's figure is the measured gap
plus 0 to TTL/3, give or take the delays of noticing the expiry and of the new master
hearing of its election (a few ms; ``SLACK_S`` on a loaded 2-core machine). The events
give the ledger's own figures exactly (same integer milliseconds), which the test checks
too.

The Prometheus it starts also loads deploy/prometheus/rules.yml (every rule must evaluate
without error on live data), and every query of deploy/grafana/coord.json must answer
with data (but those on errors and failed proposals, which may have none).
"""

from __future__ import annotations

import json
import shutil
import signal
import statistics
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from coord.testing import LocalCluster, free_ports, phase_failed, wait_until

from .members import Members, Watcher, get_group
from .support import ClusterFactory

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "rules.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "coord.json"

GROUP = "prom"
TTL_S = 2.0
ROUNDS = 3
BUDGET_MS = 3_600_000  # 1 h per 30 days: 5 s per hour, 3,600 s per 30 days
# The ledger and the events use the same integer milliseconds: only float rounding.
EXACT_S = 0.001
# A session renews every TTL/3: how long before the kill its last renewal may have been.
RENEWAL_S = TTL_S / 3
# Per outage, the delays between the leader's timestamps and this process's clock.
SLACK_S = 0.2


class Prometheus:
    """``/usr/bin/prometheus`` on a free 127.0.0.1 port, scraping ``targets`` every second."""

    def __init__(self, targets: list[str], base: Path) -> None:
        exe = shutil.which("prometheus")
        if exe is None:
            pytest.fail("prometheus is not installed: run scripts/system-deps (Debian's package)")
        base.mkdir(parents=True, exist_ok=True)
        self.log_path = base / "prometheus.log"
        config = {
            "global": {
                "scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s",
            },
            "rule_files": [str(RULES)],
            "scrape_configs": [
                {
                    "job_name": "coord",
                    "static_configs": [{"targets": targets, "labels": {"cluster": "test"}}],
                }
            ],
        }  # fmt: skip
        config_path = base / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config))
        self.address = f"127.0.0.1:{free_ports(1)[0]}"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [
                    exe, f"--config.file={config_path}", f"--storage.tsdb.path={base / 'data'}",
                    f"--web.listen-address={self.address}", "--log.level=warn",
                ],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip
        try:
            wait_until(self._ready, 30, f"Prometheus on {self.address} to be ready")
        except BaseException:
            self.close()
            raise

    def _get(self, path: str) -> tuple[int, bytes]:
        """GET ``path``: (status, body); HTTP errors are answers too (and closed here)."""
        try:
            with urllib.request.urlopen(f"http://{self.address}{path}", timeout=5) as r:
                return int(r.status), bytes(r.read())
        except urllib.error.HTTPError as e:
            with e:
                return int(e.code), bytes(e.read())

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"prometheus exited ({self.proc.returncode}):\n{self.log()}")
        return self._get("/-/ready")[0] == 200

    def api(self, path: str, **params: str) -> Any:
        status, body = self._get(f"/api/v1/{path}?{urllib.parse.urlencode(params)}")
        data = json.loads(body)
        assert status == 200 and data["status"] == "success", f"{path} {params}: {data}"
        return data["data"]

    def query(self, expr: str) -> list[tuple[dict[str, str], float]]:
        """An instant query: (labels, value) of each sample."""
        data = self.api("query", query=expr)
        if data["resultType"] == "scalar":
            return [({}, float(data["result"][1]))]
        return [(s["metric"], float(s["value"][1])) for s in data["result"]]

    def by_instance(self, expr: str) -> dict[str, float]:
        return {labels["instance"]: v for labels, v in self.query(expr)}

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-6000:]
        except OSError:
            return ""

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


@pytest.fixture
def cluster(cluster_factory: ClusterFactory) -> LocalCluster:
    c = cluster_factory(3, http=True)
    c.wait_for_leader()
    return c


@pytest.fixture
def prometheus(
    request: pytest.FixtureRequest, cluster: LocalCluster, tmp_path: Path
) -> Iterator[Prometheus]:
    prom = Prometheus([n.http for n in cluster.nodes], tmp_path / "prometheus")
    try:
        yield prom
    finally:
        prom.close()
        if phase_failed(request.node):
            print(f"\n===== prometheus log ({prom.log_path}) =====\n{prom.log()}")


def wait_all_nodes(prom: Prometheus, expr: str, want: float, timeout: float = 15.0) -> None:
    """Until Prometheus holds ``want`` for ``expr`` from each of the 3 nodes."""

    def seen() -> bool:
        got = prom.by_instance(expr)
        return len(got) == 3 and all(v == want for v in got.values())

    try:
        wait_until(seen, timeout, f"{expr} == {want} on all 3 nodes", interval=0.2)
    except TimeoutError as e:
        raise AssertionError(f"{e}; Prometheus has {prom.by_instance(expr)}") from None


@dataclass
class Gaps:
    """Each outage the test caused, in seconds, two ways."""

    measured: list[float] = field(default_factory=list)  # kill -9 -> "elected" printed
    events: list[float] = field(default_factory=list)  # the ledger's rule on the events

    def __str__(self) -> str:
        def fmt(xs: list[float]) -> str:
            return ", ".join(f"{x:.3f}" for x in xs)

        return (
            f"outages: kill -9 -> new master [{fmt(self.measured)}] s, "
            f"by the events [{fmt(self.events)}] s"
        )


def wait_standby(cluster: LocalCluster, member: str) -> None:
    """Until ``member`` is registered in the group and campaigning."""

    def campaigning() -> bool:
        with cluster.client() as c:
            g = get_group(c, GROUP)
        return any(m.id == member and m.candidate for m in g.members)

    wait_until(campaigning, 20, f"{member} to campaign in {GROUP}")


def kill_the_master_three_times(cluster: LocalCluster, members: Members) -> Gaps:
    """m1 masters, m2 stands by; kill -9 the master, the standby takes over once the dead
    master's session expired, the killed member starts again as the standby. Three times.
    """
    gaps = Gaps()
    watcher = Watcher(cluster.endpoints, groups=[GROUP], types=["master_lost", "master_elected"])
    try:
        master = members.start(GROUP, "m1", ttl_s=TTL_S)
        master.elected()
        _, elected = watcher.wait_for(
            lambda e: e.type == "master_elected", 10, "m1's master_elected"
        )
        standby = members.start(GROUP, "m2", ttl_s=TTL_S)
        for _ in range(ROUNDS):
            wait_standby(cluster, standby.id)
            killed_at = master.kill()
            line = standby.elected(timeout=TTL_S + 10)
            _, lost = watcher.wait_for(
                lambda e, m=master.id, r=elected.revision: (
                    e.type == "master_lost" and e.member == m and e.revision > r
                ),
                10,
                f"master_lost of {master.id}",
            )
            previous = elected
            _, elected = watcher.wait_for(
                lambda e, m=standby.id, r=lost.revision: (
                    e.type == "master_elected" and e.member == m and e.revision >= r
                ),
                10,
                f"master_elected of {standby.id}",
            )
            assert (lost.cause, elected.cause) == ("session_expired", "session_expired")
            assert lost.lost_since_ms, f"master_lost without lost_since_ms: {lost}"
            gaps.measured.append(line["t"] - killed_at)
            # The ledger's rule: down from the last renewal, but not before the master was
            # elected (nor before the previous outage ended: the same instant here).
            start = min(lost.time_ms, max(lost.lost_since_ms, previous.time_ms))
            gaps.events.append((elected.time_ms - start) / 1000)
            restarted = members.start(GROUP, master.id, ttl_s=TTL_S)
            master, standby = standby, restarted
    finally:
        watcher.stop()
    print(gaps)
    return gaps


def test_prometheus_figures_match_three_caused_outages(
    cluster: LocalCluster, members: Members, prometheus: Prometheus
) -> None:
    prom = prometheus
    sel = f'group="{GROUP}"'
    with cluster.client() as c:
        c.group(GROUP).create(downtime_budget_ms=BUDGET_MS)  # slots 1, default policy
    gaps = kill_the_master_three_times(cluster, members)

    # The final figures, scraped from every node after the third outage ended.
    wait_all_nodes(prom, f"coord_group_outages_total{{{sel}}}", ROUNDS)
    wait_all_nodes(prom, f'coord_group_failovers_total{{{sel}, cause="session_expired"}}', ROUNDS)
    wait_all_nodes(prom, f"coord_group_outage_open{{{sel}}}", 0)
    assert prom.query(f"max(coord_group_outages_total{{{sel}}})")[0][1] == ROUNDS

    # Downtime: the same on every node; what the events say, to the ms; and the measured
    # gaps plus 0 to TTL/3 each (the time between a master's last renewal and its kill).
    downtime = prom.by_instance(f"coord_group_downtime_seconds_total{{{sel}}}")
    assert len(downtime) == 3 and len(set(downtime.values())) == 1, f"disagree: {downtime}"
    total = max(downtime.values())
    assert total == pytest.approx(sum(gaps.events), abs=EXACT_S), f"{total} s; {gaps}"
    measured = sum(gaps.measured)
    low, high = measured - ROUNDS * SLACK_S, measured + ROUNDS * (RENEWAL_S + SLACK_S)
    assert low <= total <= high, f"downtime {total:.3f} s not in [{low:.3f}, {high:.3f}]; {gaps}"
    in_hour = prom.query(f'max(coord_group_window_downtime_seconds{{{sel}, window="1h"}})')
    assert in_hour[0][1] == pytest.approx(total, abs=EXACT_S)

    # MTTR over the last hour: the mean of the three outages, with the same bounds.
    mttr = prom.by_instance(f'coord_group_mttr_seconds{{{sel}, window="1h"}}')
    assert len(mttr) == 3 and len(set(mttr.values())) == 1, f"nodes disagree: {mttr}"
    mttr_1h = max(mttr.values())
    assert mttr_1h == pytest.approx(statistics.mean(gaps.events), abs=EXACT_S), gaps
    mean = statistics.mean(gaps.measured)
    assert mean - SLACK_S <= mttr_1h <= mean + RENEWAL_S + SLACK_S, f"MTTR {mttr_1h}; {gaps}"

    # The budget: 3,600 s per 30 days, minus the downtime.
    remaining = prom.query(f'max(coord_group_budget_remaining_seconds{{{sel}, window="30d"}})')
    assert remaining[0][1] == pytest.approx(BUDGET_MS / 1000 - total, abs=EXACT_S)

    check_rules_evaluate(prom)
    check_dashboard_queries(prom)


def check_rules_evaluate(prom: Prometheus) -> None:
    """The shipped rules all evaluate on live data without error, and the recording
    rules have produced burn rates for the group (it has a budget)."""
    shipped = sum(len(g["rules"]) for g in yaml.safe_load(RULES.read_text())["groups"])

    def health() -> list[tuple[str, str, str]]:
        rules = [r for g in prom.api("rules")["groups"] for r in g["rules"]]
        assert len(rules) == shipped, f"Prometheus loaded {len(rules)} rules of {shipped}"
        return [(r["name"], r["health"], r.get("lastError", "")) for r in rules]

    try:
        wait_until(
            lambda: all(h == "ok" for _, h, _ in health()), 10, "every rule healthy", interval=0.2
        )
    except TimeoutError:
        raise AssertionError(
            f"rules not healthy: {[h for h in health() if h[1] != 'ok']}"
        ) from None
    wait_until(
        lambda: prom.query(f'cluster_group:coord_group_budget_burn:1h{{group="{GROUP}"}}'),
        10,
        "the 1h burn rate of the group to be recorded",
        interval=0.2,
    )


def check_dashboard_queries(prom: Prometheus) -> None:
    """Each query of deploy/grafana/coord.json runs on Prometheus without error; those
    that must have data here (all but gRPC errors and failed proposals) have it."""
    dash = json.loads(DASHBOARD.read_text())
    queries = [
        (f"{p['title']!r} {t['refId']}", t["expr"])
        for p in dash["panels"]
        for t in p.get("targets", [])
    ]
    may_be_empty = ("proposals_failed", 'code!="OK"')
    variables = {
        "$__rate_interval": "5s", "$__interval": "1s", "$__range": "1m",
        "$cluster": ".*", "$instance": ".*", "$group": ".*",
    }  # fmt: skip

    def empty() -> list[str]:
        out = []
        for where, template in queries:
            expr = template
            for name, value in variables.items():
                expr = expr.replace(name, value)
            if not prom.query(expr) and not any(s in expr for s in may_be_empty):
                out.append(where)
        return out

    try:  # a rate over a window the scrapes have not filled yet: not yet
        wait_until(lambda: not empty(), 10, "every dashboard query to have data", interval=0.5)
    except TimeoutError:
        raise AssertionError(f"dashboard queries without data: {empty()}") from None
    # The variables' label_values() selectors find the cluster, the nodes and the group.
    assert {labels.get("cluster") for labels, _ in prom.query("coord_raft_term")} == {"test"}
    assert len(prom.query('coord_raft_term{cluster=~"test"}')) == 3
    groups = {labels.get("group") for labels, _ in prom.query('coord_group_slots{cluster=~"test"}')}
    assert GROUP in groups
