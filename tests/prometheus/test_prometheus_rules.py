"""deploy/prometheus and deploy/grafana, checked offline (a few seconds, in the default run).

- ``promtool check rules`` / ``check config`` accept the shipped files;
- ``promtool test rules tests/prometheus/*.test.yml`` passes, and those tests give every
  alert rule at least one case where it fires and one where it stays silent;
- every alert has a severity label and summary/description annotations;
- every metric the rules and the dashboard query is one that coord exports (names read
  from coord/server/**/*.py), every recording rule the dashboard uses exists, and every
  dashboard expression parses (promtool, as the expression of a recording rule: promtool
  2.42 has no stand-alone PromQL parser).

promtool comes from Debian's ``prometheus`` package (scripts/system-deps installs it).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PROM_DIR = ROOT / "deploy" / "prometheus"
RULES = PROM_DIR / "rules.yml"
CONFIG = PROM_DIR / "prometheus.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "coord.json"
TEST_FILES = sorted(Path(__file__).parent.glob("*.test.yml"))
SEVERITIES = {"critical", "warning"}

# Grafana's variables, replaced by something PromQL accepts.
GRAFANA_VARS = {
    "$__rate_interval": "1m",
    "$__interval": "1m",
    "$__range": "1h",
    "$cluster": ".*",
    "$instance": ".*",
    "$group": ".*",
}


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("promtool")
    if exe is None:
        pytest.fail("promtool is not installed: run scripts/system-deps (Debian's prometheus)")
    return subprocess.run(
        [exe, *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def output(p: subprocess.CompletedProcess[str]) -> str:
    return f"promtool {' '.join(p.args[1:])}: exit {p.returncode}\n{p.stdout}\n{p.stderr}"


def load_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def alerts() -> list[dict[str, Any]]:
    return [r for r in load_rules() if "alert" in r]


def dashboard_exprs() -> list[tuple[str, str]]:
    """(where, expr) of every query in the dashboard: panels, annotations, variables."""
    dash = json.loads(DASHBOARD.read_text())
    out = []
    for panel in dash["panels"]:
        for target in panel.get("targets", []):
            out.append((f"panel {panel['title']!r} {target['refId']}", target["expr"]))
    for ann in dash["annotations"]["list"]:
        if "expr" in ann:
            out.append((f"annotation {ann['name']!r}", ann["expr"]))
    for var in dash["templating"]["list"]:
        if var["type"] == "query":
            # label_values(SELECTOR, label): the selector is PromQL.
            m = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", var["query"]["query"])
            assert m, f"variable {var['name']}: unexpected query {var['query']}"
            out.append((f"variable {var['name']!r}", m.group(1)))
    return out


def substitute(expr: str) -> str:
    for var, value in GRAFANA_VARS.items():
        expr = expr.replace(var, value)
    assert "$" not in expr, f"an unknown Grafana variable in {expr}"
    return expr


def exported_metrics() -> set[str]:
    """Series names coord exports, from the metric definitions in coord/server/**/*.py."""
    kinds = "Counter|Gauge|Histogram|_gauge|GaugeMetricFamily|CounterMetricFamily"
    pattern = re.compile(rf'\b({kinds})\(\s*"(coord_\w+)"')
    names = set()
    for path in sorted((ROOT / "coord" / "server").rglob("*.py")):
        for kind, name in pattern.findall(path.read_text()):
            if kind in ("Counter", "CounterMetricFamily"):
                names.add(name.removesuffix("_total") + "_total")
            elif kind == "Histogram":
                names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
            else:
                names.add(name)
    assert "coord_raft_term" in names and "coord_group_ftsd" in names, sorted(names)
    return names


def metric_names(expr: str) -> set[str]:
    """coord_* series names in a PromQL expression (recording rule names have colons)."""
    return set(re.findall(r"(?<![\w:])coord_\w+(?![\w:])", expr))


def recorded_names(expr: str) -> set[str]:
    return set(re.findall(r"(?<![\w:])[a-zA-Z_]\w*:[\w:]+", expr))


# -- promtool ----------------------------------------------------------------------------


def test_promtool_check_rules() -> None:
    p = promtool("check", "rules", RULES)
    assert p.returncode == 0, output(p)
    assert "SUCCESS" in p.stdout, output(p)


def test_promtool_check_config() -> None:
    # The scrape config reads the nodes' CA and a token from files next to it.
    tmp = Path(tempfile.mkdtemp(prefix="coord-promcheck-"))
    try:
        for f in (CONFIG, RULES):
            shutil.copy(f, tmp / f.name)
        (tmp / "coord-token").write_text("a-read-token\n")
        (tmp / "coord-ca.pem").write_text("the nodes' CA\n")
        p = promtool("check", "config", tmp / CONFIG.name)
        assert p.returncode == 0, output(p)
        (tmp / "coord-token").unlink()
        p = promtool("check", "config", tmp / CONFIG.name)
        assert p.returncode != 0 and "coord-token" in output(p), "the token file is used"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def test_promtool_unit_tests_pass() -> None:
    assert TEST_FILES, "no tests/prometheus/*.test.yml"
    p = promtool("test", "rules", *TEST_FILES)
    assert p.returncode == 0, output(p)
    assert p.stdout.count("SUCCESS") == len(TEST_FILES), output(p)


# -- the rules themselves ------------------------------------------------------------------


def test_every_alert_has_a_severity_a_summary_and_a_description() -> None:
    found = alerts()
    assert len(found) >= 9, [a["alert"] for a in found]
    for a in found:
        assert a.get("labels", {}).get("severity") in SEVERITIES, a["alert"]
        annotations = a.get("annotations", {})
        assert annotations.get("summary", "").strip(), f"{a['alert']}: no summary"
        assert annotations.get("description", "").strip(), f"{a['alert']}: no description"


def test_every_alert_fires_and_stays_silent_in_some_unit_test() -> None:
    fires: set[str] = set()
    silent: set[str] = set()
    for path in TEST_FILES:
        doc = yaml.safe_load(path.read_text())
        rule_files = {(path.parent / f).resolve() for f in doc["rule_files"]}
        assert rule_files == {RULES.resolve()}, f"{path.name} tests other rules: {rule_files}"
        for test in doc["tests"]:
            for case in test.get("alert_rule_test", []):
                (fires if case.get("exp_alerts") else silent).add(case["alertname"])
    names = {a["alert"] for a in alerts()}
    assert not names - fires, f"alerts never shown firing: {sorted(names - fires)}"
    assert not names - silent, f"alerts never shown silent: {sorted(names - silent)}"
    assert not (fires | silent) - names, f"tests of unknown alerts: {(fires | silent) - names}"


def test_rules_query_only_metrics_coord_exports() -> None:
    known = exported_metrics()
    recorded = {r["record"] for r in load_rules() if "record" in r}
    for rule in load_rules():
        name = rule.get("alert") or rule.get("record")
        unknown = metric_names(rule["expr"]) - known
        assert not unknown, f"{name} queries metrics coord does not export: {unknown}"
        assert recorded_names(rule["expr"]) <= recorded, f"{name}: unknown recording rule"


# -- the dashboard -------------------------------------------------------------------------


def test_dashboard_queries_only_metrics_and_rules_that_exist() -> None:
    known = exported_metrics() | {"up"}
    recorded = {r["record"] for r in load_rules() if "record" in r}
    exprs = dashboard_exprs()
    assert len(exprs) >= 25
    used: set[str] = set()
    for where, expr in exprs:
        names = metric_names(expr)
        assert not names - known, f"{where} queries metrics coord does not export: {expr}"
        assert recorded_names(expr) <= recorded, f"{where}: unknown recording rule in {expr}"
        used |= names
    # The panels the dashboard promises (see deploy/grafana/coord.json).
    for name in (
        "coord_raft_is_leader", "coord_raft_term", "coord_raft_leader_changes_total",
        "coord_raft_fsync_duration_seconds_bucket", "coord_grpc_requests_total",
        "coord_grpc_request_duration_seconds_bucket", "coord_sessions", "coord_members",
        "coord_group_masters", "coord_group_outages_total", "coord_group_ftsd",
        "coord_group_budget_remaining_seconds",
    ):  # fmt: skip
        assert name in used, f"the dashboard has no panel on {name}"


def test_dashboard_expressions_parse(tmp_path: Path) -> None:
    """Every query, with Grafana's variables filled in, as a recording rule for promtool."""
    rules = [
        {"record": f"dashboard:expr_{i}:check", "expr": substitute(expr)}
        for i, (_where, expr) in enumerate(dashboard_exprs())
    ]
    path = tmp_path / "dashboard-exprs.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    p = promtool("check", "rules", path)
    where = "\n".join(f"expr_{i}: {w}" for i, (w, _e) in enumerate(dashboard_exprs()))
    assert p.returncode == 0, f"{output(p)}\n{where}"


def test_dashboard_model_is_consistent() -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] and dash["title"] and dash["schemaVersion"] >= 30
    variables = {v["name"] for v in dash["templating"]["list"]}
    assert {"datasource", "cluster", "instance", "group"} <= variables
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    for panel in dash["panels"]:
        g = panel["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24 and g["h"] > 0, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel.get("targets"), f"panel {panel['title']!r} has no query"
        for target in panel["targets"]:
            used = set(re.findall(r"\$(\w+)", target["expr"])) - {"__rate_interval", "__range"}
            assert used <= variables, f"{panel['title']}: unknown variables {used - variables}"
