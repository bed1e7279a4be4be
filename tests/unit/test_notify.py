"""StateNotifier (coord.server.runtime.notify): a waiter hears of every apply after
the generation it read, and a node with no waiter never wakes its loop."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from coord.server.runtime.notify import StateNotifier


def _counting(n: StateNotifier, loop: asyncio.AbstractEventLoop) -> list[int]:
    """Count ``n``'s wake-ups of the loop (its call_soon_threadsafe calls; asyncio's
    own, such as an executor's future completing, are not counted)."""
    calls: list[int] = []
    real = loop.call_soon_threadsafe

    def counted(*args: Any, **kwargs: Any) -> Any:
        if args and args[0] == n._wake:
            calls.append(1)
        return real(*args, **kwargs)

    loop.call_soon_threadsafe = counted  # type: ignore[method-assign]
    return calls


def test_applies_with_no_waiter_never_wake_the_loop() -> None:
    async def main() -> tuple[int, list[int]]:
        n = StateNotifier(asyncio.get_running_loop())
        wakes = _counting(n, asyncio.get_running_loop())
        t = threading.Thread(target=lambda: [n.applied() for _ in range(100)])
        t.start()
        t.join()
        return n.generation, wakes

    generation, wakes = asyncio.run(main())
    assert generation == 100 and wakes == []


def test_a_waiter_is_woken_by_an_apply_on_another_thread() -> None:
    async def main() -> tuple[int, list[int]]:
        n = StateNotifier(asyncio.get_running_loop())
        wakes = _counting(n, asyncio.get_running_loop())
        seen = n.generation
        waiter = asyncio.ensure_future(n.wait_beyond(seen, timeout=30))
        while not n.waiters:  # the waiter is registered
            await asyncio.sleep(0)
        t = threading.Thread(target=lambda: [n.applied() for _ in range(3)])
        t.start()
        got = await asyncio.wait_for(waiter, 10)
        await asyncio.get_running_loop().run_in_executor(None, t.join)
        return got, wakes

    generation, wakes = asyncio.run(main())
    assert generation >= 1
    assert 1 <= len(wakes) <= 3  # one per burst, however many applies


def test_an_apply_between_reading_the_generation_and_waiting_is_not_missed() -> None:
    async def main() -> int:
        n = StateNotifier(asyncio.get_running_loop())
        seen = n.generation  # a stream reads the generation, then the state...
        t = threading.Thread(target=n.applied)  # ...an apply lands meanwhile...
        t.start()
        t.join()
        return await asyncio.wait_for(n.wait_beyond(seen, timeout=30), 5)  # ...returns at once

    assert asyncio.run(main()) == 1


def test_a_waiter_gives_up_at_its_timeout_and_is_counted_out() -> None:
    async def main() -> tuple[int, int]:
        n = StateNotifier(asyncio.get_running_loop())
        got = await n.wait_beyond(n.generation, timeout=0.01)
        return got, n.waiters

    assert asyncio.run(main()) == (0, 0)


def test_a_cancelled_waiter_is_counted_out() -> None:
    async def main() -> int:
        n = StateNotifier(asyncio.get_running_loop())
        waiter = asyncio.ensure_future(n.wait_beyond(n.generation))
        while not n.waiters:
            await asyncio.sleep(0)
        waiter.cancel()
        await asyncio.gather(waiter, return_exceptions=True)
        return n.waiters

    assert asyncio.run(main()) == 0


def test_a_stale_generation_returns_through_the_loop() -> None:
    # The generation moves on the tick thread: a stream that finds something new at
    # every wait must still let the loop's other tasks run between its rounds.
    async def main() -> tuple[int, bool]:
        n = StateNotifier(asyncio.get_running_loop())
        n.applied()
        ran = asyncio.Event()
        other = asyncio.ensure_future(_set(ran))
        got = await n.wait_beyond(0, timeout=30)
        seen = ran.is_set()
        await other
        return got, seen

    assert asyncio.run(main()) == (1, True)


async def _set(flag: asyncio.Event) -> None:
    flag.set()


def test_one_wake_up_releases_every_waiter_and_none_is_left_listed() -> None:
    # Each waiter has a future of its own: one wake-up resolves them all, and none, a
    # waiter that timed out meanwhile included, is left listed.
    async def main() -> tuple[list[int], int, list[int]]:
        n = StateNotifier(asyncio.get_running_loop())
        wakes = _counting(n, asyncio.get_running_loop())
        waiters = [asyncio.ensure_future(n.wait_beyond(0, timeout=30)) for _ in range(50)]
        waiters.append(asyncio.ensure_future(n.wait_beyond(0, timeout=0)))
        for _ in range(1000):  # loop passes until the waiters are registered
            if n.waiters >= 50:
                break
            await asyncio.sleep(0)
        assert n.waiters >= 50
        t = threading.Thread(target=n.applied)
        t.start()
        got = await asyncio.wait_for(asyncio.gather(*waiters), 10)
        await asyncio.get_running_loop().run_in_executor(None, t.join)
        return got, n.waiters, wakes

    got, left, wakes = asyncio.run(main())
    assert got[:50] == [1] * 50 and got[50] in (0, 1)
    assert left == 0 and len(wakes) == 1
