"""Request ids: how a write names itself so that a retry applies once.

One check, used by the server (to refuse early, with a clear status) and by the
state machine (so that every replica refuses the same command the same way).
"""

from __future__ import annotations

from coord.errors import InvalidArgument
from coord.state import limits


def check_request_id(request_id: str) -> None:
    """Raise InvalidArgument for an id too long to be remembered for deduplication
    (a write with such an id would be applied again on every retry)."""
    if len(request_id) > limits.MAX_REQUEST_ID_CHARS:
        raise InvalidArgument(
            f"request_id is {len(request_id)} characters, the limit is "
            f"{limits.MAX_REQUEST_ID_CHARS}: use a shorter one (a uuid4 hex has 32)"
        )
