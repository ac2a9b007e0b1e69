"""The dev Omni backend's scripted responder (tools/omni_dev/responder.py): its rules, the
quoted previous turn, its file's errors, token splitting and pacing. The backend served:
integration/test_omni_dev.py."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tools.omni_dev.responder import ResponsesFileError, ScriptedResponder, paced, split_tokens


def test_responder_rules_match_words_not_substrings() -> None:
    r = ScriptedResponder.from_dict(
        {
            "default": "you said {transcript}",
            "empty": "pardon?",
            "rules": [
                {"keywords": ["hi"], "reply": "greeting"},
                {"keywords": ["your name"], "reply": "naming"},
            ],
        }
    )
    assert r.reply("Hi there") == "greeting"
    assert r.reply("this is thin") == "you said this is thin"  # no 'hi' inside words
    assert r.reply("What is YOUR   name?") == "naming"
    assert r.reply("  ") == "pardon?"
    assert r.reply("Good night.") == "you said Good night"


def test_responder_quotes_the_users_previous_turn() -> None:
    r = ScriptedResponder.from_dict({"default": "you said {transcript}", "rules": [
        {"keywords": ["what did I say"], "reply": "before: {previous}; now: {transcript}"}]})
    assert r.reply("What did I say?", ["Hello there.", "Is it  sunny?"]) == (
        "before: Is it sunny; now: What did I say")
    assert r.reply("what did i say") == "before: nothing yet; now: what did i say"


def test_responder_file_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"rules": []}')
    with pytest.raises(ResponsesFileError, match="default"):
        ScriptedResponder.from_file(bad)
    bad.write_text('{"default": "x", "rules": [{"keywords": [], "reply": "y"}]}')
    with pytest.raises(ResponsesFileError, match=r"rules\[0\]"):
        ScriptedResponder.from_file(bad)
    with pytest.raises(ResponsesFileError, match="cannot read"):
        ScriptedResponder.from_file(tmp_path / "missing.json")


def test_split_tokens_round_trips() -> None:
    for text in ["Hello, world.", "  spaced  out  ", "one", "", "a\nb"]:
        assert "".join(split_tokens(text)) == text
    assert split_tokens("It is sunny.") == ["It", " is", " sunny."]


async def test_paced_follows_delay_and_rate() -> None:
    t0 = time.monotonic()
    times = [time.monotonic() - t0 async for _ in paced(["a"] * 5, 0.2, 25.0)]
    assert 0.19 <= times[0] < 0.3
    assert 0.19 + 4 / 25 <= times[-1] < 0.2 + 4 / 25 + 0.1
