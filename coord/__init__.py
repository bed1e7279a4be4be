"""coord: a Raft-based high-availability coordinator.

Nodes form a Raft group (pysyncobj) replicating a small deterministic state
machine; a gRPC API exposes it. See README.md and docs/design.md.
"""

from __future__ import annotations

__version__ = "0.1.0"
