"""coord.testing.free_ports: ports no outgoing connection can take before a node binds them."""

from __future__ import annotations

import socket
from pathlib import Path

from coord.testing import free_ports


def _ephemeral_range() -> range:
    low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    return range(int(low), int(high) + 1)


def test_ports_are_outside_the_ephemeral_range_and_distinct() -> None:
    ephemeral = _ephemeral_range()
    ports = free_ports(50)
    assert len(set(ports)) == 50
    assert not [p for p in ports if p in ephemeral], "an outgoing connection could take these"


def test_a_port_in_use_is_never_handed_out() -> None:
    held = socket.socket()
    held.bind(("127.0.0.1", free_ports(1)[0]))
    try:
        taken = held.getsockname()[1]
        for _ in range(20):
            assert taken not in free_ports(200)
    finally:
        held.close()


def test_a_port_handed_out_is_not_handed_out_again_before_anything_binds_it() -> None:
    # A cluster picks its nodes' ports, then its proxies' ports, and only then do the
    # nodes start: a port picked earlier is still free, and was picked again (a chaos
    # test's proxy listened on a node's raft port: "address ... is used twice").
    picked = [p for _ in range(10) for p in free_ports(200)]
    assert len(set(picked)) == len(picked)
