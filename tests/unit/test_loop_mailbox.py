"""LoopMailbox: the worker thread's calls to a consumer's event loop run there in order,
with one wake-up of the loop per batch; a closed loop swallows them."""

from __future__ import annotations

import asyncio
import threading

from tts_engine.runtime.session import LoopMailbox, call_in_loop


async def test_calls_from_a_thread_run_in_order_with_one_wake_up_per_batch():
    loop = asyncio.get_running_loop()
    wake_ups = []
    wake = loop.call_soon_threadsafe

    def counted(callback, *args):
        wake_ups.append(callback)
        return wake(callback, *args)

    loop.call_soon_threadsafe = counted
    got: list[int] = []
    done = asyncio.Event()
    mailbox = LoopMailbox(loop)

    def worker() -> None:  # the loop cannot run while this thread hands over 1000 calls
        for i in range(1000):
            mailbox.call(got.append, i)
        mailbox.call(done.set)

    thread = threading.Thread(target=worker)
    thread.start()
    await asyncio.wait_for(done.wait(), 5)
    thread.join()
    assert got == list(range(1000))
    assert 1 <= len(wake_ups) < 100, len(wake_ups)


async def test_a_failing_call_is_reported_and_the_rest_still_run():
    loop = asyncio.get_running_loop()
    reported = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context["exception"]))
    got = []
    done = asyncio.Event()

    def fail() -> None:
        raise ValueError("consumer bug")

    for callback in (fail, lambda: got.append(1), done.set):
        call_in_loop(loop, callback)
    await asyncio.wait_for(done.wait(), 5)
    assert got == [1] and isinstance(reported[0], ValueError)


def test_a_closed_loop_swallows_calls():
    loop = asyncio.new_event_loop()
    loop.close()
    mailbox = LoopMailbox(loop)
    mailbox.call(print, "never")
    mailbox.call(print, "never")  # not stuck "scheduled" after the first


