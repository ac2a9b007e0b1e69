"""The LiveKit room as the agent uses it (agent/room_agent.py, agent/audio_output.py), without
a server.

`FakeRoom` is an `rtc.EventEmitter` (the SDK's own, so `on`/`off` behave as the room's)
with a name, a `FakeLocalParticipant` and the remote participants; `join` and `leave` add
and remove one and emit what the SDK emits, and a test emits the rest (`reconnecting`...).
The local participant applies attribute updates at once, but loses the answers to the
`set_attributes` calls numbered in `lost_answers` (1-based): such a call waits the SDK's
own `answer_timeout_s` (5 s) and raises `TimeoutError`, as the SDK does when the server's
answer came before it started waiting. Published tracks are `FakeTrackPublication`s that
count as subscribed once a test calls `subscribe()`. It keeps what it was asked:
`attribute_calls`, `published`, `unpublished`.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass

from livekit import rtc

SDK_ANSWER_TIMEOUT_S = 5.0


class FakeTrackPublication:
    def __init__(self, sid: str) -> None:
        self.sid = sid
        self._subscribed = asyncio.Event()

    async def wait_for_subscription(self) -> None:
        await self._subscribed.wait()

    def subscribe(self) -> None:
        """Someone in the room subscribed to the track."""
        self._subscribed.set()


class FakeLocalParticipant:
    def __init__(self, *, answer_timeout_s: float = SDK_ANSWER_TIMEOUT_S) -> None:
        self.answer_timeout_s = answer_timeout_s
        self.attributes: dict[str, str] = {}
        self.attribute_calls: list[dict[str, str]] = []
        self.lost_answers: set[int] = set()
        self.published: dict[str, FakeTrackPublication] = {}
        self.unpublished: list[str] = []
        self._sids = itertools.count(1)

    async def set_attributes(self, attributes: dict[str, str]) -> None:
        self.attribute_calls.append(dict(attributes))
        self.attributes.update(attributes)
        if len(self.attribute_calls) in self.lost_answers:
            await asyncio.sleep(self.answer_timeout_s)
            raise TimeoutError("request timeout")

    async def publish_track(self, track: rtc.LocalTrack,
                            options: rtc.TrackPublishOptions | None = None) -> FakeTrackPublication:
        publication = FakeTrackPublication(f"TR_fake{next(self._sids)}")
        self.published[publication.sid] = publication
        return publication

    async def unpublish_track(self, track_sid: str) -> None:
        del self.published[track_sid]
        self.unpublished.append(track_sid)


@dataclass
class FakeRemoteParticipant:
    identity: str
    kind: int = rtc.ParticipantKind.PARTICIPANT_KIND_STANDARD


class FakeRoom(rtc.EventEmitter[str]):
    def __init__(self, name: str = "fake-room") -> None:
        super().__init__()
        self.name = name
        self.local_participant = FakeLocalParticipant()
        self.remote_participants: dict[str, FakeRemoteParticipant] = {}

    def join(self, identity: str,
             kind: int = rtc.ParticipantKind.PARTICIPANT_KIND_STANDARD) -> FakeRemoteParticipant:
        participant = FakeRemoteParticipant(identity, kind)
        self.remote_participants[identity] = participant
        self.emit("participant_connected", participant)
        return participant

    def leave(self, identity: str) -> None:
        self.emit("participant_disconnected", self.remote_participants.pop(identity))
