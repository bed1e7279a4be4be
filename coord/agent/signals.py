"""Stop signals for a member program (``coord agent``, ``python -m coord.member_process``)."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable


def on_signals(on_stop: Callable[[str], None]) -> None:
    """SIGTERM, SIGINT and SIGHUP call ``on_stop(name)``. The signal is noted through a
    wakeup fd (written by the C-level handler at once, whatever the main thread is blocked
    in) and handled on a thread: a handler that took a lock could deadlock the main
    thread. Call from the main thread."""
    r, w = os.pipe()
    os.set_blocking(w, False)
    signal.set_wakeup_fd(w)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: None)

    def wait() -> None:
        while True:
            data = os.read(r, 1)
            if data:
                on_stop(signal.Signals(data[0]).name)

    threading.Thread(target=wait, daemon=True, name="signals").start()
