"""Raft frames are written as stored deflate: a zlib stream that every pysyncobj
(older coord nodes included, during a rolling upgrade) reads with ``zlib.decompress``,
and that costs no compression work."""

from __future__ import annotations

import os
import zlib

import pysyncobj.pickle as pso_pickle
import pysyncobj.tcp_connection as tcp
import pytest

from coord.raft import syncobj_adapter


@pytest.fixture(autouse=True)
def codec() -> None:
    syncobj_adapter.install_frame_codec()
    syncobj_adapter.install_frame_codec()  # idempotent


@pytest.mark.parametrize("size", [0, 1, 90, 520, 65_535, 65_536, 200_000])
def test_frames_are_zlib_streams_any_pysyncobj_reads(size: int) -> None:
    message = {"type": "append_entries", "entries": [(os.urandom(size), 7, 2)], "term": 2}
    data = pso_pickle.dumps(message)
    frame = tcp.zlib.compress(data, 3)  # as pysyncobj's TcpConnection.send calls it
    assert zlib.decompress(frame) == data  # an unpatched reader (another version)
    assert pso_pickle.loads(tcp.zlib.decompress(frame)) == message
    # Stored blocks: the bytes as they are, plus zlib's framing (no compression work).
    assert len(data) < len(frame) <= len(data) * 1.02 + 16


def test_frames_from_older_nodes_are_still_read() -> None:
    data = pso_pickle.dumps({"type": "next_node_idx", "next_node_idx": 12, "success": True})
    assert tcp.zlib.decompress(zlib.compress(data, 3)) == data
