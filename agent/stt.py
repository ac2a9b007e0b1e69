"""OmniSTT: a LiveKit `stt.STT` that sends each user turn, as a WAV, to the Omni backend.

Two ways to ask (OMNI_STT_MODE):

- `chat` (default, Qwen3-Omni style): `POST /chat/completions` with the turn as
  an `audio_url` part holding a `data:audio/wav;base64,...` URI and an
  instruction to transcribe;
- `transcriptions`: `POST /audio/transcriptions` with the WAV file.

`recognize()` handles one buffer. `stream()` segments the room audio itself
with the local VAD (Silero): at each end of speech it announces `vad_end` on
the event bus, transcribes the utterance in its own task (so the VAD keeps
listening), and emits START_OF_SPEECH / END_OF_SPEECH / FINAL_TRANSCRIPT. While the
agent has the floor, an utterance of backchannel words only gets no transcript
(agent/backchannel.py), so it pauses the reply without ending it.
WAV encoding and base64 run in a worker thread, never on the event loop.

A backend that is down, slow or broken does not kill the stream: the turn
gets no transcript, the failure is logged and announced on the bus
(`backend_down`), and the next turn tries again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass

from livekit import rtc
from livekit.agents import stt, utils, vad
from livekit.agents._exceptions import APIConnectionError, APIStatusError
from livekit.agents.language import LanguageCode
from livekit.agents.types import (
    DEFAULT_API_CONNECT_OPTIONS,
    NOT_GIVEN,
    APIConnectOptions,
    NotGivenOr,
)

from streamtalk_common.audio import wav_bytes

from .backchannel import is_backchannel
from .events import (
    Backchannel,
    BackendDown,
    BackendOk,
    EventBus,
    SttEnd,
    SttResult,
    SttStart,
    VadEnd,
    VadStart,
)
from .omni_client import TRANSCRIBE_PROMPT, BackendError, OmniClient, wav_data_uri

log = logging.getLogger("streamtalk.stt")


class OmniSTT(stt.STT):
    def __init__(
        self,
        client: OmniClient,
        *,
        vad: vad.VAD | None = None,
        mode: str = "chat",
        timeout_s: float = 15.0,
        bus: EventBus | None = None,
        language: str | None = None,
        min_speech_s: float = 0.1,
        agent_has_floor: Callable[[], bool] = lambda: False,
    ) -> None:
        if mode not in ("chat", "transcriptions"):
            raise ValueError(f"STT mode must be chat or transcriptions, got {mode!r}")
        super().__init__(
            capabilities=stt.STTCapabilities(streaming=vad is not None, interim_results=False)
        )
        self._client = client
        self._vad = vad
        self.mode = mode
        self.timeout_s = timeout_s
        self.bus = bus or EventBus()
        self.language = language
        self.min_speech_s = min_speech_s
        self.agent_has_floor = agent_has_floor  # while True, backchannels are not turns
        self._streams: weakref.WeakSet[OmniRecognizeStream] = weakref.WeakSet()

    @property
    def model(self) -> str:
        return f"omni-{self.mode}"

    @property
    def provider(self) -> str:
        return "omni"

    async def transcribe_frame(self, frame: rtc.AudioFrame) -> str:
        """One utterance -> text. Raises BackendError."""
        pcm = bytes(frame.data)
        if self.mode == "chat":
            uri = await asyncio.to_thread(wav_data_uri, pcm, frame.sample_rate, frame.num_channels)
            messages = [
                {"role": "system", "content": TRANSCRIBE_PROMPT},
                {"role": "user", "content": [
                    {"type": "audio_url", "audio_url": {"url": uri}},
                    {"type": "text", "text": "Transcribe this audio."},
                ]},
            ]
            text = await self._client.complete_chat(
                messages, max_tokens=256, temperature=0.0, timeout_s=self.timeout_s
            )
        else:
            wav = await asyncio.to_thread(wav_bytes, pcm, frame.sample_rate, frame.num_channels)
            text = await self._client.transcribe(wav, timeout_s=self.timeout_s,
                                                 language=self.language)
        return " ".join(text.split())

    async def _recognize_impl(
        self,
        buffer: utils.AudioBuffer,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions,
    ) -> stt.SpeechEvent:
        frame = utils.merge_frames(buffer)
        try:
            text = await self.transcribe_frame(frame)
        except BackendError as exc:
            if exc.status is not None:
                raise APIStatusError(str(exc), status_code=exc.status,
                                     retryable=exc.retryable) from exc
            raise APIConnectionError(str(exc), retryable=exc.retryable) from exc
        return _final(text, self.language)

    def stream(
        self,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
    ) -> OmniRecognizeStream:
        if self._vad is None:
            raise RuntimeError("OmniSTT.stream() needs a VAD (OmniSTT(vad=...))")
        stream = OmniRecognizeStream(self, self._vad, conn_options=conn_options)
        self._streams.add(stream)
        return stream

    async def take_unheard(self) -> str:
        """The words of the utterances that ended but are not transcribed yet, awaited and
        taken (they will not come as transcripts of their own): a turn committed before
        the STT had its last utterance gets that utterance's words this way."""
        found = [await s.take_unheard() for s in list(self._streams)]
        return " ".join(t for texts in found for t in texts)


