"""README.md's fenced blocks, what the tests do with each, and how a Python block is run.

Every fenced block of README.md gets a plan (:func:`plans`): it is run, or excluded with
the reason stated here, or (YAML) parsed as the configuration it is. A block no rule
claims, or a rule that claims no block, fails the test: nobody can add an example that
nothing runs, and a rule cannot outlive its block.

- ``sh`` blocks are claimed one by one by :data:`SH_RULES` (section, a distinctive
  string of the block). A shell block may change the cluster or the working tree, so
  a new one is never run by default: add a rule.
- ``python`` blocks are all run, whatever they contain (the client API and these
  blocks change together): see :func:`python_script` for the context a fragment gets.
- ``yaml`` blocks are configuration: they must parse, and a ``coord serve`` config must
  load with coord's own loader (``coord serve --config``'s code path), a ``coord agent``
  config (one with ``group`` and ``member``) with the agent's (coord.agent.config).
- A block under a ``<!-- readme-cluster: NAME -->`` marker is run by
  tests/deploy/test_readme_cluster.py, in network namespaces with the README's addresses.
"""

from __future__ import annotations

import ast
import builtins
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
DEPLOY_TEST = REPO / "tests" / "deploy" / "test_readme_cluster.py"

# Where the README says the dev cluster is (`coord dev`'s default ports). When they were
# taken and coord dev picked free ones, the tests put its real endpoints in their place.
README_ENDPOINTS = "127.0.0.1:2379,127.0.0.1:2381,127.0.0.1:2383"
# The README's example hosts (10.0.0.1-5): never dialled from here. A block that names
# one is run with each HOST:PORT replaced by a loopback address the test chose.
EXAMPLE_HOST = re.compile(r"\b10\.0\.0\.\d{1,3}:\d+\b")
# Where the README's `coord agent` example serves its role endpoints: the tests move it to
# a free port.
AGENT_LISTEN = "127.0.0.1:8009"


@dataclass(frozen=True)
class Block:
    line: int  # 1-based line of the block's first content line
    lang: str
    text: str
    section: str  # the "## " heading above it ("" before the first)
    marker: str | None  # NAME of a <!-- readme-cluster: NAME --> right above it

    @property
    def where(self) -> str:
        return f"README.md:{self.line} ({self.lang}, {self.section or 'top'})"


def blocks(text: str | None = None) -> list[Block]:
    """Every fenced block of the README, in order."""
    lines = (README.read_text() if text is None else text).splitlines()
    found: list[Block] = []
    section = ""
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("## "):
            section = line[3:].strip()
        fence = re.match(r"^(\s*)(```+|~~~+)\s*([\w+-]*)", line)
        if fence is None:
            i += 1
            continue
        close = fence.group(2)
        j = i + 1
        while j < len(lines) and not lines[j].strip().startswith(close):
            j += 1
        assert j < len(lines), f"README.md:{i + 1}: a fenced block that never closes"
        above = lines[i - 1] if i > 0 else ""
        marker = re.match(r"^<!-- readme-cluster: ([\w-]+) -->$", above)
        body = "\n".join(lines[i + 1 : j]) + "\n"
        found.append(
            Block(i + 2, fence.group(3) or "", body, section, marker.group(1) if marker else None)
        )
        i = j + 1
    return found


