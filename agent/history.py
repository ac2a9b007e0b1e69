"""The conversation's last turns, kept in the room so that a re-dispatched agent picks them up.

A worker that dies takes its agent's chat context with it. So the agent keeps the
conversation's last turns where LiveKit keeps room state that outlives an agent: the room
metadata's JSON object, under `streamtalk.history` (streamtalk_common/room_protocol.py):

    {"messages": [{"role": "user" | "assistant", "text": "..."}, ...]}  oldest first

Each message the session adds to its chat context (what the user said, what the agent
said, cut where it was interrupted) is appended, the whole bounded, and written. Bounds:
the last AGENT_HISTORY_TURNS user turns with the replies to them, and at most
AGENT_HISTORY_MAX_BYTES of JSON as it stands in the metadata; the oldest messages go first,
and a single message longer than the budget is cut at its end. A new agent in the room seeds
its chat context with what it finds there.

The room metadata has another writer, the token server's reconciler (`streamtalk.agent`),
and LiveKit offers no compare-and-swap: each write reads the metadata from the server
first and sets only this key. Writes go one at a time and the latest history wins
(AttributePublisher), so a slow write never lands after a newer one.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from livekit import api
from livekit.agents import llm

from streamtalk_common.room_protocol import (
    HISTORY_METADATA_KEY,
    metadata_object,
    set_room_metadata_key,
)

from .attribute_publisher import AttributePublisher
from .errors import HistoryFormatError

log = logging.getLogger("streamtalk.agent")

ROLES = ("user", "assistant")
ELLIPSIS = "..."


@dataclass(frozen=True)
class Turn:
    """One message of the conversation: who said it and what."""

    role: str
    text: str


def as_value(messages: list[Turn]) -> dict[str, Any]:
    return {"messages": [{"role": m.role, "text": m.text} for m in messages]}


def size_of(messages: list[Turn]) -> int:
    """Bytes the history takes in the room metadata (JSON as json.dumps writes it: ASCII)."""
    return len(json.dumps(as_value(messages)))


def _cut_to_fit(message: Turn, max_bytes: int) -> Turn | None:
    """`message` with the longest start of its text (and "...") that fits `max_bytes`."""
    lo, hi = 0, len(message.text)  # a character is 1 to 12 bytes escaped: search the cut
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if size_of([Turn(message.role, message.text[:mid] + ELLIPSIS)]) <= max_bytes:
            lo = mid
        else:
            hi = mid - 1
    cut = Turn(message.role, message.text[:lo] + ELLIPSIS)
    return cut if size_of([cut]) <= max_bytes else None


def bounded(messages: list[Turn], max_turns: int, max_bytes: int) -> list[Turn]:
    """The newest part of `messages` that holds at most `max_turns` user turns (with what
    followed them) and takes at most `max_bytes`; a newest message too long on its own is
    cut to fit (ending in "...")."""
    if max_turns < 1:
        return []
    users = [i for i, m in enumerate(messages) if m.role == "user"]
    kept = messages[users[-max_turns]:] if len(users) > max_turns else list(messages)
    while len(kept) > 1 and size_of(kept) > max_bytes:
        kept = kept[1:]
    if kept and size_of(kept) > max_bytes:
        cut = _cut_to_fit(kept[0], max_bytes)
        kept = [cut] if cut is not None else []
    return kept


def decoded(value: Any) -> list[Turn]:
    """The messages of a history value read from the room metadata (bad shapes refused)."""
    if not isinstance(value, dict) or not isinstance(value.get("messages"), list):
        raise HistoryFormatError('expected an object {"messages": [...]}')
    messages = []
    for i, raw in enumerate(value["messages"]):
        if (not isinstance(raw, dict) or raw.get("role") not in ROLES
                or not isinstance(raw.get("text"), str)):
            raise HistoryFormatError(f'messages[{i}] is not '
                                     '{"role": "user"|"assistant", "text": str}')
        messages.append(Turn(raw["role"], raw["text"]))
    return messages


def history_in(metadata: str) -> list[Turn]:
    """The history a room's metadata holds; none when it holds none or a malformed one."""
    room_state = metadata_object(metadata)
    if not room_state or HISTORY_METADATA_KEY not in room_state:
        return []
    try:
        return decoded(room_state[HISTORY_METADATA_KEY])
    except HistoryFormatError as exc:
        log.warning("the room's conversation history is unreadable (%s); starting afresh", exc)
        return []


def chat_context(messages: list[Turn]) -> llm.ChatContext:
    """A chat context holding `messages`, to seed a new agent's with."""
    ctx = llm.ChatContext.empty()
    for m in messages:
        ctx.add_message(role=m.role, content=m.text)  # type: ignore[arg-type]
    return ctx


class RoomHistory:
    """The room's conversation history: `add` a message, and it is bounded and written."""

    def __init__(self, lkapi: api.LiveKitAPI, room: str, found: list[Turn], max_turns: int,
                 max_bytes: int) -> None:
        self.lkapi = lkapi
        self.room = room
        self.max_turns = max_turns
        self.max_bytes = max_bytes
        self.messages = bounded(found, max_turns, max_bytes)
        self._writer = AttributePublisher(self._write, "conversation history")

    def add(self, role: str, text: str) -> None:
        if role not in ROLES or not text.strip():
            return
        self.messages = bounded([*self.messages, Turn(role, text.strip())], self.max_turns,
                                self.max_bytes)
        self._writer.set(json.dumps(as_value(self.messages)))  # the publisher compares strings

    def close(self) -> None:
        self._writer.close()

    async def _write(self, value: str) -> None:
        await set_room_metadata_key(self.lkapi, self.room, HISTORY_METADATA_KEY, json.loads(value))
