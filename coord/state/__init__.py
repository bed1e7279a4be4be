"""The pure replicated state machine.

No clock, no randomness, no I/O, no threads: ``apply(command) -> result`` is a
deterministic function of the previous state and the command bytes, and it never
raises. Errors are values in the result.

``StateMachine`` is imported on first use: a tool that reads a backup file
(``coord.state.backupfile``) does not load the whole machine (~40 ms at start).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from coord.state.machine import StateMachine

__all__ = ["StateMachine"]


def __getattr__(name: str) -> Any:
    if name == "StateMachine":
        from coord.state.machine import StateMachine

        return StateMachine
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
