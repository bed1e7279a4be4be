"""A node process moves what start-up built out of the cyclic collector's full
collections (coord.server.app.freeze_startup_objects): those hold the GIL, and with it
the Raft tick thread (late heartbeats; elections with short timeouts)."""

from __future__ import annotations

import gc

from coord.server.app import freeze_startup_objects


def test_start_up_objects_are_frozen_and_later_ones_are_not() -> None:
    try:
        freeze_startup_objects()
        frozen = gc.get_freeze_count()
        assert frozen > 10_000  # the modules, classes and functions imported so far
        later = [object() for _ in range(10)], {"a": []}
        assert gc.is_tracked(later[1]) and gc.get_freeze_count() == frozen
    finally:
        gc.unfreeze()  # this test process goes on collecting as before
