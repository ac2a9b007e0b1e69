"""Backchannels: the short acknowledgements a listener gives while someone else talks
("uh-huh", "yeah", "mm-hmm", "okay").

Said while the agent speaks, a backchannel is not a turn: the STT drops it, so the
framework sees a barge-in with no words, and the paused reply resumes after the
false-interruption timeout (AGENT_FALSE_INTERRUPTION_TIMEOUT_S) instead of being
cancelled and answered. Said while the agent listens, the same words are an answer
("Shall I go on?" - "Yeah.") and pass. The local end-of-turn model gives no backchannel
probability (only LiveKit's hosted one does), so the decision rests on the words.

English words only: the dev backend transcribes English; other languages pass through.
"""

from __future__ import annotations

import re

# every word of the utterance must be one of these (after lower-casing and dropping
# punctuation), so "yeah, but wait" is a turn and "uh-huh, yeah" is not. A hyphenated word
# counts as its parts: the STT spells one murmur many ways (the same "uh-huh" came back as
# "Uh uh", "Uh, yeah" and "Uh-uh"), so "mm-hmm" and "mm-hm" both pass as "mm" + "hm(m)".
BACKCHANNEL_WORDS = frozenset({
    "uh", "huh", "um", "hum", "mhm", "mhmm", "mm", "mmm", "hmm", "hm", "ah", "aha", "oh",
    "yeah", "yes", "yep", "yup", "ya", "okay", "ok", "right", "sure", "alright", "cool",
    "i", "see", "got", "it",  # "I see", "got it"
})
_WORD = re.compile(r"[a-z]+(?:-[a-z]+)*")


def is_backchannel(text: str) -> bool:
    """Whether a transcript holds nothing but backchannel words (at most four of them)."""
    words = _WORD.findall(text.lower())
    return 0 < len(words) <= 4 and all(part in BACKCHANNEL_WORDS
                                       for w in words for part in w.split("-"))
