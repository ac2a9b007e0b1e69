"""The voice agent's real worker as a subprocess, and call bots (the fixtures built on
them, `agent_worker` and `start_agent_worker`, are in tests/integration/conftest.py).

- `start_agent_worker_process`: `python -m agent start` against a LiveKit server and an
  Omni backend, with a TTS checkpoint on CPU; its traces and pre_rtc files go to an
  output folder of the caller's.
- `CallBot`: a participant built on the real `livekit.rtc` SDK that joins a room
  with a token dispatching the agent, speaks WAV files into its microphone,
  records the agent's audio with arrival times, and collects transcripts,
  `autortc.agent` data packets and the agent's attributes. `ProbeBot` is the
  AutoRTC probe: it only listens and sends `probe_ready` on the first frame.

Every wait has a timeout; the worker runs in its own process group and is
killed if it does not stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
from livekit import api, rtc

from streamtalk_common import stack
from streamtalk_common.audio import read_wav
from streamtalk_common.net import free_port
from streamtalk_common.room_protocol import HEARTBEAT_ATTRIBUTE, STALE_AFTER_S, dispatch_attribute
from streamtalk_common.stack import ServiceProcess
from support.infra import LOG_DIR, LiveKitServer

FRAME_MS = 10
TWIN_TOLERANCE_S = 1.5  # the agent's twin check runs every 0.5 s, then the later agent leaves
JOIN_CLOCK_SLACK_MS = 100  # LiveKit's join times (same host) against ours


# --------------------------------------------------------------------------- worker


@dataclass
class AgentWorker:
    agent_name: str
    output_dir: Path
    http_port: int
    process: ServiceProcess
    env: dict[str, str]

    def log_text(self) -> str:
        return self.process.log_text()

    def trace(self, room: str) -> list[dict[str, Any]]:
        path = self.output_dir / "traces" / f"{room}.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def metrics(self, room: str) -> list[dict[str, Any]]:
        path = self.output_dir / "traces" / f"{room}.metrics.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    async def wait_trace(self, room: str, turn: int, points: list[str],
                         timeout_s: float = 30.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout_s
        while True:
            events = self.trace(room)
            have = {e["point"] for e in events if e["turn"] == turn}
            if set(points) <= have or time.monotonic() > deadline:
                return events
            await asyncio.sleep(0.2)

    def alive(self) -> bool:
        return self.process.alive()


def start_agent_worker_process(
    livekit: LiveKitServer,
    omni_base_url: str,
    omni_model: str,
    model_dir: Path,
    output_dir: Path,
    command: str = "start",
    **env_extra: str,
) -> AgentWorker:
    """`python -m agent <command>` (start or dev) with the test stack's settings and `env_extra`."""
    agent_name = env_extra.pop("LIVEKIT_AGENT_NAME", f"streamtalk-test-{secrets.token_hex(3)}")
    http_port = free_port()
    name = env_extra.pop("AGENT_WORKER_NAME", f"agent-{http_port}")
    settings = {
        "LIVEKIT_API_KEY": livekit.api_key, "LIVEKIT_API_SECRET": livekit.api_secret,
        "LIVEKIT_AGENT_NAME": agent_name, "OMNI_BASE_URL": omni_base_url, "OMNI_MODEL": omni_model,
        "TTS_DEEP_STREAM_MODEL_DIR": str(model_dir), "TTS_DEEP_STREAM_DEVICE": "cpu",
        "STREAMTALK_OUTPUT": str(output_dir), "AGENT_TORCH_THREADS": "1",
        "AGENT_EMPTY_ROOM_GRACE_S": "3", "OMP_NUM_THREADS": "1", **env_extra,
    }
    service = stack.agent_worker(name, http_port=http_port, metrics_port=free_port(),
                                 livekit_url=livekit.url, command=command, log_level="INFO",
                                 **settings)
    proc = ServiceProcess(service, LOG_DIR / f"agent-{agent_name}-{http_port}.log").wait_healthy()
    return AgentWorker(agent_name, output_dir, http_port, proc, proc.env)


def dispatch_token(livekit: LiveKitServer, room: str, identity: str, agent_name: str,
                   metadata: dict[str, Any] | None = None) -> str:
    """A join token that also dispatches the agent into the room (as the token server does)."""
    grants = api.VideoGrants(room_join=True, room=room, can_publish=True, can_subscribe=True,
                             can_publish_data=True)
    return (
        api.AccessToken(livekit.api_key, livekit.api_secret)
        .with_identity(identity)
        .with_name(identity)
        .with_ttl(timedelta(minutes=10))
        .with_grants(grants)
        .with_room_config(api.RoomConfiguration(agents=[
            api.RoomAgentDispatch(agent_name=agent_name, metadata=json.dumps(metadata or {}))
        ]))
        .with_attributes(dispatch_attribute(agent_name, json.dumps(metadata or {})))
        .to_jwt()
    )


