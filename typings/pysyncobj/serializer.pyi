from collections.abc import Callable
from typing import Any

from pysyncobj.config import SERIALIZER_STATE as SERIALIZER_STATE

class Serializer:
    _Serializer__pid: int
    _Serializer__transmissions: dict[Any, Any]
    def __init__(
        self,
        fileName: str | None,
        transmissionBatchSize: int,
        tryUseFork: bool,
        serializer: Callable[..., Any] | None,
        deserializer: Callable[[str], Any] | None,
        serializeChecker: Callable[[], int] | None,
    ) -> None: ...
    def checkSerializing(self) -> tuple[int, int | None]: ...
    def serialize(self, data: Any, id: int) -> None: ...
    def deserialize(self) -> Any: ...
    def getTransmissionData(self, transmissionID: Any) -> Any: ...
    def setTransmissionData(self, data: Any) -> bool: ...
