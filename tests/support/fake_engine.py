"""The TTS engine as the agent sees it (agent/tts.py, agent/load.py), without a model.

`FakeEngine` takes requests and opens streams as `tts_engine.TTSEngine` does, through the
engine's own `StreamSession` and `StreamHandle`: the agent reads real `PCMPacket`s with
real metrics, waits for admission, cancels. Only the generation is fake: each reply is a
tone whose pitch follows its text, `frames_per_char` codec frames (80 ms each) per
character, a packet every `packet_interval_s`; `audio(text)` is the PCM a whole reply
carries, so a test can compare what reached the room with what the engine made. It keeps
what it was asked: `requests` and `handles`.
"""

from __future__ import annotations

import asyncio
import contextlib
import zlib

import numpy as np

from tts_engine.errors import (
    InvalidText,
    OverCapacity,
    UnknownLanguage,
    UnknownSpeaker,
)
from tts_engine.model.configs import LANGUAGES, SPEAKERS
from tts_engine.runtime.session import _DONE, StreamHandle, StreamSession
from tts_engine.sampling import SamplingParams
from tts_engine.synthesis import SAMPLE_RATE, Request

FRAME_SAMPLES = SAMPLE_RATE * 2 // 25  # one 12.5 Hz codec frame: 1920 samples, 80 ms
AMPLITUDE = 0.25


class FakeEngine:
    def __init__(self, *, frames_per_char: float = 0.5, packet_interval_s: float = 0.0,
                 capacity: int = 8, packet_tokens: int = 2, first_packet_tokens: int = 1) -> None:
        self.frames_per_char = frames_per_char
        self.packet_interval_s = packet_interval_s
        self.packet_tokens = packet_tokens
        self.first_packet_tokens = first_packet_tokens
        self._capacity = capacity
        self.requests: list[Request] = []
        self.handles: list[StreamHandle] = []
        self._wakeups: dict[StreamSession, asyncio.Event] = {}

    # -- what the agent reads ------------------------------------------------------------

    @property
    def speakers(self) -> list[str]:
        return sorted(SPEAKERS)  # the voices of the preset checkpoints (tiny included)

    @property
    def languages(self) -> list[str]:
        return ["auto", *sorted(lang for lang in LANGUAGES if "dialect" not in lang)]

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def active_sessions(self) -> int:
        return sum(not h.session.finished for h in self.handles)

    @property
    def cancelled_streams(self) -> int:
        return sum(h.session.cancelled.is_set() for h in self.handles)

    def make_request(self, text: str, speaker: str, language: str | None = "auto",
                     sample: bool | None = None, seed: int | None = None) -> Request:
        if not isinstance(text, str) or not text.strip():
            raise InvalidText("text is empty; send at least one non-space character")
        name = (speaker or "").strip().lower()
        if name not in self.speakers:
            raise UnknownSpeaker(f"unknown speaker {speaker!r}; valid speakers: "
                                 f"{', '.join(self.speakers)}",
                                 self.speakers)
        lang = (language or "auto").strip().lower()
        if lang not in self.languages:
            raise UnknownLanguage(f"unknown language {language!r}; valid languages: "
                                  f"{', '.join(self.languages)}",
                                  self.languages)
        params = SamplingParams.sampled() if sample else SamplingParams()
        return Request(text=text, speaker=name, language=lang, params=params, seed=seed)

    def open_stream(self, request: Request, packet_tokens: int | None = None,
                    request_id: str | None = None) -> StreamHandle:
        if self.active_sessions >= self._capacity:
            raise OverCapacity(f"{self.active_sessions} streams already run; retry in 1 s", 1.0)
        items: asyncio.Queue = asyncio.Queue()
        session = StreamSession(request, packet_tokens or self.packet_tokens,
                                self.first_packet_tokens, items.put_nowait, request_id)
        handle = StreamHandle(self, session, items)  # type: ignore[arg-type]
        self.requests.append(request)
        self.handles.append(handle)
        self._wakeups[session] = asyncio.Event()
        asyncio.get_running_loop().create_task(self._generate(session),
                                               name=f"fake_engine_{session.id}")
        return handle

    def wake(self) -> None:
        """A handle was cancelled: its stream stops without waiting for its next packet."""
        for session, event in self._wakeups.items():
            if session.cancelled.is_set():
                event.set()

    # -- the fake generation ---------------------------------------------------------------

    def frames(self, text: str) -> int:
        return max(1, round(len(text) * self.frames_per_char))

    def audio(self, text: str, frames: int | None = None) -> np.ndarray:
        """The PCM (float32, 24 kHz) of the first `frames` frames of the reply to `text`
        (all of them by default)."""
        n = self.frames(text) if frames is None else frames
        hz = 100 + zlib.crc32(text.encode()) % 400
        t = np.arange(n * FRAME_SAMPLES) / SAMPLE_RATE
        return (AMPLITUDE * np.sin(2 * np.pi * hz * t)).astype(np.float32)

    async def _generate(self, s: StreamSession) -> None:
        total = self.frames(s.request.text)
        if s.request.max_frames is not None:
            total = min(total, s.request.max_frames)
        pcm = self.audio(s.request.text, total)
        s.on_admitted(None)
        done = 0
        wakeup = self._wakeups[s]
        while done < total and not s.cancelled.is_set():
            for _ in range(min(s.next_packet_frames, total - done)):
                s.add_frame(np.zeros(16, dtype=np.int64),
                            pcm[done * FRAME_SAMPLES:(done + 1) * FRAME_SAMPLES], 0.0, 0.0)
                done += 1
            s.emit(s.take_packet(packet_metrics=False))
            if self.packet_interval_s:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wakeup.wait(), self.packet_interval_s)
            else:
                await asyncio.sleep(0)
        del self._wakeups[s]
        s.finished = True
        s.close_metrics("cancelled" if s.cancelled.is_set() else "eos")
        s.on_closed()  # before the end of stream, as the engine does
        s.emit(_DONE)