# -- plans ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """``run``: ``dev`` (against the module's ``coord dev`` cluster), ``own-cluster`` (a
    throwaway cluster of its own), ``python``, ``go`` (a program, run against the dev
    cluster with the Go client of clients/go), ``yaml``, or ``excluded`` (``why`` says
    why). ``expect``: a regular expression (``re.S``) the block's stdout must match, for
    a block whose exit status alone would not show that it did what it says."""

    run: str
    why: str = ""
    expect: str = ""


@dataclass(frozen=True)
class ShRule:
    section: str  # the heading's start
    anchor: str  # a string only that block of the section holds
    plan: Plan


DEV = Plan("dev")
MARKED = Plan("excluded",
    "marked <!-- readme-cluster: NAME -->: tests/deploy/test_readme_cluster.py runs it on "
    "three network namespaces with the README's addresses and paths")  # fmt: skip
SH_RULES = (
    ShRule("", "scripts/demo", Plan("excluded",
        "scripts/demo is `coord dev --nodes 3 --demo` (tests/integration/test_demo.py runs "
        "it); scripts/test runs every test, this one included")),
    ShRule("Using it", "kv put config/db-primary", DEV),
    # grpcurl (scripts/bootstrap links it into .venv/bin): discovery found the leader, and
    # the leader-change stream showed the old leader, then a new one.
    ShRule("Masters", "coord.v1.Cluster/GetLeader",
           Plan("dev", expect=r'"leader_api_address": "127\.0\.0\.1:\d+"')),
    ShRule("Masters", "coord.v1.Cluster/WatchLeader",
           Plan("dev", expect=r'"leader_id": "(\w+)",.*"leader_id": "(?!\1")\w+"')),
    ShRule("Keys: bound to a session", "coordctl kv txn", DEV),
    ShRule("Maintenance", "--breaker-failovers", DEV),
    ShRule("Maintenance", "schedule cancel", DEV),
    ShRule("Maintenance", "--max-lag-on-failover", DEV),
    ShRule("Spreading masters", "coordctl rebalance", DEV),
    ShRule("The member agent", "coord agent --endpoints", DEV),
    ShRule("Changing the cluster online", "coordctl node add", Plan("own-cluster",
        "it adds a node that never starts and removes n2: run on a throwaway cluster, "
        "with the new node's address on loopback")),
    ShRule("Backup and restore", "snapshot save", DEV),
    ShRule("Backup and restore", "coord restore", Plan("excluded",
        "a template for the hosts of a NEW cluster (`--peer ...`, /var/lib/coord, then "
        "`coord serve`); tests/integration/test_backup.py restores snapshot + diffs with "
        "`coord restore` into new data dirs and starts that cluster "
        "(test_snapshot_and_diffs_give_the_replicas_state_at_r2)")),
    ShRule("Monitoring and availability", "coordctl report", DEV),
    ShRule("Monitoring and availability", "coordctl consistency", DEV),
    ShRule("Development", "make check", Plan("excluded",
        "the project's own tooling: scripts/test runs `make check` and these test suites "
        "(this test among them); `make proto` rewrites coord/v1; `make bench` needs etcd")),
)  # fmt: skip


def plans(found: list[Block]) -> list[tuple[Block, Plan]]:
    """Each block's plan; fails on a block no rule claims and on a rule that claims none."""
    out: list[tuple[Block, Plan]] = []
    used: set[ShRule] = set()
    unclaimed: list[str] = []
    for b in found:
        if b.marker is not None:
            out.append((b, Plan("yaml") if b.lang == "yaml" else MARKED))
        elif b.lang == "python":
            out.append((b, Plan("python")))
        elif b.lang == "yaml":
            out.append((b, Plan("yaml")))
        elif b.lang == "go":  # a whole program: test_readme_examples.run_go
            out.append((b, Plan("go")))
        elif b.lang == "sh":
            rules = [r for r in SH_RULES if b.section.startswith(r.section) and r.anchor in b.text]
            if len(rules) != 1:
                unclaimed.append(f"{b.where}: claimed by {len(rules)} rules\n{b.text}")
                continue
            used.add(rules[0])
            out.append((b, rules[0].plan))
        else:
            unclaimed.append(f"{b.where}: no plan for ```{b.lang} blocks\n{b.text}")
    assert not unclaimed, (
        "README blocks that are neither run nor excluded (add a rule to SH_RULES in "
        "tests/integration/readme_blocks.py, with the reason if it is not run):\n"
        + "\n".join(unclaimed)
    )
    stale = [f"{r.section!r} / {r.anchor!r}" for r in SH_RULES if r not in used]
    assert not stale, f"SH_RULES that claim no README block: {stale}"
    return out


def cluster_markers_are_the_deploy_tests(found: list[Block]) -> None:
    """The marked blocks are exactly those tests/deploy/test_readme_cluster.py runs."""
    names = sorted(b.marker for b in found if b.marker is not None)
    source = DEPLOY_TEST.read_text()
    m = re.search(r"assert sorted\(blocks\) == (\[[^\]]*\])", source)
    assert m is not None, f"{DEPLOY_TEST} no longer lists the marked blocks it runs"
    assert names == sorted(ast.literal_eval(m.group(1))), (names, m.group(1))


