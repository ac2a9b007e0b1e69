"""One room's conversation: the job entrypoint's wiring.

Per room: settings (dispatch metadata over env), an event bus with the trace
collector, the Omni STT/LLM and the TTS plugin over the shared engine, the
room audio sink, an `AgentSession` with local turn taking (VAD plus the local
end-of-turn model, or VAD alone: agent/turn_detection.py; VAD interruption;
nothing goes to LiveKit Cloud), the duplex controller, the
AutoRTC responder, the `stop_reply` RPC, the backend status attribute, the
per-turn latency breakdown (data topic `streamtalk.latency`), the pre_rtc recorder and
the conversation history in the room metadata
(agent/history.py). An agent that finds a history there (dispatched again after
its predecessor died) seeds its chat context with it and does not greet: the
user goes on where they were, and the page says "The agent is back.". The job
ends when the room is left empty (after AGENT_EMPTY_ROOM_GRACE_S) or closes, or,
while the worker drains after a SIGTERM, as soon as the room is between turns
(agent/drain.py); the cleanup runs in a `finally` block.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from livekit import rtc
from livekit.agents import AgentSession, AutoSubscribe, JobContext, room_io
from livekit.agents.voice.agent_session import SessionConnectOptions
from livekit.agents.voice.events import CloseEvent, ConversationItemAddedEvent, ErrorEvent
from livekit.agents.voice.speech_handle import SpeechHandle

from streamtalk_common.audio import INPUT_SAMPLE_RATE, SAMPLE_RATE
from streamtalk_common.room_protocol import HEARTBEAT_ATTRIBUTE, HEARTBEAT_S, LATENCY_TOPIC

from .attribute_publisher import AttributePublisher
from .audio_output import RoomAudioSink
from .autortc import AutoRTCResponder
from .config import AgentConfig, RoomSettings
from .conversation_agent import ConversationAgent
from .drain import SETTLE_MARGIN_S, TurnActivity
from .duplex import DUPLEX_ATTRIBUTE
from .duplex_controller import DuplexController
from .engine_service import SharedServices
from .events import AgentEvent, BackendBusy, BackendDown, BackendOk, EventBus, PlaybackFinished
from .history import RoomHistory, chat_context, history_in
from .latency_publisher import LatencyPublisher
from .llm import OmniLLM
from .omni_client import OmniClient
from .pre_rtc import PreRtcRecorder
from .room_rpc import RoomRpc
from .stt import OmniSTT
from .trace import TraceCollector
from .tts import StreamtalkTTS
from .turn_detection import room_turn_detection, turn_handling

log = logging.getLogger("streamtalk.agent")

BACKEND_ATTRIBUTE = "streamtalk.backend"
STOP_RPC = "stop_reply"


class BackendStatus:
    """Shows the backends' health in the room: attribute `streamtalk.backend` (`ok`, or the
    latest problem of a component not answering again yet: `down: <component>: <why>`, or
    `busy: tts: <why>` while the TTS engine has no room) and, when speech recognition fails,
    a short spoken notice (the LLM speaks its own when it is the one down)."""

    def __init__(self, room: rtc.Room, session: AgentSession, stt_notice: str) -> None:
        self.session = session
        self.stt_notice = stt_notice
        self.state = "unknown"
        self._problems: dict[str, str] = {}  # component -> its problem, the latest last
        self._notice: SpeechHandle | None = None
        self._publisher = AttributePublisher(
            lambda value: room.local_participant.set_attributes({BACKEND_ATTRIBUTE: value}),
            BACKEND_ATTRIBUTE)

    def __call__(self, ev: AgentEvent[Any]) -> None:
        p = ev.payload
        if isinstance(p, BackendOk):
            self._problems.pop(p.component, None)
        elif isinstance(p, BackendDown | BackendBusy):
            self._problems.pop(p.component, None)
            kind = "down" if isinstance(p, BackendDown) else "busy"
            self._problems[p.component] = f"{kind}: {p.component}: {p.detail[:200]}"
        else:
            return
        self._set(list(self._problems.values())[-1] if self._problems else "ok")
        speaking = self._notice is not None and not self._notice.done()
        if isinstance(p, BackendDown) and p.component == "stt" and not speaking:
            with contextlib.suppress(RuntimeError):  # one notice at a time, never a queue of them
                self._notice = self.session.say(self.stt_notice, add_to_chat_ctx=False)

    def _set(self, value: str) -> None:
        if value == self.state:
            return
        previous, self.state = self.state, value
        if value.startswith("down"):
            log.error("Omni backend problem, shown in the room: %s", value)
        elif previous.startswith("down") and not any(p.startswith("down")
                                                     for p in self._problems.values()):
            log.info("Omni backend is answering again")
        self._publisher.set(value)


class ConnectionRestartWatch:
    """Ends the job when the room's connection comes back as a new session.

    A short outage is resumed and nothing is lost. When the server lost the session
    (LiveKit restarted), the SDK joins afresh: every participant leaves and joins again,
    and the voice session stays linked to tracks that are gone, deaf to the user. The job
    then ends and leaves the room; the token server's room reconciler dispatches a fresh
    agent into it (token_server/reconciler.py)."""

    def __init__(self, room: rtc.Room, leave: Callable[[str], Awaitable[None]]) -> None:
        self.room = room
        self._leave = leave
        self._leaving: asyncio.Task[None] | None = None
        self.reconnecting = False
        self.restarted = False
        room.on("reconnecting", self._on_reconnecting)
        room.on("participant_disconnected", self._on_left)
        room.on("reconnected", self._on_reconnected)

    def _on_reconnecting(self) -> None:
        log.warning("room %s: connection lost, reconnecting", self.room.name)
        self.reconnecting, self.restarted = True, False

    def _on_left(self, _p: rtc.RemoteParticipant) -> None:
        self.restarted = self.restarted or self.reconnecting

    def _on_reconnected(self) -> None:
        self.reconnecting = False
        if not self.restarted:
            log.info("room %s: reconnected (resumed)", self.room.name)
            return
        log.warning("room %s: reconnected as a new session; ending the job so that a fresh agent "
                    "serves the room", self.room.name)
        self._leaving = asyncio.ensure_future(self._leave("connection restarted"))


def seniority(p: rtc.Participant) -> tuple[int, str]:
    """When the participant joined the room (ms, assigned by the server; a session that
    LiveKit restarted joins anew) and its identity, which breaks a tie. The SDK keeps
    ParticipantInfo.joined_at in `_info` and has no property for it."""
    return p._info.joined_at, p.identity


def people_in(room: rtc.Room) -> list[rtc.RemoteParticipant]:
    """The room's participants that are not agents (users, AutoRTC bots)."""
    return [p for p in room.remote_participants.values()
            if p.kind != rtc.ParticipantKind.PARTICIPANT_KIND_AGENT]


