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

Membership changes (chaos.membership drives them):

- A node added at runtime (:meth:`ProxiedCluster.new_node`) is named ``x01``,
  ``x02``, ... : its id sorts above every earlier id, so on every pair with an
  existing member it is the one that dials. Its ``--raft-route`` flags (one per
  member it was told to start with) send each of those connections through a new
  per-pair proxy ``raft-xNN-<member>``; nodes added later dial it in turn. So every
  Raft link of an added node is proxied, both directions, and running members need
  no new flags. The raft address in its membership entry (the real port) is never
  dialled. An id sorting *below* a running member's could not be proxied per
  pair: that member would dial it at the entry's one address, and a bootstrap
  member cannot even be given a route for it on restart (``--raft-route`` must name
  one of its ``--peer`` flags, which stay the bootstrap members): refused here.
- Its API gets proxy ``api-xNN``, advertised in the membership entry (leader hints
  lead through it), and every client with its own proxies gets one for it too.
  ``spares`` creates the API proxies of the first added nodes up front (pointing
  nowhere until the node exists), so that clients started with
  :attr:`client_endpoints` know the addresses of nodes that join later, as clients
  configured with every address a cluster may use would.
- A removed node is *retired*: out of :attr:`members` (what nemeses, statuses and
  the runner's heal and checks use), never restarted; its proxies stay until close.
- Restarts use the flags each node was first started with: bootstrap members their
  bootstrap ``--peer`` list (the data dir knows the changes since), added nodes the
  members ``node add`` returned.

Clocks (``clocks=True``): every node, added ones too, runs under the wall-clock shim
with its own offset file (chaos.clocks); :meth:`ProxiedCluster.wall_clock` moves one
node's wall clock while it runs. Monotonic clocks are never moved.

Disks (``disks=True``): every node, added ones too, runs under the disk shim with its
own control file (chaos.disks); :meth:`ProxiedCluster.disk_delay` slows one node's
fsync/fdatasync while it runs. Both shims can be on at once (one LD_PRELOAD list).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Sequence

from chaos.clocks import WallClock
from chaos.disks import DiskDelay
from chaos.toxiproxy import Toxiproxy
from coord.client import Client
from coord.config import format_peer
from coord.testing import LocalCluster, NodeProc, free_ports, wait_until
from coord.v1 import cluster_pb2

_CLUSTERS = itertools.count(1)
# The upstream of a spare API proxy before its node exists: nothing listens on port 1,
# so a client that tries it is refused at once, as by a node that is down.
NOWHERE = "127.0.0.1:1"


class ProxiedCluster(LocalCluster):
    def __init__(
        self,
        toxi: Toxiproxy,
        n: int = 3,
        spares: int = 0,
        clocks: bool = False,
        disks: bool = False,
        **kwargs: object,
    ) -> None:
        super().__init__(n, **kwargs)  # type: ignore[arg-type]
        self.toxi = toxi
        self.clocks: dict[str, WallClock] | None = {} if clocks else None
        self.disks: dict[str, DiskDelay] | None = {} if disks else None
        for node in self.nodes:
            self._give_clock(node)
            self._give_disk(node)
        self.advertised: dict[str, str] = {}  # node id -> proxied API address
        self._prefix = f"c{next(_CLUSTERS)}"
        self._proxies: list[str] = []
        self.client_links: dict[str, dict[str, str]] = {}
        self.retired: set[str] = set()  # removed members (and abandoned joins)
        self._added = 0
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
        for k in range(1, spares + 1):
            nid = _added_id(k)
            name = self.api_proxy(nid)
            toxi.create(name, upstream=NOWHERE)
            self._proxies.append(name)
            self.advertised[nid] = toxi.listen(name)

    def close(self) -> None:
        super().close()
        for name in self._proxies:
            self.toxi.destroy(name)
        for clock in (self.clocks or {}).values():
            clock.close()
        for disk in (self.disks or {}).values():
            disk.close()

    # -- clocks ------------------------------------------------------------------

    def _give_clock(self, node: NodeProc) -> None:
        """A wall clock of its own (an offset file; the shim preloaded), if clocks are on."""
        if self.clocks is None:
            return
        clock = WallClock(os.path.join(self.base_dir, f"{node.node_id}.clock"))
        self.clocks[node.node_id] = clock
        node.env.update(clock.env({**self.env, **node.env}))

    def wall_clock(self, node_id: str) -> WallClock:
        """Node ``node_id``'s wall clock (the cluster must have been made with clocks)."""
        if self.clocks is None:
            raise RuntimeError("this cluster runs on real clocks: make it with clocks=True")
        return self.clocks[node_id]

    # -- disks -------------------------------------------------------------------

    def _give_disk(self, node: NodeProc) -> None:
        """A flush delay of its own (a control file; the disk shim preloaded beside
        whatever the node already preloads, e.g. the clock shim), if disks are on."""
        if self.disks is None:
            return
        disk = DiskDelay(os.path.join(self.base_dir, f"{node.node_id}.disk"))
        self.disks[node.node_id] = disk
        node.env.update(disk.env({**self.env, **node.env}))

    def disk_delay(self, node_id: str) -> DiskDelay:
        """Node ``node_id``'s flush delay (the cluster must have been made with disks)."""
        if self.disks is None:
            raise RuntimeError("this cluster runs on real disks: make it with disks=True")
        return self.disks[node_id]

    # -- names -----------------------------------------------------------------

    def api_proxy(self, node_id: str) -> str:
        return f"{self._prefix}-api-{node_id}"

    def raft_proxy(self, a: str, b: str) -> str:
        hi, lo = max(a, b), min(a, b)
        return f"{self._prefix}-raft-{hi}-{lo}"

    def client_proxy(self, client: str, node_id: str) -> str:
        return f"{self._prefix}-cli-{client}-{node_id}"

    def own_links(self, client: str) -> dict[str, str]:
        """Proxies of one client's own (advertised API address -> its proxy), so that
        this client alone can be cut off; created on first use. Nodes added later get
        one too (:meth:`new_node` adds it to this same dict)."""
        if client not in self.client_links:
            links = {}
            for nid, advertised in self.advertised.items():
                name = self.client_proxy(client, nid)
                node = self.node(nid)
                self.toxi.create(name, upstream=node.api if node is not None else NOWHERE)
                self._proxies.append(name)
                links[advertised] = self.toxi.listen(name)
            self.client_links[client] = links
        return self.client_links[client]

    def cut_client(self, client: str) -> list[tuple[str, str]]:
        """Cut one client (its own proxies) from every member."""
        undo = []
        for node in self.members:
            name = self.client_proxy(client, node.node_id)
            for s in ("upstream", "downstream"):
                undo.append((name, self.toxi.add_toxic(name, "timeout", s, {"timeout": 0},
                                                       tag="cut")))  # fmt: skip
        return undo

    def drop_answers_to(self, client: str) -> list[tuple[str, str]]:
        """One client's answers lost (its own proxies' downstream, from every member),
        its requests still delivered: its keepalives arrive and are acted on, their
        acknowledgements never reach it."""
        return [
            (name, self.toxi.add_toxic(name, "timeout", "downstream", {"timeout": 0}, tag="cut"))
            for name in (self.client_proxy(client, n.node_id) for n in self.members)
        ]

    def drop_answers(self) -> list[tuple[str, str]]:
        """Every answer on the shared API proxies lost (requests still delivered, and
        applied): the clients retry writes whose outcome they never heard."""
        return [
            (name, self.toxi.add_toxic(name, "timeout", "downstream", {"timeout": 0}, tag="cut"))
            for name in (self.api_proxy(n.node_id) for n in self.members)
        ]

    @property
    def client_endpoints(self) -> list[str]:
        """What clients use: the proxied API addresses (of spare nodes too)."""
        return list(self.advertised.values())

    # -- members -----------------------------------------------------------------

    @property
    def members(self) -> list[NodeProc]:
        """The nodes in the configuration as far as the harness knows: bootstrap or
        joined (``node add`` answered), not retired. Nemeses act on these only."""
        return [
            n
            for n in self.nodes
            if n.node_id not in self.retired
            and (n.index < self.bootstrap_size or n.joined_cluster_id)
        ]

    @property
    def member_ids(self) -> list[str]:
        return [n.node_id for n in self.members]

    def node(self, node_id: str) -> NodeProc | None:
        return next((n for n in self.nodes if n.node_id == node_id), None)

    def index(self, node_id: str) -> int:
        node = self.node(node_id)
        if node is None:
            raise KeyError(f"no node {node_id!r} in this cluster")
        return node.index

    def statuses(self) -> list[cluster_pb2.StatusResponse | None]:
        """Members' statuses (retired nodes are not asked)."""
        return [self.status(n.index) for n in self.members]

    def agreed_leader(self, timeout: float = 20.0) -> str:
        """The leader a majority of members agree on (waits for one)."""

        def agreed() -> str | None:
            views = [s.leader_id for s in self.statuses() if s is not None and s.leader_id]
            for nid in set(views):
                if views.count(nid) > len(self.members) // 2:
                    return nid
            return None

        found: str = wait_until(agreed, timeout, "a leader a majority agrees on")
        return found

    def retire(self, node_id: str) -> None:
        """``node_id`` left the configuration: never restarted nor counted again."""
        self.retired.add(node_id)

    def new_node(self) -> NodeProc:
        """Allocate the next node to add: id ``xNN`` (above every earlier id: it dials
        every member), free ports, an empty data dir, its API proxy (the spare one if
        clients already know it) and a proxy for it per client with its own links.
        Not a member nor started yet: :meth:`start_joined` does that once ``node add``
        answered."""
        self._added += 1
        nid = _added_id(self._added)
        api, raft = free_ports(2)
        node = NodeProc(
            index=len(self.nodes),
            node_id=nid,
            api=f"127.0.0.1:{api}",
            raft=f"127.0.0.1:{raft}",
            data_dir=os.path.join(self.base_dir, nid),
            log_path=os.path.join(self.base_dir, f"{nid}.log"),
        )
        if os.path.exists(node.data_dir):
            raise RuntimeError(f"the data dir of the new node {nid} already exists")
        self._give_clock(node)
        self._give_disk(node)
        self.nodes.append(node)
        node.extra_args += ["--listen-api", node.api]
        name = self.api_proxy(nid)
        if nid in self.advertised:
            self.toxi.set_upstream(name, node.api)
        else:
            self.toxi.create(name, upstream=node.api)
            self._proxies.append(name)
            self.advertised[nid] = self.toxi.listen(name)
        for client, links in self.client_links.items():
            cname = self.client_proxy(client, nid)
            if cname in self.toxi.proxies:
                self.toxi.set_upstream(cname, node.api)
            else:
                self.toxi.create(cname, upstream=node.api)
                self._proxies.append(cname)
                links[self.advertised[nid]] = self.toxi.listen(cname)
        return node

    def start_joined(self, node: NodeProc, resp: cluster_pb2.AddNodeResponse) -> None:
        """Start an added node with the flags ``node add`` printed (cluster id, every
        member), plus a proxied ``--raft-route`` to each member it must dial."""
        if not node.joined_cluster_id:
            ids = {n.id for n in resp.nodes}
            if node.node_id not in ids:
                raise RuntimeError(f"{node.node_id} is not among the members {sorted(ids)}")
            for peer in resp.nodes:
                if peer.id == node.node_id:
                    continue
                if peer.id > node.node_id:  # it would dial us at our real address
                    raise RuntimeError(
                        f"member {peer.id} sorts above the new node {node.node_id}: their "
                        "link could not go through a per-pair proxy"
                    )
                name = self.raft_proxy(node.node_id, peer.id)
                self.toxi.create(name, upstream=peer.raft_address)
                self._proxies.append(name)
                node.extra_args += ["--raft-route", f"{peer.id}={self.toxi.listen(name)}"]
            node.join_peers = [
                format_peer(n.id, n.raft_address, n.api_address, n.learner) for n in resp.nodes
            ]
            node.joined_cluster_id = resp.cluster_id
        self.start(node.index)

    def add_node(self, client: Client) -> NodeProc:
        """``node add`` (through ``client``) and start: a new member, proxied."""
        node = self.new_node()
        resp = client.add_node(node.node_id, node.raft, self.advertised[node.node_id])
        self.start_joined(node, resp)
        return node

    def command(self, i: int, state: str = "new") -> list[str]:
        cmd = super().command(i, state)
        if i < self.bootstrap_size:
            # Bootstrap members advertise the proxied API address in every peer entry
            # (added nodes get theirs from ``node add``, which already carries it).
            for node in self.nodes[: self.bootstrap_size]:
                real = f"{node.node_id}={node.raft},{node.api}"
                advertised = self.advertised[node.node_id]
                cmd[cmd.index(real)] = f"{node.node_id}={node.raft},{advertised}"
        return cmd

    # -- cutting links -----------------------------------------------------------

    def cut(self, a: str, b: str, direction: str = "both") -> list[tuple[str, str]]:
        """Stop traffic between nodes a and b ("both", or only "a->b").

        A ``timeout`` toxic with timeout 0 holds data forever: the connection stays
        open and silent, as when a network drops packets. Returns what to undo.
        """
        name = self.raft_proxy(a, b)
        streams = ["upstream", "downstream"] if direction == "both" else [_stream(a, b)]
        return [
            (name, self.toxi.add_toxic(name, "timeout", s, {"timeout": 0}, tag="cut"))
            for s in streams
        ]

    def slow(self, a: str, b: str, latency_ms: int) -> list[tuple[str, str]]:
        """Delay what node a sends node b by ``latency_ms`` (one direction, in order)."""
        name = self.raft_proxy(a, b)
        toxic = self.toxi.add_toxic(name, "latency", _stream(a, b), {"latency": latency_ms},
                                    tag="slow")  # fmt: skip
        return [(name, toxic)]

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
        for a, b in itertools.combinations(self.members, 2):
            name = self.raft_proxy(a.node_id, b.node_id)
            for s in ("upstream", "downstream"):
                undo.append((name, self.toxi.add_toxic(name, kind, s, dict(attributes), tag=tag)))
        return undo


def _stream(a: str, b: str) -> str:
    """The stream of the a-b Raft proxy that carries what a sends b: the higher id
    dials (pysyncobj), so its sends go upstream."""
    return "upstream" if a == max(a, b) else "downstream"


def _added_id(k: int) -> str:
    """The id of the k-th node added at runtime: sorts above n1..n5 and every earlier
    added id (two digits: at most 99 additions per cluster)."""
    if not 1 <= k <= 99:
        raise RuntimeError(f"node addition {k}: ids xNN allow 99 per cluster")
    return f"x{k:02d}"