def loopback_addresses(text: str, free_port: Callable[[], int]) -> str:
    """``text`` with every example HOST:PORT (10.0.0.x) on a loopback port instead, the
    same one for the same address (``free_port()`` picks them)."""
    chosen: dict[str, str] = {}

    def swap(m: re.Match[str]) -> str:
        if m.group(0) not in chosen:
            chosen[m.group(0)] = f"127.0.0.1:{free_port()}"
        return chosen[m.group(0)]

    return EXAMPLE_HOST.sub(swap, text)


# -- Python blocks --------------------------------------------------------------------

# Names a fragment uses without defining them: the README leaves them to the reader's
# program. The runner supplies them: ``c`` an open Client of the cluster, ``session`` an
# open session (TTL 5 s) on it; ``storage``, ``data`` and ``call`` stand for the reader's
# own code (a stub whose every method prints ``README-STUB ...`` and takes 50 ms, as I/O
# would, so a loop around it does not spin).
READER_NAMES = ("c", "session", "storage", "data", "call")
STUB = "README-STUB "
INTERRUPTED = "README-HARNESS interrupted"


def free_names(source: str) -> set[str]:
    """Names the block reads but never binds (nor are builtins)."""
    tree = ast.parse(source)
    loaded: set[str] = set()
    bound: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (loaded if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, ast.alias):
            bound.add((node.asname or node.name).split(".")[0])
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bound.add(node.name)
    return loaded - bound - set(dir(builtins))


def loops_forever(source: str) -> bool:
    """The block holds a ``while`` loop (a master's work loop: it runs until stopped)."""
    return any(isinstance(n, ast.While) for n in ast.walk(ast.parse(source)))


RUNNER = r"""
import contextlib, json, signal, sys, time

# Ctrl-C must raise KeyboardInterrupt here, as in a terminal, even when the test run was
# started in the background by a shell (which leaves SIGINT ignored, and Python keeps an
# ignored SIGINT ignored): the harness's Ctrl-C then did nothing at all.
signal.signal(signal.SIGINT, signal.default_int_handler)
cfg = json.loads(sys.argv[1])
need = set(cfg["context"])


class Stub:
    def __init__(self, name):
        self._name = name

    def __getattr__(self, attr):
        def method(*args, **kwargs):
            print(f"README-STUB {self._name}.{attr}{args}{kwargs}", flush=True)
            time.sleep(0.05)

        return method


def call(*args, **kwargs):
    print(f"README-STUB call{args}{kwargs}", flush=True)


ns = {"__name__": "__main__", "storage": Stub("storage"), "data": b"data", "call": call}
ns = {k: v for k, v in ns.items() if k in need or k == "__name__"}
stack = contextlib.ExitStack()
try:
    with stack:
        if need & {"c", "session"}:
            from coord.client import Client, Session

            c = stack.enter_context(Client(cfg["endpoints"]))
            ns["c"] = c
            if "session" in need:
                session = c.session(5) if hasattr(c, "session") else Session(c, ttl_s=5)
                ns["session"] = stack.enter_context(session)
        source = open(cfg["block"], encoding="utf-8").read()
        # Blank lines first, so a traceback names the README's own line numbers.
        code = compile("\n" * (cfg["line"] - 1) + source, "README.md", "exec")
        print("README-HARNESS running", flush=True)
        exec(code, ns)
except KeyboardInterrupt:
    # The harness's Ctrl-C, which ends a block that loops by design: every `with`
    # of the block (and of the context above) has been left on the way here.
    print("README-HARNESS interrupted", flush=True)
    sys.exit(130)
"""


def python_config(block: Block, script: Path, endpoints: str) -> tuple[str, list[str]]:
    """The runner's argument for ``block`` (written to ``script``) and the reader names it
    needs; fails on a name neither the block nor the runner defines."""
    free = free_names(script.read_text())
    unknown = sorted(free - set(READER_NAMES))
    assert not unknown, (
        f"{block.where} uses {unknown} without defining them: define them in the block, "
        f"or give them to the runner (READER_NAMES in {__file__})"
    )
    context = sorted(free)
    return json.dumps(
        {"block": str(script), "line": block.line, "endpoints": endpoints, "context": context}
    ), context