class ParticipantLinker:
    """Which participant the agent listens to: the metadata's `user_identity` if given; else the
    first one that publishes a microphone (a listen-only probe never captures the agent); when
    that one leaves mid-reply, the reply is cancelled and the next speaker is linked."""

    def __init__(self, room: rtc.Room, session: AgentSession, controller: DuplexController,
                 fixed_identity: str = "") -> None:
        self.room = room
        self.session = session
        self.controller = controller
        self.fixed = fixed_identity
        room.on("track_published", self._on_track_published)
        room.on("participant_disconnected", self._on_left)
        self.reconcile()

    def reconcile(self) -> None:
        """Link a participant that publishes a microphone if the linked one does not."""
        if self.fixed:
            return
        linked = self._linked()
        if linked is not None and self._has_mic(linked):
            return
        for p in self.room.remote_participants.values():
            if self._has_mic(p) and p.kind != rtc.ParticipantKind.PARTICIPANT_KIND_AGENT:
                log.info("listening to %s (it publishes a microphone)", p.identity)
                with contextlib.suppress(RuntimeError):
                    self.session.room_io.set_participant(p.identity)
                return

    def _linked(self) -> rtc.RemoteParticipant | None:
        try:
            return self.session.room_io.linked_participant
        except RuntimeError:
            return None

    @staticmethod
    def _has_mic(p: rtc.RemoteParticipant) -> bool:
        return any(pub.kind == rtc.TrackKind.KIND_AUDIO for pub in p.track_publications.values())

    def _on_track_published(self, pub: rtc.RemoteTrackPublication,
                            p: rtc.RemoteParticipant) -> None:
        if self.fixed or pub.kind != rtc.TrackKind.KIND_AUDIO:
            return
        self.reconcile()

    def _on_left(self, p: rtc.RemoteParticipant) -> None:
        linked = self._linked()
        if linked is not None and linked.identity != p.identity:
            return
        log.info("participant %s left; cancelling any reply to it", p.identity)
        asyncio.ensure_future(self.controller.stop("participant left"))
        if self.fixed:
            return
        others = [o for o in self.room.remote_participants.values()
                  if o.identity != p.identity and self._has_mic(o)]
        if others:
            with contextlib.suppress(RuntimeError):
                self.session.room_io.set_participant(others[0].identity)


