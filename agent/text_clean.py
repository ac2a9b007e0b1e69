"""Make LLM text speakable: no markdown, emoji or raw URLs; numbers kept readable.

Works on a whole reply or on one bridge segment (markdown split across two
segments leaves stray `**`/`_`/`#`/backticks, which are removed too). Numbers
keep their digits, decimal points, times and percent signs; thousands
separators are dropped so `12,500` is read as one number.
"""

from __future__ import annotations

import re

_CODE_FENCE = re.compile(r"```.*?(```|$)", re.S)
_IMAGE = re.compile(r"!\[([^\]]*)\]\([^)]*\)")
_LINK = re.compile(r"\[([^\]]+)\]\((?:[^)]*)\)")
_URL = re.compile(r"\b(?:https?://|www\.)[^\s<>()\[\]]+", re.I)
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s*", re.M)
_BULLET = re.compile(r"^\s*(?:[-*+•]|\d{1,3}[.)])\s+", re.M)
_QUOTE = re.compile(r"^\s*>+\s?", re.M)
_RULE = re.compile(r"^\s*(?:[-*_]\s*){3,}$", re.M)
_TABLE_SEP = re.compile(r"^\s*\|?(?:\s*:?-{2,}:?\s*\|)+\s*:?-*:?\s*$", re.M)
_INLINE_CODE = re.compile(r"`([^`]*)`")
_EMPHASIS = re.compile(r"(\*\*|\*|~~)(?=\S)(.+?)(?<=\S)\1")
_UNDERSCORE = re.compile(r"(?<!\w)(__|_)(?=\S)(.+?)(?<=\S)\1(?!\w)")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}\b)")
_STRAY = re.compile(r"[*_#`~|<>^\\]+")
_SPACES = re.compile(r"[ \t\f\v]+")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([,.;:!?，。；：！？、])")
_EMOJI = re.compile(
    "["
    "\U0001f000-\U0001faff"  # pictographs, emoticons, transport, symbols, flags, extended-A
    "\u2600-\u27bf"  # misc symbols and dingbats
    "\u2b00-\u2bff"  # arrows and stars used as emoji
    "\ufe0e\ufe0f\u200d\u20e3"  # variation selectors, zero-width joiner, keycap
    "\U000e0020-\U000e007f"  # tag characters (flag sequences)
    "]+"
)


def _url_words(match: re.Match[str]) -> str:
    url = match.group(0).rstrip(".,;:!?")
    tail = match.group(0)[len(url) :]
    host = re.sub(r"^(?:https?://)?(?:www\.)?", "", url, flags=re.I).split("/")[0].split(":")[0]
    host = host.strip(".")
    return (host.replace(".", " dot ") if host else "a link") + tail


def clean_for_speech(text: str) -> str:
    """Text that a TTS can read aloud; returns "" when nothing speakable is left."""
    if not text:
        return ""
    t = _CODE_FENCE.sub(" ", text)
    t = _IMAGE.sub(r"\1", t)
    t = _LINK.sub(r"\1", t)
    t = _URL.sub(_url_words, t)
    t = _TABLE_SEP.sub(" ", t)
    t = _RULE.sub(" ", t)
    t = _HEADING.sub("", t)
    t = _QUOTE.sub("", t)
    t = _BULLET.sub("", t)
    t = _INLINE_CODE.sub(r"\1", t)
    for _ in range(2):  # nested emphasis: ***x*** and **_x_**
        t = _EMPHASIS.sub(r"\2", t)
        t = _UNDERSCORE.sub(r"\2", t)
    t = _EMOJI.sub(" ", t)
    t = _THOUSANDS.sub("", t)
    t = t.replace("&", " and ") if re.search(r"\w\s*&\s*\w", t) else t
    t = _STRAY.sub(" ", t)
    t = t.replace("|", " ")
    t = _SPACES.sub(" ", t)
    t = re.sub(r"\s*\n\s*", " ", t)
    t = _SPACE_BEFORE_PUNCT.sub(r"\1", t)
    t = t.strip()
    if not any(ch.isalnum() for ch in t):
        return ""
    return t