def _final(text: str, language: str | None) -> stt.SpeechEvent:
    return stt.SpeechEvent(
        type=stt.SpeechEventType.FINAL_TRANSCRIPT,
        alternatives=[stt.SpeechData(language=LanguageCode(language or "en"), text=text)],
    )


@dataclass(eq=False)
class _Utterance:
    """One stretch of speech between the VAD's start and end, on its way to words."""

    frame: rtc.AudioFrame
    end_time: float
    words: asyncio.Future[str]  # its transcript ("" when none), once recognised
    claimed: bool = False  # taken into a committed turn: not sent as a transcript


class OmniRecognizeStream(stt.RecognizeStream):
    def __init__(self, omni: OmniSTT, vad_model: vad.VAD, *,
                 conn_options: APIConnectOptions) -> None:
        super().__init__(stt=omni, conn_options=conn_options)
        self._omni = omni
        self._vad_model = vad_model
        self._unheard: list[_Utterance] = []  # ended, transcript not yet sent

    async def take_unheard(self) -> list[str]:
        """The words of every utterance that ended but whose transcript is not out yet,
        awaited (each recognition is bounded by the STT timeout) and kept from being
        sent as transcripts of their own."""
        taken = list(self._unheard)
        for u in taken:
            u.claimed = True
        texts = await asyncio.gather(*(asyncio.shield(u.words) for u in taken))
        return [t for t in texts if t]

    async def _run(self) -> None:
        omni = self._omni
        bus = omni.bus
        vad_stream = self._vad_model.stream()
        utterances: asyncio.Queue[_Utterance | None] = asyncio.Queue()

        async def forward_input() -> None:
            async for item in self._input_ch:
                if isinstance(item, self._FlushSentinel):
                    vad_stream.flush()
                else:
                    vad_stream.push_frame(item)
            vad_stream.end_input()

        async def segment() -> None:
            try:
                async for ev in vad_stream:
                    if ev.type == vad.VADEventType.START_OF_SPEECH:
                        bus.emit(VadStart(speech_s=round(ev.speech_duration, 3),
                                          inference_ms=round(ev.inference_duration * 1000, 3)))
                        self._event_ch.send_nowait(stt.SpeechEvent(stt.SpeechEventType.START_OF_SPEECH))
                    elif ev.type == vad.VADEventType.END_OF_SPEECH:
                        end_time = time.time() - ev.silence_duration - ev.inference_duration
                        bus.emit(VadEnd(speech_s=round(ev.speech_duration, 3),
                                        silence_s=round(ev.silence_duration, 3)))
                        self._event_ch.send_nowait(stt.SpeechEvent(
                            stt.SpeechEventType.END_OF_SPEECH, speech_end_time=end_time))
                        if ev.frames:
                            u = _Utterance(utils.merge_frames(ev.frames), end_time,
                                           asyncio.get_running_loop().create_future())
                            self._unheard.append(u)
                            utterances.put_nowait(u)
            finally:
                utterances.put_nowait(None)

        async def words_of(u: _Utterance) -> str:
            duration = u.frame.samples_per_channel / max(u.frame.sample_rate, 1)
            if duration < omni.min_speech_s:
                return ""
            bus.emit(SttStart(audio_s=round(duration, 3)))
            t0 = time.monotonic()
            try:
                text = await omni.transcribe_frame(u.frame)
            except BackendError as exc:
                log.error("speech recognition failed, this turn has no transcript: %s", exc)
                bus.emit(SttEnd(ok=False))
                bus.emit(BackendDown(component="stt", detail=str(exc)))
                return ""
            except Exception:
                log.exception("speech recognition crashed; this turn has no transcript")
                bus.emit(SttEnd(ok=False))
                return ""
            bus.emit(SttEnd(ok=True))
            bus.emit(SttResult(text=text, ms=round((time.monotonic() - t0) * 1000, 1),
                               audio_s=round(duration, 3)))
            bus.emit(BackendOk(component="stt"))
            if not text:
                log.info("turn of %.2f s had no words", duration)
            elif omni.agent_has_floor() and is_backchannel(text):
                log.info("backchannel %r while the agent speaks: not a turn", text)
                bus.emit(Backchannel(text=text))
                return ""
            return text

        async def recognize() -> None:
            while (u := await utterances.get()) is not None:
                text = ""  # the stream closes mid-recognition: nobody waits for these words
                try:
                    text = await words_of(u)
                finally:
                    u.words.set_result(text)
                    self._unheard.remove(u)
                if text and not u.claimed:
                    ev = _final(text, omni.language)
                    ev.speech_end_time = u.end_time
                    self._event_ch.send_nowait(ev)

        tasks = [
            asyncio.create_task(forward_input(), name="omni_stt_input"),
            asyncio.create_task(segment(), name="omni_stt_vad"),
            asyncio.create_task(recognize(), name="omni_stt_recognize"),
        ]
        try:
            await asyncio.gather(*tasks)
        finally:
            await utils.aio.cancel_and_wait(*tasks)
            with contextlib.suppress(Exception):
                await vad_stream.aclose()
