"""Text made speakable before TTS, and the per-room settings from dispatch metadata."""

from __future__ import annotations

import json
import logging

import pytest

from agent.config import RENAMED_KNOBS, AgentConfig, AgentConfigError, RoomSettings
from agent.text_clean import clean_for_speech

SPEAKERS = ["aiden", "ryan", "serena", "vivian"]
LANGUAGES = ["auto", "chinese", "english"]


@pytest.mark.parametrize("raw,spoken", [
    ("**Hello** there!", "Hello there!"),
    ("# Title\n- item one\n- item _two_\n1. first", "Title item one item two first"),
    ("Use `pip install x` now.", "Use pip install x now."),
    ("```python\nprint(1)\n```\nDone.", "Done."),
    ("[the docs](http://x.org/y) and ![a chart](c.png)", "the docs and a chart"),
    ("See https://www.example.com/a?b=1.", "See example dot com."),
    ("Great job 🎉🎉!", "Great job!"),
    ("你好😀，世界！", "你好，世界！"),
    ("> quoted words", "quoted words"),
    ("| a | b |\n|---|---|\n| 1 | 2 |", "a b 1 2"),
    ("Tom & Jerry", "Tom and Jerry"),
    ("~~old~~ new", "old new"),
    ("**bold", "bold"),  # half of a markup pair, as a segment boundary leaves it
    ("text**", "text"),
])
def test_markup_emoji_and_links_are_removed(raw: str, spoken: str) -> None:
    assert clean_for_speech(raw) == spoken


@pytest.mark.parametrize("raw,spoken", [
    ("It costs 12,500 yen.", "It costs 12500 yen."),
    ("Pi is 3.14159, almost.", "Pi is 3.14159, almost."),
    ("Meet at 10:30, 50% chance.", "Meet at 10:30, 50% chance."),
    ("1. First step costs $20.", "First step costs $20."),
    ("In 2024 we grew 3.5x.", "In 2024 we grew 3.5x."),
])
def test_numbers_stay_readable(raw: str, spoken: str) -> None:
    assert clean_for_speech(raw) == spoken


@pytest.mark.parametrize("raw", ["", "   ", "🎉🎉", "***", "```code only```", "---", "..."])
def test_nothing_speakable_gives_empty(raw: str) -> None:
    assert clean_for_speech(raw) == ""


def test_snake_case_is_not_mistaken_for_emphasis() -> None:
    assert clean_for_speech("call var_name now") == "call var name now"


# --------------------------------------------------------------------------- settings


def test_config_defaults_are_the_seed_values() -> None:
    c = AgentConfig.from_env({})
    assert (c.agent_name, c.omni_base_url, c.omni_api_key) == (
        "streamtalk", "http://127.0.0.1:8000/v1", "EMPTY")
    assert (c.llm_max_tokens, c.llm_temperature, c.enable_continuation) == (150, 0.3, True)
    assert (c.tts_speaker, c.tts_language, c.tts_frame_ms) == ("serena", "auto", 20)
    assert (c.turn_detection, c.vad_silence_ms, c.min_endpointing_s) == ("model", 250, 0.3)
    assert (c.min_interruption_s, c.min_interruption_words) == (0.06, 0)
    assert c.aec_warmup_s == 0.0


def test_config_reads_env_and_rejects_bad_values() -> None:
    c = AgentConfig.from_env({"LIVEKIT_AGENT_NAME": "other", "OMNI_BASE_URL": "http://h:1/v1/",
                              "LLM_MAX_TOKENS": "64", "ENABLE_CONTINUATION": "0",
                              "AGENT_FRAME_MS": "40", "OMNI_STT_MODE": "transcriptions"})
    assert (c.agent_name, c.omni_base_url, c.llm_max_tokens) == ("other", "http://h:1/v1", 64)
    assert c.enable_continuation is False and c.tts_frame_ms == 40
    assert c.stt_mode == "transcriptions"
    for env, word in [({"LLM_MAX_TOKENS": "lots"}, "integer"),
                      ({"LLM_TEMPERATURE": "9"}, "range"),
                      ({"AGENT_FRAME_MS": "25"}, "AGENT_FRAME_MS=25 must be a multiple of 10"),
                      ({"ENABLE_CONTINUATION": "maybe"}, "boolean"),
                      ({"OMNI_STT_MODE": "x"}, "chat, transcriptions"),
                      ({"MIN_ENDPOINTING": "2", "MAX_ENDPOINTING": "1"}, "MAX_ENDPOINTING")]:
        with pytest.raises(AgentConfigError, match=word):
            AgentConfig.from_env(env)


