"""The latest-value-wins attribute publisher, against a room whose answers can be lost
(the SDK's `set_attributes` then waits until its own 5 s timeout)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable

import pytest
from support.fake_room import FakeLocalParticipant, FakeRoom

from agent import attribute_publisher
from agent.attribute_publisher import AttributePublisher


def publisher(what: str,
              lost: Iterable[int] = ()) -> tuple[AttributePublisher, FakeLocalParticipant]:
    """The publisher as the agent builds it, on a room that loses the answers to the
    `set_attributes` calls numbered in `lost`."""
    me = FakeRoom().local_participant
    me.lost_answers = set(lost)
    return AttributePublisher(lambda value: me.set_attributes({"state": value}), what), me


def sent(me: FakeLocalParticipant) -> list[str]:
    return [call["state"] for call in me.attribute_calls]


@pytest.fixture(autouse=True)
def short_ack_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(attribute_publisher, "ACK_WAIT_S", 0.2)


async def settle(publisher: AttributePublisher) -> None:
    deadline = time.monotonic() + 3.0
    while publisher._task is not None and not publisher._task.done():
        assert time.monotonic() < deadline, "the publisher did not settle"
        await asyncio.sleep(0.01)


async def test_values_set_meanwhile_are_coalesced_and_the_latest_wins() -> None:
    p, me = publisher("state")
    for value in ("A", "B", "C"):
        p.set(value)
    await settle(p)
    assert sent(me) == ["C"] and p.published == "C"
    p.set("C")
    await settle(p)
    assert sent(me) == ["C"]  # already acknowledged: nothing sent again


async def test_a_new_value_does_not_wait_behind_a_lost_answer() -> None:
    p, me = publisher("state", lost={1})
    p.set("INTERRUPTING")
    await asyncio.sleep(0.05)
    t0 = time.monotonic()
    p.set("LISTENING")
    await settle(p)
    assert sent(me) == ["INTERRUPTING", "LISTENING"]
    assert me.attributes["state"] == p.published == "LISTENING"
    assert time.monotonic() - t0 < 1.0  # one short ack wait, not the SDK's 5 s


async def test_an_unanswered_value_is_sent_again() -> None:
    p, me = publisher("state", lost={1})
    p.set("LISTENING")
    await settle(p)
    assert sent(me) == ["LISTENING", "LISTENING"] and p.published == "LISTENING"


async def test_a_value_never_answered_is_given_up_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    p, me = publisher("the duplex state", lost={1, 2, 3})
    with caplog.at_level(logging.WARNING, logger="streamtalk.agent"):
        p.set("SPEAKING")
        await settle(p)
    assert sent(me) == ["SPEAKING"] * attribute_publisher.ATTEMPTS
    assert p.published is None
    assert "cannot publish the duplex state 'SPEAKING' after 3 attempts" in caplog.text
    p.set("LISTENING")  # a new value starts afresh
    await settle(p)
    assert sent(me)[-1] == "LISTENING" and p.published == "LISTENING"
