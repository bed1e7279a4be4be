"""A LocalCluster whose every link goes through its own Toxiproxy proxy.

- Raft: pysyncobj lets only the node whose id sorts higher dial a pair, so pair
  (a, b) with a > b is one TCP connection that ``a`` opens; it is routed
  (``--raft-route b=<proxy>``) through proxy ``raft-a-b``, which carries both
  directions: "upstream" is a -> b, "downstream" b -> a.
- Clients: node ``n`` binds its API on its real port but advertises proxy
  ``api-n`` in its peer entry, so clients (and the leader hints they follow) always
  go through the proxy. The harness's own status probes use the real port.

Partitions cut proxies with a ``timeout`` toxic (data stops, connections stay open,
like a dropped network) rather than by disabling them (which resets connections at
once, like a crash); both are available.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence

from chaos.toxiproxy import Toxiproxy
from coord.testing import LocalCluster, free_ports

_CLUSTERS = itertools.count(1)


class ProxiedCluster(LocalCluster):
    def __init__(self, toxi: Toxiproxy, n: int = 3, **kwargs: object) -> None:
        super().__init__(n, **kwargs)  # type: ignore[arg-type]
        self.toxi = toxi
        self.advertised: dict[str, str] = {}  # node id -> proxied API address
        self._prefix = f"c{next(_CLUSTERS)}"
        self._proxies: list[str] = []
        self.client_links: dict[str, dict[str, str]] = {}
        for node in self.nodes:
            name = self.api_proxy(node.node_id)
            toxi.create(name, upstream=node.api, listen_port=free_ports(1)[0])
            self._proxies.append(name)
            self.advertised[node.node_id] = toxi.listen(name)
            node.extra_args += ["--listen-api", node.api]
        for a, b in itertools.combinations(self.nodes, 2):
            hi, lo = (a, b) if a.node_id > b.node_id else (b, a)
            name = self.raft_proxy(hi.node_id, lo.node_id)
            toxi.create(name, upstream=lo.raft)
            self._proxies.append(name)
            hi.extra_args += ["--raft-route", f"{lo.node_id}={toxi.listen(name)}"]

    def close(self) -> None:
        super().close()
        for name in self._proxies:
            self.toxi.destroy(name)

    # -- names -----------------------------------------------------------------

    def api_proxy(self, node_id: str) -> str:
        return f"{self._prefix}-api-{node_id}"

    def raft_proxy(self, a: str, b: str) -> str:
        hi, lo = max(a, b), min(a, b)
        return f"{self._prefix}-raft-{hi}-{lo}"

    def own_links(self, client: str) -> dict[str, str]:
        """Proxies of one client's own (advertised API address -> its proxy), so that
        this client alone can be cut off; created on first use."""
        if client not in self.client_links:
            links = {}
            for node in self.nodes:
                name = f"{self._prefix}-cli-{client}-{node.node_id}"
                self.toxi.create(name, upstream=node.api)
                self._proxies.append(name)
                links[self.advertised[node.node_id]] = self.toxi.listen(name)
            self.client_links[client] = links
        return self.client_links[client]

    def cut_client(self, client: str) -> list[tuple[str, str]]:
        """Cut one client (its own proxies) from every node."""
        undo = []
        for node in self.nodes:
            name = f"{self._prefix}-cli-{client}-{node.node_id}"
            for s in ("upstream", "downstream"):
                undo.append((name, self.toxi.add_toxic(name, "timeout", s, {"timeout": 0},
                                                       tag="cut")))  # fmt: skip
        return undo

    @property
    def client_endpoints(self) -> list[str]:
        """What clients use: the proxied API addresses."""
        return [self.advertised[n.node_id] for n in self.nodes]

    def command(self, i: int, state: str = "new") -> list[str]:
        cmd = super().command(i, state)
        # Advertise the proxied API address in every peer entry.
        for node in self.nodes:
            real = f"{node.node_id}={node.raft},{node.api}"
            cmd[cmd.index(real)] = f"{node.node_id}={node.raft},{self.advertised[node.node_id]}"
        return cmd

    # -- cutting links -----------------------------------------------------------

    def cut(self, a: str, b: str, direction: str = "both") -> list[tuple[str, str]]:
        """Stop traffic between nodes a and b ("both", or only "a->b").

        A ``timeout`` toxic with timeout 0 holds data forever: the connection stays
        open and silent, as when a network drops packets. Returns what to undo.
        """
        name = self.raft_proxy(a, b)
        hi = max(a, b)
        streams = ["upstream", "downstream"]
        if direction != "both":  # a->b only: upstream if a dials, downstream otherwise
            streams = ["upstream" if a == hi else "downstream"]
        return [
            (name, self.toxi.add_toxic(name, "timeout", s, {"timeout": 0}, tag="cut"))
            for s in streams
        ]

    def partition(self, *sides: Iterable[str]) -> list[tuple[str, str]]:
        """Cut every link between nodes on different sides (clients keep every node)."""
        groups = [set(s) for s in sides]
        undo = []
        for x, y in itertools.combinations(range(len(groups)), 2):
            for a in groups[x]:
                for b in groups[y]:
                    undo += self.cut(a, b)
        return undo

    def cut_clients(self, node_ids: Sequence[str]) -> list[tuple[str, str]]:
        undo = []
        for nid in node_ids:
            name = self.api_proxy(nid)
            for s in ("upstream", "downstream"):
                undo.append((name, self.toxi.add_toxic(name, "timeout", s, {"timeout": 0},
                                                       tag="cut")))  # fmt: skip
        return undo

    def undo(self, toxics: list[tuple[str, str]]) -> None:
        """Remove the toxics. A link that dropped data mid-stream is also reset (its
        connections closed): Toxiproxy discards what a ``timeout`` toxic held, so the
        byte stream after the heal would have a hole in it, where real TCP would have
        retransmitted or broken the connection."""
        for proxy, toxic in toxics:
            self.toxi.remove_toxic(proxy, toxic)
        for proxy in sorted({p for p, t in toxics if t.startswith("cut_")}):
            self.toxi.disable(proxy)
            self.toxi.enable(proxy)

    def toxic_all_raft(
        self, kind: str, attributes: dict[str, object], tag: str
    ) -> list[tuple[str, str]]:
        """The same toxic on every Raft link, both directions (latency, jitter, ...)."""
        undo = []
        for a, b in itertools.combinations(self.nodes, 2):
            name = self.raft_proxy(a.node_id, b.node_id)
            for s in ("upstream", "downstream"):
                undo.append((name, self.toxi.add_toxic(name, kind, s, dict(attributes), tag=tag)))
        return undo
