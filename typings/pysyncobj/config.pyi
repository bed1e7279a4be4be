from typing import Any

class FAIL_REASON:
    SUCCESS: int
    QUEUE_FULL: int
    MISSING_LEADER: int
    DISCARDED: int
    NOT_LEADER: int
    LEADER_CHANGED: int
    REQUEST_DENIED: int
    UNKNOWN_OUTCOME: int

class SyncObjConf:
    def __init__(self, **kwargs: Any) -> None: ...
    def validate(self) -> None: ...

class SERIALIZER_STATE:
    NOT_SERIALIZING: int
    SERIALIZING: int
    SUCCESS: int
    FAILED: int
