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