def test_knobs_renamed_off_the_engine_prefix_still_work_with_a_warning(
        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="streamtalk.agent"):
        c = AgentConfig.from_env({"TTS_SPEAKER": "ryan", "TTS_LANGUAGE": "english",
                                  "TTS_FRAME_MS": "40"})
    assert (c.tts_speaker, c.tts_language, c.tts_frame_ms) == ("ryan", "english", 40)
    assert [r.getMessage() for r in caplog.records] == [
        f"{old} is deprecated: it is read as {new}, set that instead"
        for old, new in RENAMED_KNOBS.items()]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="streamtalk.agent"):
        c = AgentConfig.from_env({"TTS_SPEAKER": "ryan", "AGENT_SPEAKER": "vivian"})
    assert c.tts_speaker == "vivian"
    assert caplog.messages == ["TTS_SPEAKER is deprecated and ignored: AGENT_SPEAKER is set"]
    with pytest.raises(AgentConfigError, match="AGENT_FRAME_MS=25"):  # named as it is read
        AgentConfig.from_env({"TTS_FRAME_MS": "25"})
    s = resolve({"TTS_SPEAKER": "Vivian", "AGENT_LANGUAGE": "chinese"})
    assert (s.speaker, s.language) == ("vivian", "chinese")
    assert s.warnings == ("metadata key TTS_SPEAKER is deprecated; use speaker or AGENT_SPEAKER",)


def resolve(meta: object, **env: str) -> RoomSettings:
    raw = meta if isinstance(meta, str) or meta is None else json.dumps(meta)
    return RoomSettings.resolve("room-1", raw, AgentConfig.from_env(env),
                                speakers=SPEAKERS, languages=LANGUAGES)


def test_room_settings_default_to_env() -> None:
    s = resolve(None, AGENT_SPEAKER="ryan", AGENT_SYSTEM_PROMPT="Be brief.", LLM_TEMPERATURE="0.5")
    assert (s.speaker, s.language, s.system_prompt, s.temperature) == (
        "ryan", "auto", "Be brief.", 0.5)
    assert s.trace_id.startswith("room-1-") and not s.trace_id_from_metadata
    assert not s.save_pre_rtc and s.warnings == ()
    assert resolve(None, AGENT_SAVE_PRE_RTC="1").save_pre_rtc


def test_dispatch_metadata_wins_over_env() -> None:
    s = resolve({"speaker": "Vivian", "language": "chinese", "system_prompt": "Speak Chinese.",
                 "LLM_MAX_TOKENS": 40, "temperature": "0.1", "trace_id": "t-1", "case_id": "c-1",
                 "user_identity": "user_bot"}, AGENT_SPEAKER="ryan")
    assert (s.speaker, s.language, s.system_prompt, s.max_tokens, s.temperature) == (
        "vivian", "chinese", "Speak Chinese.", 40, 0.1)
    assert (s.trace_id, s.case_id, s.user_identity) == ("t-1", "c-1", "user_bot")
    assert s.trace_id_from_metadata and s.save_pre_rtc  # a trace_id asks for pre_rtc.wav


@pytest.mark.parametrize("meta,field", [
    ("not json", "not JSON"),
    ("[1, 2]", "not a JSON object"),
    ({"speaker": "nobody"}, "unknown speaker 'nobody'; valid: aiden, ryan, serena, vivian"),
    ({"language": "klingon"}, "unknown language"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"temperature": "hot"}, "temperature"),
    ({"trace_id": "../../etc"}, "trace_id"),
    ({"system_prompt": ""}, "system_prompt"),
])
def test_bad_metadata_falls_back_with_a_warning(meta: object, field: str) -> None:
    s = resolve(meta)
    assert any(field in w for w in s.warnings), s.warnings
    assert s.speaker == "serena" and s.max_tokens == 150 and s.language == "auto"
    assert "/" not in s.trace_id
