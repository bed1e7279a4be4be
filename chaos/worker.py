"""The base of every chaos workload thread: started, stopped, its errors and count of
operations kept for the runner."""

from __future__ import annotations

import threading


class Worker:
    # A worker whose load takes a while to put in place sets ``ready`` itself.
    announces_ready = False

    def __init__(self, name: str) -> None:
        self.name = name
        self.stop = threading.Event()
        self.errors: list[str] = []
        self.ops = 0
        # Set once the worker's load is in place (the runner starts faults after it).
        self.ready = threading.Event()
        self._thread = threading.Thread(target=self._guarded, daemon=True, name=name)

    def start(self) -> None:
        self._thread.start()
        if not self.announces_ready:
            self.ready.set()

    def settled(self) -> bool:
        """Ready, or gone (a worker that failed to start is reported, not waited for)."""
        return self.ready.is_set() or not self._thread.is_alive()

    def join(self, timeout: float = 30.0) -> None:
        self.stop.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            self.errors.append(f"{self.name} did not stop within {timeout} s")

    def _guarded(self) -> None:
        try:
            self.run()
        except Exception as e:  # recorded; the runner reports it
            self.errors.append(f"{self.name}: {type(e).__name__}: {e}")

    def run(self) -> None:
        raise NotImplementedError
