"""End of turn: Silero VAD plus LiveKit's local end-of-turn model, or VAD alone.

`AGENT_TURN_DETECTION=model` (the default): when the VAD has heard 200 ms of
silence, the end-of-turn model (`turn-detector-v1-mini`, embedded in the
`livekit-local-inference` wheel, run in-process on the CPU) scores the last
1.2 s of the user's audio. A score at or above the language's threshold ends
the turn after `MIN_ENDPOINTING`; below it (the user is mid-thought) the agent
waits up to `MAX_ENDPOINTING` for more speech. Endpointing is dynamic: the
short delay learns from this user's own pauses, between the two bounds.
`AGENT_TURN_DETECTION=vad`: the turn ends `MIN_ENDPOINTING` after the VAD's end
of speech, as before the model existed.

The model is loaded once per worker process (`load_turn_model`, called with
the other shared services); each room's `TurnDetector` is a small object over
that one native model. Nothing here reaches LiveKit Cloud: the version is pinned
to `v1-mini` (left unset, dev mode picks the cloud `v1`), and interruption stays
in `vad` mode (`adaptive` is a cloud model).

A room falls back to VAD alone, with a log line that says why, when the model
did not load or when the room's language is one the model has no threshold for
(`room_turn_detection`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from livekit.agents.inference.eot.base import MIN_SILENCE_DURATION_MS
from livekit.agents.inference.eot.languages import LOCAL_LANGUAGES
from livekit.agents.language import LanguageCode

if TYPE_CHECKING:
    from .config import AgentConfig

log = logging.getLogger("streamtalk.agent")

TURN_DETECTION_MODES = ("model", "vad")
# the framework refuses a VAD that calls the end of speech sooner than the model's first look
# (200 ms of silence) plus 50 ms (livekit/agents/voice/audio_recognition.py)
MODEL_MIN_VAD_SILENCE_MS = MIN_SILENCE_DURATION_MS + 50
# the languages the local model is calibrated for (one end-of-turn threshold each)
MODEL_LANGUAGES = frozenset(LOCAL_LANGUAGES)


def model_language(language: str) -> str | None:
    """The ISO 639-1 code of a TTS language name ("english" -> "en"); None for `auto`."""
    code = LanguageCode(language).language
    return None if code in ("auto", "") else code


def load_turn_model() -> float | None:
    """Load the end-of-turn model into this process (idempotent); the seconds it took, or
    None when it cannot run here, which is logged once: every room then uses VAD alone."""
    t0 = time.monotonic()
    try:
        from livekit.local_inference import init_eot

        init_eot()
    except Exception as exc:  # a missing wheel, an unsupported CPU, a broken model file
        log.error("the end-of-turn model (livekit-local-inference, turn-detector-v1-mini) did not "
                  "load: %s; every room ends turns on VAD silence alone, as with "
                  "AGENT_TURN_DETECTION=vad", exc)
        return None
    return time.monotonic() - t0


@dataclass(frozen=True)
class TurnChoice:
    """How one room ends turns, and why (for its log line)."""

    mode: str  # "model" | "vad"
    reason: str


def room_turn_detection(configured: str, language: str, model_ready: bool) -> TurnChoice:
    """The turn detection of a room whose TTS language is `language` (a name or `auto`)."""
    if configured == "vad":
        return TurnChoice("vad", "AGENT_TURN_DETECTION=vad")
    if not model_ready:
        return TurnChoice("vad", "the end-of-turn model is not loaded in this worker")
    code = model_language(language)
    if code is not None and code not in MODEL_LANGUAGES:
        return TurnChoice("vad", f"the end-of-turn model does not cover {language!r} ({code}); "
                                 f"it covers {', '.join(sorted(MODEL_LANGUAGES))}")
    return TurnChoice("model", f"language {language!r}")


def turn_handling(config: AgentConfig, choice: TurnChoice) -> dict[str, Any]:
    """The session's `turn_handling` options. Local only: left unset, dev mode would pick
    LiveKit Cloud models (the v1 turn detector, adaptive interruption)."""
    if choice.mode == "model":
        from livekit.agents.inference import TurnDetector

        detection: Any = TurnDetector(version="v1-mini")
        endpointing_mode = "dynamic"
    else:
        detection, endpointing_mode = "vad", "fixed"
    return {
        "turn_detection": detection,
        "endpointing": {"mode": endpointing_mode, "min_delay": config.min_endpointing_s,
                        "max_delay": config.max_endpointing_s},
        "interruption": {
            "enabled": True,
            "mode": "vad",
            "min_duration": config.min_interruption_s,
            "min_words": config.min_interruption_words,
            "resume_false_interruption": True,
            "false_interruption_timeout": config.false_interruption_timeout_s,
            "discard_audio_if_uninterruptible": True,
        },
        "preemptive_generation": {"enabled": False},
    }
