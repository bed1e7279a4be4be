"""Input limits enforced by the state machine.

They are constants, not configuration: every replica must take the same
decision for the same command, so a limit can only change with a code version.
The server checks them too, earlier, to answer with a clear error before
anything reaches the log.
"""

from __future__ import annotations

MAX_KEY_BYTES = 4096
MAX_VALUE_BYTES = 1024 * 1024
MAX_REQUEST_ID_CHARS = 128
# Retried writes are recognised while their request id is among the last N applied.
DEDUPE_ENTRIES = 20_000
# A Range answers at most this many keys; ``more`` says when there were more.
MAX_RANGE_KEYS = 10_000
# ... and at most this many bytes of keys and values (a response must fit the
# 4 MiB gRPC message limit); ``more`` says there is more to read.
MAX_RANGE_BYTES = 3 * 1024 * 1024
# A transaction (KV.Txn): compares and operations of both branches together, and the
# bytes of every key and value it names (a Raft entry and its answer stay well under
# the 4 MiB message limit; etcd's defaults: 128 operations, 1.5 MiB requests).
MAX_TXN_OPS = 256
MAX_TXN_BYTES = 1536 * 1024
# Events kept for watch resume and differential backups (same on every replica).
EVENT_LOG_ENTRIES = 10_000
EVENT_LOG_BYTES = 64 * 1024 * 1024
# Session TTL bounds. Nothing checks a TTL against the election timeout: a client keeps
# its session through a leader change only if its TTL covers the election (docs/design.md).
MIN_SESSION_TTL_MS = 500
MAX_SESSION_TTL_MS = 3_600_000
MAX_SLOTS = 64
MAX_MEMBERS_PER_GROUP = 10_000
MAX_NAME_CHARS = 128
MAX_TAGS = 32
MAX_TAG_CHARS = 256
DEFAULT_SWITCHOVER_TIMEOUT_MS = 10_000


def ms_and_s(ms: int) -> str:
    """A duration as the API field has it and as the libraries and CLI take it:
    ``1500 ms (1.5 s)``. Errors say both, so a caller who gave seconds reads seconds."""
    return f"{ms} ms ({ms / 1000:g} s)"
