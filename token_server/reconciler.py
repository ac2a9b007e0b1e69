"""The room reconciler: nobody is left in a room whose agent never came or has gone.

LiveKit launches an agent job once, when a dispatch is created. A launch that
failed (no worker registered yet, as right after LiveKit restarted) or a job
whose worker died is never dispatched again (livekit-server's
`pkg/agent/client.go`). So every `interval_s` the reconciler lists the rooms:
one that holds a person who asked for our agent (a dispatch of it in the room,
or the person's token attribute that says so: after a LiveKit restart the room
may be recreated without the dispatch) but no live agent participant, for
longer than `grace_s`, gets the dispatch deleted and created again with the
same metadata. Attempts back off (grace, then 2x, 4x, ...) and
stop after `max_attempts`. The grace also runs from the newest person's join and, with
several nodes, from when LiveKit moves a lost node's rooms (NODE_STALE_S after the node
stopped answering): LiveKit then dispatches the agent itself, and a re-dispatch that
deletes that dispatch would end the agent it brought.

A killed agent's participant stays in the room for about 20 s. Our agent raises
a heartbeat attribute every few seconds (streamtalk_common/room_protocol.py); one
whose heartbeat stood still for STALE_AFTER_S counts as gone, and is removed from
the room before the new dispatch (so the newcomer does not find a twin).

The page learns of it from the room's metadata, a JSON object whose
`streamtalk.agent` key the reconciler sets (other keys are left alone):
`{"state": "reconnecting", "attempt": n}` while it tries, `{"state": "lost"}`
when it gave up, `{"state": "back"}` once an agent is in the room again.

With several LiveKit nodes (LIVEKIT_URLS) each sweep asks the first one that answers
(token_server/live_nodes.py): they share rooms through Redis, so any of them lists all.

Everything it acts on is read from LiveKit on each sweep; only when it first
saw a room without its agent, and its attempts since, live here, so a restarted
reconciler starts those afresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

import aiohttp
from livekit import api

from streamtalk_common.room_protocol import (
    HEARTBEAT_ATTRIBUTE,
    RECONCILER_METADATA_KEY,
    STALE_AFTER_S,
    expected_dispatch,
    set_room_metadata_key,
)

from .live_nodes import NODE_STALE_S, LiveNodes

log = logging.getLogger("token_server.reconciler")

AGENT = api.ParticipantInfo.Kind.AGENT
FORGET_AFTER_S = 30.0  # a room's agents' heartbeats are kept this long after it was last seen
# Participants that are not a person the agent should serve.
NOT_PEOPLE = (AGENT, api.ParticipantInfo.Kind.EGRESS)


@dataclass
class Stranded:
    """A room seen without its agent: since when, and the re-dispatches so far."""

    since: float
    attempts: int = 0
    last_attempt: float = 0.0


class RoomReconciler:
    def __init__(self, nodes: LiveNodes, agent_name: str, grace_s: float,
                 max_attempts: int, interval_s: float = 1.0) -> None:
        self.nodes = nodes
        self.lkapi = nodes.api()
        self.agent_name = agent_name
        self.grace_s = grace_s
        self.max_attempts = max_attempts
        self.interval_s = interval_s
        self.stranded: dict[str, Stranded] = {}
        # (room, agent): value, since
        self.heartbeats: dict[tuple[str, str], tuple[str, float]] = {}
        self.last_seen: dict[str, float] = {}  # room: when a sweep last found people in it
        self._livekit_down = False

    async def run(self) -> None:
        """Sweep until cancelled; LiveKit being away is logged once per outage."""
        while True:
            try:
                await self.sweep()
                if self._livekit_down:
                    log.info("LiveKit answers again")
                self._livekit_down = False
            except (TimeoutError, api.TwirpError, aiohttp.ClientError, OSError) as exc:
                if not self._livekit_down:
                    log.warning("cannot reach LiveKit to reconcile rooms (%s); retrying", exc)
                self._livekit_down = True
            await asyncio.sleep(self.interval_s)

    async def sweep(self) -> None:
        self.lkapi = self.nodes.api()  # a live node's (with several, one may have gone)
        rooms = (await self.lkapi.room.list_rooms(api.ListRoomsRequest())).rooms
        seen = set()
        for room in rooms:
            if room.num_participants == 0:
                continue
            seen.add(room.name)
            self.last_seen[room.name] = time.monotonic()
            await self._reconcile(room, time.monotonic())
        for name in set(self.stranded) - seen:
            del self.stranded[name]
        # heartbeats outlive a sweep or two without the room: while a dead node's room moves to
        # another node it may be missing or empty for a moment, and the frozen beat of its
        # dead session's agent must still count from when it froze
        forget = {name for name, at in self.last_seen.items()
                  if time.monotonic() - at > FORGET_AFTER_S}
        for key in [k for k in self.heartbeats if k[0] in forget]:
            del self.heartbeats[key]
        for name in forget:
            del self.last_seen[name]

    async def _reconcile(self, room: api.Room, now: float) -> None:
        participants = (await self.lkapi.room.list_participants(
            api.ListParticipantsRequest(room=room.name))).participants
        people = [p for p in participants if p.kind not in NOT_PEOPLE]
        agents = [p for p in participants if p.kind == AGENT]
        stale = [p.identity for p in agents if self._heartbeat_stopped(room.name, p, now)]
        # a stale agent has been gone since its last beat, which counts toward the grace
        gone_since = min((self.heartbeats[(room.name, i)][1] for i in stale), default=now)
        has_agent = len(stale) < len(agents)
        if has_agent and stale:
            await self._remove_twins(room.name, stale)
        if has_agent or not people:
            if self.stranded.pop(room.name, None) is not None and has_agent:
                log.info("room %s has its agent again", room.name)
                await self._tell_page(room, {"state": "back"})
            return
        ours = [d for d in await self.lkapi.agent_dispatch.list_dispatch(room.name)
                if d.agent_name == self.agent_name]
        expected = [w[1] for p in people if (w := expected_dispatch(dict(p.attributes)))
                    and w[0] == self.agent_name]
        if not ours and not expected:
            return  # nobody here asked for our agent
        metadata = ours[0].metadata if ours else expected[0]
        stranded = self.stranded.setdefault(room.name, Stranded(since=gone_since))
        wait = self.grace_s * 2 ** max(0, stranded.attempts - 1)  # grace, grace, 2x, 4x, ...
        # LiveKit dispatches the agent itself when a person's join makes the room, or when it
        # moves the room of a node that died to a live one: give that the grace too
        newest_join = now - max(0.0, time.time() - max(p.joined_at_ms / 1000 or p.joined_at
                                                       for p in people))
        moved = self.nodes.last_lost + NODE_STALE_S
        if now - max(stranded.since, stranded.last_attempt, newest_join, moved) < wait:
            return
        if stranded.attempts >= self.max_attempts:
            if stranded.attempts == self.max_attempts:
                log.error("room %s: no agent after %d dispatches; giving up", room.name,
                          stranded.attempts)
                stranded.attempts += 1  # report once
                await self._tell_page(room, {"state": "lost"})
            return
        stranded.attempts += 1
        stranded.last_attempt = now
        log.warning("room %s has people but no agent for %.0f s: dispatching %s again "
                    "(attempt %d of %d)", room.name, now - stranded.since, self.agent_name,
                    stranded.attempts, self.max_attempts)
        await self._tell_page(room, {"state": "reconnecting", "attempt": stranded.attempts})
        for identity in stale:
            log.warning("room %s: agent %s stopped its heartbeat; removing it", room.name, identity)
            with contextlib.suppress(api.TwirpError):  # it left meanwhile
                await self.lkapi.room.remove_participant(
                    api.RoomParticipantIdentity(room=room.name, identity=identity))
        for dispatch in ours:
            with contextlib.suppress(api.TwirpError):  # gone already
                await self.lkapi.agent_dispatch.delete_dispatch(dispatch.id, room.name)
        await self.lkapi.agent_dispatch.create_dispatch(api.CreateAgentDispatchRequest(
            agent_name=self.agent_name, room=room.name, metadata=metadata))

    async def _remove_twins(self, room: str, stale: list[str]) -> None:
        """Remove agents whose heartbeat stopped from a room that another agent serves. A
        LiveKit node that dies takes its rooms' sessions with it; the node that takes a room
        over brings the room's old participants back with it, the dead session's agent among
        them, next to the agent the room's dispatch brings."""
        for identity in stale:
            log.warning("room %s: agent %s stopped its heartbeat and another agent serves the "
                        "room; removing it", room, identity)
            with contextlib.suppress(api.TwirpError):  # it left meanwhile
                await self.lkapi.room.remove_participant(
                    api.RoomParticipantIdentity(room=room, identity=identity))

    def _heartbeat_stopped(self, room: str, agent: api.ParticipantInfo, now: float) -> bool:
        """Whether the agent's heartbeat attribute stood still for STALE_AFTER_S (an agent
        without one, another framework's or ours before its first beat, is alive)."""
        value = agent.attributes.get(HEARTBEAT_ATTRIBUTE)
        if value is None:
            return False
        key = (room, agent.identity)
        last = self.heartbeats.get(key)
        if last is None or last[0] != value:
            self.heartbeats[key] = (value, now)
            return False
        return now - last[1] > STALE_AFTER_S

    async def _tell_page(self, room: api.Room, status: dict) -> None:
        """Set `status` under the room metadata's RECONCILER_METADATA_KEY (other keys kept)."""
        await set_room_metadata_key(self.lkapi, room.name, RECONCILER_METADATA_KEY, status)
