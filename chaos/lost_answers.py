"""Lost answers: bursts in which every answer on the shared API proxies is dropped while
requests still reach the nodes, which apply them. A client whose answer was lost sees a
timeout (or the reset that ends the burst) and retries: a write must then be applied
once, and its retry must return the first result (docs/design.md, the safety argument, point 9).

A burst is a ``timeout`` toxic (timeout 0: held, never delivered) on the downstream of
every API proxy; its end removes the toxics and resets the proxies (what they held is
discarded, as a lost packet would be: the connections break and the clients reconnect).
Bursts last 0.2-0.4 s, then answers flow for 0.2-0.4 s, until stopped (short and many:
each burst loses the answer each writer is waiting for).
"""

from __future__ import annotations

import random
import threading

from chaos.cluster import ProxiedCluster


class AnswerDropper:
    def __init__(self, c: ProxiedCluster, rng: random.Random) -> None:
        self.c = c
        self.rng = random.Random(rng.random())  # its own stream: the nemesis's stays seeded
        self.bursts = 0
        self.error: Exception | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="lost-answers")
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                undo = self.c.drop_answers()
                self.bursts += 1
                self._stop.wait(self.rng.uniform(0.2, 0.4))  # the burst lasts this long
                self.c.undo(undo)
                self._stop.wait(self.rng.uniform(0.2, 0.4))  # answers flow meanwhile
        except Exception as e:  # a Toxiproxy failure: reported by stop()
            self.error = e

    def stop(self) -> None:
        """End the bursts (the last one healed); raise what went wrong, if anything."""
        self._stop.set()
        self._thread.join(10)
        if self._thread.is_alive():
            raise RuntimeError("the lost-answers bursts did not stop within 10 s")
        if self.error is not None:
            raise RuntimeError(f"lost-answers bursts failed: {self.error}") from self.error
