"""Which transcripts are backchannels (agent/backchannel.py): only short utterances made
of acknowledgement words, so that a real barge-in is never dropped as one."""

from __future__ import annotations

import pytest

from agent.backchannel import is_backchannel


@pytest.mark.parametrize("text", ["Uh-huh.", "uh-huh, yeah", "Mm-hmm", "Yeah.", "OK!", "I see.",
                                  "Right, right.", "Okay, got it",
                                  # the STT's other spellings of one "uh-huh, yeah" (AutoRTC)
                                  "Uh-uh, yeah.", "Uh uh yeah.", "Mm-hm.", "Aha."])
def test_acknowledgements_are_backchannels(text: str) -> None:
    assert is_backchannel(text)


@pytest.mark.parametrize("text", ["", "...", "Yeah, but wait.", "Wait, what time is it?",
                                  "No.", "Stop", "yeah yeah yeah yeah yeah",
                                  "Okay, tell me about the weather.", "Uh-uh, no."])
def test_words_beyond_an_acknowledgement_make_a_turn(text: str) -> None:
    assert not is_backchannel(text)
