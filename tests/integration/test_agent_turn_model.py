"""The real local end-of-turn model (agent/turn_detection.py) on espeak-ng speech; the knobs
and the session options: unit/test_agent_turn_detection.py."""

from __future__ import annotations

import asyncio

import pytest
from livekit import rtc
from livekit.agents.inference import TurnDetector
from livekit.agents.language import LanguageCode

from agent.turn_detection import load_turn_model
from streamtalk_common.audio import read_wav

pytestmark = pytest.mark.timeout(60)


async def _end_of_turn_probability(wav_path: object) -> float:
    """What the session's detector says 200 ms into the silence after an utterance."""
    pcm, rate = read_wav(wav_path)
    stream = TurnDetector(version="v1-mini").stream()
    try:
        step = rate // 100  # 10 ms frames, as the room delivers them
        for i in range(0, len(pcm), step):
            frame = pcm[i:i + step]
            stream.push_audio(rtc.AudioFrame(frame.tobytes(), rate, 1, len(frame)))
        await asyncio.sleep(0.1)  # the stream's task moves the frames into the model's buffer
        event = await asyncio.wait_for(stream.predict(), 10)
    finally:
        await stream.aclose()
    return event.end_of_turn_probability


async def test_the_local_model_tells_a_finished_turn_from_an_unfinished_one(
    make_speech_wav,  # noqa: ANN001
) -> None:
    # espeak-ng's flat voice gives the model little prosody: this pair stays on its side of the
    # threshold for any silence of 180-320 ms after it (0.42-0.73 against 0.19-0.28), while
    # many other sentences land near the threshold and flip with 10 ms more or less silence
    assert load_turn_model() is not None
    threshold = await TurnDetector(version="v1-mini").unlikely_threshold(LanguageCode("en"))
    assert threshold is not None
    done = await _end_of_turn_probability(make_speech_wav("Thank you.", tail_silence_s=0.2,
                                                          sample_rate=16000))
    mid = await _end_of_turn_probability(make_speech_wav("Thank you, and", tail_silence_s=0.2,
                                                         sample_rate=16000))
    # at or above the threshold the agent answers after MIN_ENDPOINTING; below, it waits
    assert done >= threshold > mid, (done, threshold, mid)
