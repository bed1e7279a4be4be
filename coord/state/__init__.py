"""The pure replicated state machine.

No clock, no randomness, no I/O, no threads: ``apply(command) -> result`` is a
deterministic function of the previous state and the command bytes, and it never
raises. Errors are values in the result.
"""

from __future__ import annotations

from coord.state.machine import StateMachine

__all__ = ["StateMachine"]
