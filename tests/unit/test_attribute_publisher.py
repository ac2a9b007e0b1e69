"""The latest-value-wins attribute publisher, against a sender whose answers can be lost
(the SDK's `set_attributes` then waits until its own 5 s timeout)."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from agent import attribute_publisher
from agent.attribute_publisher import AttributePublisher


class FlakyServer:
    """Applies every update at once; answers only those not listed in `lost`."""

    def __init__(self, lost: set[int] = frozenset()) -> None:  # type: ignore[assignment]
        self.lost = lost
        self.sent: list[str] = []
        self.applied: str | None = None

    async def send(self, value: str) -> None:
        self.sent.append(value)
        self.applied = value
        if len(self.sent) in self.lost:
            await asyncio.sleep(5.0)  # the SDK's own timeout
            raise TimeoutError("request timeout")


@pytest.fixture(autouse=True)
def short_ack_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(attribute_publisher, "ACK_WAIT_S", 0.2)


async def settle(publisher: AttributePublisher) -> None:
    deadline = time.monotonic() + 3.0
    while publisher._task is not None and not publisher._task.done():
        assert time.monotonic() < deadline, "the publisher did not settle"
        await asyncio.sleep(0.01)


async def test_values_set_meanwhile_are_coalesced_and_the_latest_wins() -> None:
    server = FlakyServer()
    p = AttributePublisher(server.send, "state")
    for value in ("A", "B", "C"):
        p.set(value)
    await settle(p)
    assert server.sent == ["C"] and p.published == "C"
    p.set("C")
    await settle(p)
    assert server.sent == ["C"]  # already acknowledged: nothing sent again


async def test_a_new_value_does_not_wait_behind_a_lost_answer() -> None:
    server = FlakyServer(lost={1})
    p = AttributePublisher(server.send, "state")
    p.set("INTERRUPTING")
    await asyncio.sleep(0.05)
    t0 = time.monotonic()
    p.set("LISTENING")
    await settle(p)
    assert server.sent == ["INTERRUPTING", "LISTENING"]
    assert server.applied == p.published == "LISTENING"
    assert time.monotonic() - t0 < 1.0  # one short ack wait, not the SDK's 5 s


async def test_an_unanswered_value_is_sent_again() -> None:
    server = FlakyServer(lost={1})
    p = AttributePublisher(server.send, "state")
    p.set("LISTENING")
    await settle(p)
    assert server.sent == ["LISTENING", "LISTENING"] and p.published == "LISTENING"


async def test_a_value_never_answered_is_given_up_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = FlakyServer(lost={1, 2, 3})
    p = AttributePublisher(server.send, "the duplex state")
    with caplog.at_level(logging.WARNING, logger="streamtalk.agent"):
        p.set("SPEAKING")
        await settle(p)
    assert server.sent == ["SPEAKING"] * attribute_publisher.ATTEMPTS
    assert p.published is None
    assert "cannot publish the duplex state 'SPEAKING' after 3 attempts" in caplog.text
    p.set("LISTENING")  # a new value starts afresh
    await settle(p)
    assert server.sent[-1] == "LISTENING" and p.published == "LISTENING"
