"""End of turn (agent/turn_detection.py): the knobs, each room's choice between VAD + model
and VAD alone, and the session options built from it. The real local end-of-turn model:
integration/test_agent_turn_model.py."""

from __future__ import annotations

import pytest
from livekit.agents.inference import TurnDetector

from agent.config import AgentConfig, AgentConfigError
from agent.turn_detection import (
    MODEL_LANGUAGES,
    TurnChoice,
    load_turn_model,
    model_language,
    room_turn_detection,
    turn_handling,
)

pytestmark = pytest.mark.timeout(60)

# the TTS engine's languages (README); all but Russian have a threshold in the local model
TTS_LANGUAGES = ["chinese", "english", "french", "german", "italian", "japanese", "korean",
                 "portuguese", "russian", "spanish"]


# --------------------------------------------------------------------------- knobs


def test_model_is_the_default_and_vad_alone_keeps_its_quicker_vad() -> None:
    model = AgentConfig.from_env({})
    assert (model.turn_detection, model.vad_silence_ms) == ("model", 250)
    vad = AgentConfig.from_env({"AGENT_TURN_DETECTION": "VAD"})
    assert (vad.turn_detection, vad.vad_silence_ms) == ("vad", 200)
    assert AgentConfig.from_env({"AGENT_TURN_DETECTION": "vad",
                                 "VAD_SILENCE_MS": "100"}).vad_silence_ms == 100


@pytest.mark.parametrize("env,words", [
    ({"AGENT_TURN_DETECTION": "smart"}, "valid: model, vad"),
    ({"VAD_SILENCE_MS": "200"}, "below the 250 ms the end-of-turn model needs"),
    ({"AGENT_MIN_INTERRUPTION_WORDS": "-1"}, "out of range [0, 10]"),
    ({"AGENT_MIN_INTERRUPTION_WORDS": "one"}, "not an integer"),
])
def test_bad_turn_knobs_say_what_is_valid(env: dict[str, str], words: str) -> None:
    with pytest.raises(AgentConfigError, match=words.replace("[", r"\[").replace("]", r"\]")):
        AgentConfig.from_env(env)


# --------------------------------------------------------------------------- each room's choice


@pytest.mark.parametrize("language", TTS_LANGUAGES)
def test_covered_languages_use_the_model_and_the_others_vad_alone(language: str) -> None:
    choice = room_turn_detection("model", language, model_ready=True)
    if language == "russian":
        assert choice.mode == "vad"
        assert "does not cover 'russian' (ru)" in choice.reason and "en, es" in choice.reason
    else:
        assert choice == TurnChoice("model", f"language {language!r}")
        assert model_language(language) in MODEL_LANGUAGES


def test_auto_language_uses_the_model() -> None:
    assert model_language("auto") is None
    assert room_turn_detection("model", "auto", model_ready=True).mode == "model"


def test_the_knob_and_a_missing_model_fall_back_to_vad_alone() -> None:
    assert (room_turn_detection("vad", "english", model_ready=True)
            == TurnChoice("vad", "AGENT_TURN_DETECTION=vad"))
    missing = room_turn_detection("model", "english", model_ready=False)
    assert missing.mode == "vad" and "not loaded" in missing.reason


def test_a_model_that_cannot_load_is_logged_not_raised(monkeypatch: pytest.MonkeyPatch,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    import livekit.local_inference

    def broken() -> None:
        raise OSError("model file unreadable")

    monkeypatch.setattr(livekit.local_inference, "init_eot", broken)
    assert load_turn_model() is None
    assert "did not load: model file unreadable" in caplog.text
    assert "VAD silence alone" in caplog.text


# --------------------------------------------------------------------------- session options


def test_model_rooms_get_the_local_detector_and_dynamic_endpointing() -> None:
    config = AgentConfig.from_env({"MIN_ENDPOINTING": "0.4", "MAX_ENDPOINTING": "2.5",
                                   "AGENT_MIN_INTERRUPTION_WORDS": "1"})
    options = turn_handling(config, TurnChoice("model", "test"))
    detector = options["turn_detection"]
    assert isinstance(detector, TurnDetector)
    assert detector.model == "turn-detector-v1-mini"  # local, never the cloud v1
    assert options["endpointing"] == {"mode": "dynamic", "min_delay": 0.4, "max_delay": 2.5}
    interruption = options["interruption"]
    assert interruption["mode"] == "vad"  # "adaptive" would call LiveKit Cloud
    assert (interruption["min_duration"], interruption["min_words"]) == (0.06, 1)
    assert interruption["resume_false_interruption"] is True
    assert options["preemptive_generation"] == {"enabled": False}


def test_vad_rooms_end_turns_on_a_fixed_delay() -> None:
    options = turn_handling(AgentConfig.from_env({}), TurnChoice("vad", "test"))
    assert options["turn_detection"] == "vad"
    assert options["endpointing"] == {"mode": "fixed", "min_delay": 0.3, "max_delay": 1.2}
    assert options["interruption"]["min_words"] == 0