class RoomAgent:
    """Set up with `start()`; `cleanup()` (a job shutdown callback) tears down and saves."""

    def __init__(self, ctx: JobContext, services: SharedServices, config: AgentConfig,
                 draining: Callable[[], bool] = lambda: False) -> None:
        self.ctx = ctx
        self.draining = draining
        self.services = services
        self.config = config
        self.settings = RoomSettings.resolve(
            ctx.room.name, ctx.job.metadata, config,
            speakers=services.engine.speakers, languages=services.engine.languages,
        )
        self.bus = EventBus()
        self.trace = TraceCollector(config.output_dir / "traces", ctx.room.name,
                                    self.settings.trace_id)
        self.bus.subscribe(self.trace)
        self.turns = TurnActivity(config.min_endpointing_s + SETTLE_MARGIN_S)
        self.bus.subscribe(self.turns)
        self.recorder = (PreRtcRecorder(config.output_dir, self.settings.trace_id, SAMPLE_RATE)
                         if self.settings.save_pre_rtc else None)
        self.client = OmniClient(config.omni_base_url, api_key=config.omni_api_key,
                                 model=config.omni_model,
                                 connect_timeout_s=config.connect_timeout_s,
                                 max_retries=config.max_retries)
        self.sink: RoomAudioSink | None = None
        self.session: AgentSession | None = None
        self.controller: DuplexController | None = None
        self.autortc: AutoRTCResponder | None = None
        self.latency: LatencyPublisher | None = None
        self.history: RoomHistory | None = None
        self.rpc: RoomRpc | None = None
        self.done = asyncio.Event()
        self._roster_changed = asyncio.Event()  # wakes the room watch at once
        self._watch: asyncio.Task[None] | None = None
        self._cleaned = False

    async def start(self) -> None:
        ctx, config, settings, bus = self.ctx, self.config, self.settings, self.bus
        for w in settings.warnings:
            log.warning("room %s: %s", ctx.room.name, w)
        log.info("room %s: %s", ctx.room.name, json.dumps(settings.public_dict()))
        await ctx.connect(auto_subscribe=AutoSubscribe.AUDIO_ONLY)
        room = ctx.room
        sink = self.sink = RoomAudioSink(room, sample_rate=SAMPLE_RATE,
                                         frame_ms=config.tts_frame_ms,
                                         queue_ms=config.audio_queue_ms, bus=bus,
                                         mute_output=config.debug_mute_tts)
        if config.debug_mute_tts:
            log.warning("room %s: AGENT_DEBUG_MUTE_TTS=1: the room hears silence instead of "
                        "the TTS audio (a debug switch; unset it for real use)", ctx.room.name)
        sink.start_forwarding()  # the room watch publishes the voice once a person is in the room
        if self.recorder is not None:
            recorder = self.recorder
            sink.add_frame_tap(recorder.on_frame)

            def save_after_reply(ev: AgentEvent[PlaybackFinished]) -> None:
                asyncio.ensure_future(recorder.save())

            bus.on(PlaybackFinished, save_after_reply)

        stt = OmniSTT(self.client, vad=self.services.vad, mode=config.stt_mode,
                      timeout_s=config.stt_timeout_s, bus=bus,
                      agent_has_floor=lambda: (self.controller is not None
                                               and self.controller.agent_has_floor()))
        llm = OmniLLM(self.client, max_tokens=settings.max_tokens, temperature=settings.temperature,
                      first_token_timeout_s=config.llm_first_token_timeout_s,
                      idle_timeout_s=config.llm_idle_timeout_s,
                      continuation=config.enable_continuation,
                      first_max_tokens=config.llm_first_max_tokens,
                      backend_down_message=config.backend_down_message, bus=bus)
        tts = StreamtalkTTS(self.services.engine, speaker=settings.speaker,
                            language=settings.language, frame_ms=config.tts_frame_ms,
                            scheduler=self.services.scheduler, bus=bus,
                            slow_lane_slack_s=config.slow_lane_slack_s)
        turn_choice = room_turn_detection(config.turn_detection, settings.language,
                                          self.services.turn_model_ready)
        log.info("room %s: end of turn by %s (%s)", ctx.room.name,
                 "VAD + end-of-turn model" if turn_choice.mode == "model" else "VAD alone",
                 turn_choice.reason)
        session = self.session = AgentSession(
            stt=stt, llm=llm, tts=tts, vad=self.services.vad,
            turn_handling=turn_handling(config, turn_choice),  # type: ignore[arg-type]
            user_away_timeout=None,
            # the framework's default AEC warm-up feeds silence to the STT and ignores barge-ins
            # for the first 3 s of every reply; browsers cancel their own echo
            aec_warmup_duration=config.aec_warmup_s or None,
            conn_options=SessionConnectOptions(max_unrecoverable_errors=1_000_000),
        )
        session.output.audio = sink

        async def publish_state(value: str) -> None:
            await room.local_participant.set_attributes({DUPLEX_ATTRIBUTE: value})

        controller = self.controller = DuplexController(
            session, sink=sink, tts=tts, llm=llm, bus=bus, publish_state=publish_state)
        controller.attach()
        self.autortc = AutoRTCResponder(room, bus, trace_id=settings.trace_id,
                                        case_id=settings.case_id, published=sink.published,
                                        trace_id_fixed=settings.trace_id_from_metadata)
        bus.subscribe(BackendStatus(room, session, config.stt_down_message))

        async def publish_latency(payload: str) -> None:
            await room.local_participant.publish_data(payload.encode("utf-8"), reliable=True,
                                                      topic=LATENCY_TOPIC)

        self.latency = LatencyPublisher(publish_latency)
        self.trace.subscribe_points(self.latency)

        async def on_stop_rpc(data: rtc.RpcInvocationData) -> str:
            log.info("stop_reply from %s", data.caller_identity)
            result = await controller.stop(f"stop_reply from {data.caller_identity}")
            return json.dumps(result)

        self.rpc = RoomRpc(room.local_participant)
        self.rpc.register(STOP_RPC, on_stop_rpc)

        def on_error(ev: ErrorEvent) -> None:
            log.error("session error (%s): %s", type(ev.source).__name__, ev.error)

        def on_close(ev: CloseEvent) -> None:
            log.info("room %s: session closed (%s)", room.name, ev.reason)
            self.done.set()

        session.on("error", on_error)
        session.on("close", on_close)
        ConnectionRestartWatch(room, self.leave_room)
        room.on("disconnected", lambda *_: self.done.set())
        for change in ("participant_connected", "participant_disconnected"):
            room.on(change, lambda *_: self._roster_changed.set())

        options: dict[str, Any] = {
            "audio_input": room_io.AudioInputOptions(sample_rate=INPUT_SAMPLE_RATE,
                                                     pre_connect_audio=False),
            "audio_output": False,  # the sink above is the agent's voice
            "text_output": room_io.TextOutputOptions(sync_transcription=True),
            "close_on_disconnect": False,
        }
        if settings.user_identity:
            options["participant_identity"] = settings.user_identity
        found = history_in(room.metadata) if config.history_turns else []
        if found:
            log.info("room %s: picking up the conversation (%d messages in the room's history)",
                     room.name, len(found))
        await session.start(agent=ConversationAgent(omni_stt=stt,
                                                    instructions=settings.system_prompt,
                                                    chat_ctx=chat_context(found)),
                            room=room, room_options=room_io.RoomOptions(**options), record=False)
        if config.history_turns:
            history = self.history = RoomHistory(self.ctx.api, room.name, found,
                                                 config.history_turns, config.history_max_bytes)

            def remember(ev: ConversationItemAddedEvent) -> None:
                if ev.item.type == "message":
                    history.add(ev.item.role, ev.item.text_content or "")

            session.on("conversation_item_added", remember)
        ParticipantLinker(room, session, controller, settings.user_identity)
        if config.greeting and not found:
            session.say(config.greeting)
        self._watch = asyncio.create_task(self._watch_room(), name="streamtalk_room_watch")
        log.info("room %s: agent ready (trace %s)", room.name, settings.trace_id)

    async def _watch_room(self) -> None:
        """Raise the heartbeat attribute every HEARTBEAT_S (the reconciler's sign of life).
        Withdraw the voice track while only agents are in the room (see
        `RoomAudioSink.withdraw`) and publish it again when a person comes. End the job once
        only agents have been in the room for AGENT_EMPTY_ROOM_GRACE_S,
        when another agent of ours serves it too (a re-dispatch that crossed a slow join, or
        an agent whose session LiveKit brought back after a node died: of two, the one that
        joined the room last leaves, the identity breaking a tie), or when the worker drains
        and the room is between turns."""
        room = self.ctx.room
        grace = self.config.empty_room_grace_s
        empty_since: float | None = None
        heartbeat = AttributePublisher(
            lambda value: room.local_participant.set_attributes({HEARTBEAT_ATTRIBUTE: value}),
            HEARTBEAT_ATTRIBUTE)
        beats, next_beat = 0, time.monotonic()
        drain_seen = False
        try:
            while not self.done.is_set():
                if time.monotonic() >= next_beat:
                    beats, next_beat = beats + 1, next_beat + HEARTBEAT_S
                    heartbeat.set(str(beats))
                if self.draining():
                    if self.turns.idle():
                        log.info("room %s: the worker is draining and the room is between turns: "
                                 "leaving it", room.name)
                        await self.leave_room("worker draining")
                        return
                    if not drain_seen:
                        log.info("room %s: the worker is draining; leaving once the turn under way "
                                 "ends (%s)", room.name, self.turns.describe())
                    drain_seen = True
                others = room.remote_participants.values()
                me = seniority(room.local_participant)
                older = sorted(seniority(p) for p in others
                               if p.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT
                               and DUPLEX_ATTRIBUTE in p.attributes and seniority(p) < me)
                if older:
                    log.warning("room %s: agent %s serves it already; leaving", room.name,
                                older[0][1])
                    await self.leave_room("another agent serves the room")
                    return
                humans = people_in(room)
                if humans:
                    if self.sink is not None and await self.sink.publish():
                        log.info("room %s: a person is in the room; voice track published",
                                 room.name)
                    empty_since = None
                elif empty_since is None:
                    empty_since = time.monotonic()
                    if self.sink is not None and await self.sink.withdraw():
                        log.info("room %s: nobody is listening; voice track withdrawn", room.name)
                elif time.monotonic() - empty_since >= grace:
                    log.info("room %s has been empty for %.0f s: ending the job", room.name, grace)
                    self.ctx.shutdown("room empty")
                    return
                woken = [asyncio.ensure_future(e.wait()) for e in (self.done, self._roster_changed)]
                await asyncio.wait(woken, timeout=0.5, return_when=asyncio.FIRST_COMPLETED)
                for waiter in woken:
                    waiter.cancel()
                self._roster_changed.clear()
        finally:
            heartbeat.close()

    async def leave_room(self, reason: str) -> None:
        """End the job and leave the room now. After a shutdown, the session's teardown waits
        up to 2 s for a user transcript before the job leaves the room; meanwhile the room
        would hold this agent beside the one that serves it next."""
        self.ctx.shutdown(reason)
        self.withdraw_rpc()
        await self.ctx.room.disconnect()
        log.info("room %s: left (%s)", self.ctx.room.name, reason)

    def withdraw_rpc(self) -> None:
        """Unregister the room's RPC methods, which must not outlive the room (room_rpc.py)."""
        if self.rpc is not None:
            self.rpc.withdraw()

    async def cleanup(self, reason: str = "") -> None:
        if self._cleaned:
            return
        self._cleaned = True
        log.info("room %s: cleaning up (%s)", self.ctx.room.name, reason or "job end")
        try:
            if self._watch is not None:
                self._watch.cancel()
            if self.controller is not None:
                self.controller.detach()
            if self.autortc is not None:
                self.autortc.close()
            if self.latency is not None:
                self.latency.close()
            if self.history is not None:
                self.history.close()
            if self.session is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self.session.aclose(), 5.0)
            await self.client.aclose()
            if self.sink is not None:
                await self.sink.aclose()
            self.withdraw_rpc()
        except Exception:
            log.exception("room %s: cleanup failed", self.ctx.room.name)
        finally:
            if self.recorder is not None:
                path = await self.recorder.save()
                if path is not None:
                    log.info("pre_rtc audio (%.1f s) saved to %s", self.recorder.seconds, path)
            self.trace.close()
