"""The GPU priority scheduler: the fast lane pre-empts the slow lane; waits are measured."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from agent.gpu_scheduler import GpuScheduler, Lane


def test_fast_is_always_admitted() -> None:
    s = GpuScheduler(slow_slots=1)
    tickets = [s.try_acquire(Lane.FAST) for _ in range(5)]
    assert all(t is not None for t in tickets)
    assert s.fast_active == 5
    for t in tickets:
        assert t is not None
        t.release()
        t.release()  # idempotent
    assert s.fast_active == 0


def test_slow_is_refused_while_fast_work_runs_or_slots_are_full() -> None:
    s = GpuScheduler(slow_slots=2)
    fast = s.try_acquire(Lane.FAST)
    assert fast is not None
    assert s.try_acquire(Lane.SLOW) is None  # the fast lane pre-empts
    fast.release()
    a, b = s.try_acquire(Lane.SLOW), s.try_acquire(Lane.SLOW)
    assert a is not None and b is not None
    assert s.try_acquire(Lane.SLOW) is None  # both slots taken
    assert s.try_acquire(Lane.FAST) is not None  # fast never waits for slow
    a.release()
    b.release()


async def test_a_waiting_slow_request_gets_in_when_fast_work_ends() -> None:
    s = GpuScheduler()
    fast = s.try_acquire(Lane.FAST)
    assert fast is not None
    waiter = asyncio.create_task(s.acquire(Lane.SLOW, label="seg3"))
    await asyncio.sleep(0.15)
    assert not waiter.done()
    fast.release()
    ticket = await asyncio.wait_for(waiter, 2)
    assert ticket.lane is Lane.SLOW and not ticket.promoted
    assert 100 <= ticket.wait_ms < 1500
    stats = s.stats()
    assert stats["slow"]["waited"] == 1 and stats["slow"]["wait_ms_max"] >= 100
    assert stats["fast"]["waited"] == 0 and stats["fast"]["wait_ms_max"] == 0
    ticket.release()


async def test_an_impatient_slow_request_is_promoted_to_fast() -> None:
    s = GpuScheduler()
    fast = s.try_acquire(Lane.FAST)
    assert fast is not None
    t0 = time.monotonic()
    ticket = await asyncio.wait_for(s.acquire(Lane.SLOW, max_wait_s=0.1), 2)
    assert 0.08 <= time.monotonic() - t0 < 1.0
    assert ticket.lane is Lane.FAST and ticket.promoted
    assert s.stats()["slow"]["promoted"] == 1
    ticket.release()
    fast.release()
    assert s.fast_active == 0


async def test_a_cancelled_waiter_leaves_no_trace() -> None:
    s = GpuScheduler()
    fast = s.try_acquire(Lane.FAST)
    assert fast is not None
    waiter = asyncio.create_task(s.acquire(Lane.SLOW))
    await asyncio.sleep(0.05)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    fast.release()
    assert s.slow_active == 0 and s.fast_active == 0
    assert s.try_acquire(Lane.SLOW) is not None


def test_waiters_in_other_event_loops_are_woken() -> None:
    """Rooms run in their own threads and loops; a release in one wakes a waiter in another."""
    s = GpuScheduler()
    fast = s.try_acquire(Lane.FAST)
    assert fast is not None
    result: dict[str, object] = {}

    def room_thread() -> None:
        async def go() -> None:
            ticket = await asyncio.wait_for(s.acquire(Lane.SLOW), 5)
            result["lane"] = ticket.lane
            result["wait_ms"] = ticket.wait_ms
            ticket.release()

        asyncio.run(go())

    t = threading.Thread(target=room_thread)
    t.start()
    time.sleep(0.2)
    assert "lane" not in result
    fast.release()
    t.join(5)
    assert result["lane"] is Lane.SLOW and float(result["wait_ms"]) >= 150  # type: ignore[arg-type]


async def test_many_slow_requests_all_get_through_in_bounded_time() -> None:
    s = GpuScheduler(slow_slots=2)
    done: list[int] = []

    async def work(i: int) -> None:
        async with await s.acquire(Lane.SLOW):
            await asyncio.sleep(0.01)
            done.append(i)

    fast = s.try_acquire(Lane.FAST)
    assert fast is not None
    tasks = [asyncio.create_task(work(i)) for i in range(10)]
    await asyncio.sleep(0.05)
    assert done == []
    fast.release()
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    assert sorted(done) == list(range(10))
    assert s.stats()["slow"]["acquired"] == 10 and s.slow_active == 0


def test_slots_are_validated() -> None:
    with pytest.raises(ValueError):
        GpuScheduler(slow_slots=0)