def unique_room(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def two_agents_seen(lk: LiveKitServer, room: str, seconds: float,
                          tolerance_s: float = TWIN_TOLERANCE_S, until: asyncio.Event | None = None,
                          live_only: bool = False) -> bool:
    """Watch the room for `seconds` (or until `until` is set): did it hold two agent
    participants for longer than `tolerance_s`? (Two can meet for a moment, when LiveKit's
    own dispatch and an old agent's rejoin cross after a restart; the later one sees the
    other and leaves.) With `live_only`, only live agents count: one whose heartbeat
    attribute moved within STALE_AFTER_S (a newcomer from its first move, HEARTBEAT_S after
    it joined at most), or one without a heartbeat that joined during the watch (by
    LiveKit's join time). After a node died, LiveKit lists the dead session's agent, its
    heartbeat frozen, in the room it moved for a few seconds, and its join time may be
    later than the watch's start; the reconciler does not count it either."""
    twins_since = None
    beats: dict[str, tuple[str | None, float, bool]] = {}  # identity: heartbeat, since, seen alive
    watch_began_ms = time.time() * 1000 - JOIN_CLOCK_SLACK_MS
    async with api.LiveKitAPI(lk.url, lk.api_key, lk.api_secret) as lkapi:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not (until is not None and until.is_set()):
            try:
                people = (await lkapi.room.list_participants(
                    api.ListParticipantsRequest(room=room))).participants
            except api.TwirpError:  # the room is not there (yet)
                people = []
            now = time.monotonic()
            agents = 0
            for p in people:
                if p.kind != api.ParticipantInfo.Kind.AGENT:
                    continue
                beat = p.attributes.get(HEARTBEAT_ATTRIBUTE)
                known = beats.get(p.identity)
                if known is None:  # alive once its heartbeat moves (none: if it is new)
                    beats[p.identity] = (beat, now,
                                         beat is None and p.joined_at_ms >= watch_began_ms)
                elif known[0] != beat:
                    beats[p.identity] = (beat, now, True)
                _, since, seen_alive = beats[p.identity]
                live = seen_alive and (beat is None or now - since <= STALE_AFTER_S)
                agents += live or not live_only
            if agents < 2:
                twins_since = None
            elif twins_since is None:
                twins_since = now
            elif now - twins_since >= tolerance_s:
                return True
            await asyncio.sleep(0.25)
    return False


# --------------------------------------------------------------------------- bots


@dataclass
class HeardFrame:
    t: float  # monotonic arrival time
    rms: float  # float scale (0..1)
    samples: np.ndarray


@dataclass
class CallLog:
    frames: list[HeardFrame] = field(default_factory=list)
    transcripts: list[tuple[str, dict[str, str], str]] = field(default_factory=list)
    data: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    attributes: list[tuple[float, dict[str, str]]] = field(default_factory=list)


class CallBot:
    """A room participant: speaks WAVs, records the agent, collects what the agent publishes."""

    def __init__(self, url: str, token: str, *, publish_mic: bool = True,
                 sample_rate: int = 48000) -> None:
        self.url = url
        self.token = token
        self.room = rtc.Room()
        self.log = CallLog()
        self.sample_rate = sample_rate
        self._publish_mic = publish_mic
        self.source: rtc.AudioSource | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.agent_identity: str | None = None
        self.first_frame = asyncio.Event()

    async def start(self, timeout_s: float = 20.0) -> None:
        self.room.on("track_subscribed", self._on_track)
        self.room.on("data_received", self._on_data)
        self.room.on("participant_attributes_changed", self._on_attrs)
        self.room.register_text_stream_handler("lk.transcription", self._on_text)
        await asyncio.wait_for(self.room.connect(self.url, self.token), timeout_s)
        if self._publish_mic:
            self.source = rtc.AudioSource(self.sample_rate, 1, queue_size_ms=200)
            track = rtc.LocalAudioTrack.create_audio_track("mic", self.source)
            await self.room.local_participant.publish_track(
                track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE))

    async def aclose(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        for t in list(self._tasks):
            with contextlib.suppress(BaseException):
                await t
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.room.disconnect(), 10)
        if self.source is not None:
            with contextlib.suppress(Exception):
                await self.source.aclose()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_track(self, track: rtc.Track, _pub: Any, participant: rtc.RemoteParticipant) -> None:
        if (track.kind == rtc.TrackKind.KIND_AUDIO
                and participant.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT):
            self.agent_identity = participant.identity
            self._spawn(self._record(track))

    async def _record(self, track: rtc.Track) -> None:
        stream = rtc.AudioStream(track, sample_rate=48000, num_channels=1)
        try:
            async for ev in stream:
                x = np.frombuffer(ev.frame.data, dtype=np.int16).astype(np.float32) / 32768.0
                rms = float(np.sqrt(np.mean(x * x))) if x.size else 0.0
                self.log.frames.append(HeardFrame(time.monotonic(), rms, x))
                if not self.first_frame.is_set():
                    self.first_frame.set()
                    await self.on_first_frame()
        finally:
            await stream.aclose()

    async def on_first_frame(self) -> None:
        return None

    def _on_data(self, packet: rtc.DataPacket) -> None:
        try:
            msg = json.loads(packet.data.decode())
        except (UnicodeDecodeError, json.JSONDecodeError):
            return
        if packet.topic == "autortc.agent" and isinstance(msg, dict):
            self.log.data.append((time.monotonic(), msg))

    def _on_attrs(self, changed: dict[str, str], participant: rtc.Participant) -> None:
        self.log.attributes.append((time.monotonic(), dict(participant.attributes)))

    def _on_text(self, reader: rtc.TextStreamReader, identity: str) -> None:
        async def read() -> None:
            text = await reader.read_all()
            self.log.transcripts.append((identity, dict(reader.info.attributes or {}), text))
        self._spawn(read())

    # -- speaking -----------------------------------------------------------------------

    async def say(self, wav: Path, stop: asyncio.Event | None = None) -> tuple[float, float]:
        """Play a WAV into the microphone in real time; returns (start, end) monotonic times."""
        assert self.source is not None, "this bot has no microphone"
        pcm, rate = read_wav(wav)
        if rate != self.sample_rate:
            raise ValueError(f"WAV rate {rate} != bot rate {self.sample_rate}")
        n = rate * FRAME_MS // 1000
        t0 = time.monotonic()
        for start in range(0, len(pcm), n):
            if stop is not None and stop.is_set():
                break
            chunk = pcm[start:start + n]
            if len(chunk) < n:
                chunk = np.pad(chunk, (0, n - len(chunk)))
            await self.source.capture_frame(rtc.AudioFrame(chunk.tobytes(), rate, 1, n))
        await self.source.wait_for_playout()
        return t0, time.monotonic()

    async def silence(self, seconds: float) -> None:
        """Keep the microphone track alive with silence (a real mic never stops sending)."""
        assert self.source is not None
        n = self.sample_rate * FRAME_MS // 1000
        zeros = np.zeros(n, dtype=np.int16).tobytes()
        for _ in range(int(seconds * 1000 / FRAME_MS)):
            await self.source.capture_frame(rtc.AudioFrame(zeros, self.sample_rate, 1, n))

    # -- what was heard ---------------------------------------------------------------------

    def loud_times(self, threshold: float = 0.01, since: float = 0.0) -> list[float]:
        return [f.t for f in self.log.frames if f.t >= since and f.rms > threshold]

    def reply_rms(self, since: float = 0.0, threshold: float = 0.01) -> float:
        loud = [f.samples for f in self.log.frames if f.t >= since and f.rms > threshold / 4]
        if not loud:
            return 0.0
        x = np.concatenate(loud)
        return float(np.sqrt(np.mean(x * x)))

    async def wait_for(self, predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")
            await asyncio.sleep(0.05)

    def duplex_states(self) -> list[str]:
        out: list[str] = []
        for _, attrs in self.log.attributes:
            v = attrs.get("streamtalk.duplex")
            if v and (not out or out[-1] != v):
                out.append(v)
        return out

    def attribute(self, name: str) -> str | None:
        if self.agent_identity and self.agent_identity in self.room.remote_participants:
            return self.room.remote_participants[self.agent_identity].attributes.get(name)
        for p in self.room.remote_participants.values():
            if name in p.attributes:
                return p.attributes[name]
        return None


class ProbeBot(CallBot):
    """The AutoRTC probe: listens only; sends `probe_ready` when it hears the agent's track."""

    def __init__(self, url: str, token: str, *, trace_id: str, case_id: str) -> None:
        super().__init__(url, token, publish_mic=False)
        self.trace_id = trace_id
        self.case_id = case_id

    async def on_first_frame(self) -> None:
        msg = {"type": "probe_ready", "trace_id": self.trace_id, "case_id": self.case_id,
               "reply_seq": 0, "t_wall_ms": time.time() * 1000}
        await self.room.local_participant.publish_data(json.dumps(msg).encode(), reliable=True,
                                                       topic="autortc.probe")


def env_flag(name: str) -> bool:
    return os.environ.get(name, "") in ("1", "true", "yes")
